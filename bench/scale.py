"""Scale: 64 simulated nodes and 10,000 VMs on one ZooKeeper (issue 16), measured from outside.

    .venv/bin/python bench/scale.py                          # 64 nodes, 10,000 VMs
    .venv/bin/python bench/scale.py --nodes 16 --vms 1000    # a quick run
    .venv/bin/python bench/scale.py --skip-ha                # no kill / flush phases

A real local cluster (localcluster: one ZooKeeper, pvcapid, real pvcnoded daemons on
libvirt test-driver hosts): 3 coordinators, each in a process of its own (one of them the
primary), the other nodes ``--per-process`` to a process (controllers/simhost.py: each node a
real Daemon with its own hypervisor, session, lease, heartbeat and controllers). In order:

1. Floor: raw kazoo async creates of ``--vms`` znodes of a VM's size (what the API's writes
   cost with no PVC code), and raw libvirt define+start on one test-driver host.
2. Idle ZooKeeper writes/s with no VMs at 1/4, 1/2 and all of ``--nodes`` (the cluster grows
   between), read from ZooKeeper's own zxid (``srvr``), each over ``--idle-window`` seconds.
3. ``--vms`` VMs applied at once: ``POST /api/v1/apply`` with ``--batch`` documents each,
   ``--concurrency`` in flight; time until every VM is Running (a list every second).
4. At that scale: idle writes/s, RSS and CPU of the primary's process and of one packed
   process (per node), watches per process (``wchc``), ``pvcctl get vms`` and ``-o json``
   (the real pvcctl, median of 3).
5. Flush of the node holding the most VMs: time until it holds none; then ready again.
6. The fast fencing profile; SIGKILL of one packed process (``--per-process`` nodes at once):
   time until every VM of theirs is Running elsewhere. No VM placed on a dead node: each dead
   node's index (``/index/nodes/<node>``, written in the placement's transaction) only loses
   children, checked with ZooKeeper's child version counter (``cversion``: every create and
   delete of a child counts one); every VM on exactly one node by the node hypervisors'
   domain lists (Node status ``domains``, each node's libvirt listing).
7. The default profile again; VMs deleted down to 1/2 and 1/4 of ``--vms``: idle writes/s at
   each, for the slope over VMs.

Last line: ``converge_s=… agent_rss_mb=… primary_rss_mb=… get_vms_s=… idle_writes_per_s=…``.
JSON: bench/results/scale.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from benchlib import REPO_ROOT, now_iso
from floors import libvirt_floor, warm_zookeeper
from halib import cluster_object, environment, write_json

from localcluster import observe
from localcluster.cluster import LocalCluster
from localcluster.zkauth import admin_auth_data

PROFILES = {
    "fast": {"keepaliveInterval": "1s", "fenceIntervals": 3, "savingThrows": 3},
    "default": {"keepaliveInterval": "5s", "fenceIntervals": 6, "savingThrows": 6},
}
GOALS = {"converge_s": 60.0, "agent_rss_mb": 100.0, "primary_rss_mb": 250.0, "get_vms_s": 1.0}
VM_MEMORY = "64Mi"
PVCCTL = str(Path(sys.executable).parent / "pvcctl")


def vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"pvc-bench": "scale"}},
        "spec": {"memory": VM_MEMORY, "vcpus": 1},
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Cluster:
    """The API and ZooKeeper of the running local cluster, as the bench uses them."""

    def __init__(self, local: LocalCluster, http_timeout: float = 600.0) -> None:
        self.local = local
        state = local.load_state()
        assert state is not None
        self.state = state
        self.server = LocalCluster.server_url(state)
        self.zk_port = state.zookeeper_port
        self.http = httpx.Client(base_url=self.server, timeout=http_timeout)

    def refresh(self) -> None:
        state = self.local.load_state()
        assert state is not None
        self.state = state

    def vms(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/vms")
        response.raise_for_status()
        return list(response.json()["items"])

    def vm_rows(self) -> dict[str, dict[str, str]]:
        return vm_rows(self.http)

    def nodes(self) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/nodes")
        response.raise_for_status()
        return list(response.json()["items"])

    def apply(self, objects: list[dict[str, Any]]) -> None:
        response = self.http.post("/api/v1/apply", json=objects)
        if response.status_code != 200:
            raise RuntimeError(f"apply: {response.status_code} {response.text[:300]}")

    def post(self, path: str) -> None:
        response = self.http.post(path)
        if response.status_code >= 300:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")

    def delete_vm(self, name: str) -> None:
        response = self.http.delete(f"/api/v1/vms/{name}")
        if response.status_code not in (200, 202, 404):
            raise RuntimeError(f"DELETE {name}: {response.status_code} {response.text[:300]}")

    def set_profile(self, profile: str) -> None:
        self.apply([cluster_object(PROFILES[profile])])

    def kazoo(self) -> Any:
        from kazoo.client import KazooClient

        client = KazooClient(
            hosts=self.state.zookeeper_hosts,
            timeout=15.0,
            auth_data=admin_auth_data(self.local.dir),
        )
        client.start(timeout=30)
        return client

    def primary(self) -> str | None:
        response = self.http.get("/api/v1/clusters/cluster")
        if response.status_code != 200:
            return None
        return (response.json().get("status") or {}).get("primary")


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def vm_rows(http: httpx.Client) -> dict[str, dict[str, str]]:
    """Each VM's phase and node, from the table the API builds (``?view=table``, what
    ``pvcctl get vms`` reads): some 100 bytes a VM instead of the whole object, so looking
    every second over 10,000 VMs does not load the machine it measures."""
    response = http.get("/api/v1/vms", params={"view": "table"})
    response.raise_for_status()
    table = response.json()
    columns = [c.lower() for c in table["columns"]]
    rows = [dict(zip(columns, row, strict=True)) for row in table["rows"]]
    return {r["name"]: {"phase": r["phase"], "node": r["node"]} for r in rows}


def running_where(rows: dict[str, dict[str, str]]) -> dict[str, str]:
    """VM name -> node, for the VMs whose status says Running (rows: ``Cluster.vm_rows``)."""
    return {
        name: row["node"]
        for name, row in rows.items()
        if row["phase"] == "Running" and row["node"] not in ("", "-")
    }


# -- floors ------------------------------------------------------------------------------


def kazoo_create_floor(cluster: Cluster, count: int) -> dict[str, Any]:
    """``count`` async creates of a VM-sized value under a scratch path, all in flight at
    once (the fastest a Python client writes them), then removed."""
    client = cluster.kazoo()
    value = json.dumps(vm("floor-0000")).encode()
    root = "/pvc-bench-scale-floor"
    try:
        client.ensure_path(root)
        started = time.perf_counter()
        pending = [client.create_async(f"{root}/v{i:05d}", value) for i in range(count)]
        for result in pending:
            result.get()
        elapsed = time.perf_counter() - started
        for batch in range(0, count, 500):
            txn = client.transaction()
            for i in range(batch, min(batch + 500, count)):
                txn.delete(f"{root}/v{i:05d}")
            txn.commit()
        client.delete(root)
    finally:
        client.stop()
        client.close()
    return {"count": count, "seconds": elapsed, "per_s": count / elapsed}


# -- idle cost ---------------------------------------------------------------------------


def idle_writes(
    cluster: Cluster, window: float, settle: float, ceiling: float | None = None
) -> dict[str, Any]:
    """Writes/s once the rate has settled: two windows in a row within 20 % (+1/s) and, with
    ``ceiling``, at most that rate (a converge's tail, its events and last statuses still
    draining, can hold a steady rate for a while and two such windows agree); at most
    ``settle`` s of windows before the last one. ``settled`` says whether it did."""
    deadline = time.monotonic() + settle
    previous: float | None = None
    settled = False
    while True:
        rate, count = observe.writes_per_second(cluster.zk_port, window)
        agree = previous is not None and abs(rate - previous) <= 0.2 * previous + 1.0
        if agree and (ceiling is None or rate <= ceiling):
            settled = True
            break
        if time.monotonic() >= deadline:
            break
        previous = rate
    nodes = len(cluster.nodes())
    return {
        "nodes": nodes,
        "vms": observe_vm_count(cluster),
        "writes_per_s": rate,
        "writes": count,
        "window_s": window,
        "settled": settled,
        "znodes": observe.znode_count(cluster.zk_port),
        "watches": observe.watch_total(cluster.zk_port),
    }


def observe_vm_count(cluster: Cluster) -> int:
    return len(cluster.vm_rows())


def slope(points: list[dict[str, Any]], x: str) -> float | None:
    """Least-squares slope of writes_per_s over ``x``."""
    xs = [float(p[x]) for p in points]
    ys = [float(p["writes_per_s"]) for p in points]
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((a - mean_x) * (b - mean_y) for a, b in zip(xs, ys, strict=True))
    den = sum((a - mean_x) ** 2 for a in xs)
    return num / den


# -- processes ---------------------------------------------------------------------------


def process_of(cluster: Cluster, node: str) -> int:
    cluster.refresh()
    return int(cluster.state.nodes[node])


def packed_processes(cluster: Cluster) -> dict[int, list[str]]:
    """PID -> its nodes, for processes running more than one node."""
    cluster.refresh()
    by_pid: dict[int, list[str]] = {}
    for name, pid in cluster.state.nodes.items():
        by_pid.setdefault(int(pid), []).append(name)
    return {pid: names for pid, names in by_pid.items() if len(names) > 1}


@contextmanager
def cpu_during(pids: dict[str, int]) -> Iterator[dict[str, Any]]:
    """CPU share (percent of one core) of each named process over the block."""
    before = {k: observe.sample(p) for k, p in pids.items()}
    result: dict[str, Any] = {}
    yield result
    for key, pid in pids.items():
        after = observe.sample(pid)
        result[key] = {
            "cpu_percent": observe.cpu_percent(before[key], after),
            "rss_mb": after.rss_mb,
        }


def process_figures(cluster: Cluster, window: float) -> dict[str, Any]:
    primary = cluster.primary()
    assert primary is not None
    primary_pid = process_of(cluster, primary)
    packed = packed_processes(cluster)
    agent_pid, agent_nodes = max(packed.items(), key=lambda kv: len(kv[1]))
    with cpu_during({"primary": primary_pid, "agent": agent_pid}) as idle:
        time.sleep(window)
    pids = [primary_pid, agent_pid, cluster.state.api_pid]
    watches = observe.watches_by_process(cluster.zk_port, pids)
    per_node = len(agent_nodes)
    return {
        "primary": {
            "node": primary,
            "pid": primary_pid,
            "rss_mb": idle["primary"]["rss_mb"],
            "idle_cpu_percent": idle["primary"]["cpu_percent"],
            "watches": watches[primary_pid],
        },
        "agent_process": {
            "nodes": agent_nodes,
            "pid": agent_pid,
            "rss_mb": idle["agent"]["rss_mb"],
            "rss_mb_per_node": idle["agent"]["rss_mb"] / per_node,
            "idle_cpu_percent": idle["agent"]["cpu_percent"],
            "idle_cpu_percent_per_node": idle["agent"]["cpu_percent"] / per_node,
            "watches": watches[agent_pid],
            "watches_per_node": watches[agent_pid] / per_node,
        },
        "api": {"pid": cluster.state.api_pid, "watches": watches[cluster.state.api_pid]},
        "watches_total": observe.watch_total(cluster.zk_port),
    }


# -- phases ------------------------------------------------------------------------------


def apply_all(cluster: Cluster, names: list[str], batch: int, concurrency: int) -> float:
    batches = [names[i : i + batch] for i in range(0, len(names), batch)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda b: cluster.apply([vm(n) for n in b]), batches))
    return time.monotonic() - started


@contextmanager
def timeline(
    cluster: Cluster, wanted: set[str], every: float = 2.0
) -> Iterator[list[dict[str, Any]]]:
    """Every ``every`` seconds while the block runs, how many of ``wanted`` the API lists,
    how many the scheduler has placed (node index entries), how many a node has taken
    (``status.node``) and how many are Running: where a converge's time goes (writing,
    placing, starting), logged and kept for the JSON."""
    points: list[dict[str, Any]] = []
    stop = threading.Event()
    started = time.monotonic()
    http = httpx.Client(base_url=cluster.server, timeout=60.0)
    zk = cluster.kazoo()
    index = cluster.state.root + "/index/nodes"

    def placements() -> int:
        """Entries in every node's index: the placements the scheduler has written."""
        nodes = zk.get_children(index)
        counts = [zk.get_children_async(f"{index}/{n}") for n in nodes]
        return sum(len([v for v in c.get() if v in wanted]) for c in counts)

    def run() -> None:
        while not stop.wait(every):
            try:
                placed_by_scheduler = placements()
            except Exception:  # the bench goes on without the figure
                placed_by_scheduler = -1
            try:
                rows = vm_rows(http)
            except (httpx.HTTPError, ValueError, KeyError):
                continue
            listed = placed = running = 0
            for name, row in rows.items():
                if name not in wanted:
                    continue
                listed += 1
                placed += row["node"] not in ("", "-")
                running += row["phase"] == "Running"
            point = {"t_s": round(time.monotonic() - started, 1), "listed": listed}
            point.update(placed=placed_by_scheduler, on_a_node=placed, running=running)
            points.append(point)
            log(
                f"  t={point['t_s']:.0f}s listed={listed} placed={placed_by_scheduler} "
                f"on-a-node={placed} running={running}"
            )

    thread = threading.Thread(target=run, name="timeline", daemon=True)
    thread.start()
    try:
        yield points
    finally:
        stop.set()
        thread.join(65)
        http.close()
        zk.stop()
        zk.close()


