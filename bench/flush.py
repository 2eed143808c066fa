"""Flush (drain) and unflush times of one node, next to a floor measured in the same run.

A fresh local cluster (3 nodes on libvirt's test driver). N VMs are placed on node1;
`POST /nodes/node1/flush` is sent and the clock stops at the first poll showing node1
`domainState: flushed` (every VM moved, node1's heartbeat lists none); then
`POST /nodes/node1/ready` until `domainState: ready` with every VM Running on node1
again. Done for each `--parallel` value (Cluster.spec.migration.maxParallel, cluster and
per node). The floor per VM is what one move needs at least: a raw libvirt define+start
on the test driver plus one raw ZooKeeper set (the placement write); the source's
shutdown is not counted, so the floor is low.

    .venv/bin/python bench/flush.py                 # 20 VMs, maxParallel 1 and 4
    .venv/bin/python bench/flush.py --vms 50 --parallel 1 2 8
    .venv/bin/python bench/flush.py --live          # 20 KVM guests, live, 4 and 1

With --live (--mode live): 20 running 64 MiB KVM guests on node1 of a 2-node cluster on two
isolated libvirtd (bench/migration.py's pair), flushed to node2 by live migration; the
clock stops at the watch events showing node1 `domainState: flushed` and every VM
Running on node2. The reference is one live migration through PVC measured in the same
run (the median over sets of --single moves of a VM of its own, there and back, before
each flush and after the last, with the 20 running):
ratio = flush / (ceil(N / maxParallel) x one migration). Skips (exit 0) without root,
/dev/kvm, libvirtd or unshare.

See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apply_latency import libvirt_floor, zookeeper_floor
from benchlib import now_iso, percentile, summary
from failover import (
    PROFILES,
    RESULTS,
    Api,
    cluster_object,
    environment,
    local_cluster,
    log_problems,
    secs,
    vm_object,
    wait,
    write_json,
)
from migration import (
    VM_MEMORY_MIB,
    LibvirtEvents,
    Objects,
    Watch,
    kvm_pair_cluster,
    kvm_pair_reason,
    live_vm,
    pvc_migrate,
    running_on,
)

DEFAULT_OUT = RESULTS / "flush.json"
DEFAULT_OUT_LIVE = RESULTS / "flush_live.json"
POLL_S = 0.05
TARGET_LIVE_RATIO = 1.2
"""Goal for flush / (ceil(N / maxParallel) x one migration) at maxParallel 4."""
LIVE_FENCING = PROFILES["default"]
"""Live mode's fencing profile: with the fast one (1 s keepalive) a 2-CPU machine busy with
20 guests and 4 migrations missed heartbeats for 3 s (node_dead, then saving throws)."""
GUEST_OVERHEAD_MIB = 200
"""What a KVM guest costs beyond its memory (QEMU, page tables), to size --vm-memory."""


def domain_state(api: Api, node: str) -> str:
    return str(api.nodes().get(node, {}).get("domainState", ""))


def placed_on(api: Api, names: list[str]) -> dict[str, str | None]:
    vms = api.vms()
    return {n: vms[n].get("node") if vms[n].get("phase") == "Running" else None for n in names}


def one_round(api: Api, names: list[str], parallel: int, timeout: float) -> dict[str, Any]:
    api.apply(
        cluster_object(
            PROFILES["fast"], migration={"maxParallel": {"cluster": parallel, "perNode": parallel}}
        )
    )
    started = time.monotonic()
    response = api.client.post("/api/v1/nodes/node1/flush")
    response.raise_for_status()
    wait(lambda: domain_state(api, "node1") == "flushed", timeout, "node1 flushed", POLL_S)
    flushed = time.monotonic() - started
    where = placed_on(api, names)
    if any(node in (None, "node1") for node in where.values()):
        raise RuntimeError(f"flushed, yet not every VM runs elsewhere: {where}")
    started = time.monotonic()
    response = api.client.post("/api/v1/nodes/node1/ready")
    response.raise_for_status()
    wait(
        lambda: (
            domain_state(api, "node1") == "ready"
            and set(placed_on(api, names).values()) == {"node1"}
        ),
        timeout,
        "node1 ready with its VMs back",
        POLL_S,
    )
    unflushed = time.monotonic() - started
    return {
        "parallel": parallel,
        "flush_s": flushed,
        "flush_per_vm_s": flushed / len(names),
        "unflush_s": unflushed,
        "unflush_per_vm_s": unflushed / len(names),
        "spread": sorted(set(where.values()), key=str),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument(
        "--parallel", type=int, nargs="+", help="maxParallel values (default 1 4; live: 4 1)"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, help="default bench/results/flush[_live].json")
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument("--mode", choices=("test", "live"), default="test")
    parser.add_argument("--live", action="store_true", help="the same as --mode live")
    parser.add_argument(
        "--vm-memory", type=int, help="live: MiB per guest (default 64, less if RAM is short)"
    )
    parser.add_argument(
        "--single",
        type=int,
        default=2,
        help="live: migrations of one VM before each flush and after the last (the reference)",
    )
    args = parser.parse_args(argv)
    live = args.live or args.mode == "live"
    if args.parallel is None:
        args.parallel = [4, 1] if live else [1, 4]
    if args.vms < 1 or args.single < 1 or any(p < 1 for p in args.parallel):
        parser.error("--vms, --single and --parallel must be at least 1")
    if live:
        return main_live(args, args.out or DEFAULT_OUT_LIVE)
    args.out = args.out or DEFAULT_OUT
    started_at = now_iso()
    names = [f"fl-{i:03d}" for i in range(args.vms)]
    rounds: list[dict[str, Any]] = []
    print(f"flush: {args.vms} VMs on node1, maxParallel {args.parallel}")
    with tempfile.TemporaryDirectory(prefix="pvc-bench-flush-floor-") as workdir:
        libvirt_part = libvirt_floor(args.vms, Path(workdir))
    with local_cluster("flush", "6s", args.keep_state) as run:
        zookeeper_part = zookeeper_floor(run.state.zookeeper_hosts, args.vms)
        api = Api(run.server)
        try:
            api.apply(cluster_object(PROFILES["fast"]))
            api.apply(*(vm_object(n, home="node1") for n in names))
            wait(
                lambda: set(placed_on(api, names).values()) == {"node1"},
                args.timeout,
                "every VM Running on node1",
                POLL_S,
            )
            for parallel in args.parallel:
                rounds.append(one_round(api, names, parallel, args.timeout))
                print(
                    f"  maxParallel {parallel}: flush {secs(rounds[-1]['flush_s'])}, "
                    f"unflush {secs(rounds[-1]['unflush_s'])}"
                )
            problems = log_problems(run.dir)
        finally:
            api.close()
    floor = libvirt_part["median_s"] + zookeeper_part["median_s"]
    for entry in rounds:
        entry["flush_per_vm_over_floor"] = entry["flush_per_vm_s"] / floor
        entry["unflush_per_vm_over_floor"] = entry["unflush_per_vm_s"] / floor
    result: dict[str, Any] = {
        "benchmark": "flush",
        "config": {"vms": args.vms, "nodes": 3, "parallel": args.parallel, "poll_s": POLL_S},
        "floor": {
            "per_vm_s": floor,
            "libvirt_define_start_median_s": libvirt_part["median_s"],
            "zookeeper_set_median_s": zookeeper_part["median_s"],
            "note": "one move's least work; the source's shutdown is not counted",
        },
        "rounds": rounds,
        "log_problems": problems,
        **environment(),
        "started_at": started_at,
        "finished_at": now_iso(),
    }
    write_json(args.out, result)
    print()
    print(f"flush: {args.vms} VMs, floor per move {floor * 1000:.2f} ms (libvirt + ZooKeeper)")
    for entry in rounds:
        print(
            f"  maxParallel {entry['parallel']}: flush {secs(entry['flush_s'])} "
            f"({entry['flush_per_vm_s'] * 1000:.0f} ms/VM, "
            f"{entry['flush_per_vm_over_floor']:.0f}x floor); unflush {secs(entry['unflush_s'])} "
            f"({entry['unflush_per_vm_s'] * 1000:.0f} ms/VM, "
            f"{entry['unflush_per_vm_over_floor']:.0f}x floor)"
        )
    for line in problems[:5]:
        print(f"  log: {line}")
    print(f"  wrote {args.out}")
    return 0


# -- live mode: KVM guests moved by live migration ------------------------------------------


def guest_memory(vms: int, asked: int | None) -> tuple[int, dict[str, Any]]:
    """MiB per guest: ``asked``, else 64 when this machine holds two copies of every guest
    (source and target while they move) with room to spare, else less. With what it saw."""
    available = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) // 1024
    memory = asked or VM_MEMORY_MIB
    if asked is None:
        while memory > 16 and 2 * vms * (memory + GUEST_OVERHEAD_MIB) > available - 1024:
            memory //= 2
    seen = {"mem_available_mib": available, "per_guest_overhead_assumed_mib": GUEST_OVERHEAD_MIB}
    return memory, seen


def guests_rss_mib(names: list[str]) -> float:
    """The resident memory of the guests' QEMU processes, in MiB (what they really take)."""
    total = 0
    for name in names:
        found = subprocess.run(
            ["pgrep", "-f", f"qemu-system.*guest={name},"], capture_output=True, text=True
        )
        for pid in found.stdout.split():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total / 1024


