"""Live migration on real QEMU/KVM, between two libvirtd daemons as two hosts.

A 2-node local cluster whose daemons each run against their own libvirtd (the
``isolated_libvirtd_pair``: two daemons in their own mount namespaces with their own
host UUIDs). Throughout each move a watcher reads, about fifty times a second, what the
two hypervisors really hold: a sample where both report the guest *running* is a
failure (during a live migration the target holds a paused incoming copy, which is not
running; at the switch-over the source pauses, then the target resumes).

The guest kept running, not booted again: the target's QEMU was started as a migration
destination (``-incoming``, so its state came from the source), libvirt on the target
reports a completed incoming migration job, and the tick counter the guest's firmware
keeps in its memory (BIOS data area, 0x46C) never went back.

Skips, saying why, without root, /dev/kvm, libvirtd or unshare (the fixture), and fails
at once, with QEMU's reason, where QEMU cannot use /dev/kvm.
"""

from __future__ import annotations

import contextlib
import struct
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt
import pytest

from tests.ceph import SingleHostCeph
from tests.helpers import vm_manifest, wait_for
from tests.kvm_fixtures import LibvirtdPair, isolated_libvirtd_pair, pair_cluster, qemu_pids
from tests.localcluster_fixture import RunningCluster

__all__ = ["isolated_libvirtd_pair"]  # a fixture, imported for pytest

pytestmark = pytest.mark.kvm

TICKS = 0x46C
"""The BIOS data area's timer tick counter (18.2 Hz), kept by the guest's firmware."""


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [part.decode() for part in f.read().split(b"\0") if part]


def running(conn: libvirt.virConnect, name: str) -> bool:
    try:
        state, _ = conn.lookupByName(name).state()
    except libvirt.libvirtError:
        return False
    return bool(state == libvirt.VIR_DOMAIN_RUNNING)


def ticks(conn: libvirt.virConnect, name: str) -> int | None:
    try:
        raw = conn.lookupByName(name).memoryPeek(TICKS, 4, libvirt.VIR_MEMORY_PHYSICAL)
    except libvirt.libvirtError:
        return None
    return int(struct.unpack("<I", raw)[0])