def cpu_by_role(cluster: Cluster) -> dict[str, list[int]]:
    """The cluster's processes by role: primary, other coordinators, packed node agents,
    pvcapid, ZooKeeper (for where a phase's CPU goes)."""
    primary_pid = process_of(cluster, cluster.primary() or "node1")
    packed = packed_processes(cluster)
    others = {int(p) for p in cluster.state.nodes.values()} - set(packed) - {primary_pid}
    return {
        "primary": [primary_pid],
        "coordinators": sorted(others),
        "agents": sorted(packed),
        "api": [cluster.state.api_pid],
        "zookeeper": [cluster.state.zookeeper_pid] if cluster.state.zookeeper_pid else [],
    }


@contextmanager
def cpu_seconds(roles: dict[str, list[int]]) -> Iterator[dict[str, float]]:
    """CPU seconds (user + system) each role's processes used over the block."""
    before = {r: sum(observe.sample(p).cpu_seconds for p in pids) for r, pids in roles.items()}
    result: dict[str, float] = {}
    yield result
    for role, pids in roles.items():
        result[role] = round(sum(observe.sample(p).cpu_seconds for p in pids) - before[role], 2)


@contextmanager
def zookeeper_traffic(port: int, vms: int) -> Iterator[dict[str, float]]:
    """Per VM over the block: requests ZooKeeper received, packets it sent (answers and
    watch notifications) and writes it committed (zxids)."""
    before = observe.packets(port)
    result: dict[str, float] = {}
    yield result
    after = observe.packets(port)
    for key, old, new in zip(("requests", "sent", "writes"), before, after, strict=True):
        result[key] = round((new - old) / vms, 1)


