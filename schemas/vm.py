"""VirtualMachine: what a user asks to run, and what the cluster reports of it."""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.meta import (
    ConditionStatus,
    DnsLabel,
    Model,
    ObjectMeta,
    Status,
    get_condition,
    set_condition,
)
from schemas.quantity import Duration, Size
from schemas.resource import Resource
from schemas.verbs import DOMAIN_FINALIZER

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


CONVERGED = "Converged"
"""The VM condition that says its spec is carried out: running on the node it is placed on with
no move under way, or, runStrategy Halted, stopped (running nowhere)."""
RESTART_REQUIRED = "RestartRequired"
"""The VM condition that says its running domain was started from an older spec: the changed
fields take effect when it restarts."""


class RunStrategy(StrEnum):
    ALWAYS = "Always"
    RERUN_ON_FAILURE = "RerunOnFailure"
    HALTED = "Halted"


class PlacementPolicy(StrEnum):
    MEM = "mem"
    MEMPROV = "memprov"
    LOAD = "load"
    VCPUS = "vcpus"
    VMS = "vms"


class MigrationMethod(StrEnum):
    LIVE = "live"
    SHUTDOWN = "shutdown"
    AUTO = "auto"


class MigrationState(StrEnum):
    WAITING = "Waiting"
    """The source waits for the target to claim the VM (docs/ha.md) before it begins."""
    RUNNING = "Running"
    FAILED = "Failed"
    """Live migration failed and, being forced live (or the target being gone), falls back
    to nothing: the VM keeps running on the source and the primary places it back there."""
    FALLING_BACK = "FallingBack"
    """``auto``: live migration failed; a shutdown move follows."""


class VMPhase(StrEnum):
    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    MIGRATING = "Migrating"
    FAILED = "Failed"
    UNKNOWN = "Unknown"
    TERMINATING = "Terminating"


_VOLUME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Disk(Model):
    name: DnsLabel
    pool: DnsLabel | None = None
    """The StoragePool the disk's volume lives in. Without it: the legacy forms, ``size``
    (an image in the node's ``libvirt.diskDir``) or ``source`` (an operator's image)."""
    size: Size | None = None
    """A new volume of this size (``<vm>_<disk>`` in the pool), created once, before the VM
    is first defined; growing it later grows the volume (never shrinks). With ``from``:
    the clone's size (at least the origin's)."""
    volume: str | None = None
    """An existing volume in ``pool`` (not created, never deleted by PVC)."""
    from_: str | None = Field(default=None, alias="from")
    """Clone this volume of ``pool`` (a qcow2 overlay, an RBD clone) into the new volume, e.g.
    a cloud image."""
    source: str | None = None
    """Path of an existing image on the node (legacy; no pool)."""
    format: Literal["qcow2", "raw"] | None = None
    """The image format; None: qcow2 in folders, raw in RBD (which holds raw images only)."""

    @field_validator("volume", "from_")
    @classmethod
    def _volume_name(cls, value: str | None) -> str | None:
        if value is not None and not _VOLUME.fullmatch(value):
            raise ValueError(
                f"invalid volume name {value!r}: letters, digits, '.', '_' and '-', "
                "starting with a letter or digit, at most 128"
            )
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Disk:
        if self.source is not None:
            if self.pool or self.volume or self.from_ or self.size:
                raise ValueError("'source' is an image path: no 'pool', 'volume', 'from' or 'size'")
            if not self.source.startswith("/"):
                raise ValueError(f"disk source {self.source!r} must be an absolute path")
            return self
        if self.pool is None:
            if self.volume is not None or self.from_ is not None:
                raise ValueError("'volume' and 'from' name volumes of a pool: give 'pool'")
            if self.size is None:
                raise ValueError(
                    "a disk needs 'pool' with 'size', 'volume' or 'from' (or, without a pool, "
                    "'size' or 'source')"
                )
            return self
        if self.volume is not None and (self.size is not None or self.from_ is not None):
            raise ValueError("'volume' names an existing volume: no 'size' or 'from' with it")
        if self.volume is None and self.size is None and self.from_ is None:
            raise ValueError("a disk in a pool needs 'size' (a new volume), 'volume' or 'from'")
        return self

    @property
    def creates(self) -> bool:
        """Whether PVC creates (and tracks) this disk's volume: a size or a clone."""
        return self.source is None and self.volume is None


