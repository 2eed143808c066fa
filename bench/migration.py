"""Live migration of one running KVM guest through PVC, next to raw libvirt in the same run.

Two isolated libvirtd (localcluster.libvirtd.LibvirtDaemon.isolated, each in its own
mount namespace with its own host UUID, as tests/kvm_fixtures.py's pair) and a 2-node
local cluster on them (node1 on the first, node2 on the second). One VM (64 MiB, 1 vCPU,
diskless, spec.migration.method live) runs on node1; each run moves it to the other node
with POST /api/v1/vms/<name>/migrate and times, from just before the request, the
arrival of the first watch event (GET /api/v1/vms?watch=true) whose status says Running
on the target. The floor, in the same run and interleaved with it (the same direction,
alternately first): libvirt's own migrateToURI3 of an identical domain (the XML PVC's
driver renders, with another name and owner) between the same two daemons, with the
flags, max downtime and migration URI (the target node's published migrationUri, and
migrationAddress if any) PVC's driver uses; timed around the call, which returns once
the target runs the guest. Libvirt's lifecycle events on both daemons and the nodes'
logs break the PVC figure down.

    .venv/bin/python bench/migration.py             # 5 runs each
    .venv/bin/python bench/migration.py --runs 10

Skips (exit 0, saying why) without root, /dev/kvm, libvirtd, QEMU or unshare.
Also the KVM pair cluster and watch helpers of flush.py's live mode. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from apply_latency import kvm_unavailable_reason
from benchlib import now_iso, percentile, summary
from failover import (
    RESULTS,
    Api,
    LocalRun,
    environment,
    first,
    log_problems,
    read_events,
    secs,
    wait,
    write_json,
)

DEFAULT_OUT = RESULTS / "migration.json"
TARGET_RATIO = 1.3
VM_MEMORY_MIB = 64
PAIR = ("node1", "node2")
TIMEOUT_S = 120.0

Objects = dict[str, dict[str, Any]]


# -- shared with flush.py's live mode ------------------------------------------------------


def kvm_pair_reason() -> str | None:
    """Why two isolated KVM libvirtd cannot run here, or None when they can."""
    from localcluster.libvirtd import find_program

    reason = kvm_unavailable_reason()
    if reason is not None:
        return reason
    for program in ("unshare", "mount"):
        if find_program(program) is None:
            return f"{program} is not installed (util-linux, mount)"
    return None


@contextmanager
def kvm_pair_cluster(label: str, keep_state: bool) -> Iterator[tuple[LocalRun, dict[str, str]]]:
    """Two isolated libvirtd and a 2-node local cluster on them (node1 on the first, node2
    on the second); yields the run and each node's libvirt URI. Everything is stopped on
    the way out (the daemons destroy what domains are left); the dirs are kept after a
    failed run or with ``keep_state``."""
    from localcluster.cluster import LocalCluster
    from localcluster.libvirtd import isolated_daemons

    state_dir = Path(tempfile.mkdtemp(prefix=f"pvc-bench-{label}-"))
    # Not inside the cluster's dir: its stop looks for processes naming that dir.
    libvirt_dir = Path(tempfile.mkdtemp(prefix=f"pvc-bench-{label}-libvirtd-"))
    failed = True
    started = time.monotonic()
    try:
        with isolated_daemons(libvirt_dir, tuple(PAIR)) as daemons:
            print(f"  isolated libvirtd pair answered after {time.monotonic() - started:.1f} s")
            uris = {node: daemon.uri for node, daemon in daemons.items()}
            cluster = LocalCluster(
                state_dir, nodes=len(PAIR), api_port=0, node_memory="8Gi", libvirt_uris=uris
            )
            try:
                started = time.monotonic()
                state, _ = cluster.up(timeout=120)
                print(f"  local cluster up in {time.monotonic() - started:.1f} s ({state_dir})")
                yield LocalRun(cluster, state, LocalCluster.server_url(state), state_dir), uris
                failed = False
            finally:
                cluster.down()
    finally:
        if keep_state or failed:
            print(f"  state dirs (logs) kept at {state_dir} and {libvirt_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
            shutil.rmtree(libvirt_dir, ignore_errors=True)


def live_vm(name: str, home: str, memory_mib: int = VM_MEMORY_MIB) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"pvc-bench": "migration"}},
        "spec": {
            "memory": f"{memory_mib}Mi",
            "vcpus": 1,
            "shutdownTimeout": "5s",
            "placement": {"home": home},
            "migration": {"method": "live"},
        },
    }


def running_on(objects: Objects, name: str, node: str) -> bool:
    """The VM's status says Running on ``node``, its migration over."""
    status = (objects.get(name) or {}).get("status") or {}
    return bool(
        status.get("phase") == "Running"
        and status.get("node") == node
        and status.get("migration") is None
    )


