"""The fence-agents agent running Debian's real ``fence_ipmilan`` against a virtual BMC
(virtualbmc, its chassis a 64 MiB KVM domain on qemu:///system; tests/ipmi_harness.py):
power on, status on, power off, status off, as the primary's fence controller calls it;
a wrong password is an error, never "off".

Skips, saying why, without root, /dev/kvm, libvirtd, ipmitool, virtualbmc or fence_ipmilan
(Debian package fence-agents, which scripts/setup-host.sh installs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.localcluster.libvirtd import LibvirtDaemon
from hypervisor.fence import FenceAgentsAgent, FenceError, PowerState
from schemas.fence_agents import resolve_agent
from tests.ipmi_harness import IpmiHarness, ipmi_skip_reason
from tests.kvm_fixtures import system_libvirtd

__all__ = ["system_libvirtd"]  # a fixture, imported for pytest

SKIP_REASON = ipmi_skip_reason() or (
    None
    if resolve_agent("fence_ipmilan")
    else "fence_ipmilan is not installed (Debian package fence-agents)"
)
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

NODE = "fa1"
DEADLINE = 60.0


def no_node_process(_node: str) -> None:
    """The chassis stands for no pvcnoded here: its power is all that is checked."""


@pytest.fixture(scope="module")
def harness(
    system_libvirtd: LibvirtDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IpmiHarness]:
    with IpmiHarness(
        Path(tmp_path_factory.mktemp("fence-agents")),
        [NODE],
        kill_node=no_node_process,
        start_node=no_node_process,
        uri=system_libvirtd.uri,
    ) as started:
        print(f"\nvbmcd and its BMC answered after {started.ready_seconds:.2f}s")
        yield started
        assert started.errors == []


def fence_ipmilan(harness: IpmiHarness, password: str | None = None) -> FenceAgentsAgent:
    bmc = harness.bmcs[NODE]
    return FenceAgentsAgent(
        "fence_ipmilan",
        address=bmc.address,
        user=bmc.user,
        password=bmc.password if password is None else password,
        # fence_ipmilan waits power_wait (2 s) after on/off before it polls: not needed here.
        options={"lanplus": "1", "power_wait": "0"},
    )


def test_fence_ipmilan_powers_the_chassis_on_and_off_and_reads_it(harness: IpmiHarness) -> None:
    agent = fence_ipmilan(harness)
    assert agent.power_status() == PowerState.OFF  # a chassis is defined powered off
    timings = {}
    started = time.monotonic()
    agent.power_on()
    timings["on"] = time.monotonic() - started
    harness.wait_power(NODE, True, DEADLINE)
    assert agent.power_status() == PowerState.ON
    started = time.monotonic()
    agent.power_off()  # fence_ipmilan returns once its own status poll says off
    timings["off"] = time.monotonic() - started
    harness.wait_power(NODE, False, 5.0)
    assert agent.power_status() == PowerState.OFF
    print(f"\nfence_ipmilan: on {timings['on']:.2f}s, off {timings['off']:.2f}s")


def test_a_wrong_password_is_an_error_not_off(harness: IpmiHarness) -> None:
    wrong = "not-the-password"
    with pytest.raises(FenceError) as caught:
        fence_ipmilan(harness, password=wrong).power_status()
    assert "fence-agents fence_ipmilan" in str(caught.value)
    assert "status exited 1: ERROR:" in str(caught.value)
    assert wrong not in str(caught.value)
    print(f"\n{caught.value}")
