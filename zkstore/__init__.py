"""Typed store over ZooKeeper: one Store facade, with leases, locks and informers beside it."""

from zkstore.disks import DiskRecord, DiskRecordLost, Disks
from zkstore.errors import (
    AlreadyExists,
    AlreadyPlaced,
    Conflict,
    EpochMoved,
    NotFound,
    PlacementMoved,
    StoreError,
    Unavailable,
)
from zkstore.holders import Claim, Holders, Release, node_in_use
from zkstore.informer import Informer, ResourceInformer
from zkstore.lease import Lease, LeaseHeld
from zkstore.lock import exclusive_lock, handover_read_lock, handover_write_lock, release
from zkstore.migrations import SchemaMigrationTimeout, SchemaTooNew
from zkstore.selector import InvalidSelector, Selector, parse_selector
from zkstore.store import ApplyOutcome, Store

__all__ = [
    "AlreadyExists",
    "AlreadyPlaced",
    "ApplyOutcome",
    "Claim",
    "Conflict",
    "DiskRecord",
    "DiskRecordLost",
    "Disks",
    "EpochMoved",
    "Holders",
    "Informer",
    "InvalidSelector",
    "Lease",
    "LeaseHeld",
    "NotFound",
    "PlacementMoved",
    "Release",
    "ResourceInformer",
    "SchemaMigrationTimeout",
    "SchemaTooNew",
    "Selector",
    "Store",
    "StoreError",
    "Unavailable",
    "exclusive_lock",
    "handover_read_lock",
    "handover_write_lock",
    "node_in_use",
    "parse_selector",
    "release",
]
