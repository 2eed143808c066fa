"""Apply → Running latency of VirtualMachines, next to a floor measured in the same run.

Applies N VMs (default 50) to a local cluster (its own, started here, or an
existing one with --server), one POST /api/v1/apply per VM, one VM at a time
(--concurrency K: K in flight), and times each VM from the moment its apply request
is sent to the moment a ZooKeeper data watch on its status reads it Running. Beside
that, on the same machine in the same run: the chain floor (bench/chain_floor.py: the
same chain of actors, watches and round trips done raw with kazoo and libvirt: one
VM of it beside each PVC VM, in turn, or with --concurrency above 1 half before and half
after the PVC run) and the plain floor (a raw libvirt define+start plus one raw
ZooKeeper set). Nothing is timed before a warm-up (--warmup): raw requests until a local
ZooKeeper's JIT compiler is quiet, then VMs through PVC and the chain, untimed. It prints
a summary, the last line
``p50_ms=… chain_floor_ms=… ratio_chain=…``, and writes every figure as JSON. See
bench/README.md.

    .venv/bin/python bench/apply_latency.py                # 50 VMs, own cluster
    .venv/bin/python bench/apply_latency.py --vms 10
    .venv/bin/python bench/apply_latency.py --server http://127.0.0.1:7370 \
        --zookeeper 127.0.0.1:2181 --zookeeper-auth admin:/path/admin.password
    .venv/bin/python bench/apply_latency.py --kvm          # one node on qemu:///system

With --kvm the cluster has one node on the host's real libvirtd (qemu:///system,
started as a plain process when none answers, and stopped again after), its VMs are
real 64 MiB diskless KVM guests, and the floor is a raw define+start of the same XML
(rendered for "kvm") on qemu:///system. Every domain the run creates is removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from benchlib import git_commit, git_dirty, nan_to_none, now_iso, nproc, percentile, summary
from chain_floor import ChainFloor, StatusWatch, kazoo_client
from floors import (
    NODE_CPUS,
    VM_MEMORY_MIB,
    kvm_floor,
    kvm_unavailable_reason,
    libvirt_floor,
    remove_domains,
    system_libvirtd,
    warm_zookeeper,
    zookeeper_floor,
)
from hops import line as hops_line
from hops import placement_node, vm_hops
from hops import summarize as summarize_hops
from poller import Poller, is_running

from zkstore import paths

__all__ = [
    "Poller",
    "Target",
    "apply_one",
    "delete_vms",
    "is_running",
    "kvm_unavailable_reason",
    "libvirt_floor",
    "local_cluster",
    "log_problems",
    "ms",
    "system_libvirtd",
    "vm_object",
    "wait_domains_gone",
    "zookeeper_floor",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "apply_latency.json"
DEFAULT_OUT_KVM = REPO_ROOT / "bench" / "results" / "apply_latency_kvm.json"
# Issue 3's targets for p50 / floor.
TARGET_RATIO = {"local": 3.0, "server": 3.0, "kvm": 1.5}
TARGET_CHAIN_RATIO = 2.0  # issue 16: p50 <= 2x the chain floor
NODES = 3
KVM_NODE = "node1"
# QEMU runs as libvirt-qemu: a real node's disks must sit where it can reach them.
KVM_IMAGES_DIR = Path("/var/lib/libvirt/images")


# -- small helpers --------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def vm_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"pvc-bench": "apply-latency"}},
        "spec": {"memory": f"{VM_MEMORY_MIB}Mi", "vcpus": 1},
    }


# -- the cluster ----------------------------------------------------------------------


@dataclass
class Target:
    server: str
    zookeeper: str
    mode: str  # "local" (started here) or "server" (existing)
    state_dir: Path | None = None
    node_memory: str | None = None
    libvirt_uri: str | None = None
    """A real libvirt the cluster's node runs on (--kvm); None for the test driver."""
    nodes: int | None = None
    zookeeper_auth: tuple[str, str] | None = None
    """(user, password) of a ZooKeeper identity that reads the VMs' status."""
    root: str = "/pvc"
    zookeeper_pid: int | None = None
    """The local ZooKeeper's process (its JIT compiler's CPU tells when it is warm)."""