def derived_mac(vm: str, index: int) -> str:
    """A stable locally-administered MAC (QEMU's 52:54:00 prefix) from the VM name and NIC index:
    a NIC's MAC when its spec names none."""
    digest = hashlib.sha256(f"{vm}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


class Nic(Model):
    network: DnsLabel
    mac: str | None = None
    """Derived from the VM's name and the NIC's index when absent, so it never changes."""
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.lower()
        if not _MAC.fullmatch(value):
            raise ValueError(
                f"invalid MAC address {value!r}: expected six hex pairs like 52:54:00:12:34:56"
            )
        return value


class VMPlacement(Model):
    home: DnsLabel | None = None
    nodes: list[DnsLabel] = Field(default_factory=list)
    """Node limit: when non-empty, the VM runs only on these nodes."""
    policy: PlacementPolicy | None = None
    """None means the cluster's default policy."""

    @model_validator(mode="after")
    def _home_allowed(self) -> VMPlacement:
        if self.home and self.nodes and self.home not in self.nodes:
            raise ValueError(f"home node {self.home!r} is not among the allowed nodes {self.nodes}")
        return self


class VMMigration(Model):
    method: MigrationMethod = MigrationMethod.AUTO
    """How the VM moves when it must (migrate, flush, unflush, move): ``live`` (libvirt live
    migration: the guest keeps running; if that fails the VM stays where it is),
    ``shutdown`` (shut down, then start on the target), ``auto`` (the default, as PVC has
    always done: live; after failed attempts, or where a hypervisor cannot live-migrate, a
    shutdown move, with a MigrationFallback event)."""
    max_downtime: Duration = "300ms"
    """The longest pause of the guest at the switch-over of a live migration."""


class MigrationStatus(Model):
    """A move of a running VM, as its source node reports it while it runs (and a failed
    live migration until the next move)."""

    source: str
    target: str
    method: MigrationMethod
    """The method asked for (``live`` when forced by ``vm migrate --live``)."""
    state: MigrationState
    started: str
    attempts: int = 0
    data_total: int | None = None
    """Bytes to move (the guest's memory), from the hypervisor's job info."""
    data_remaining: int | None = None
    last_error: str | None = None
    placement_version: int | None = None
    """The version of the placement record this move carries out: a failure is undone
    (placed back on the source) only while the placement is still that decision."""


class VirtualMachineSpec(Model):
    vcpus: int = Field(default=1, ge=1, le=512)
    memory: Size
    disks: list[Disk] = Field(default_factory=list, max_length=26)
    nics: list[Nic] = Field(default_factory=list, max_length=32)
    run_strategy: RunStrategy = RunStrategy.ALWAYS
    shutdown_timeout: Duration = "180s"
    placement: VMPlacement = Field(default_factory=VMPlacement)
    migration: VMMigration = Field(default_factory=VMMigration)
    autostart: bool = False

    @model_validator(mode="after")
    def _unique_disk_names(self) -> VirtualMachineSpec:
        names = [d.name for d in self.disks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"disk names must be unique, repeated: {', '.join(dupes)}")
        return self


class VolumeStatus(Model):
    disk: str
    pool: str
    volume: str
    size: int | None = None
    """Bytes, as the pool reports the volume."""
    origin: str | None = None
    """The volume it was cloned from."""
    pool_type: str | None = None
    """``shared``, ``rbd`` or ``local`` (a local volume binds the VM to its node)."""
    created_by: str | None = None
    """The node that created it (None: an existing volume, not PVC's)."""


class VirtualMachineStatus(Status):
    phase: VMPhase = VMPhase.PENDING
    node: str | None = None
    last_node: str | None = None
    migration: MigrationStatus | None = None
    epoch: int | None = None
    reason: str | None = None
    domain_uuid: str | None = None
    macs: list[str] = Field(default_factory=list)
    failures: int = 0
    """Unexpected stops in a row (crash loop); reset once the domain runs stably."""
    restart_handled: str | None = None
    """The last pvc.io/restart annotation value the node carried out."""
    force_stop_handled: str | None = None
    """The last pvc.io/force-stop annotation value the node carried out."""
    volumes: list[VolumeStatus] = Field(default_factory=list)
    """The VM's disks in storage pools, as the node that defined it last found them."""
    booted: dict[str, str] = Field(default_factory=dict)
    """While its domain is up: a digest of each spec field that takes effect only when the
    domain boots (vcpus, memory, disks, nics) as it was started; the RestartRequired
    condition names the fields whose digest differs from the spec's."""

    @model_validator(mode="after")
    def _converged_only_when_settled(self) -> VirtualMachineStatus:
        """``Converged`` is written by the node that runs the VM, knowing its spec. Writers
        that do not set it keep it true: only in phase Running or Stopped, and the primary's
        record of a Halted VM placed nowhere (phase Stopped, reason Halted, no node) is
        converged."""
        converged = get_condition(self.conditions, CONVERGED)
        settled = self.phase in (VMPhase.RUNNING, VMPhase.STOPPED)
        if converged is not None and converged.status == ConditionStatus.TRUE and not settled:
            wanted = set_condition(
                self.conditions, CONVERGED, False, self.phase.value, f"the VM is {self.phase.value}"
            )
        elif (
            self.phase == VMPhase.STOPPED
            and self.reason == "Halted"
            and self.node is None
            and (converged is None or converged.status != ConditionStatus.TRUE)
        ):
            wanted = set_condition(
                self.conditions,
                CONVERGED,
                True,
                "Stopped",
                "runStrategy is Halted: it runs nowhere",
            )
        else:
            return self
        self.conditions[:] = wanted  # in place: assigning would validate (and call this) again
        return self


class Placement(Model):
    """Where the primary put a VM. Kept apart from spec so GitOps never sees it as drift."""

    node: str | None = None
    epoch: int = 0
    reason: str = ""
    migration: str | None = None
    """The node a temporary move came from (``vm unmigrate`` and unflush return it there)."""
    method: MigrationMethod | None = None
    """How this move goes; None: the VM's spec.migration.method. ``live`` from
    ``vm migrate --live``: live only, never a shutdown."""


class VirtualMachine(Resource):
    KIND = "VirtualMachine"
    PLURAL = "vms"
    SHORT_NAMES = ("vm", "vms", "virtualmachine", "virtualmachines")
    FINALIZERS = (DOMAIN_FINALIZER,)

    kind: Literal["VirtualMachine"] = "VirtualMachine"
    metadata: ObjectMeta
    spec: VirtualMachineSpec
    status: VirtualMachineStatus | None = None
