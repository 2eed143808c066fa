"""VirtualMachine: what a user asks to run, and what the cluster reports of it."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator

from schemas.meta import DnsLabel, Model, ObjectMeta, Status
from schemas.quantity import Duration, Size
from schemas.resource import Resource

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


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


class Disk(Model):
    name: DnsLabel
    size: Size | None = None
    """Create a new image of this size on the node when it does not exist yet."""
    source: str | None = None
    """Path of an existing image on the node."""
    format: Literal["qcow2", "raw"] = "qcow2"

    @model_validator(mode="after")
    def _size_or_source(self) -> Disk:
        if (self.size is None) == (self.source is None):
            raise ValueError("a disk needs exactly one of 'size' (a new image) or 'source'")
        if self.source is not None and not self.source.startswith("/"):
            raise ValueError(f"disk source {self.source!r} must be an absolute path")
        return self


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

    kind: Literal["VirtualMachine"] = "VirtualMachine"
    metadata: ObjectMeta
    spec: VirtualMachineSpec
    status: VirtualMachineStatus | None = None
