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

See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from apply_latency import libvirt_floor, zookeeper_floor
from benchlib import now_iso
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

DEFAULT_OUT = RESULTS / "flush.json"
POLL_S = 0.05


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
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-state", action="store_true")
    args = parser.parse_args(argv)
    if args.vms < 1 or any(p < 1 for p in args.parallel):
        parser.error("--vms and --parallel must be at least 1")
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


if __name__ == "__main__":
    sys.exit(main())