@contextmanager
def local_cluster(
    vms: int,
    keep_state: bool,
    libvirt_uri: str | None = None,
    name_prefix: str | None = None,
) -> Iterator[Target]:
    """A fresh LocalCluster in a temporary state dir, always stopped on the way out.

    With `libvirt_uri`, one node on that real libvirt (its disks in a folder under
    /var/lib/libvirt/images); on the way out every domain named `name_prefix`... left
    behind is removed before the daemon stops, since a real libvirtd keeps them."""
    from localcluster.cluster import LocalCluster

    state_dir = Path(tempfile.mkdtemp(prefix="pvc-bench-"))
    # The scheduler may place every VM on one node: give each node room for all of them.
    node_mib = max(8192, vms * VM_MEMORY_MIB + 1024)
    nodes = 1 if libvirt_uri else NODES
    disk_dir = KVM_IMAGES_DIR / state_dir.name if libvirt_uri else None
    cluster = LocalCluster(
        state_dir,
        nodes=nodes,
        api_port=0,
        node_memory=f"{node_mib}Mi",
        node_cpus=NODE_CPUS,
        libvirt_uris={KVM_NODE: libvirt_uri} if libvirt_uri else None,
        disk_dir=disk_dir,
    )
    failed = True
    where = f"on {libvirt_uri}" if libvirt_uri else f"{node_mib}Mi each"
    print(f"starting a local cluster in {state_dir} ({nodes} nodes, {where}) ...")
    started = time.monotonic()
    try:
        state, _ = cluster.up()
        print(f"  up in {time.monotonic() - started:.1f} s")
        yield Target(
            server=LocalCluster.server_url(state),
            zookeeper=f"127.0.0.1:{state.zookeeper_port}",
            zookeeper_auth=admin_identity(state_dir),
            mode="kvm" if libvirt_uri else "local",
            state_dir=state_dir,
            node_memory=None if libvirt_uri else f"{node_mib}Mi",
            libvirt_uri=libvirt_uri,
            nodes=nodes,
            zookeeper_pid=state.zookeeper_pid or None,
        )
        failed = False
    finally:
        # Errors seen in the daemon logs are collected by the caller before this runs.
        try:
            if libvirt_uri and name_prefix:
                left = remove_domains(libvirt_uri, name_prefix)
                if left:
                    print(f"  removed {len(left)} domains the run left in {libvirt_uri}")
            cluster.down()
        finally:
            if disk_dir is not None:
                shutil.rmtree(disk_dir, ignore_errors=True)
            if keep_state or failed:
                print(f"  state dir (logs) kept at {state_dir}")
            else:
                shutil.rmtree(state_dir, ignore_errors=True)


@contextmanager
def existing_server(
    server: str, zookeeper: str, auth: tuple[str, str] | None, root: str
) -> Iterator[Target]:
    yield Target(
        server=server.rstrip("/"),
        zookeeper=zookeeper,
        mode="server",
        zookeeper_auth=auth,
        root=root,
    )


def admin_identity(state_dir: Path) -> tuple[str, str] | None:
    """The local cluster's ZooKeeper admin identity (its status znodes are not world-readable)."""
    password = state_dir / "zk-auth" / "admin.password"
    return ("admin", password.read_text().strip()) if password.exists() else None


def parse_identity(value: str) -> tuple[str, str]:
    """USER:PASSWORD_FILE, as --zookeeper-auth takes it."""
    user, sep, path = value.partition(":")
    if not sep or not user or not path:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD_FILE")
    try:
        return user, Path(path).read_text().strip()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None


def log_problems(state_dir: Path | None, limit: int = 40) -> list[str]:
    """Lines that look like errors in the daemon and API logs of a local cluster."""
    if state_dir is None:
        return []
    found: list[str] = []
    markers = ("Traceback", "ERROR", "CRITICAL", "Exception")
    for log in sorted(state_dir.glob("*.log")):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if any(marker in line for marker in markers):
                found.append(f"{log.name}: {line.strip()[:300]}")
                if len(found) >= limit:
                    return found
    return found


# -- the run --------------------------------------------------------------------------


