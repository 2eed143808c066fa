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
not a skip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cli.localcluster.libvirtd import LibvirtDaemon, find_program

KVM_DEVICE = "/dev/kvm"


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


@pytest.fixture(scope="session")
def system_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibvirtDaemon]:
    reason = kvm_skip_reason("qemu-system-x86_64")
    if reason is not None:
        pytest.skip(reason)
    daemon = LibvirtDaemon.system(tmp_path_factory.mktemp("libvirtd-system"))
    try:
        daemon.start()
        how = "reused the running daemon" if daemon.reused else f"started PID {daemon.pid}"
        print(f"\nsystem libvirtd: {how}, answered after {daemon.ready_seconds:.2f}s")
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
    base = tmp_path_factory.mktemp("libvirtd-pair")
    daemons = [LibvirtDaemon.isolated(base / name) for name in ("node-a", "node-b")]
    started = time.monotonic()
    try:
        # Launch both before waiting, so the two QEMU probes (when not cached) overlap.
        for daemon in daemons:
            daemon.launch()
        for daemon in daemons:
            daemon.wait_ready()
        print(f"\nisolated libvirtd pair answered after {time.monotonic() - started:.2f}s")
        yield LibvirtdPair(a=daemons[0], b=daemons[1])
    finally:
        for daemon in daemons:
            daemon.stop()
