"""Apply → Running latency of VirtualMachines, next to a floor measured in the same run.

Applies N VMs (default 50) to a local cluster (its own, started here, or an
existing one with --server), one POST /api/v1/apply per VM, and times each VM
from the moment its apply request is sent to the first time a background
poller sees it Running in GET /api/v1/vms. Beside that it measures a floor on
the same machine in the same run: a raw libvirt define+start on the test
driver the nodes use, plus one raw ZooKeeper set. It prints a summary and
writes every figure as JSON. See bench/README.md.

    .venv/bin/python bench/apply_latency.py                # 50 VMs, own cluster
    .venv/bin/python bench/apply_latency.py --vms 10
    .venv/bin/python bench/apply_latency.py --server http://127.0.0.1:7370 \
        --zookeeper 127.0.0.1:2181
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
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from benchlib import git_commit, git_dirty, nan_to_none, now_iso, nproc, percentile, summary
from floors import (
    NODE_CPUS,
    VM_MEMORY_MIB,
    kvm_floor,
    kvm_unavailable_reason,
    libvirt_floor,
    remove_domains,
    system_libvirtd,
    zookeeper_floor,
)

__all__ = [
    "Poller",
    "Target",
    "apply_one",
    "delete_vms",
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
POLL_INTERVAL_S = 0.020
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


def is_running(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return bool(status.get("phase") == "Running")


# -- the Running poller ---------------------------------------------------------------


@dataclass
class Poller:
    """Polls GET /api/v1/vms every `interval` seconds in one thread and records, per
    watched VM, the first time.monotonic() at which a list response showed it Running.

    The time recorded is when that response arrived, so it is late by at most one
    interval plus one list round trip: that bounds the resolution. The send time of
    the last list that did not yet show the VM Running is kept as a lower bound."""

    client: httpx.Client
    interval: float = POLL_INTERVAL_S
    running_at: dict[str, float] = field(default_factory=dict)
    not_running_sent: dict[str, float] = field(default_factory=dict)
    """Per VM, when the last list that did not show it Running was sent: a lower bound."""
    last_phase: dict[str, str] = field(default_factory=dict)
    list_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _watched: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, names: Sequence[str]) -> None:
        with self._lock:
            self._watched.update(names)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="running-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def pending(self) -> set[str]:
        with self._lock:
            return self._watched - self.running_at.keys()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            sent = time.monotonic()
            ok = False
            try:
                response = self.client.get("/api/v1/vms")
                response.raise_for_status()
                items: list[dict[str, Any]] = response.json()["items"]
                ok = True
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                items = []
            received = time.monotonic()
            self.list_latencies.append(received - sent)
            with self._lock:
                seen_running: set[str] = set()
                for item in items:
                    name = (item.get("metadata") or {}).get("name")
                    if name not in self._watched:
                        continue
                    self.last_phase[name] = str((item.get("status") or {}).get("phase"))
                    if is_running(item):
                        seen_running.add(name)
                        self.running_at.setdefault(name, received)
                if ok:
                    # Not Running in this list's snapshot, taken after `sent`.
                    for name in self._watched - seen_running - self.running_at.keys():
                        self.not_running_sent[name] = sent
            next_tick += self.interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # a slow list: do not try to catch up with a burst
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)


# -- the cluster ----------------------------------------------------------------------


@dataclass
class Target:
    server: str
    zookeeper: str | None
    mode: str  # "local" (started here) or "server" (existing)
    state_dir: Path | None = None
    node_memory: str | None = None
    libvirt_uri: str | None = None
    """A real libvirt the cluster's node runs on (--kvm); None for the test driver."""
    nodes: int | None = None


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
    from cli.localcluster.cluster import LocalCluster

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
            mode="kvm" if libvirt_uri else "local",
            state_dir=state_dir,
            node_memory=None if libvirt_uri else f"{node_mib}Mi",
            libvirt_uri=libvirt_uri,
            nodes=nodes,
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
def existing_server(server: str, zookeeper: str | None) -> Iterator[Target]:
    yield Target(server=server.rstrip("/"), zookeeper=zookeeper, mode="server")


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
    client = httpx.Client(base_url=target.server, timeout=30.0)
    poll_client = httpx.Client(base_url=target.server, timeout=30.0)
    try:
        health = client.get("/healthz")
        if health.status_code != 200:
            raise RuntimeError(f"{target.server}/healthz answered {health.status_code}")

        # Floor first, with the cluster up and idle: same machine, same run.
        if target.libvirt_uri:
            print(f"floor: {args.vms} raw libvirt define+start on {target.libvirt_uri} ...")
            lv = kvm_floor(args.vms, target.libvirt_uri, f"floor-{token}-")
        else:
            print(f"floor: {args.vms} raw libvirt define+start on the test driver ...")
            with tempfile.TemporaryDirectory(prefix="pvc-bench-floor-") as workdir:
                lv = libvirt_floor(args.vms, Path(workdir))
        zk: dict[str, Any] | None = None
        zk_note = None
        if target.zookeeper:
            print(f"floor: {args.vms} raw ZooKeeper sets against {target.zookeeper} ...")
            zk = zookeeper_floor(target.zookeeper, args.vms)
        else:
            zk_note = "no --zookeeper given with --server: the ZooKeeper part of the floor is 0"
            print(f"floor: {zk_note}")
        floor_per_vm = lv["median_s"] + (zk["median_s"] if zk else 0.0)

        # The applies, with the poller watching from before the first one.
        poller = Poller(poll_client, interval=args.poll_interval)
        poller.watch(names)
        poller.start()
        sent_at: dict[str, float] = {}
        request_latency: dict[str, float] = {}
        outcomes: dict[str, int] = {}
        print(f"applying {args.vms} VMs (concurrency {args.concurrency}) ...")
        first_sent = time.monotonic()
        try:

            def worker(name: str) -> tuple[float, float, str]:
                return apply_one(client, name)

            if args.concurrency <= 1:
                results = [worker(n) for n in names]
            else:
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    results = list(pool.map(worker, names))
            for name, (sent, latency, outcome) in zip(names, results, strict=True):
                sent_at[name] = sent
                request_latency[name] = latency
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            applies_done = time.monotonic()
            deadline = applies_done + args.timeout
            while poller.pending() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            poller.stop()
        last_seen = max(poller.running_at.values(), default=math.nan)

        latencies = {n: poller.running_at[n] - sent_at[n] for n in names if n in poller.running_at}
        lower = {
            n: max(0.0, poller.not_running_sent.get(n, sent_at[n]) - sent_at[n]) for n in latencies
        }
        missing = sorted(set(names) - latencies.keys())
        values = list(latencies.values())
        a2r = summary(values)
        req = summary(list(request_latency.values()))
        p50 = percentile(values, 50)
        p99 = percentile(values, 99)

        problems = log_problems(target.state_dir)
        cleanup: dict[str, Any] | None = None
        if (target.mode == "server" and not args.keep_vms) or target.libvirt_uri:
            print("deleting the bench VMs ...")
            cleanup = delete_vms(client, names, timeout=60.0)
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
                "vm_spec": {"memory": f"{VM_MEMORY_MIB}Mi", "vcpus": 1},
                "mode": target.mode,
                "server": target.server,
                "zookeeper": target.zookeeper,
                "nodes": target.nodes,
                "libvirt_uri": target.libvirt_uri,
                "node_memory": target.node_memory,
                "poll_interval_s": args.poll_interval,
                "timeout_s": args.timeout,
                "name_prefix": f"bench-{token}-",
            },
            "resolution": {
                "poll_interval_s": args.poll_interval,
                "note": (
                    "Running is detected by polling GET /api/v1/vms; each apply->Running "
                    "figure is late by up to one poll interval plus one list round trip"
                ),
                "polls": len(poller.list_latencies),
                "list_request": summary(poller.list_latencies),
                "poll_errors": poller.errors,
            },
            "apply_to_running": {
                **a2r,
                "reached_running": len(values),
                "missing": missing,
                "missing_last_phase": {n: poller.last_phase.get(n) for n in missing},
                "wall_s": last_seen - first_sent if values else math.nan,
                "applies_wall_s": applies_done - first_sent,
            },
            "apply_to_running_lower_bound": {
                **summary(list(lower.values())),
                "note": (
                    "from the apply to the send time of the last list that did not show the VM "
                    "Running; the true figure lies between this and apply_to_running"
                ),
            },
            "apply_request": req,
            "apply_outcomes": outcomes,
            "floor": {
                "per_vm_s": floor_per_vm,
                "definition": "median(libvirt define+start) + median(ZooKeeper set)",
                "libvirt_define_start": lv,
                "zookeeper_set": zk,
                "note": zk_note,
            },
            "ratio": {
                "p50_over_floor": p50 / floor_per_vm,
                "p99_over_floor": p99 / floor_per_vm,
                "p50_target": TARGET_RATIO.get(target.mode),
            },
            "per_vm": [
                {
                    "name": n,
                    "apply_request_s": request_latency[n],
                    "apply_to_running_s": latencies.get(n),
                    "apply_to_running_lower_bound_s": lower.get(n),
                }
                for n in names
            ],
            "cleanup": cleanup,
            "log_problems": problems,
        }
    finally:
        client.close()
        poll_client.close()