def apply_one(client: httpx.Client, name: str) -> tuple[float, float, str]:
    """POST one VM; returns (monotonic send time, request latency, outcome)."""
    sent = time.monotonic()
    response = client.post("/api/v1/apply", json=[vm_object(name)])
    latency = time.monotonic() - sent
    if response.status_code != 200:
        raise RuntimeError(f"apply of {name} failed: {response.status_code} {response.text}")
    items = response.json().get("items") or [{}]
    return sent, latency, str(items[0].get("outcome"))


def delete_vms(client: httpx.Client, names: Sequence[str], timeout: float) -> dict[str, Any]:
    """DELETE each bench VM, then wait (bounded) until none is listed any more."""
    errors: list[str] = []
    for name in names:
        try:
            response = client.delete(f"/api/v1/vms/{name}")
            if response.status_code not in (200, 404):
                errors.append(f"{name}: {response.status_code} {response.text[:200]}")
        except httpx.HTTPError as exc:
            errors.append(f"{name}: {exc}")
    deadline = time.monotonic() + timeout
    remaining: set[str] = set(names)
    while time.monotonic() < deadline:
        try:
            listed = {i["metadata"]["name"] for i in client.get("/api/v1/vms").json()["items"]}
        except (httpx.HTTPError, ValueError, KeyError):
            listed = remaining
        remaining = set(names) & listed
        if not remaining:
            break
        time.sleep(0.2)
    return {
        "deleted": len(names) - len(remaining),
        "still_listed": sorted(remaining)[:20],
        "errors": errors[:20],
    }


