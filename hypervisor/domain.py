"""The domain driver interface and the values that cross it.

Controllers see only this module; the libvirt implementation lives beside it
(libvirt_driver.py), as httpx keeps its transports behind one base class.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from hypervisor.storage.base import RbdSource


class DomainState(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    ABSENT = "absent"
    OTHER = "other"


@dataclass(frozen=True)
class DiskSpec:
    target: str
    """Guest device name, e.g. "vda"."""
    path: str
    """File path of the image on this host."""
    format: str = "qcow2"
    size_bytes: int | None = None
    """The size of a new image, for create_disk(); define() never creates images."""
    rbd: RbdSource | None = None
    """When set, the disk is this RBD image (a libvirt network disk, its key in the libvirt
    secret ``rbd.secret_uuid``: see ensure_ceph_secret); ``path`` then names it for
    messages only."""


@dataclass(frozen=True)
class NicSpec:
    mac: str
    bridge: str
    model: str = "virtio"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    owner_tag: str = ""
    """Stored in the domain's <metadata>, which is how list_managed() tells
    PVC's domains from ones an operator defined by hand."""


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    state: DomainState
    owner_tag: str


@dataclass(frozen=True)
class HostFacts:
    memory_total_bytes: int
    memory_free_bytes: int | None
    """None when the hypervisor cannot tell (the libvirt test driver)."""
    cpus: int
    load1: float
    hostname: str
    domain_type: str | None = None
    """The type guests get here: "kvm", "qemu" (emulated by TCG) or "test"; None when
    not known, or when the hypervisor can run no guests (then ``no_guests_reason`` says why)."""
    no_guests_reason: str | None = None
    """Why this hypervisor can run no guests at all; None when it can."""


@dataclass(frozen=True)
class MigrationTarget:
    """Where a live migration goes."""

    node: str
    """The target's PVC node name (for messages, and the simulated hypervisor)."""
    uri: str
    """The target hypervisor's libvirt URI as this node's hypervisor reaches it: libvirt
    migrates peer to peer, the source's libvirtd connecting to this URI itself."""
    address: str | None = None
    """Where the guest's memory goes (libvirt's migrate URI, e.g. ``tcp://10.0.0.2``), so the
    traffic stays between the two nodes on the network named; None lets the hypervisor choose
    (the target's hostname)."""


@dataclass(frozen=True)
class MigrationProgress:
    """An outgoing migration job as the hypervisor reports it (libvirt's job stats)."""

    data_total: int | None = None
    """Bytes to move in all (guest memory; grows if the guest dirties pages again)."""
    data_processed: int | None = None
    data_remaining: int | None = None
    elapsed_ms: int | None = None
    outgoing: bool = True
    """True on the migration's source, False for the incoming copy on its destination."""


@dataclass(frozen=True)
class ConsoleTail:
    """The newest output of a domain's serial console."""

    data: bytes
    end: int
    """Bytes the console wrote up to the end of ``data`` (its log file's size)."""


class StopReason(enum.Enum):
    """Why a domain that is not running stopped, as far as the hypervisor knows."""

    GUEST_SHUTDOWN = "guest-shutdown"  # the guest powered itself off cleanly
    DESTROYED = "destroyed"  # forced off from outside
    CRASHED = "crashed"  # the guest or its emulator crashed
    MIGRATED = "migrated"
    OTHER = "other"
    NOT_STOPPED = "not-stopped"  # running, paused, or absent


LifecycleCallback = Callable[[str], None]
"""Called with a domain's name when it starts, stops, crashes or changes definition."""


