"""Secrets (a Node's fence password, a StoragePool's cephx key) apart from the spec.

The spec znode keeps only the mask ``********`` where a secret goes; the values sit in
``/secrets/<plural>/<name>`` (``{"fence.password": "..."}``), which the API may create and
set but never read, coordinators read (fencing) and, for StoragePools, nodes read (each
puts the key in its libvirt). A spec from before this split still holds the value itself:
``reveal`` uses it, and ``pvc-secure-store`` moves it.

So that a write can tell a new value from the stored one without reading it (the API may
not), each stored value has a salted scrypt digest in the spec znode, beside ``spec``
under ``secretDigests`` (schemas/resource.py: no model carries it, so no daemon reads it
and the API never shows it); every identity that reads specs reads it, hence a slow KDF.
A value whose digest matches is unchanged; a new one (or one stored before digests) is
written and reported ``configured``. The secret znode and the spec are written in one
ZooKeeper transaction (zkstore/specwrite.py).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NodeExistsError, NoNodeError

from schemas import KINDS, Resource
from schemas.node import SECRET_MASK
from zkstore.codec import decode, encode

log = logging.getLogger(__name__)

# One secret field per kind: the API cannot read the stored values to merge a kept one
# with a new one, so the secret znode is always written whole. A kind with two would need
# a znode per field (and its ACL in zkstore/acl.py).
assert all(len(cls.SECRET_FIELDS) <= 1 for cls in KINDS), "one secret field per kind"

# scrypt's cost: ~16 MiB and tens of milliseconds per digest, paid once per write that
# carries a secret value; stored in each digest, so a later version may raise it.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCHEME = "scrypt"


class SecretMissing(Exception):
    """The spec holds a secret's mask but no value is stored for it: nothing may use the
    mask in its place (a fence agent would log in with ``********``)."""

    def __init__(self, kind: str, name: str, field: str, why: str = "") -> None:
        self.kind, self.name, self.field = kind, name, field
        super().__init__(
            why
            or f"{kind} {name!r} has no stored spec.{field} (its spec holds only the mask "
            f"{SECRET_MASK!r}): apply the {kind} again with the value itself"
        )


class SecretUnreadable(SecretMissing):
    """This daemon's ZooKeeper identity may not read the secret (zkstore/acl.py)."""

    def __init__(self, kind: str, name: str, field: str) -> None:
        super().__init__(
            kind,
            name,
            field,
            f"this daemon's ZooKeeper identity may not read spec.{field} of {kind} {name!r} "
            "(only coordinators read fence passwords; docs/configuration.md, ZooKeeper "
            "identities)",
        )


def _key(field: tuple[str, ...]) -> str:
    return ".".join(field)


def _holder(spec: dict[str, Any], field: tuple[str, ...]) -> dict[str, Any] | None:
    holder: Any = spec
    for part in field[:-1]:
        holder = holder.get(part) if isinstance(holder, dict) else None
    return holder if isinstance(holder, dict) else None


def split_secrets(cls: type[Resource], spec: dict[str, Any]) -> dict[str, str]:
    """Take the secret values out of ``spec`` (a stored form), leaving the mask in their
    place; returns them by dotted field name. A masked value is no value: left alone."""
    found: dict[str, str] = {}
    for field in cls.SECRET_FIELDS:
        holder = _holder(spec, field)
        value = holder.get(field[-1]) if holder is not None else None
        if holder is not None and isinstance(value, str) and value != SECRET_MASK:
            found[_key(field)] = value
            holder[field[-1]] = SECRET_MASK
    return found


def masked_fields(cls: type[Resource], spec: dict[str, Any]) -> list[str]:
    """The secret fields whose value ``spec`` (a stored form) keeps apart: it holds the mask."""
    return [
        _key(field)
        for field in cls.SECRET_FIELDS
        if (holder := _holder(spec, field)) is not None and holder.get(field[-1]) == SECRET_MASK
    ]