class Watch:
    """One kind's objects as the API's watch stream (``?watch=true``) delivers them, kept by a
    thread; ``until`` blocks until a condition on them holds and returns the time.monotonic()
    at which the event that made it hold arrived."""

    def __init__(self, server: str, plural: str) -> None:
        from cli.client import ApiClient

        self.plural = plural
        self._client = ApiClient(server)
        self._objects: Objects = {}
        self._changed = threading.Condition()
        self._arrived = time.monotonic()
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"watch-{plural}", daemon=True)
        self._thread.start()
        if not self._loaded.wait(30):
            raise TimeoutError(f"no watch of {plural} within 30 s: {self.errors[-3:]}")

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:  # a list first: the baseline, and where to watch from
                    listed = self._client.get(f"/api/v1/{self.plural}")
                    version = str(listed["metadata"]["resourceVersion"])
                    with self._changed:
                        self._objects = {o["metadata"]["name"]: o for o in listed["items"]}
                        self._arrived = time.monotonic()
                        self._changed.notify_all()
                    self._loaded.set()
                for event in self._client.watch(self.plural, version, 30.0, None):
                    arrived = time.monotonic()
                    version = event.get("resourceVersion") or version
                    obj = event.get("object") or {}
                    name = str((obj.get("metadata") or {}).get("name") or "")
                    with self._changed:
                        if event.get("type") == "DELETED":
                            self._objects.pop(name, None)
                        elif name:
                            self._objects[name] = obj
                        self._arrived = arrived
                        self._changed.notify_all()
            except Exception as exc:  # the stream ended badly: resume, unless stopping
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                version = None  # 410 or worse: list again
                self._stop.wait(0.1)

    def snapshot(self) -> Objects:
        with self._changed:
            return dict(self._objects)

    def until(self, check: Callable[[Objects], bool], timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not check(self._objects):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
                self._changed.wait(left)
            return self._arrived

    def close(self) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(2)


class LibvirtEvents:
    """Domain lifecycle events of several libvirtd, each with the time.monotonic() it arrived."""

    def __init__(self, uris: dict[str, str]) -> None:
        import libvirt

        libvirt.virEventRegisterDefaultImpl()
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, name="libvirt-events", daemon=True)
        self._loop.start()
        self.seen: list[tuple[float, str, str, int, int]] = []
        """(when, node, domain, event, detail)"""
        self._lock = threading.Lock()
        self.conns: dict[str, Any] = {}
        self._callbacks: dict[str, int] = {}
        for node, uri in uris.items():
            conn = libvirt.open(uri)
            self.conns[node] = conn
            self._callbacks[node] = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, node
            )

    def _run(self) -> None:
        import libvirt

        while not self._stop.is_set():
            libvirt.virEventRunDefaultImpl()

    def _on_event(self, _conn: Any, domain: Any, event: int, detail: int, node: str) -> None:
        with self._lock:
            self.seen.append((time.monotonic(), node, str(domain.name()), event, detail))

    def resumed(self, node: str, name: str, after: float) -> float | None:
        """When ``name`` first ran on ``node`` after ``after``: a RESUMED event (an incoming
        migration's switch-over) or a STARTED one that was not an incoming migration's."""
        import libvirt

        with self._lock:
            for when, where, domain, event, detail in self.seen:
                if when < after or where != node or domain != name:
                    continue
                if event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
                    return when
                if (
                    event == libvirt.VIR_DOMAIN_EVENT_STARTED
                    and detail != libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED
                ):
                    return when
        return None

    def close(self) -> None:
        for node, conn in self.conns.items():
            with contextlib.suppress(Exception):
                conn.domainEventDeregisterAny(self._callbacks[node])
            with contextlib.suppress(Exception):
                conn.close()
        self._stop.set()  # the loop ends at its next event or timer


