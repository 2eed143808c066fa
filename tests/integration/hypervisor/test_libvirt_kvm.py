"""The rendered XML on real QEMU/KVM; runs only where a libvirtd answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hypervisor import DomainSpec, DomainState, HypervisorUnavailable, LibvirtDriver

pytestmark = pytest.mark.kvm

SYSTEM_URI = "qemu:///system"


@pytest.fixture
def system_driver() -> Iterator[LibvirtDriver]:
    driver = LibvirtDriver(SYSTEM_URI)
    try:
        driver.host_facts()
    except HypervisorUnavailable as err:
        pytest.skip(f"no libvirtd at {SYSTEM_URI}: {err}")
    yield driver
    driver.close()


def test_diskless_domain_defines_starts_and_goes(system_driver: LibvirtDriver) -> None:
    name = f"pvc-test-{uuid.uuid4().hex[:8]}"
    spec = DomainSpec(name=name, uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64, owner_tag="t")
    try:
        system_driver.define(spec)
        assert system_driver.state(name) is DomainState.SHUTOFF
        system_driver.start(name)
        assert system_driver.state(name) is DomainState.RUNNING
        assert name in {info.name for info in system_driver.list_managed()}
        facts = system_driver.host_facts()
        assert facts.memory_free_bytes is not None
        assert 0 < facts.memory_free_bytes <= facts.memory_total_bytes
    finally:
        system_driver.undefine(name)
    assert system_driver.state(name) is DomainState.ABSENT
