"""Fence agents: out-of-band power control of a node (ipmi, exec, fence-agents), behind one
interface."""

from hypervisor.fence.base import FenceAgent, FenceError, PowerState
from hypervisor.fence.execagent import ExecAgent
from hypervisor.fence.fenceagents import FenceAgentsAgent
from hypervisor.fence.ipmi import IpmiAgent, parse_power_status

__all__ = [
    "ExecAgent",
    "FenceAgent",
    "FenceAgentsAgent",
    "FenceError",
    "IpmiAgent",
    "PowerState",
    "parse_power_status",
]