class DomainDriver(abc.ABC):
    """Host-side control of domains.

    Every method is idempotent where the verb allows it, so a level-triggered
    reconcile can call it again after a crash or a retry. Failures are
    raised as hypervisor.errors.HypervisorError subclasses only.
    """

    @abc.abstractmethod
    def define(self, spec: DomainSpec) -> None:
        """Define the domain, or redefine it to match `spec`.

        Disk images are not created here: a missing image stays missing (create_disk
        makes a new one, once per disk, as its record in ZooKeeper says).
        """

    @abc.abstractmethod
    def create_disk(self, disk: DiskSpec) -> None:
        """Create the image of ``disk`` (it needs ``size_bytes``) when nothing is at its path;
        a no-op when something is, so an image is never replaced.

        The image is written under a temporary name and renamed into place: a file at the
        path is a whole image even after a crash half-way.
        """

    @abc.abstractmethod
    def disk_exists(self, path: str) -> bool:
        """Whether anything is at ``path`` on this host (a dangling symlink counts)."""

    def block_resize(self, name: str, target: str, size: int) -> bool:
        """Grow disk ``target`` of running domain ``name`` to ``size`` bytes through the
        hypervisor, so the guest sees it at once; False when this hypervisor does not (the
        caller grows the volume in its pool instead)."""
        return False

    def ensure_ceph_secret(self, uuid: str, usage: str, key: str) -> None:
        """Define (or update) the libvirt secret ``uuid`` of usage type ``ceph`` named
        ``usage``, holding the cephx ``key`` (base64, as Ceph prints it), so domains with
        RBD disks naming it can start. Private: libvirt never shows its value again."""
        raise NotImplementedError

    @abc.abstractmethod
    def start(self, name: str) -> None:
        """Start the domain; a no-op when it already runs."""

    @abc.abstractmethod
    def shutdown(self, name: str) -> None:
        """Ask the guest to power off (ACPI) and return at once.

        A no-op when the domain is not running.
        """

    @abc.abstractmethod
    def destroy(self, name: str) -> None:
        """Force the domain off; a no-op when it is not running."""

    @abc.abstractmethod
    def undefine(self, name: str) -> None:
        """Remove the definition, forcing the domain off first.

        A no-op when the domain is absent. Disk images are left in place.
        """

    @abc.abstractmethod
    def state(self, name: str) -> DomainState:
        """The domain's state; ABSENT when it is not defined."""

    @abc.abstractmethod
    def stop_reason(self, name: str) -> StopReason:
        """Why the domain is shut off; NOT_STOPPED when it runs or does not exist."""

    @abc.abstractmethod
    def watch_lifecycle(self, callback: LifecycleCallback) -> None:
        """Call ``callback(name)`` on every lifecycle event; it must only enqueue work. The
        event of this driver's own ``define`` or ``start`` may be left out: its caller knows
        what it did."""

    @abc.abstractmethod
    def info(self, name: str) -> DomainInfo | None:
        """One domain, if it exists and carries PVC's metadata (a cheap per-domain lookup:
        libvirt's full listing waits for any destroy in progress)."""

    @abc.abstractmethod
    def list_managed(self) -> list[DomainInfo]:
        """Domains carrying PVC's metadata element, and only those."""

    @abc.abstractmethod
    def host_facts(self) -> HostFacts: ...

    @abc.abstractmethod
    def live_migration_problem(self) -> str | None:
        """Why this hypervisor cannot live-migrate at all (e.g. libvirt's test driver); None
        when it can."""

    @abc.abstractmethod
    def migrate(self, name: str, target: MigrationTarget, *, max_downtime_ms: int) -> None:
        """Live-migrate the running domain ``name`` to ``target``, peer to peer, with at most
        ``max_downtime_ms`` of pause at the switch-over. The persistent definition moves to
        the target and is removed here. Blocks until the migration ends (seconds or more:
        call it from a thread of its own).

        Raises MigrationUnsupported when this hypervisor cannot live-migrate (nothing
        changed), MigrationFailed when the migration failed or was aborted (the domain is
        still here, running or paused, and not on the target), HypervisorUnavailable when the
        connection was lost (the outcome is unknown: look at state() here)."""

    @abc.abstractmethod
    def migration_progress(self, name: str) -> MigrationProgress | None:
        """The migration job of ``name`` here now, outgoing (this host is the source, whoever
        started it: a job survives its caller) or incoming (the copy arriving here); None when
        no migration runs (another kind of job is no migration)."""

    @abc.abstractmethod
    def abort_migration(self, name: str) -> bool:
        """Abort the outgoing migration of ``name`` (libvirt's abortJob): migrate() then raises
        MigrationFailed and the domain stays here. False when no migration was running; a
        migration already past its switch-over completes."""

    def defined_xml(self, name: str) -> str | None:
        """The domain's persistent definition as the hypervisor holds it (never secrets);
        None when it is not defined, or where this hypervisor cannot say."""
        return None

    def console_tail(self, name: str, limit: int) -> ConsoleTail | None:
        """At most the last ``limit`` bytes of the domain's serial console output (kept
        across its restarts); None when there is none to read here."""
        return None

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