def migration_params(api: Api, target: str) -> tuple[str, dict[str, object]]:
    """The URI and parameters PVC's driver passes to migrateToURI3 for ``target``: the node's
    published migrationUri, and its migrationAddress as VIR_MIGRATE_PARAM_URI if any."""
    import libvirt

    status = api.nodes()[target]
    params: dict[str, object] = {}
    if status.get("migrationAddress"):
        params[libvirt.VIR_MIGRATE_PARAM_URI] = status["migrationAddress"]
    return str(status["migrationUri"]), params


def max_downtime_ms() -> int:
    """PVC's default spec.migration.maxDowntime, which its driver sets before migrating."""
    from schemas import VirtualMachine, to_seconds

    default = VirtualMachine.model_validate(live_vm("x", PAIR[0])).spec.migration.max_downtime
    return max(1, round(to_seconds(default) * 1000))


class Floor:
    """A domain identical to PVC's VM (the XML its driver renders, another name and owner),
    migrated with libvirt's own call, as PVC's driver makes it, between the same daemons."""

    def __init__(self, events: LibvirtEvents, api: Api, home: str) -> None:
        from hypervisor import DomainSpec, render_domain_xml

        self.events = events
        self.api = api
        self.name = f"floor-{uuid.uuid4().hex[:6]}"
        self.node = home
        spec = DomainSpec(
            name=self.name,
            uuid=str(uuid.uuid4()),
            vcpus=1,
            memory_mib=VM_MEMORY_MIB,
            owner_tag="bench-floor",  # not the cluster's: no node takes it for its own
        )
        domain = events.conns[home].defineXML(render_domain_xml(spec, "kvm"))
        domain.create()
        self.downtime_ms = max_downtime_ms()

    def migrate(self, target: str) -> dict[str, Any]:
        from hypervisor.libvirt_driver import _MIGRATE_FLAGS

        uri, params = migration_params(self.api, target)
        domain = self.events.conns[self.node].lookupByName(self.name)
        started = time.monotonic()
        domain.migrateSetMaxDowntime(self.downtime_ms, 0)
        domain.migrateToURI3(uri, params, _MIGRATE_FLAGS)
        took = time.monotonic() - started
        resumed = self.events.resumed(target, self.name, started)
        source = self.node
        self.node = target
        return {
            "from": source,
            "to": target,
            "seconds": took,
            "resumed_on_target_s": None if resumed is None else resumed - started,
        }

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            domain = self.events.conns[self.node].lookupByName(self.name)
            domain.destroy()
            domain.undefine()


def pvc_migrate(
    api: Api, watch: Watch, events: LibvirtEvents, run: LocalRun, name: str, target: str
) -> dict[str, Any]:
    """One move of ``name`` to ``target`` through PVC, timed to the watch event showing it
    Running there, then settled (the source holds no copy)."""
    source = PAIR[1] if target == PAIR[0] else PAIR[0]
    wall = time.time()
    started = time.monotonic()
    response = api.client.post(f"/api/v1/vms/{name}/migrate", json={"node": target})
    request = time.monotonic() - started
    if response.status_code != 200:
        raise RuntimeError(f"migrate {name}: {response.status_code} {response.text[:300]}")
    seen = watch.until(lambda o: running_on(o, name, target), TIMEOUT_S, f"{name} on {target}")
    took = seen - started
    wait(lambda: not domain_on(events, source, name), 30, f"{name} gone from {source}")
    resumed = events.resumed(target, name, started)
    logs = read_events(run.dir, wall)

    def at(event: str, **fields: str) -> float | None:
        found = first(logs, event, vm=name, **fields)
        return None if found is None else found.wall - wall

    return {
        "from": source,
        "to": target,
        "seconds": took,
        "request_s": request,
        "breakdown_s": {
            "target_claimed": at("holder_added", node=target),
            "migration_started": at("migration_started"),
            "resumed_on_target": None if resumed is None else resumed - started,
            "migration_done": at("migration_done"),
            "source_released": at("holder_removed", node=source),
            "target_adopted": at("domain_adopted", node=target),
            "status_running_seen": took,
        },
    }