class HostWatcher:
    """Samples both hypervisors until stopped: samples with two running copies, and the
    tick counter wherever the guest runs."""

    def __init__(self, a: libvirt.virConnect, b: libvirt.virConnect, name: str) -> None:
        self.conns = {"node1": a, "node2": b}
        self.name = name
        self.both: list[str] = []
        self.ticks: list[tuple[str, int]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            up = [node for node, conn in self.conns.items() if running(conn, self.name)]
            self.samples += 1
            if len(up) > 1:
                self.both.append(f"{time.monotonic():.3f}: running on {up}")
            for node in up:
                value = ticks(self.conns[node], self.name)
                if value is not None:
                    self.ticks.append((node, value))


@pytest.fixture(scope="module")
def cluster(
    isolated_libvirtd_pair: LibvirtdPair, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCluster]:
    yield from pair_cluster(isolated_libvirtd_pair, tmp_path_factory, "kvm-live")


@pytest.fixture(scope="module")
def conns(isolated_libvirtd_pair: LibvirtdPair) -> Iterator[tuple[libvirt.virConnect, ...]]:
    a = libvirt.open(isolated_libvirtd_pair.a.uri)
    b = libvirt.open(isolated_libvirtd_pair.b.uri)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def status_of(cluster: RunningCluster, name: str) -> dict[str, object]:
    return dict(cluster.api("GET", f"/api/v1/vms/{name}").json().get("status") or {})


def test_a_running_guest_migrates_live_there_and_back(
    cluster: RunningCluster, conns: tuple[libvirt.virConnect, ...]
) -> None:
    a, b = conns
    name = f"live-{uuid.uuid4().hex[:6]}"
    cluster.apply(vm_manifest(name, method="live", shutdownTimeout="5s"))
    try:
        wait_for(lambda: running(a, name), 60, f"{name} running on node1")
        wait_for(lambda: status_of(cluster, name).get("phase") == "Running", 30, "Running")
        wait_for(lambda: (ticks(a, name) or 0) > 0, 30, "the guest's firmware ticking")
        for there, back, conn in (("node2", "node1", b), ("node1", "node2", a)):
            before = qemu_pids(name)
            assert len(before) == 1
            with HostWatcher(a, b, name) as watcher:
                started = time.monotonic()
                if there == "node2":
                    result = cluster.pvcctl("vm", "migrate", name, "--to", there, "--wait")
                else:
                    result = cluster.pvcctl("vm", "unmigrate", name)
                    assert result.returncode == 0, result.stderr
                    wait_for(
                        lambda there=there: (  # type: ignore[misc]
                            status_of(cluster, name).get("node") == there
                            and status_of(cluster, name).get("phase") == "Running"
                        ),
                        60,
                        f"{name} Running on {there}",
                    )
                took = time.monotonic() - started
                assert result.returncode == 0, result.stderr
            assert watcher.both == [], "two running copies:\n" + "\n".join(watcher.both[:20])
            assert running(conn, name) and not running(b if conn is a else a, name)
            after = qemu_pids(name)
            assert len(after) == 1 and after != before, (before, after)
            assert "-incoming" in cmdline(after[0]), "the target's QEMU booted, not migrated"
            job = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
            assert job.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED, job
            seen = [value for _node, value in watcher.ticks]
            assert seen == sorted(seen), f"the guest's tick counter went back: {seen[:50]}"
            assert {node for node, _ in watcher.ticks} == {back, there}, watcher.ticks[-5:]
            status = status_of(cluster, name)
            assert (status["node"], status["lastNode"]) == (there, back)
            assert status.get("migration") is None
            print(
                f"\n{name} {back} -> {there}: {took:.2f}s from the request to Running on "
                f"{there}; {watcher.samples} samples, none with two running"
            )
        events = cluster.pvcctl("events", "vm", name)
        assert "MigrationFallback" not in events.stdout
    finally:
        with contextlib.suppress(Exception):
            cluster.api("DELETE", f"/api/v1/vms/{name}")
        wait_for(lambda: not qemu_pids(name), 60, f"{name}'s QEMU gone after delete")


def test_a_flush_moves_running_guests_live_two_at_a_time_and_unflush_brings_them_back(
    cluster: RunningCluster, conns: tuple[libvirt.virConnect, ...]
) -> None:
    a, b = conns
    names = [f"flush-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    cluster.apply(
        {
            "apiVersion": "pvc/v1",
            "kind": "Cluster",
            "metadata": {"name": "cluster"},
            "spec": {"migration": {"maxParallel": {"cluster": 4, "perNode": 2}}},
        },
        *(vm_manifest(name, method="live", shutdownTimeout="5s") for name in names),
    )
    in_flight: list[int] = []
    both_running: list[str] = []
    stop = threading.Event()

    def listed(conn: libvirt.virConnect) -> tuple[set[str], set[str]]:
        """(defined, running) of our guests, from one listing: a snapshot, not a
        name-by-name walk that a slow machine would smear over several migrations."""
        domains = [d for d in conn.listAllDomains(0) if d.name() in names]
        return {d.name() for d in domains}, {d.name() for d in domains if d.isActive()}

    def watch() -> None:
        # A migration in flight: the guest's domain exists on both hypervisors at once.
        while not stop.wait(0.02):
            with contextlib.suppress(libvirt.libvirtError):
                (defined_a, up_a), (defined_b, up_b) = listed(a), listed(b)
                in_flight.append(len(defined_a & defined_b))
                both_running.extend(n for n in up_a & up_b if running(a, n) and running(b, n))

    try:
        wait_for(lambda: all(running(a, n) for n in names), 90, "all three running on node1")
        pids = {n: qemu_pids(n) for n in names}
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = cluster.pvcctl("node", "flush", "node1", "--wait", "--timeout", "120s")
            assert result.returncode == 0, result.stderr
            assert all(running(b, n) and not running(a, n) for n in names)
            moved = {n: qemu_pids(n) for n in names}
            for n in names:
                assert "-incoming" in cmdline(moved[n][0]), f"{n} was booted on node2, not moved"
                assert moved[n] != pids[n]
            events = cluster.pvcctl("events", "vm")
            assert "MigrationFallback" not in events.stdout, events.stdout
            result = cluster.pvcctl("node", "ready", "node1", "--wait", "--timeout", "120s")
            assert result.returncode == 0, result.stderr
            wait_for(lambda: all(running(a, n) for n in names), 60, "all three back on node1")
        finally:
            stop.set()
            watcher.join(5)
        assert both_running == [], both_running[:10]
        assert max(in_flight) == 2, f"migrations in flight at once: max {max(in_flight)}"
        print(
            f"\nflush: at most {max(in_flight)} live migrations at once, {len(in_flight)} samples"
        )
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                cluster.api("DELETE", f"/api/v1/vms/{name}")
        cluster.apply(
            {
                "apiVersion": "pvc/v1",
                "kind": "Cluster",
                "metadata": {"name": "cluster"},
                "spec": {"migration": {"maxParallel": {"cluster": 4, "perNode": 1}}},
            }
        )
        wait_for(lambda: not any(qemu_pids(n) for n in names), 60, "QEMUs gone after delete")


def disk_source(conn: libvirt.virConnect, name: str) -> tuple[str | None, str | None]:
    """(protocol, name) of the domain's first disk's source, as its hypervisor holds it."""
    xml = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
    source = xml.find("./devices/disk/source")
    if source is None:
        return None, None
    return source.get("protocol"), source.get("name")


def test_a_guest_on_an_rbd_volume_migrates_live_with_its_disk(
    cluster: RunningCluster,
    conns: tuple[libvirt.virConnect, ...],
    ceph: SingleHostCeph,
) -> None:
    """A volume in Ceph (a network disk, which libvirt migrates live as shared storage)
    cloned from an image: after the move the target's QEMU has the same image, its size
    and its bytes."""
    a, b = conns
    name = f"vol-{uuid.uuid4().hex[:6]}"
    golden = f"golden-{name}"
    ceph.admin("create", "--size", "16", f"{ceph.pool}/{golden}", program="rbd")
    write = ["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 64k"]
    subprocess.run([*write, f"rbd:{ceph.pool}/{golden}:conf={ceph.conf}"], check=True)
    pool = ceph.storage_pool("ceph")
    disks = [{"name": "root", "pool": "ceph", "from": golden, "size": "64Mi"}]
    image = f"{ceph.pool}/{name}_root"
    try:
        cluster.apply(pool)

        # Else the first node to reach the new pool gets the VM, not necessarily its home.
        cluster.wait_pool_reached("ceph", 2, 60)
        cluster.apply(vm_manifest(name, method="live", shutdownTimeout="5s", disks=disks))
        try:
            wait_for(lambda: running(a, name), 90, f"{name} running on node1")
        except pytest.fail.Exception:
            pytest.fail(f"{name} did not run on node1: status {status_of(cluster, name)}")
        assert disk_source(a, name) == ("rbd", image)
        with HostWatcher(a, b, name) as watcher:
            result = cluster.pvcctl("vm", "migrate", name, "--to", "node2", "--wait")
            assert result.returncode == 0, result.stderr + result.stdout
        assert watcher.both == [], watcher.both[:10]
        assert running(b, name) and not running(a, name)
        assert "-incoming" in cmdline(qemu_pids(name)[0]), "booted on node2, not migrated"
        assert disk_source(b, name) == ("rbd", image), "node2's guest has the same image"
        assert b.lookupByName(name).blockInfo("vda")[0] == 64 * 2**20
        read = ["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x5a 0 64k"]
        done = subprocess.run(
            [*read, f"rbd:{image}:conf={ceph.conf}"], capture_output=True, text=True
        )
        assert done.returncode == 0 and "verification failed" not in done.stdout, done.stdout
        assert "MigrationFallback" not in cluster.pvcctl("events", "vm", name).stdout

        # Grown while it runs: through the hypervisor, so the running guest sees it at once.
        grown = vm_manifest(name, method="live", shutdownTimeout="5s", disks=disks)
        grown["spec"]["disks"][0]["size"] = "96Mi"  # type: ignore[index]
        pid = qemu_pids(name)
        cluster.apply(grown)
        wait_for(
            lambda: b.lookupByName(name).blockInfo("vda")[0] == 96 * 2**20,
            60,
            "the running guest's disk to grow to 96Mi",
        )
        assert qemu_pids(name) == pid, "grown without a restart"
    finally:
        with contextlib.suppress(Exception):
            cluster.api("DELETE", f"/api/v1/vms/{name}", params={"deleteVolumes": "true"})
        wait_for(lambda: not qemu_pids(name), 60, f"{name}'s QEMU gone after delete")
        listed = ["ls", "-p", ceph.pool]
        wait_for(
            lambda: f"{name}_root" not in ceph.admin(*listed, program="rbd"),
            60,
            "its image deleted",
        )
        ceph.admin(
            "snap", "unprotect", f"{ceph.pool}/{golden}@pvc-clone-base", program="rbd", check=False
        )
        ceph.admin("snap", "purge", f"{ceph.pool}/{golden}", program="rbd", check=False)
        ceph.admin("rm", f"{ceph.pool}/{golden}", program="rbd", check=False)
