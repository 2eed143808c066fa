"""What the fault-injecting hypervisor records: its timings, the holdings of domains on
simulated hosts, and the transitions and violations it keeps (see hypervisor/faulty.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from hypervisor.domain import DomainState
from hypervisor.errors import HypervisorUnavailable

if TYPE_CHECKING:
    from hypervisor.faulty_driver import FaultyDriver
    from hypervisor.faulty_migration import Migration
    from hypervisor.libvirt_driver import LibvirtDriver

TRANSITION_LOG_SIZE = 2000
"""How many transitions the world keeps for a failing trial to print."""

NODE_WIDE = "*"
"""The vm field of a transition that concerns a whole node (power, cut)."""


@dataclass
class Timings:
    start: float = 0.6
    """Seconds a start() takes (QEMU here: 0.5-0.8 s); the domain is held from the call."""
    shutdown: float = 1.0
    """Seconds a guest that honours ACPI takes to power off after shutdown()."""
    destroy: float = 0.3
    """Seconds destroy()/undefine() of a live domain takes (QEMU here: 1.4-2 s)."""
    migrate: float = 1.0
    """Seconds a live migration takes from migrate() to the switch-over."""


@dataclass(frozen=True)
class Violation:
    vm: str
    nodes: tuple[str, ...]
    """The nodes that held it at once, sorted."""
    at: float
    """time.monotonic() of the transition that made the second holder."""
    detail: str


class Transition(NamedTuple):
    t: float
    """time.monotonic()"""
    node: str
    vm: str
    """NODE_WIDE for power and cut changes."""
    state: str
    """starting, running, paused, shutting-down, destroying, acpi-ignored, off:<why>,
    defined, undefined, power-off, power-on, cut, uncut; for a live migration
    migrating-out:<target> on the source, incoming:<source> on the target."""


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    INCOMING = "incoming"
    """The target's copy during a live migration (QEMU started with -incoming)."""


REPORTED = {
    Phase.STARTING: DomainState.PAUSED,
    Phase.RUNNING: DomainState.RUNNING,
    Phase.PAUSED: DomainState.PAUSED,
    Phase.SHUTTING_DOWN: DomainState.SHUTTING_DOWN,
    Phase.INCOMING: DomainState.PAUSED,
}
"""The state a driver reports of a domain held in each phase."""


class Held:
    """One domain held on one node; the object's identity is the token of that holding."""

    def __init__(self, phase: Phase) -> None:
        self.phase = phase
        self.interrupted = False
        """Set by a destroy, crash or power loss: a start or ACPI shutdown under way ends."""
        self.stopping = False
        """A destroy is under way."""
        self.migration: Migration | None = None
        """The live migration this holding is the source or the incoming copy of."""


class Host:
    def __init__(self, node: str) -> None:
        self.node = node
        self.uri: str | None = None
        self.inner: LibvirtDriver | None = None
        self.powered = True
        self.cut = False
        self.power_cycles = 0
        self.drivers: list[FaultyDriver] = []
        self.live_migration: bool | None = None
        """None: as the world says."""


def unavailable(operation: str, domain: str, why: str) -> HypervisorUnavailable:
    what = f"{operation} domain {domain!r}" if domain else operation
    return HypervisorUnavailable(f"{what}: {why}", operation=operation, domain=domain)