def domain_on(events: LibvirtEvents, node: str, name: str) -> bool:
    import libvirt

    try:
        events.conns[node].lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def p50(values: list[float]) -> float:
    return percentile(values, 50)


def breakdown_p50(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    keys = list(runs[0]["breakdown_s"]) if runs else []
    out: dict[str, float | None] = {}
    for key in keys:
        values = [r["breakdown_s"][key] for r in runs if r["breakdown_s"][key] is not None]
        out[key] = p50(values) if values else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="migrations of each kind (default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep-state", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    reason = kvm_pair_reason()
    if reason is not None:
        print(f"migration: skipped: {reason}")
        return 0
    started_at = now_iso()
    name = f"mig-{uuid.uuid4().hex[:6]}"
    pvc: list[dict[str, Any]] = []
    floor: list[dict[str, Any]] = []
    print(f"migration: {args.runs} live migrations of a {VM_MEMORY_MIB} MiB KVM guest, each way")
    with kvm_pair_cluster("migration", args.keep_state) as (run, uris):
        api = Api(run.server)
        events = LibvirtEvents(uris)
        watch = Watch(run.server, "vms")
        floor_vm: Floor | None = None
        try:
            api.apply(live_vm(name, PAIR[0]))
            watch.until(lambda o: running_on(o, name, PAIR[0]), TIMEOUT_S, f"{name} Running")
            floor_vm = Floor(events, api, PAIR[0])
            for index in range(args.runs):
                target = PAIR[1] if index % 2 == 0 else PAIR[0]
                # Alternately first, so neither always runs right after the other.
                for kind in ("pvc", "floor") if index % 2 == 0 else ("floor", "pvc"):
                    if kind == "pvc":
                        pvc.append(pvc_migrate(api, watch, events, run, name, target))
                    else:
                        floor.append(floor_vm.migrate(target))
                print(
                    f"  run {index + 1}: -> {target}: PVC {secs(pvc[-1]['seconds'])}, "
                    f"libvirt {secs(floor[-1]['seconds'])}"
                )
            problems = log_problems(run.dir)
        finally:
            if floor_vm is not None:
                floor_vm.remove()
            watch.close()
            events.close()
            api.close()
    pvc_p50 = p50([r["seconds"] for r in pvc])
    floor_p50 = p50([r["seconds"] for r in floor])
    ratio = pvc_p50 / floor_p50
    result: dict[str, Any] = {
        "benchmark": "migration",
        "config": {
            "runs": args.runs,
            "vm_memory_mib": VM_MEMORY_MIB,
            "nodes": list(PAIR),
            "max_downtime_ms": max_downtime_ms(),
            "timing": "PVC: request -> watch event showing Running on the target; "
            "floor: around migrateToURI3",
        },
        "pvc": {**summary([r["seconds"] for r in pvc]), "runs": pvc},
        "pvc_breakdown_p50_s": breakdown_p50(pvc),
        "floor": {**summary([r["seconds"] for r in floor]), "runs": floor},
        "ratio": {"p50_over_floor": ratio, "target": TARGET_RATIO, "met": ratio <= TARGET_RATIO},
        "watch_errors": watch.errors,
        "log_problems": problems,
        **environment(),
        "started_at": started_at,
        "finished_at": now_iso(),
    }
    write_json(args.out, result)
    print()
    print(f"migration: {args.runs} runs, {VM_MEMORY_MIB} MiB guest")
    print("  PVC     " + "  ".join(f"{r['seconds']:.2f}" for r in pvc) + f"  p50 {pvc_p50:.2f} s")
    print(
        "  libvirt " + "  ".join(f"{r['seconds']:.2f}" for r in floor) + f"  p50 {floor_p50:.2f} s"
    )
    parts = ", ".join(
        f"{k} {v:.2f}" for k, v in result["pvc_breakdown_p50_s"].items() if v is not None
    )
    print(f"  PVC breakdown p50 (s after the request): {parts}")
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"  ratio p50 PVC / p50 libvirt {ratio:.2f} (goal <= {TARGET_RATIO}: {verdict})")
    for line in problems[:5]:
        print(f"  log: {line}")
    print(f"  wrote {args.out}")
    print(f"migration_s={pvc_p50:.3f} floor_s={floor_p50:.3f} ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
