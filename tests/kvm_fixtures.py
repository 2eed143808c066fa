"""Fixtures that start real libvirtd daemons (QEMU/KVM) as plain processes.

pytest finds fixtures only in conftest.py files and in the test module itself, so a
test module that uses these must import the fixture names it needs:

    from tests.kvm_fixtures import isolated_libvirtd_pair, system_libvirtd  # noqa: F401

- ``system_libvirtd``: the host's libvirtd at qemu:///system; a running one is reused
  and left running, otherwise one is started for the session and stopped after it.
- ``isolated_libvirtd_pair``: two independent libvirtd ("node-a", "node-b"), each in its
  own mount namespace with its own host UUID, so a domain can live migrate between them.

Both skip, saying why, when the machine is not root, has no /dev/kvm, or lacks libvirtd
(or, for the pair, unshare). A daemon that is installed but fails to start is an error,
not a skip; so is a host where QEMU cannot run a KVM guest, e.g. a /dev/kvm that QEMU's
user cannot open (a host without udev's rule has it root-only: ``scripts/setup-host.sh``
fixes that). The fixture checks it as it starts (the device before any libvirtd, then
PVC's driver's choice of domain type and one tiny guest, ~1 s), and every test using it
fails at once with the reason instead of waiting out its deadlines.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import libvirt
import pytest

from hypervisor.domaintype import qemu_kvm_access_problem
from hypervisor.libvirt_driver import LibvirtDriver
from localcluster.libvirtd import LibvirtDaemon, find_program, isolated_daemons
from tests.localcluster_fixture import RunningCluster, start_cluster

KVM_DEVICE = "/dev/kvm"
QEMU_USER = "libvirt-qemu"  # whom Debian's libvirt runs QEMU as
SETUP_HINT = "run `bash scripts/setup-host.sh` as root (make setup does)"


def kvm_skip_reason(*programs: str) -> str | None:
    """Why KVM tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "KVM tests need root (libvirtd at qemu:///system and mount namespaces)"
    if not os.path.exists(KVM_DEVICE):
        return f"KVM tests need {KVM_DEVICE}, which this machine lacks"
    for program in ("libvirtd", "virtlogd", *programs):
        if find_program(program) is None:
            return (
                f"KVM tests need {program}, which is not installed "
                "(apt-get install libvirt-daemon-system qemu-system-x86 qemu-utils)"
            )
    return None


def qemu_user_kvm_problem() -> str | None:
    """Why QEMU, as Debian's libvirt runs it, cannot open /dev/kvm; None when it can or
    when that user does not exist here. Asked before any libvirtd starts: a libvirtd on
    such a host takes ~40 s to fail each guest start (it probes QEMU again every time)."""
    try:
        user = pwd.getpwnam(QEMU_USER)
    except KeyError:
        return None
    try:
        gid = grp.getgrnam(QEMU_USER).gr_gid
    except KeyError:
        gid = user.pw_gid
    return qemu_kvm_access_problem(f"+{user.pw_uid}:+{gid}", KVM_DEVICE)


def kvm_guest_problem(uri: str) -> str | None:
    """Why the libvirtd at ``uri`` cannot run a KVM guest, in its own words (the domain
    type PVC's driver chose and why, or the error of starting a tiny one); None when it can.
    """
    with LibvirtDriver(uri) as driver:
        driver.host_facts()  # opens the connection, which chooses the domain type
        choice = driver.domain_type_choice
    if choice.type != "kvm":
        return f"libvirt at {uri} gives guests type {choice.type}, not kvm: {choice.why}"
    name = f"pvc-kvm-probe-{uuid.uuid4().hex[:8]}"
    conn = libvirt.open(uri)
    try:
        started = time.monotonic()
        try:
            # Transient, and destroyed with this connection whatever happens.
            conn.createXML(
                f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory>"
                "<vcpu>1</vcpu><os><type>hvm</type></os>"
                "<devices><memballoon model='none'/></devices></domain>",
                libvirt.VIR_DOMAIN_START_AUTODESTROY,
            ).destroy()
        except libvirt.libvirtError as err:
            took = time.monotonic() - started
            return f"a 64 MiB KVM guest did not start at {uri} ({took:.1f}s): {err}"
    finally:
        conn.close()
    return None


def fail_if_qemu_cannot_open_kvm() -> None:
    _fail_if(qemu_user_kvm_problem())


def fail_without_kvm_guests(*uris: str) -> None:
    for uri in uris:
        _fail_if(kvm_guest_problem(uri))


def _fail_if(problem: str | None) -> None:
    if problem is None:
        return
    hint = "" if "setup-host.sh" in problem else f" (a root-only {KVM_DEVICE}? {SETUP_HINT})"
    pytest.fail(f"KVM tests cannot get a working guest: {problem}{hint}", pytrace=False)


@pytest.fixture(scope="session")
def system_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibvirtDaemon]:
    reason = kvm_skip_reason("qemu-system-x86_64")
    if reason is not None:
        pytest.skip(reason)
    fail_if_qemu_cannot_open_kvm()
    daemon = LibvirtDaemon.system(tmp_path_factory.mktemp("libvirtd-system"))
    try:
        daemon.start()
        how = "reused the running daemon" if daemon.reused else f"started PID {daemon.pid}"
        print(f"\nsystem libvirtd: {how}, answered after {daemon.ready_seconds:.2f}s")
        fail_without_kvm_guests(daemon.uri)
        yield daemon
    finally:
        daemon.stop()


@dataclass(frozen=True)
class LibvirtdPair:
    a: LibvirtDaemon
    b: LibvirtDaemon


@pytest.fixture(scope="session")
def isolated_libvirtd_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibvirtdPair]:
    reason = kvm_skip_reason("qemu-system-x86_64", "unshare", "mount")
    if reason is not None:
        pytest.skip(reason)
    fail_if_qemu_cannot_open_kvm()
    started = time.monotonic()
    with isolated_daemons(tmp_path_factory.mktemp("libvirtd-pair"), ("node-a", "node-b")) as pair:
        print(f"\nisolated libvirtd pair answered after {time.monotonic() - started:.2f}s")
        fail_without_kvm_guests(*(daemon.uri for daemon in pair.values()))
        yield LibvirtdPair(a=pair["node-a"], b=pair["node-b"])


def qemu_pids(name: str) -> list[int]:
    """PIDs of QEMU processes running the guest ``name`` (its -name guest=NAME argument), on
    any of this machine's libvirtd."""
    found = subprocess.run(
        ["pgrep", "-f", f"qemu-system.*guest={name}[,\\s]"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


def pair_cluster(
    pair: LibvirtdPair, tmp_path_factory: pytest.TempPathFactory, label: str
) -> Iterator[RunningCluster]:
    """A 2-node local cluster whose daemons run against the pair's two libvirtd (node1 on
    node-a, node2 on node-b): for a module-scoped fixture to yield from."""
    clusters: Generator[RunningCluster, None, None] = start_cluster(  # type: ignore[assignment]
        tmp_path_factory.mktemp(label),
        nodes=2,
        libvirt_uris={"node1": pair.a.uri, "node2": pair.b.uri},
    )
    running = next(clusters)
    try:
        yield running
    finally:
        clusters.close()
