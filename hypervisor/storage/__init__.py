"""Storage pools as one node sees them, behind one interface (base.VolumeStore)."""

from hypervisor.storage.base import (
    DiskSource,
    FileSource,
    PoolUnreachable,
    PoolUsage,
    RbdSource,
    StorageError,
    VolumeExists,
    VolumeInUse,
    VolumeMissing,
    VolumeStore,
)

__all__ = [
    "DiskSource",
    "FileSource",
    "PoolUnreachable",
    "PoolUsage",
    "RbdSource",
    "StorageError",
    "VolumeExists",
    "VolumeInUse",
    "VolumeMissing",
    "VolumeStore",
]
