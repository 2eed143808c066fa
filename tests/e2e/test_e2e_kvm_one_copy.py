"""One copy on real QEMU/KVM: a guest that ignores ACPI, moved while it shuts down.

A 2-node local cluster whose daemons each run against their own libvirtd (the
``isolated_libvirtd_pair``: two daemons in their own mount namespaces, as two hosts). The
guest has no OS, so it ignores ACPI: the source forces it off only at shutdownTimeout.
Throughout the move a watcher reads what the hosts really hold, about ten times a second
(each look runs pgrep): the QEMU processes named after the guest in the process table,
and each libvirtd's view of the domain. And each libvirtd's own lifecycle events order
the two exactly: the target's "started" must come after the source's "stopped".

Skips, saying why, without root, /dev/kvm, libvirtd or unshare (the fixture), and fails
at once, with QEMU's reason, where QEMU cannot use /dev/kvm.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import libvirt
import pytest

from hypervisor.events import ensure_event_loop
from tests.helpers import wait_for
from tests.kvm_fixtures import LibvirtdPair, isolated_libvirtd_pair, pair_cluster, qemu_pids
from tests.localcluster_fixture import RunningCluster

__all__ = ["isolated_libvirtd_pair"]  # a fixture, imported for pytest

pytestmark = pytest.mark.kvm

SHUTDOWN_TIMEOUT_S = 6.0
EVENT_STARTED = libvirt.VIR_DOMAIN_EVENT_STARTED
EVENT_STOPPED = libvirt.VIR_DOMAIN_EVENT_STOPPED


def active(conn: libvirt.virConnect, name: str) -> bool:
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


@pytest.fixture(scope="module")
def cluster(
    isolated_libvirtd_pair: LibvirtdPair, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCluster]:
    yield from pair_cluster(isolated_libvirtd_pair, tmp_path_factory, "kvm-one-copy")


def test_the_target_qemu_never_starts_before_the_source_qemu_is_gone(
    cluster: RunningCluster, isolated_libvirtd_pair: LibvirtdPair
) -> None:
    name = f"e2e1c-{uuid.uuid4().hex[:6]}"
    ensure_event_loop()  # before the connections open: events reach later connections only
    source = libvirt.open(isolated_libvirtd_pair.a.uri)
    target = libvirt.open(isolated_libvirtd_pair.b.uri)
    events: list[tuple[float, str, int]] = []

    def on_event(_c: object, domain: libvirt.virDomain, event: int, _d: int, host: str) -> None:
        if domain.name() == name:
            events.append((time.monotonic(), host, event))

    for conn, host in ((source, "source"), (target, "target")):
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, host)
    doc = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "memory": "64Mi",
            "shutdownTimeout": f"{SHUTDOWN_TIMEOUT_S:g}s",
            "placement": {"home": "node1"},
            # A shutdown move (live ones: test_e2e_kvm_live_migration.py).
            "migration": {"method": "shutdown"},
        },
    }
    try:
        assert cluster.api("POST", "/api/v1/apply", json=[doc]).status_code == 200
        wait_for(lambda: active(source, name), 60, f"{name} running on node1")
        assert len(qemu_pids(name)) == 1

        both: list[str] = []
        samples = 0
        source_gone_at: float | None = None
        target_up_at: float | None = None
        stop = threading.Event()

        def watch() -> None:
            nonlocal samples, source_gone_at, target_up_at
            while not stop.wait(0.02):
                pids = qemu_pids(name)
                on_source, on_target = active(source, name), active(target, name)
                now = time.monotonic()
                samples += 1
                if len(pids) > 1 or (on_source and on_target):
                    both.append(f"{now:.3f}: qemu pids {pids}, libvirt a={on_source} b={on_target}")
                if source_gone_at is None and not on_source:
                    source_gone_at = now
                if target_up_at is None and on_target:
                    target_up_at = now

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        moved_at = time.monotonic()
        try:
            response = cluster.api("POST", f"/api/v1/vms/{name}/migrate", json={"node": "node2"})
            assert response.status_code == 200, response.text
            wait_for(lambda: target_up_at is not None, 60, f"{name} running on node2")
        finally:
            stop.set()
            watcher.join(5)
        assert both == [], "two copies at once:\n" + "\n".join(both[:20])
        assert source_gone_at is not None and target_up_at is not None
        # The guest ignored ACPI: the source held it until shutdownTimeout, the target waited.
        assert source_gone_at - moved_at >= SHUTDOWN_TIMEOUT_S - 0.5
        # Sampled every 20 ms: both can change within one sample (the target up within
        # 20 ms of the source going), so the sample's order is "not before"; the exact
        # order is libvirt's events' to tell, below.
        assert target_up_at >= source_gone_at

        def started_on_target() -> list[float]:
            return [t for t, host, e in events if host == "target" and e == EVENT_STARTED]

        started = wait_for(started_on_target, 10, "the target's started event")
        stopped = [t for t, host, e in events if host == "source" and e == EVENT_STOPPED]
        assert stopped, events
        assert min(started) > max(stopped), events
        status = cluster.api("GET", f"/api/v1/vms/{name}").json()["status"]
        assert status["node"] == "node2"
        print(
            f"\nsource QEMU gone {source_gone_at - moved_at:.2f}s after the move, target up "
            f"{target_up_at - source_gone_at:.2f}s later; {samples} samples, none with two"
        )
    finally:
        with contextlib.suppress(Exception):
            cluster.api("DELETE", f"/api/v1/vms/{name}", params={"force": "true"})
        wait_for(lambda: not qemu_pids(name), 60, f"{name}'s QEMU gone after delete")
        source.close()
        target.close()