def converge(cluster: Cluster, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    wanted = set(names)
    with (
        timeline(cluster, wanted) as points,
        cpu_seconds(cpu_by_role(cluster)) as spent,
        zookeeper_traffic(cluster.zk_port, len(names)) as traffic,
        cpu_during(
            {
                "primary": process_of(cluster, cluster.primary() or "node1"),
                "api": cluster.state.api_pid,
            }
        ) as cpu,
    ):
        started = time.monotonic()
        applied = apply_all(cluster, names, args.batch, args.concurrency)
        log(f"applied {len(names)} VMs in {applied:.1f} s")
        running: dict[str, str] = {}

        def all_running() -> bool:
            nonlocal running
            running = {k: v for k, v in running_where(cluster.vm_rows()).items() if k in wanted}
            return len(running) == len(wanted)

        try:
            wait(all_running, args.timeout, f"{len(names)} VMs Running")
            seconds = time.monotonic() - started
        except TimeoutError:
            seconds = float("nan")
            log(f"only {len(running)} of {len(wanted)} Running after {args.timeout} s")
    per_node: dict[str, int] = {}
    for node in running.values():
        per_node[node] = per_node.get(node, 0) + 1
    return {
        "vms": len(names),
        "apply_s": applied,
        "converge_s": seconds,
        "running": len(running),
        "per_node_min": min(per_node.values(), default=0),
        "per_node_max": max(per_node.values(), default=0),
        "cpu_during": cpu,
        "cpu_seconds": spent,
        "cpu_ms_per_vm": {r: round(1000 * v / len(names), 2) for r, v in spent.items()},
        "zookeeper_per_vm": traffic,
        "timeline": points,
    }


def pvcctl_timing(cluster: Cluster, *extra: str) -> dict[str, Any]:
    env = {**os.environ, "PVC_SERVER": cluster.server}
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        result = subprocess.run(
            [PVCCTL, "get", "vms", *extra], capture_output=True, env=env, timeout=300
        )
        samples.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(f"pvcctl get vms {' '.join(extra)}: {result.stderr[-300:]!r}")
    return {"median_s": statistics.median(samples), "samples_s": samples}


def flush_one(cluster: Cluster, timeout: float) -> dict[str, Any]:
    where = running_where(cluster.vm_rows())
    counts: dict[str, int] = {}
    for node in where.values():
        counts[node] = counts.get(node, 0) + 1
    primary = cluster.primary()
    node = max((n for n in counts if n != primary), key=lambda n: counts[n])
    started = time.monotonic()
    cluster.post(f"/api/v1/nodes/{node}/flush")

    def empty() -> bool:
        # The drain says flushed only once no VM is placed there, none is moving and none
        # holds it; and its node lists no domain. Nodes only (64 objects): listing 10,000
        # VMs every look loaded the machine the flush runs on.
        items = cluster.nodes()
        status = next(i.get("status") or {} for i in items if i["metadata"]["name"] == node)
        return status.get("domainState") == "flushed" and not status.get("domains")

    wait(empty, timeout, f"{node} flushed", interval=0.25)
    assert not any(n == node for n in running_where(cluster.vm_rows()).values())
    seconds = time.monotonic() - started
    log(f"flush of {node} ({counts[node]} VMs): {seconds:.1f} s")
    cluster.post(f"/api/v1/nodes/{node}/ready")

    def settled() -> bool:
        # The unflush done (every VM Running, the node ready again) before the next phase,
        # so the kill's count of placements on dead nodes sees none made while the node
        # was still alive.
        items = cluster.nodes()
        status = next(i.get("status") or {} for i in items if i["metadata"]["name"] == node)
        rows = cluster.vm_rows()
        return status.get("domainState") == "ready" and len(running_where(rows)) == len(rows)

    wait(settled, timeout, f"{node} ready again, every VM Running", interval=5.0)
    return {"node": node, "vms": counts[node], "seconds": seconds}


def kill_group(cluster: Cluster, timeout: float) -> dict[str, Any]:
    cluster.set_profile("fast")
    time.sleep(3.0)  # every node heartbeats at the new interval
    primary = cluster.primary()
    packed = packed_processes(cluster)
    pid, victims = max(packed.items(), key=lambda kv: len(kv[1]))
    before = running_where(cluster.vm_rows())
    theirs = {vm_name for vm_name, node in before.items() if node in victims}
    client = cluster.kazoo()
    index = {n: cluster.state.root + f"/index/nodes/{n}" for n in victims}
    start_stats = {n: client.exists(p) for n, p in index.items()}
    start_children = {n: set(client.get_children(p)) for n, p in index.items()}
    log(f"killing pid {pid}: {len(victims)} nodes, {len(theirs)} VMs (primary {primary})")
    started = time.monotonic()
    os.kill(pid, 9)
    moved: dict[str, str] = {}

    def recovered() -> bool:
        nonlocal moved
        now = running_where(cluster.vm_rows())
        moved = {k: v for k, v in now.items() if k in theirs and v not in victims}
        return len(moved) == len(theirs)

    try:
        wait(recovered, timeout, "the dead nodes' VMs Running elsewhere", interval=1.0)
        seconds = time.monotonic() - started
    except TimeoutError:
        seconds = float("nan")
    # Placements on the dead nodes: their index may only have lost children since the kill.
    added: dict[str, int] = {}
    for n, p in index.items():
        stat = client.exists(p)
        children = set(client.get_children(p)) if stat else set()
        first = start_stats[n]
        changes = (stat.cversion if stat else 0) - (first.cversion if first else 0)
        removed = len(start_children[n] - children)
        added[n] = max(0, changes - removed) + len(children - start_children[n])
    client.stop()
    client.close()
    hosts: dict[str, list[str]] = {}
    for item in cluster.nodes():
        status = item.get("status") or {}
        # A dead node's status is its last heartbeat, not its hypervisor (gone with it).
        if item["metadata"]["name"] in victims or status.get("daemonState") != "run":
            continue
        for domain in status.get("domains") or []:
            hosts.setdefault(domain, []).append(item["metadata"]["name"])
    doubles = {k: v for k, v in hosts.items() if len(v) > 1}
    cluster.set_profile("default")
    log(
        f"kill of {len(victims)} nodes: {len(moved)}/{len(theirs)} VMs elsewhere in "
        f"{seconds:.1f} s; placed on a dead node: {sum(added.values())}; "
        f"on two nodes: {len(doubles)}"
    )
    return {
        "nodes": victims,
        "vms": len(theirs),
        "recovered": len(moved),
        "seconds": seconds,
        "placed_on_dead_node": sum(added.values()),
        "placed_on_dead_node_by_node": added,
        "on_two_nodes": doubles,
    }


def delete_down_to(cluster: Cluster, names: list[str], keep: int, concurrency: int) -> float:
    doomed = names[keep:]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(cluster.delete_vm, doomed))
    gone = set(doomed)
    wait(
        lambda: not gone.intersection(cluster.vm_rows()),
        600,
        f"{len(doomed)} VMs deleted",
    )
    del names[keep:]
    return time.monotonic() - started


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--per-process", type=int, default=8, help="nodes per simhost process")
    parser.add_argument("--coordinators", type=int, default=3)
    parser.add_argument("--batch", type=int, default=250, help="documents per apply request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--http-timeout", type=float, default=600.0, help="per request, seconds")
    parser.add_argument("--idle-window", type=float, default=20.0, help="seconds per idle figure")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    parser.add_argument("--skip-ha", action="store_true", help="no flush and kill phases")
    parser.add_argument("--keep-state", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/scale.json")
    args = parser.parse_args(argv)
    # A SIGTERM (a CI timeout, a kill) stops the cluster too: it runs the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    node_mib = max(8192, (args.vms * 64 * 4) // max(1, args.nodes - args.per_process) + 2048)
    state_dir = Path(tempfile.mkdtemp(prefix="pvc-bench-scale-"))
    result: dict[str, Any] = {
        "config": vars(args) | {"out": str(args.out)},
        "started_at": now_iso(),
    }
    least = args.coordinators + 1
    steps = sorted({max(least, args.nodes // 4), max(least, args.nodes // 2), args.nodes})
    local = LocalCluster(
        state_dir,
        nodes=steps[0],
        api_port=0,
        node_memory=f"{node_mib}Mi",
        session_timeout="6s",
        coordinators=args.coordinators,
        nodes_per_process=args.per_process,
    )
    failed = True
    try:
        started = time.monotonic()
        local.up(timeout=args.timeout)
        cluster = Cluster(local, args.http_timeout)
        log(f"cluster of {steps[0]} nodes up in {time.monotonic() - started:.1f} s ({state_dir})")
        cluster.set_profile("default")
        # Nothing measured on a cold server: a fresh ZooKeeper's JIT compiler takes a third
        # of a core over its first 15-25 s of load, which a server in service does not.
        warmup = warm_zookeeper(f"127.0.0.1:{cluster.zk_port}", cluster.state.zookeeper_pid)
        result["zookeeper_warmup"] = warmup
        log(
            f"ZooKeeper warmed up: {warmup['requests']} requests in {warmup['seconds']} s "
            f"(compiler CPU per {warmup['window_s']:g} s: {warmup['jit_cpu_s_per_window']})"
        )
        result["floor"] = {
            "kazoo_creates": kazoo_create_floor(cluster, args.vms),
            "libvirt": {
                k: v
                for k, v in libvirt_floor(min(args.vms, 2000), state_dir).items()
                if k != "samples_s"
            },
        }
        log(f"floor: {result['floor']['kazoo_creates']['per_s']:.0f} raw creates/s")
        nodes_points = []
        for step in steps:
            if step > local.node_count:
                began = time.monotonic()
                local.grow(step, timeout=args.timeout)
                log(f"grew to {step} nodes in {time.monotonic() - began:.1f} s")
            point = idle_writes(cluster, args.idle_window, settle=60.0)
            nodes_points.append(point)
            log(f"idle at {step} nodes, 0 VMs: {point['writes_per_s']:.2f} writes/s")
        names = [f"scale-{i:05d}" for i in range(args.vms)]
        result["converge"] = converge(cluster, names, args)
        log(f"converge of {args.vms} VMs: {result['converge']['converge_s']:.1f} s")
        log(f"  CPU ms per VM by role: {result['converge']['cpu_ms_per_vm']}")
        log(f"  ZooKeeper per VM: {result['converge']['zookeeper_per_vm']}")
        # A VM point counts as idle once within 10x the no-VM rate at this node count: a
        # per-VM cost shows anyway (800 VMs writing once every 10 s is 80/s), while the
        # converge's tail (thousands of writes/s for tens of seconds) is waited out.
        ceiling = 10 * nodes_points[-1]["writes_per_s"] + 10.0
        vms_points = [idle_writes(cluster, args.idle_window, settle=180.0, ceiling=ceiling)]
        log(f"idle at {args.vms} VMs: {vms_points[0]['writes_per_s']:.2f} writes/s")
        result["processes"] = process_figures(cluster, args.idle_window)
        result["get_vms"] = {
            "table": pvcctl_timing(cluster),
            "json": pvcctl_timing(cluster, "-o", "json"),
        }
        log(f"pvcctl get vms: {result['get_vms']}")
        if not args.skip_ha:
            result["flush"] = flush_one(cluster, args.timeout)
            result["kill"] = kill_group(cluster, args.timeout)
        for keep in (args.vms // 2, args.vms // 4):
            seconds = delete_down_to(cluster, names, keep, args.concurrency)
            log(f"deleted down to {keep} VMs in {seconds:.1f} s")
            vms_points.append(idle_writes(cluster, args.idle_window, settle=180.0, ceiling=ceiling))
            vms_points[-1]["deleted_in_s"] = seconds
        result["idle"] = {
            "over_nodes": nodes_points,
            "over_vms": vms_points,
            "slope_per_node": slope(nodes_points, "nodes"),
            "slope_per_vm": slope(vms_points, "vms"),
        }
        floor_s = result["floor"]["kazoo_creates"]["seconds"]
        result["ratio"] = {"converge_to_kazoo_creates": result["converge"]["converge_s"] / floor_s}
        failed = False
    finally:
        local.down()
        result["finished_at"] = now_iso()
        result.update(environment())
        write_json(args.out, result)
        if args.keep_state or failed:
            print(f"state dir (logs) kept at {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
    figures = {
        "converge_s": result["converge"]["converge_s"],
        "agent_rss_mb": result["processes"]["agent_process"]["rss_mb_per_node"],
        "primary_rss_mb": result["processes"]["primary"]["rss_mb"],
        "get_vms_s": result["get_vms"]["table"]["median_s"],
        "idle_writes_per_s": vms_points[0]["writes_per_s"],
    }
    result["goals"] = {k: {"goal": GOALS.get(k), "value": v} for k, v in figures.items()}
    write_json(args.out, result)
    print(
        f"idle slope: {result['idle']['slope_per_node']} writes/s per node, "
        f"{result['idle']['slope_per_vm']} per VM"
    )
    print(" ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "scale"
    sys.exit(main())
