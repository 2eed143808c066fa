"""StoragePool: where VM disks live. ``shared`` (a folder every node mounts), ``rbd`` (Ceph,
through libvirt network disks) or ``local`` (a folder on each node; binds a VM to its node)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, FieldSerializationInfo, SecretStr, field_serializer, model_validator

from schemas.meta import Model, ObjectMeta, Status
from schemas.node import SECRET_MASK
from schemas.resource import Resource

# A Ceph pool or user name, a monitor address: letters, digits and . _ - (and : [ ] for
# addresses); nothing a command line or an XML attribute could read otherwise.
_CEPH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MONITOR = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(:[0-9]{1,5})?$")
_KEY = re.compile(r"^[A-Za-z0-9+/]{20,}={0,2}$")


class PoolType(StrEnum):
    SHARED = "shared"
    RBD = "rbd"
    LOCAL = "local"


class RbdConfig(Model):
    monitors: list[str] = Field(min_length=1)
    """Ceph monitors, ``host`` or ``host:port`` (port 6789 when absent: the v1 protocol port,
    which QEMU's librbd takes from a plain address)."""
    pool: str
    """The Ceph pool that holds the images (it must exist: PVC does not create it)."""
    user: str = "admin"
    """The cephx user, without ``client.`` (needs ``profile rbd`` on the pool)."""
    key: SecretStr
    """The user's cephx key (base64, as ``ceph auth get-key`` prints it). Each node puts it
    in a private libvirt secret for its domains; the API never shows it (``********``)."""

    @field_serializer("key", when_used="json")
    def _hide_key(self, value: SecretStr, info: FieldSerializationInfo) -> str:
        if isinstance(info.context, dict) and info.context.get("reveal_secrets"):
            return value.get_secret_value()
        return SECRET_MASK

    @model_validator(mode="after")
    def _names(self) -> RbdConfig:
        for monitor in self.monitors:
            if not _MONITOR.fullmatch(monitor):
                raise ValueError(f"monitor {monitor!r} is not 'host' or 'host:port'")
        for field in ("pool", "user"):
            if not _CEPH_NAME.fullmatch(getattr(self, field)):
                raise ValueError(f"rbd.{field} {getattr(self, field)!r} is not a Ceph name")
        key = self.key.get_secret_value()
        if key != SECRET_MASK and not _KEY.fullmatch(key):
            raise ValueError("rbd.key is not a cephx key (base64, as 'ceph auth get-key' prints)")
        return self


class StoragePoolSpec(Model):
    type: PoolType
    path: str | None = None
    """``shared`` and ``local``: the folder on each node (absolute). ``shared``: the same
    storage on every node that reaches it (NFS, CephFS, a SAN filesystem)."""
    rbd: RbdConfig | None = None
    """``rbd``: the Ceph cluster and pool."""

    @model_validator(mode="after")
    def _type_fields(self) -> StoragePoolSpec:
        if self.type == PoolType.RBD:
            if self.rbd is None:
                raise ValueError("an rbd pool needs 'rbd' (monitors, pool, user, key)")
            if self.path is not None:
                raise ValueError("'path' is for shared and local pools, not rbd")
        else:
            if self.path is None:
                raise ValueError(f"a {self.type.value} pool needs 'path' (a folder)")
            if not self.path.startswith("/") or "/../" in f"{self.path}/":
                raise ValueError(f"path {self.path!r} must be an absolute path")
            if self.rbd is not None:
                raise ValueError(f"'rbd' is for rbd pools, not {self.type.value}")
        return self


class PoolNodeState(Model):
    """The pool as one node sees it (from that node's status)."""

    node: str
    reachable: bool
    capacity: int | None = None
    free: int | None = None
    message: str | None = None


class StoragePoolStatus(Status):
    nodes: list[PoolNodeState] = Field(default_factory=list)
    """Each node's view: reachable or not (and why), capacity and free bytes."""
    capacity: int | None = None
    """For shared and rbd pools: bytes, as the reaching nodes report (None: unknown)."""
    free: int | None = None


class StoragePool(Resource):
    KIND = "StoragePool"
    PLURAL = "storagepools"
    SHORT_NAMES = ("storagepool", "storagepools", "pool", "pools", "sp")
    SECRET_FIELDS = (("rbd", "key"),)

    @classmethod
    def keep_secrets(cls, new_spec: dict[str, Any], current_spec: dict[str, Any]) -> None:
        rbd = new_spec.get("rbd") or {}
        if rbd.get("key") == SECRET_MASK:
            old = (current_spec.get("rbd") or {}).get("key")
            if old is not None:
                rbd["key"] = old

    kind: Literal["StoragePool"] = "StoragePool"
    metadata: ObjectMeta
    spec: StoragePoolSpec
    status: StoragePoolStatus | None = None