def wait_domains_gone(uri: str, prefix: str, timeout: float) -> list[str]:
    """Wait until no domain named `prefix`... is defined at `uri`; the names still left."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = sorted(
                str(d.name()) for d in conn.listAllDomains(0) if str(d.name()).startswith(prefix)
            )
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.2)
    finally:
        conn.close()


def run(args: argparse.Namespace, target: Target, token: str) -> dict[str, Any]:
    names = [f"bench-{token}-{i:03d}" for i in range(1, args.vms + 1)]
    warm_names = [f"bench-{token}-warm-{i:03d}" for i in range(1, args.warmup + 1)]
    client = httpx.Client(base_url=target.server, timeout=30.0)
    zk = kazoo_client(target.zookeeper, target.zookeeper_auth)
    try:
        health = client.get("/healthz")
        if health.status_code != 200:
            raise RuntimeError(f"{target.server}/healthz answered {health.status_code}")

        status_root = f"{target.root}/resources/vms"
        watch = StatusWatch(zk, lambda n: f"{status_root}/{n}/status")
        sent_at: dict[str, float] = {}
        sent_wall: dict[str, float] = {}
        running_at: dict[str, float] = {}
        request_latency: dict[str, float] = {}
        outcomes: dict[str, int] = {}

        def one(name: str) -> None:
            watch.expect(name)
            sent_wall[name] = time.time()
            sent, latency, outcome = apply_one(client, name)
            sent_at[name], request_latency[name] = sent, latency
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            at = watch.wait(name, args.timeout)
            if at is not None:
                running_at[name] = at

        warmup: dict[str, Any] | None = None
        if args.warmup:
            # Nothing timed runs on a cold server: a fresh ZooKeeper's JVM compiles its hot
            # paths over its first 15-25 s of load, and that compiler alone took 13-14 ms
            # of CPU per VM (a third of a core) in the PVC run. A server in service is
            # warm; so is this one, for the floors and PVC alike.
            print("warm-up: raw requests until ZooKeeper's JIT compiler is quiet ...")
            warmup = warm_zookeeper(target.zookeeper, target.zookeeper_pid)
            print(
                f"  {warmup['requests']} requests in {warmup['seconds']} s; compiler CPU "
                f"per {warmup['window_s']:g} s: {warmup['jit_cpu_s_per_window']}"
            )

        # Floors first, with the cluster up and idle: same machine, same run.
        if target.libvirt_uri:
            print(f"floor: {args.vms} raw libvirt define+start on {target.libvirt_uri} ...")
            lv = kvm_floor(args.vms, target.libvirt_uri, f"floor-{token}-")
        else:
            print(f"floor: {args.vms} raw libvirt define+start on the test driver ...")
            with tempfile.TemporaryDirectory(prefix="pvc-bench-floor-") as workdir:
                lv = libvirt_floor(args.vms, Path(workdir))
        print(f"floor: {args.vms} raw ZooKeeper sets against {target.zookeeper} ...")
        zk_set = zookeeper_floor(target.zookeeper, args.vms)
        floor_per_vm = lv["median_s"] + zk_set["median_s"]

        nodes = target.nodes or NODES
        floor = ChainFloor(target.zookeeper, nodes, zk, args.vms + args.warmup)
        try:
            if args.warmup:
                print(f"warm-up: {args.warmup} VMs through PVC and the raw chain, not timed ...")
                for index, name in enumerate(warm_names):
                    one(name)
                    floor.one(f"warm-{index:04d}", args.timeout)
                floor.samples.clear()
                floor.missing.clear()
                floor.observed.clear()
                for key in (sent_at, sent_wall, running_at, request_latency, outcomes):
                    key.clear()
            first_sent = time.monotonic()
            if args.concurrency == 1:
                # Interleaved, one PVC VM and one raw-chain VM in turn (which goes first
                # alternating): both meet the machine as it is at that moment.
                print(f"applying {args.vms} VMs, each beside one through the raw chain ...")
                for index, name in enumerate(names):
                    if index % 2:
                        floor.one(f"chain-{index:04d}")
                    one(name)
                    if not index % 2:
                        floor.one(f"chain-{index:04d}")
            else:
                # Applies in flight together: the chain floor's VMs (one at a time) in
                # two halves, before and after, so a load that changes weighs on both.
                first = (args.vms + 1) // 2
                print(f"chain floor: {first} VMs through the raw chain ({nodes} nodes) ...")
                for index in range(first):
                    floor.one(f"chain-{index:04d}")
                print(f"applying {args.vms} VMs ({args.concurrency} in flight) ...")
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    list(pool.map(one, names))
                print(f"chain floor: {args.vms - first} more VMs through the raw chain ...")
                for index in range(first, args.vms):
                    floor.one(f"chain-{index:04d}")
            last_seen = time.monotonic()
            chain_hops = floor.hops()
        finally:
            floor.close()
        chain_result = floor.result()
        chain_samples = chain_result["samples_s"]
        chain_median = percentile(chain_samples, 50)

        latencies = {n: running_at[n] - sent_at[n] for n in names if n in running_at}
        missing = sorted(set(names) - latencies.keys())
        values = list(latencies.values())
        p50 = percentile(values, 50)
        p99 = percentile(values, 99)

        pvc_hops = summarize_hops(
            vm_hops(
                zk,
                sent_wall,
                lambda n: f"{status_root}/{n}",
                lambda n, node: target.root + paths.holder(n, node),
                placement_node,
                starting_write=True,
            ),
            {n: v * 1000.0 for n, v in latencies.items()},
        )
        problems = log_problems(target.state_dir)
        cleanup: dict[str, Any] | None = None
        if (target.mode == "server" and not args.keep_vms) or target.libvirt_uri:
            print("deleting the bench VMs ...")
            cleanup = delete_vms(client, warm_names + names, timeout=60.0)
            if target.libvirt_uri:
                # Deleted VMs' domains go asynchronously: wait for the node to undefine them.
                cleanup["domains_left"] = wait_domains_gone(
                    target.libvirt_uri, f"bench-{token}-", timeout=120.0
                )

        return {
            "benchmark": "apply_latency",
            "config": {
                "vms": args.vms,
                "concurrency": args.concurrency,
                "warmup_vms": args.warmup,
                "vm_spec": {"memory": f"{VM_MEMORY_MIB}Mi", "vcpus": 1},
                "mode": target.mode,
                "server": target.server,
                "zookeeper": target.zookeeper,
                "nodes": target.nodes,
                "libvirt_uri": target.libvirt_uri,
                "node_memory": target.node_memory,
                "timeout_s": args.timeout,
                "name_prefix": f"bench-{token}-",
            },
            "timing": (
                "per VM, from just before its POST /api/v1/apply to the return of the read "
                "of its status znode, made by a ZooKeeper data watch, showing Running"
            ),
            "apply_to_running": {
                **summary(values),
                "reached_running": len(values),
                "missing": missing,
                "missing_last_phase": {n: watch.last_phase.get(n) for n in missing},
                "wall_s": last_seen - first_sent,
            },
            "apply_request": summary(list(request_latency.values())),
            "hops": {
                "definition": "bench/hops.py's docstring: each step in ms after the send, "
                "from ZooKeeper's ctime/mtime, and its own gap to the step before",
                "same_clock": target.mode == "local",
                "pvc": pvc_hops,
                "chain_floor": chain_hops,
            },
            "apply_outcomes": outcomes,
            "zookeeper_warmup": warmup,
            "chain_floor": {
                "median_s": chain_median,
                **summary(chain_samples),
                "round_trips": chain_result["round_trips"],
                "watch_hops": chain_result["watch_hops"],
                "definition": "bench/chain_floor.py's docstring",
                "missing": chain_result["missing"],
                "interleaved": args.concurrency == 1,
                "samples_s": chain_samples,
            },
            "floor": {
                "per_vm_s": floor_per_vm,
                "definition": "median(libvirt define+start) + median(ZooKeeper set)",
                "libvirt_define_start": lv,
                "zookeeper_set": zk_set,
            },
            "ratio": {
                "p50_over_chain_floor": p50 / chain_median,
                "p99_over_chain_floor": p99 / percentile(chain_samples, 99),
                "p50_over_floor": p50 / floor_per_vm,
                "chain_target": TARGET_CHAIN_RATIO,
            },
            "per_vm": [
                {
                    "name": n,
                    "apply_request_s": request_latency.get(n),
                    "apply_to_running_s": latencies.get(n),
                }
                for n in names
            ],
            "cleanup": cleanup,
            "log_problems": problems,
        }
    finally:
        client.close()
        zk.stop()
        zk.close()


def print_summary(result: dict[str, Any], out: Path) -> None:
    cfg = result["config"]
    a2r = result["apply_to_running"]
    req = result["apply_request"]
    floor = result["floor"]
    chain = result["chain_floor"]
    nan = math.nan
    print()
    print(
        f"apply_latency: {cfg['vms']} VMs, {cfg['concurrency']} in flight, "
        f"{result['machine']['nproc']} CPUs (load {result['machine']['loadavg']}), "
        f"mode {cfg['mode']}, timed by a ZooKeeper watch on each status"
    )
    print(
        f"  apply->Running  p50 {ms(a2r.get('p50_s', nan))}  p99 {ms(a2r.get('p99_s', nan))}  "
        f"mean {ms(a2r.get('mean_s', nan))}  max {ms(a2r.get('max_s', nan))}  "
        f"({a2r['reached_running']}/{cfg['vms']} Running)"
    )
    print(f"  apply request   p50 {ms(req.get('p50_s', nan))}  p99 {ms(req.get('p99_s', nan))}")
    hops = result.get("hops") or {}
    if hops.get("pvc"):
        # Each step's p50 in ms after the send, (+ its own gap): bench/hops.py.
        print(f"  hops, PVC       {hops_line(hops['pvc'])}")
    if hops.get("chain_floor"):
        print(f"  hops, floor     {hops_line(hops['chain_floor'])}")
    print(
        f"  chain floor     p50 {ms(chain['median_s'])}  p99 {ms(chain.get('p99_s', nan))}  "
        f"({chain['round_trips']} round trips, {chain['watch_hops']} watch hops, "
        f"define+start; raw kazoo)"
    )
    print(
        f"  floor per VM    {ms(floor['per_vm_s'])} = libvirt define+start "
        f"{ms(floor['libvirt_define_start']['median_s'])} + ZooKeeper set "
        f"{ms(floor['zookeeper_set']['median_s'])}"
    )
    ratio = result["ratio"]
    ok = ratio["p50_over_chain_floor"] <= TARGET_CHAIN_RATIO
    print(
        f"  ratio           p50/chain floor {ratio['p50_over_chain_floor']:.2f}x "
        f"(target <= {TARGET_CHAIN_RATIO:g}x: {'met' if ok else 'NOT met'}), "
        f"p50/floor {ratio['p50_over_floor']:.1f}x"
    )
    if a2r["missing"]:
        print(f"  NOT Running after {cfg['timeout_s']} s: {len(a2r['missing'])} VMs")
        for name, phase in list(a2r["missing_last_phase"].items())[:10]:
            print(f"    {name}: last phase {phase}")
    if result["log_problems"]:
        print(f"  {len(result['log_problems'])} error-looking lines in the cluster logs:")
        for line in result["log_problems"][:10]:
            print(f"    {line}")
    print(f"  wrote {out}")
    print(
        f"p50_ms={a2r.get('p50_s', nan) * 1000:.1f} "
        f"chain_floor_ms={chain['median_s'] * 1000:.1f} "
        f"ratio_chain={ratio['p50_over_chain_floor']:.2f}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=50, help="VMs to apply (default 50)")
    parser.add_argument(
        "--server",
        help="use this already-running API (e.g. http://127.0.0.1:7370) instead of "
        "starting a local cluster",
    )
    parser.add_argument(
        "--zookeeper",
        help="HOST:PORT of the ZooKeeper behind --server, for the floor's ZooKeeper part",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="VMs put through PVC and through the raw chain, untimed, before anything is "
        "timed, so the floors and PVC alike meet a warm ZooKeeper (default 50; 0: none)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="applies in flight at once (default 1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON result path (default bench/results/apply_latency.json, "
        "apply_latency_kvm.json with --kvm)",
    )
    parser.add_argument(
        "--zookeeper-auth",
        type=parse_identity,
        metavar="USER:PASSWORD_FILE",
        help="with --server: a ZooKeeper identity that reads the VMs' status (e.g. admin)",
    )
    parser.add_argument(
        "--root", default="/pvc", help="with --server: the cluster's ZooKeeper root (/pvc)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait, after the last apply, for every VM to be Running",
    )
    parser.add_argument(
        "--keep-state", action="store_true", help="keep the local cluster's state dir and logs"
    )
    parser.add_argument(
        "--keep-vms", action="store_true", help="with --server: do not delete the bench VMs"
    )
    parser.add_argument(
        "--kvm",
        action="store_true",
        help="one node on the host's real libvirtd (qemu:///system) running KVM guests; "
        "the floor is a raw define+start of the same XML there",
    )
    args = parser.parse_args(argv)
    if args.kvm and args.server:
        parser.error("--kvm starts its own cluster: it does not go with --server")
    if args.server and not args.zookeeper:
        parser.error("--server needs --zookeeper HOST:PORT: VMs are timed by a watch there")
    if args.vms < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--vms and --concurrency must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = now_iso()
    token = secrets.token_hex(2)
    with ExitStack() as stack:
        if args.server:
            target = stack.enter_context(
                existing_server(args.server, args.zookeeper, args.zookeeper_auth, args.root)
            )
        elif args.kvm:
            reason = kvm_unavailable_reason()
            if reason is not None:
                print(f"apply_latency --kvm: skipped: {reason}")
                return 0
            workdir = Path(tempfile.mkdtemp(prefix="pvc-bench-libvirtd-"))
            stack.callback(shutil.rmtree, workdir, True)
            daemon = stack.enter_context(system_libvirtd(workdir))
            target = stack.enter_context(
                local_cluster(args.vms, args.keep_state, daemon.uri, f"bench-{token}-")
            )
        else:
            target = stack.enter_context(local_cluster(args.vms, args.keep_state))
        result = run(args, target, token)
    result["machine"] = {
        "nproc": nproc(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    result["git"] = {"commit": git_commit(), "dirty": git_dirty()}
    result["started_at"] = started_at
    result["finished_at"] = now_iso()

    out: Path = args.out or (DEFAULT_OUT_KVM if args.kvm else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    # NaN is not JSON: write null instead.
    text = json.dumps(nan_to_none(result), indent=2)
    out.write_text(text + "\n")
    print_summary(result, out)
    return 0 if not result["apply_to_running"]["missing"] else 1


if __name__ == "__main__":
    sys.exit(main())