def digest(value: str, salt: bytes | None = None) -> str:
    """A salted scrypt digest of ``value``: ``scrypt$N$r$p$salt$hash`` (base64)."""
    salt = os.urandom(16) if salt is None else salt
    hashed = hashlib.scrypt(
        value.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    parts = (_SCHEME, str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P))
    return "$".join((*parts, base64.b64encode(salt).decode(), base64.b64encode(hashed).decode()))


def digest_matches(value: str, stored: str | None) -> bool:
    """Whether ``value`` is the value ``stored`` (a ``digest``) was made from."""
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, hashed = stored.split("$")
        if scheme != _SCHEME:
            return False
        again = hashlib.scrypt(
            value.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except (ValueError, TypeError):
        return False  # unreadable: the value counts as new, and is written with a new one
    return hmac.compare_digest(again, base64.b64decode(hashed))


@dataclass(frozen=True)
class SecretWrite:
    """What one spec write does to the object's secrets."""

    values: dict[str, str] | None = None
    """Store these (the secret znode written whole); None: leave the znode as it is."""
    digests: dict[str, str] | None = None
    """Their digests (the digests znode written whole), with ``values``."""
    remove: bool = False
    """The spec has no secret field left: the secret znode and the digests go."""
    changed: tuple[str, ...] = ()
    """Dotted fields (under spec) whose stored value this write changes."""

    @property
    def writes(self) -> bool:
        return self.values is not None or self.remove


def plan_secrets(
    cls: type[Resource],
    spec: dict[str, Any],
    given: dict[str, str],
    stored_digests: dict[str, str] | None,
    *,
    secret_stored: bool,
) -> SecretWrite:
    """What to do with the secret values ``given`` (taken out of ``spec``, the stored form
    to write), knowing the digests stored now (None: no digests znode) and whether the
    secret znode exists. Reads no secret."""
    if not cls.SECRET_FIELDS:
        return SecretWrite()
    digests = stored_digests or {}
    changed = tuple(
        field
        for field, value in given.items()
        if not secret_stored or not digest_matches(value, digests.get(field))
    )
    if changed:
        made = {f: digest(v) if f in changed else digests[f] for f, v in given.items()}
        return SecretWrite(values=dict(given), digests=made, changed=changed)
    if not masked_fields(cls, spec) and (secret_stored or stored_digests is not None):
        # No secret field left in the spec: what is stored for it goes too.
        return SecretWrite(remove=True, changed=tuple(_key(f) for f in cls.SECRET_FIELDS))
    return SecretWrite()


def write_secrets(
    client: KazooClient, path: str, values: dict[str, str], *, merge: bool = False
) -> None:
    """Create or replace the secrets znode at ``path`` on its own (pvc-secure-store's
    migration; a spec write sets it in its transaction). With ``merge``, keep the values
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
        holder = _holder(spec, field)
        if value is not None and holder is not None and holder.get(field[-1]) is not None:
            holder[field[-1]] = value


def reveal_stored(
    client: KazooClient, path: str, cls: type[Resource], name: str, stored: dict[str, Any]
) -> bool:
    """Put the values stored at ``path`` into ``stored`` (a stored form) where it holds the
    mask; False when it holds none (nothing read). Raises SecretMissing for a mask with no
    value stored, SecretUnreadable when this identity may not read them: the mask is never
    passed on as the value."""
    masked = masked_fields(cls, stored.get("spec") or {})
    if not masked:
        return False
    try:
        secrets = read_secrets(client, path)
    except NoAuthError:
        log.warning("event=secret_unreadable kind=%s name=%s", cls.KIND, name)
        raise SecretUnreadable(cls.KIND, name, masked[0]) from None
    for field in masked:
        if field not in secrets:
            log.warning("event=secret_missing kind=%s name=%s field=%s", cls.KIND, name, field)
            raise SecretMissing(cls.KIND, name, field)
    reveal_into(cls, stored, secrets)
    return True


__all__ = [
    "SecretMissing",
    "SecretUnreadable",
    "SecretWrite",
    "digest",
    "digest_matches",
    "masked_fields",
    "plan_secrets",
    "read_secrets",
    "reveal_into",
    "reveal_stored",
    "split_secrets",
    "write_secrets",
]