def all_on(names: list[str], node: str) -> Callable[[Objects], bool]:
    return lambda objects: all(running_on(objects, n, node) for n in names)


def node_state(node: str, state: str) -> Callable[[Objects], bool]:
    return lambda objects: (
        ((objects.get(node) or {}).get("status") or {}).get("domainState") == state
    )


def live_round(
    api: Api, vms: Watch, nodes: Watch, names: list[str], parallel: int, timeout: float
) -> dict[str, Any]:
    """Flush node1 to node2 with maxParallel ``parallel``, then unflush; both timed to the
    watch events that show the end state."""
    api.apply(
        cluster_object(
            LIVE_FENCING, migration={"maxParallel": {"cluster": parallel, "perNode": parallel}}
        )
    )
    times: dict[str, float] = {}
    for verb, there, state in (("flush", "node2", "flushed"), ("ready", "node1", "ready")):
        started = time.monotonic()
        api.client.post(f"/api/v1/nodes/node1/{verb}").raise_for_status()
        state_at = nodes.until(node_state("node1", state), timeout, f"node1 {state}")
        vms_at = vms.until(all_on(names, there), timeout, f"every VM Running on {there}")
        times[verb] = max(state_at, vms_at) - started
    return {
        "parallel": parallel,
        "flush_s": times["flush"],
        "flush_per_vm_s": times["flush"] / len(names),
        "unflush_s": times["ready"],
        "unflush_per_vm_s": times["ready"] / len(names),
    }


