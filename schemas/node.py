"""Node: one hypervisor host, registered by its pvcnoded."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    Field,
    FieldSerializationInfo,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from schemas.fence_agents import (
    address_problem,
    agent_name_problem,
    one_line,
    option_problem,
    resolve_agent,
)
from schemas.meta import Model, ObjectMeta, Status
from schemas.resource import Resource

SECRET_MASK = "********"

CHECK_FENCE_AGENT_INSTALLED = "check_fence_agent_installed"
"""Validation context key: also check that spec.fence.fenceAgent is installed on this host."""


class DaemonState(StrEnum):
    INIT = "init"
    RUN = "run"
    SHUTDOWN = "shutdown"
    STOP = "stop"
    DEAD = "dead"
    FENCED = "fenced"


GONE_STATES = frozenset({DaemonState.DEAD, DaemonState.FENCED})
"""A node in these states runs nothing: marked dead by the primary, or fenced."""


class DomainState(StrEnum):
    READY = "ready"
    FLUSHING = "flushing"
    FLUSHED = "flushed"
    UNFLUSHING = "unflushing"


class RouterState(StrEnum):
    CLIENT = "client"
    SECONDARY = "secondary"
    TAKEOVER = "takeover"
    PRIMARY = "primary"
    RELINQUISH = "relinquish"


class FenceConfig(Model):
    agent: Literal["ipmi", "exec", "fence-agents", "none"] = "none"
    address: str | None = None
    """ipmi: host[:port] of the BMC (port 623 by default). fence-agents: host[:port], given
    to the agent as ip (and ipport)."""
    user: str | None = None
    password: SecretStr | None = None
    command: list[str] = Field(default_factory=list)
    """For the exec agent: argv run with the action (off, on, status) appended."""
    fence_agent: str | None = None
    """For the fence-agents agent: the ClusterLabs fence agent to run, fence_<name> on the
    coordinators' PATH (e.g. fence_ipmilan, fence_redfish) or /usr/sbin/fence_<name>."""
    options: dict[str, str] = Field(default_factory=dict)
    """For the fence-agents agent: more key=value lines for the agent's stdin (e.g.
    lanplus: "1", power_timeout: "30"); see the agent's --help for its long option names
    (without --, dashes as _). action, ip, ipport, username and password come from the
    fields above."""

    @field_serializer("password", when_used="json")
    def _hide_password(self, value: SecretStr | None, info: FieldSerializationInfo) -> str | None:
        if value is None:
            return None
        if isinstance(info.context, dict) and info.context.get("reveal_secrets"):
            return value.get_secret_value()
        return SECRET_MASK

    @field_validator("fence_agent")
    @classmethod
    def _agent_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        problem = agent_name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        # Only where asked (the API, on a write): a stored Node stays readable on a host
        # that lacks the agent.
        if isinstance(info.context, dict) and info.context.get(CHECK_FENCE_AGENT_INSTALLED):
            if resolve_agent(value) is None:
                raise ValueError(
                    f"fence agent {value!r} is not installed here (not on PATH nor in "
                    "/usr/sbin; Debian package fence-agents)"
                )
        return value

    @field_validator("options")
    @classmethod
    def _agent_options(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            problem = option_problem(key, text)
            if problem is not None:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _agent_settings(self) -> FenceConfig:
        if self.agent == "ipmi" and not self.address:
            raise ValueError("the ipmi fence agent needs 'address'")
        if self.agent in ("ipmi", "fence-agents") and self.address:
            problem = address_problem(self.address)
            if problem is not None:
                raise ValueError(problem)
        if self.agent == "exec" and not self.command:
            raise ValueError("the exec fence agent needs 'command'")
        if self.agent == "fence-agents":
            if not self.fence_agent:
                raise ValueError(
                    "the fence-agents fence agent needs 'fenceAgent' (e.g. fence_ipmilan)"
                )
            password = self.password.get_secret_value() if self.password else ""
            for field, value in (("address", self.address), ("user", self.user)):
                if value and not one_line(value):
                    raise ValueError(f"'{field}' must be one line for the fence-agents agent")
            if not one_line(password):
                raise ValueError("'password' must be one line for the fence-agents agent")
        return self


class NodeSpec(Model):
    drain: bool = False
    coordinator: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    fence: FenceConfig = Field(default_factory=FenceConfig)


class NodeResources(Model):
    memory_total: int = 0
    memory_used: int = 0
    memory_free: int = 0
    memory_allocated: int = 0
    memory_provisioned: int = 0
    vcpus_total: int = 0
    vcpus_allocated: int = 0
    load: float = 0.0
    vm_count: int = 0


class NodePool(Model):
    """A storage pool as this node sees it."""

    pool: str
    type: str
    reachable: bool
    capacity: int | None = None
    free: int | None = None
    message: str | None = None
    """Why it is not reachable."""
    checked: str | None = None
    """When the node last looked (RFC 3339)."""


class NodeNetwork(Model):
    """One Network as this node has built it (or not)."""

    name: str
    bridge: str
    ready: bool
    message: str = ""


class NodeStatus(Status):
    daemon_state: DaemonState = DaemonState.INIT
    domain_state: DomainState = DomainState.READY
    router_state: RouterState = RouterState.CLIENT
    last_heartbeat: str | None = None
    daemon_version: str | None = None
    """The PVC version this node's pvcnoded runs (``pvcctl version`` lists them all)."""
    resources: NodeResources = Field(default_factory=NodeResources)
    hypervisor: str | None = None
    domain_type: str | None = None
    """What guests get on this node's hypervisor: "kvm", "qemu" (emulated, far slower) or
    "test"; None while unknown, or when it can run none (then Ready is False,
    NoGuestSupport, and the scheduler places nothing here)."""
    domains: list[str] = Field(default_factory=list)
    """PVC domains the hypervisor reports running, as seen at the last heartbeat."""
    disk_dir: str | None = None
    """Where this node creates VM disks (its daemon's ``libvirt.diskDir``)."""
    migration_uri: str | None = None
    """The libvirt URI other nodes' hypervisors reach this one on, for live migration
    (its daemon's ``libvirt.migrationUri``); None: it cannot take live migrations."""
    migration_address: str | None = None
    """Where live-migration data to this node goes (``tcp://ADDRESS``); None: the
    hypervisor's choice (the host's name)."""
    live_migration_problem: str | None = None
    """Why this node's hypervisor cannot live-migrate; None when it can."""
    storage: list[NodePool] = Field(default_factory=list)
    """Every StoragePool as this node reaches it (or not): the scheduler places a VM only on
    nodes that reach all its pools."""
    cluster_address: str | None = None
    """This node's address on the cluster network (pvcnoded's ``network.cluster.address``):
    the other nodes' VXLAN tunnels end here."""
    networks: list[NodeNetwork] = Field(default_factory=list)
    """Every Network as this node has built it: VMs with a NIC on a network are placed only
    on nodes where it is ready."""
    shared_disk_dir: bool = False
    """Whether that folder is declared shared: the scheduler places a VM whose disks were
    created in a shared folder on any node declaring the same folder shared."""


class Node(Resource):
    KIND = "Node"
    PLURAL = "nodes"
    SHORT_NAMES = ("node", "nodes", "no")
    SECRET_FIELDS = (("fence", "password"),)

    @classmethod
    def keep_secrets(cls, new_spec: dict[str, Any], current_spec: dict[str, Any]) -> None:
        fence = new_spec.get("fence") or {}
        if fence.get("password") == SECRET_MASK:
            old = (current_spec.get("fence") or {}).get("password")
            if old is None:
                fence.pop("password")
            else:
                fence["password"] = old

    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus | None = None
