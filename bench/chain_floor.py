"""The chain floor of apply → Running: PVC's reconcile chain done raw with kazoo and libvirt,
no PVC code, on the same machine in the same run; and the watch that times a VM to Running.

PVC turns an apply into a running domain through a chain of actors, each of which can
only act once the previous one's write reached it through a ZooKeeper watch. The floor
does the same chain with the same actors (one process per node daemon, the scheduler a
thread of the first one, sharing its session as the primary shares its daemon's; the
bench's own process is the API), the same watches and the same sequential round trips
that the design's safety rules need, and nothing else:

1. API: ``create`` of the VM's spec znode (1 round trip).
2. Scheduler: a children watch on the VMs fires (hop 1) and hands the change to a worker
   thread, which reads the children again (re-arming the watch) and then the new VM's
   spec (2 round trips: what PVC's informer, zkstore.subtree, does on a new child).
3. Scheduler: one transaction: check the epoch's version (a deposed primary's write
   fails), create the placement, create the node's index entry (1 round trip).
4. Node: a children watch on its index fires (hop 2), its worker reads the children
   again, then the entry and the VM's spec, sent together (2 round trips).
5. Node, the claim (the one-copy rule) of a new VM: one transaction that checks the entry
   exists as it commits and creates the holder set with its holder znode, so the node is
   the sole holder with no read of the set; the index entry's read sent right behind it
   (1 round trip). It starts only as the sole holder, only for the placement ZooKeeper
   holds (epoch-checked). Until 2026-12-01 the design needed a synced read of the set
   after the claim, and this floor had that round trip too (8 in all).
6. libvirt ``defineXML`` + ``create`` of the same 64 MiB domain PVC's driver defines, on
   a test-driver host of the node's own.
7. Node: the status write, Running (1 round trip).
8. The observer: a data watch on the status fires (hop 3), and it reads the status
   (1 round trip): exactly how the PVC run is timed too (``StatusWatch``).

So 7 sequential round trips and 3 watch hops, plus define+start. What PVC does beyond
that (its API's validation and reads, informer caches, work queues, status reads,
events, published domain XML, a Starting status) is what the ratio measures.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import secrets
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

from benchlib import summary
from hops import summarize, vm_hops

VM_MEMORY_MIB = 64
RUNNING = b'{"phase": "Running"}'


def kazoo_client(hosts: str, auth: tuple[str, str] | None = None) -> Any:
    from kazoo.client import KazooClient

    auth_data = [("digest", f"{auth[0]}:{auth[1]}")] if auth else None
    client = KazooClient(hosts=hosts, timeout=10.0, auth_data=auth_data)
    client.start(timeout=30)
    return client


class StatusWatch:
    """Times VMs to Running with a data watch on each one's status znode: the time is when
    the watch's read showing ``phase: Running`` returned, in this process (monotonic).

    ``expect(name)`` before the apply (it sets the watch: one round trip, not timed),
    ``wait(name, timeout)`` after it."""

    def __init__(self, client: Any, status_path: Any) -> None:
        self.client = client
        self.status_path = status_path
        self.running_at: dict[str, float] = {}
        self.last_phase: dict[str, str | None] = {}
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def expect(self, name: str) -> None:
        from kazoo.recipe.watchers import DataWatch

        done = threading.Event()
        with self._lock:
            self._events[name] = done

        def changed(data: bytes | None, _stat: Any, _event: Any = None) -> bool:
            if data:
                try:
                    phase = json.loads(data).get("phase")
                except ValueError:
                    phase = None
                self.last_phase[name] = phase
                if phase == "Running":
                    self.running_at.setdefault(name, time.monotonic())
                    done.set()
                    return False  # stop watching
            return True

        DataWatch(self.client, self.status_path(name), changed)

    def wait(self, name: str, timeout: float) -> float | None:
        """When ``name`` was first seen Running, or None after ``timeout``."""
        with self._lock:
            done = self._events[name]
        return self.running_at.get(name) if done.wait(timeout) else None


# -- the floor's actors (each node a process of its own) ------------------------------


def _worker_loop(work: queue.Queue[str | None], handle: Any) -> None:
    while (item := work.get()) is not None:
        try:
            handle(item)
        except Exception as exc:
            print(f"chain floor: {type(exc).__name__}: {exc}", flush=True)


def _children_watcher(client: Any, path: str, on_new: Any) -> queue.Queue[str | None]:
    """A children watch whose firing a worker thread handles: read the children again
    (re-arming the watch), then hand each new one to ``on_new``."""
    work: queue.Queue[str | None] = queue.Queue()
    seen: set[str] = set()

    def fired(_event: Any) -> None:
        work.put(path)  # kazoo's event thread must not block: a worker reads

    def handle(_item: str) -> None:
        for child in client.get_children(path, watch=fired):
            if child not in seen:
                seen.add(child)
                on_new(child)

    seen.update(client.get_children(path, watch=fired))
    threading.Thread(target=_worker_loop, args=(work, handle), daemon=True).start()
    return work


def _node_process(
    hosts: str, base: str, node: str, nodes: list[str], host_mib: int, ready: Any, stop: Any
) -> None:
    import libvirt

    from hypervisor import DomainSpec, render_domain_xml, write_test_host_xml

    client = kazoo_client(hosts)
    workdir = Path(tempfile.mkdtemp(prefix=f"pvc-chain-{node}-"))
    conn = libvirt.open(write_test_host_xml(workdir / "host.xml", host_mib, 4))
    index = f"{base}/index/{node}"

    def run_vm(name: str) -> None:
        entry = f"{index}/{name}"
        spec_read = client.get_async(f"{base}/vms/{name}")
        entry_read = client.get_async(entry)
        spec_read.get()
        entry_read.get()
        # The claim of a new VM: the holder set made with the holder, only while the entry
        # exists, checked as it commits (so the sole holder: nobody held it), and the
        # entry read sent right behind it (placed here still, as of the claim or later).
        holders = f"{base}/holders/{name}"
        txn = client.transaction()
        txn.check(entry, version=-1)
        txn.create(holders, b"")
        txn.create(f"{holders}/{node}", b"")
        committed = txn.commit_async()
        current = client.get_async(entry)
        if any(isinstance(r, Exception) for r in committed.get()):
            return
        current.get()  # raises NoNodeError when placed elsewhere since
        spec = DomainSpec(name=name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=VM_MEMORY_MIB)
        conn.defineXML(render_domain_xml(spec, "test")).create()
        client.create(f"{base}/vms/{name}/status", RUNNING)

    _children_watcher(client, index, run_vm)
    if node == nodes[0]:
        turn = iter(range(1 << 30))

        def place(name: str) -> None:
            client.get(f"{base}/vms/{name}")
            target = nodes[next(turn) % len(nodes)]
            txn = client.transaction()
            txn.check(f"{base}/epoch", version=0)
            txn.create(f"{base}/vms/{name}/placement", target.encode())
            txn.create(f"{base}/index/{target}/{name}", target.encode())
            txn.commit()

        _children_watcher(client, f"{base}/vms", place)
    ready.set()
    stop.wait()
    conn.close()
    client.stop()
    client.close()
    shutil.rmtree(workdir, ignore_errors=True)


class ChainFloor:
    """The chain's actors started once (one process per node, the scheduler a thread of the
    first), under a scratch root ``/pvc-bench-chain/<random>`` on ``hosts`` removed by
    ``close``; ``one(name)`` puts one VM through the chain and times it. So the floor's
    samples can be taken between the PVC run's, on the same machine at the same moment.
    ``driver`` is a kazoo client of the bench's own process (the API and the observer);
    ``capacity``: how many VMs each node's test-driver host holds."""

    def __init__(self, hosts: str, nodes: int, driver: Any, capacity: int) -> None:
        self.hosts = hosts
        self.nodes = nodes
        self.driver = driver
        self.base = f"/pvc-bench-chain/{secrets.token_hex(4)}"
        node_names = [f"node{i + 1}" for i in range(nodes)]
        for path in ("vms", "holders", "epoch", *(f"index/{n}" for n in node_names)):
            driver.ensure_path(f"{self.base}/{path}")
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._procs: list[Any] = []
        readies = []
        host_mib = capacity * VM_MEMORY_MIB + 1024
        try:
            for node in node_names:
                ready = ctx.Event()
                proc = ctx.Process(
                    target=_node_process,
                    args=(hosts, self.base, node, node_names, host_mib, ready, self._stop),
                    daemon=True,
                )
                proc.start()
                self._procs.append(proc)
                readies.append(ready)
            for ready in readies:
                if not ready.wait(60):
                    raise RuntimeError("a chain-floor node process did not start within 60 s")
        except BaseException:
            self.close()
            raise
        self.watch = StatusWatch(driver, lambda n: f"{self.base}/vms/{n}/status")
        self.samples: list[float] = []
        self.missing: list[str] = []
        # name -> wall-clock send time, and its time to Running: for hops().
        self.sent_wall: dict[str, float] = {}
        self.observed: dict[str, float] = {}

    def one(self, name: str, timeout: float = 30.0) -> float | None:
        """Put ``name`` through the chain: its time to Running (None: not within
        ``timeout``, counted in ``missing``)."""
        self.watch.expect(name)
        self.sent_wall[name] = time.time()
        sent = time.monotonic()
        self.driver.create(f"{self.base}/vms/{name}", b'{"spec": {"memory": "64Mi"}}')
        at = self.watch.wait(name, timeout)
        if at is None:
            self.missing.append(name)
            return None
        self.samples.append(at - sent)
        self.observed[name] = at - sent
        return at - sent

    def hops(self) -> dict[str, Any]:
        """Each step's moment (bench/hops.py) over every VM that reached Running since the
        samples were last cleared, read back from ZooKeeper; call it before ``close``, which
        removes them."""
        rows = vm_hops(
            self.driver,
            {n: self.sent_wall[n] for n in self.observed},
            lambda n: f"{self.base}/vms/{n}",
            lambda n, node: f"{self.base}/holders/{n}/{node}",
            bytes.decode,
            starting_write=False,
        )
        return summarize(rows, {n: at * 1000.0 for n, at in self.observed.items()})

    def close(self) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        with suppress(Exception):
            self.driver.delete(self.base, recursive=True)

    def result(self) -> dict[str, Any]:
        return {
            "hosts": self.hosts,
            "root": self.base,
            "nodes": self.nodes,
            "round_trips": 7,
            "watch_hops": 3,
            "samples_s": self.samples,
            "missing": self.missing,
            "median_s": statistics.median(self.samples) if self.samples else float("nan"),
            **summary(self.samples),
        }


def chain_floor(
    hosts: str, count: int, nodes: int, driver: Any, timeout: float = 30.0
) -> dict[str, Any]:
    """Run the chain ``count`` times, one VM at a time (as the PVC run does with
    concurrency 1): its per-VM times and their summary (ChainFloor.result)."""
    floor = ChainFloor(hosts, nodes, driver, count)
    try:
        for index in range(count):
            floor.one(f"chain-{index:04d}", timeout)
    finally:
        floor.close()
    return floor.result()