def single_targets(where: str, count: int) -> list[str]:
    """At least ``count`` moves there and back from ``where``, the last one to node2."""
    targets: list[str] = []
    while len(targets) < count or where != "node2":
        where = "node2" if where == "node1" else "node1"
        targets.append(where)
    return targets


def main_live(args: argparse.Namespace, out: Path) -> int:
    reason = kvm_pair_reason()
    if reason is not None:
        print(f"flush --live: skipped: {reason}")
        return 0
    started_at = now_iso()
    memory, sizing = guest_memory(args.vms, args.vm_memory)
    names = [f"fl-{i:03d}" for i in range(args.vms)]
    single_name = f"fl-one-{uuid.uuid4().hex[:4]}"
    rounds: list[dict[str, Any]] = []
    single: list[list[dict[str, Any]]] = []
    print(
        f"flush --live: {args.vms} KVM guests of {memory} MiB on node1, maxParallel "
        f"{args.parallel} ({sizing['mem_available_mib']} MiB available)"
    )
    with kvm_pair_cluster("flush-live", args.keep_state) as (run, uris):
        api = Api(run.server)
        events = LibvirtEvents(uris)
        vms = Watch(run.server, "vms")
        nodes = Watch(run.server, "nodes")
        try:
            api.apply(cluster_object(LIVE_FENCING))
            api.apply(*(live_vm(n, "node1", memory) for n in [*names, single_name]))
            vms.until(all_on([*names, single_name], "node1"), args.timeout, "VMs on node1")
            sizing["guests_rss_mib"] = guests_rss_mib(names)
            rss = sizing["guests_rss_mib"]
            print(f"  {args.vms} guests Running on node1, their QEMU RSS {rss:.0f} MiB")
            # One migration (a VM of its own, the 20 others running) before each flush and
            # after the last; it ends each set on node2, where no flush or unflush moves it.
            where = "node1"
            for parallel in [*args.parallel, None]:
                phase = []
                for target in single_targets(where, args.single):
                    phase.append(pvc_migrate(api, vms, events, run, single_name, target))
                    where = target
                single.append(phase)
                print(f"  one migration: {[round(m['seconds'], 2) for m in phase]}")
                if parallel is None:
                    break
                rounds.append(live_round(api, vms, nodes, names, parallel, args.timeout))
                print(
                    f"  maxParallel {parallel}: flush {secs(rounds[-1]['flush_s'])}, "
                    f"unflush {secs(rounds[-1]['unflush_s'])}"
                )
            one = percentile([m["seconds"] for phase in single for m in phase], 50)
            for entry in rounds:
                entry["reference_s"] = math.ceil(args.vms / entry["parallel"]) * one
                entry["flush_over_reference"] = entry["flush_s"] / entry["reference_s"]
            problems = log_problems(run.dir)
        finally:
            vms.close()
            nodes.close()
            events.close()
            api.close()
    result: dict[str, Any] = {
        "benchmark": "flush",
        "mode": "live",
        "config": {
            "vms": args.vms,
            "nodes": 2,
            "vm_memory_mib": memory,
            "parallel": args.parallel,
            "single_runs": args.single,
            "fencing": LIVE_FENCING,
            "timing": "watch events (GET ?watch=true) of nodes and VMs",
        },
        "sizing": sizing,
        "one_migration": {
            **summary([m["seconds"] for phase in single for m in phase]),
            "note": "median of all: a set before each flush round and one after the last",
            "sets": single,
        },
        "rounds": rounds,
        "target": {"flush_over_reference_at_4": TARGET_LIVE_RATIO},
        "log_problems": problems,
        **environment(),
        "started_at": started_at,
        "finished_at": now_iso(),
    }
    write_json(out, result)
    print()
    print(f"flush --live: {args.vms} guests of {memory} MiB, one migration p50 {secs(one)}")
    for entry in rounds:
        goal = ""
        if entry["parallel"] == 4:
            met = entry["flush_over_reference"] <= TARGET_LIVE_RATIO
            goal = f" (goal <= {TARGET_LIVE_RATIO}: {'met' if met else 'NOT met'})"
        print(
            f"  maxParallel {entry['parallel']}: flush {secs(entry['flush_s'])}, "
            f"{entry['flush_over_reference']:.2f}x reference{goal}; "
            f"unflush {secs(entry['unflush_s'])}"
        )
    for line in problems[:5]:
        print(f"  log: {line}")
    print(f"  wrote {out}")
    figures = [f"one_migration_s={one:.3f}"]
    for entry in rounds:
        p = entry["parallel"]
        figures += [
            f"flush_p{p}_s={entry['flush_s']:.3f}",
            f"ratio_p{p}={entry['flush_over_reference']:.3f}",
        ]
    print(" ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
