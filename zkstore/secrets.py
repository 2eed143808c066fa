"""Secrets (a Node's fence password, a StoragePool's cephx key) apart from the spec.

The spec znode keeps only the mask ``********`` where a secret goes; the values sit in
``/secrets/<plural>/<name>`` (``{"fence.password": "..."}``), which the API may create and
set but never read, coordinators read (fencing) and, for StoragePools, nodes read (each
puts the key in its libvirt). A spec from before this split still holds the value itself:
``reveal`` falls back to it, and ``pvc-secure-store`` moves it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

from schemas import Resource
from schemas.node import SECRET_MASK
from zkstore.codec import decode, encode

log = logging.getLogger(__name__)


def _key(field: tuple[str, ...]) -> str:
    return ".".join(field)


def split_secrets(cls: type[Resource], spec: dict[str, Any]) -> dict[str, str]:
    """Take the secret values out of ``spec`` (a stored form), leaving the mask in their
    place; returns them by dotted field name. A masked value is no value: left alone."""
    found: dict[str, str] = {}
    for field in cls.SECRET_FIELDS:
        holder: Any = spec
        for part in field[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue
        value = holder.get(field[-1])
        if isinstance(value, str) and value != SECRET_MASK:
            found[_key(field)] = value
            holder[field[-1]] = SECRET_MASK
    return found


def write_secrets(
    client: KazooClient, path: str, values: dict[str, str], *, merge: bool = False
) -> None:
    """Create or replace the secrets znode at ``path``. With ``merge``, keep the values
    stored for fields ``values`` does not name (needs READ: the migration only)."""
    data = dict(values)
    if merge:
        with contextlib.suppress(NoNodeError):
            data = {**decode(client.get(path)[0]), **values}
    try:
        client.set(path, encode(data))
    except NoNodeError:
        try:
            client.create(path, encode(data), makepath=True)
        except NodeExistsError:
            client.set(path, encode(data))


def read_secrets(client: KazooClient, path: str) -> dict[str, str]:
    """The stored secrets ({} when there are none); NoAuthError for an identity that may not
    read them."""
    try:
        data, _ = client.get(path)
    except NoNodeError:
        return {}
    stored = decode(data)
    return {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}


def reveal_into(cls: type[Resource], stored: dict[str, Any], secrets: dict[str, str]) -> None:
    """Put ``secrets`` back into a stored form where it holds only the mask."""
    spec = stored.get("spec") or {}
    for field in cls.SECRET_FIELDS:
        value = secrets.get(_key(field))
        holder: Any = spec
        for part in field[:-1]:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if value is not None and isinstance(holder, dict) and holder.get(field[-1]) is not None:
            holder[field[-1]] = value


__all__ = [
    "read_secrets",
    "reveal_into",
    "split_secrets",
    "write_secrets",
]