def print_summary(result: dict[str, Any], out: Path) -> None:
    cfg = result["config"]
    a2r = result["apply_to_running"]
    req = result["apply_request"]
    floor = result["floor"]
    zk = floor["zookeeper_set"]
    nan = math.nan
    print()
    print(
        f"apply_latency: {cfg['vms']} VMs, concurrency {cfg['concurrency']}, "
        f"{result['machine']['nproc']} CPUs, mode {cfg['mode']}, "
        f"poll {cfg['poll_interval_s'] * 1000:.0f} ms"
    )
    print(
        f"  apply->Running  p50 {ms(a2r.get('p50_s', nan))}  p99 {ms(a2r.get('p99_s', nan))}  "
        f"mean {ms(a2r.get('mean_s', nan))}  max {ms(a2r.get('max_s', nan))}  "
        f"({a2r['reached_running']}/{cfg['vms']} Running)"
    )
    low = result["apply_to_running_lower_bound"]
    print(
        f"    lower bound   p50 {ms(low.get('p50_s', nan))}  p99 {ms(low.get('p99_s', nan))}  "
        f"(last poll not yet showing Running)"
    )
    print(f"  apply request   p50 {ms(req.get('p50_s', nan))}  p99 {ms(req.get('p99_s', nan))}")
    print(
        f"  floor per VM    {ms(floor['per_vm_s'])} = libvirt define+start "
        f"{ms(floor['libvirt_define_start']['median_s'])} + ZooKeeper set "
        f"{ms(zk['median_s']) if zk else 'skipped'}"
    )
    ratio = result["ratio"]
    target = ratio.get("p50_target")
    verdict = ""
    if target:
        ok = ratio["p50_over_floor"] <= target
        verdict = f"  (target p50 <= {target:g}x: {'met' if ok else 'NOT met'})"
    print(
        f"  ratio           p50/floor {ratio['p50_over_floor']:.2f}x  "
        f"p99/floor {ratio['p99_over_floor']:.2f}x{verdict}"
    )
    list_p50 = result["resolution"]["list_request"].get("p50_s", nan)
    print(
        f"  resolution      poll {cfg['poll_interval_s'] * 1000:.0f} ms, "
        f"{result['resolution']['polls']} polls, list p50 {ms(list_p50)}"
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
        "--poll-interval",
        type=float,
        default=POLL_INTERVAL_S,
        help="seconds between GET /api/v1/vms polls (default 0.02)",
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
    if args.vms < 1 or args.concurrency < 1 or args.poll_interval <= 0:
        parser.error("--vms and --concurrency must be >= 1 and --poll-interval > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = now_iso()
    token = secrets.token_hex(2)
    with ExitStack() as stack:
        if args.server:
            target = stack.enter_context(existing_server(args.server, args.zookeeper))
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
