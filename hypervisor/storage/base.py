"""One small interface for a storage pool as one node sees it: volumes, their sizes, and how
a domain reaches them. Backends: a folder (``shared`` and ``local`` pools, qcow2/raw files)
and Ceph RBD (``rbd`` pools, images reached as libvirt network disks).

Nothing here knows of ZooKeeper: which node creates a volume, and when, is decided above
(zkstore/disks.py). What a backend guarantees is that creating never replaces: a volume
that exists is left alone and ``VolumeExists`` is raised, so a blank volume can never take
the place of one that holds data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


class StorageError(Exception):
    """A pool operation failed; the message says what and why, for status and events."""


class PoolUnreachable(StorageError):
    """This node does not reach the pool (folder absent or not writable, Ceph unreachable)."""


class VolumeExists(StorageError):
    """Creating or cloning found a volume of that name already: nothing was changed."""


class VolumeMissing(StorageError):
    """The volume (or the origin of a clone) does not exist in the pool."""


class VolumeInUse(StorageError):
    """The volume cannot be deleted: other volumes are clones of it, or (RBD) a client such
    as a running guest has it open."""


@dataclass(frozen=True)
class PoolUsage:
    """What a pool tells of its space, in bytes; None where its type does not say."""

    capacity: int | None = None
    free: int | None = None


@dataclass(frozen=True)
class FileSource:
    """A volume that is a file on this host."""

    path: str
    format: str
    """``qcow2`` or ``raw``."""


@dataclass(frozen=True)
class RbdSource:
    """A volume that is an RBD image, reached by QEMU through librbd (libvirt network disk)."""

    image: str
    """``<ceph pool>/<image>``."""
    hosts: tuple[tuple[str, int], ...]
    """The monitors: (address, port)."""
    user: str
    """The cephx user, without ``client.``."""
    secret_uuid: str
    """The libvirt secret (usage type ``ceph``) that holds the user's key on every node."""
    format: str = field(default="raw")


DiskSource = FileSource | RbdSource


class VolumeStore(ABC):
    """One pool on one node."""

    @abstractmethod
    def volume_name(self, vm: str, disk: str, fmt: str) -> str:
        """The name of the volume PVC creates for ``vm``'s ``disk`` (e.g. ``web_root.qcow2``
        in a folder, ``web_root`` in RBD): ``_`` is in no VM or disk name (DNS labels), so
        two VMs' volumes never share a name (``ab`` + ``c-d`` and ``ab-c`` + ``d`` would)."""

    @abstractmethod
    def probe(self) -> PoolUsage:
        """Whether this node reaches the pool now, and its space; raises PoolUnreachable.
        Bounded in time (a hung NFS mount or Ceph must not hang the caller for long)."""

    @abstractmethod
    def exists(self, volume: str) -> bool: ...

    @abstractmethod
    def create(self, volume: str, size: int, fmt: str) -> None:
        """A new blank volume of ``size`` bytes; raises VolumeExists when one is there (then
        nothing is changed). A volume that exists is always whole: a creation stopped
        half-way leaves nothing under the volume's name."""

    @abstractmethod
    def clone(self, volume: str, origin: str, size: int | None, fmt: str) -> None:
        """A new volume that starts as a copy of ``origin`` (a qcow2 overlay on it, an RBD
        clone of a snapshot of it), grown to ``size`` when larger than the origin; raises
        VolumeExists, or VolumeMissing when ``origin`` does not exist."""

    @abstractmethod
    def size(self, volume: str) -> int:
        """The volume's size as the guest sees it, in bytes; raises VolumeMissing."""

    @abstractmethod
    def resize(self, volume: str, size: int) -> None:
        """Grow the volume (not in use by a running guest) to ``size`` bytes; never shrinks:
        a smaller ``size`` raises StorageError and changes nothing."""

    @abstractmethod
    def delete(self, volume: str) -> None:
        """Remove the volume; nothing when it does not exist; VolumeInUse when clones of it
        exist or (RBD) it is open (then nothing is changed)."""

    @abstractmethod
    def source(self, volume: str, fmt: str | None) -> DiskSource:
        """How a domain on this node reaches ``volume``; ``fmt`` None: detect it."""
