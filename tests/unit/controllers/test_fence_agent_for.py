"""agent_for: the fence agent a Node's spec.fence builds."""

from __future__ import annotations

from controllers.fencing import agent_for
from hypervisor.fence import IpmiAgent
from schemas import FenceConfig


def test_an_ipmi_agent_on_an_ipv6_bmc_is_built_with_its_port() -> None:
    # Before: "fd00::9" split at its first colon and int(":9") raised, so the node could
    # never be fenced.
    agent = agent_for(FenceConfig(agent="ipmi", address="fd00::9", user="u"))
    assert isinstance(agent, IpmiAgent)
    assert (agent.address, agent.port) == ("fd00::9", 623)
    agent = agent_for(FenceConfig(agent="ipmi", address="[fd00::9]:6230", user="u"))
    assert isinstance(agent, IpmiAgent)
    assert (agent.address, agent.port) == ("fd00::9", 6230)
