"""The one path of a spec write (create, replace, apply), planned from one read and carried
out in one ZooKeeper transaction: the spec (with its secrets' digests) and the secrets
together, so a crash leaves either both or neither (zkstore/secrets.py).

``plan`` decides (what the write would store, its outcome, what happens to the secrets);
the store's writes commit that plan (``commit``) and the server-side dry run
(zkstore/planning.py) reports it, so both agree by construction.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import ZnodeStat

from schemas import Resource, utcnow
from schemas.resource import SECRET_DIGESTS
from zkstore import paths
from zkstore.codec import decode, encode
from zkstore.errors import AlreadyExists, Conflict, NotFound, raise_if_refused
from zkstore.metamerge import keeps_finalizers, merge_metadata, with_kind_finalizers
from zkstore.secrets import SecretWrite, plan_secrets, split_secrets

log = logging.getLogger(__name__)

ApplyOutcome = Literal["created", "configured", "unchanged"]


class Retry(Exception):
    """The store changed between the plan's read and its transaction: plan again."""


@dataclass(frozen=True)
class SpecWrite:
    """One planned write of ``resource``'s spec, from one read of what is stored."""

    resource: Resource
    outcome: ApplyOutcome
    path: str
    read: tuple[bytes, ZnodeStat] | None
    """The spec znode as read (None: the object does not exist, it is created)."""
    after: dict[str, Any]
    """The stored form to write (secrets masked, their digests under SECRET_DIGESTS; no
    resourceVersion, no uid yet)."""
    secrets: SecretWrite
    secret_path: str
    secret_version: int
    """The secret znode's version as read (-1: none)."""


@dataclass(frozen=True)
class SpecRead:
    """What a plan reads of one object, before it decides anything."""

    spec: tuple[bytes, ZnodeStat] | None
    """The spec znode (None: the object does not exist)."""
    secret_version: int
    """The secret znode's version (-1: none; never read for a kind without secrets)."""


@dataclass(frozen=True)
class PendingRead:
    """The reads of one plan, sent (``start_read``)."""

    spec: IAsyncResult
    secret: IAsyncResult | None

    def wait(self) -> SpecRead:
        secret_stat = self.secret.get() if self.secret is not None else None
        try:
            spec = self.spec.get()
        except NoNodeError:
            spec = None
        return SpecRead(spec, int(secret_stat.version) if secret_stat is not None else -1)


def start_read(client: KazooClient, root: str, cls: type[Resource], name: str) -> PendingRead:
    """Send the reads a plan of ``cls`` ``name`` needs without waiting for them (an apply of
    many objects sends all of theirs at once); ``PendingRead.wait`` collects them."""
    spec_read = client.get_async(root + paths.resource(cls.PLURAL, name))
    # exists needs no READ: the API learns the secret's version without reading it.
    secret_path = root + paths.secret(cls.PLURAL, name)
    secret_read = client.exists_async(secret_path) if cls.SECRET_FIELDS else None
    return PendingRead(spec_read, secret_read)


def plan(
    client: KazooClient, root: str, resource: Resource, *, create: bool, update: bool
) -> SpecWrite:
    """Plan a create (``create`` only), a replace (``update`` only) or an apply (both);
    raises NotFound, AlreadyExists, Conflict (a stale resourceVersion) or Terminating."""
    read = start_read(client, root, type(resource), resource.name).wait()
    return decide(root, resource, read, create=create, update=update)


def decide(
    root: str, resource: Resource, read: SpecRead, *, create: bool, update: bool
) -> SpecWrite:
    """``plan`` from what ``read`` found (the same decision for one object and for many)."""
    cls = type(resource)
    name = resource.name
    path = root + paths.resource(cls.PLURAL, name)
    secret_path = root + paths.secret(cls.PLURAL, name)
    secret_version = read.secret_version
    if read.spec is None:
        if not create:
            raise NotFound(cls.KIND, name)
        # An apply of a saved object (get -o yaml, delete, apply): its resourceVersion guards
        # an update only; there is nothing to update, so it is created.
        new = resource.stored()
        meta = new["metadata"]
        for owned in ("resourceVersion", "deletionTimestamp", "uid"):
            meta.pop(owned, None)
        meta.update(generation=1, creationTimestamp=utcnow())
        with_kind_finalizers(cls, meta)
        given = split_secrets(cls, new.get("spec", {}))
        # A secret znode left by an older version's half-done write is replaced, never used.
        secrets = plan_secrets(cls, new.get("spec", {}), given, None, secret_stored=False)
        if not given and secret_version >= 0:
            secrets = SecretWrite(values={})
        if secrets.digests:
            new[SECRET_DIGESTS] = secrets.digests
        return SpecWrite(resource, "created", path, None, new, secrets, secret_path, secret_version)
    data, stat = read.spec
    if not update:
        raise AlreadyExists(cls.KIND, name)
    wanted = resource.metadata.resource_version
    if wanted and wanted != str(stat.mzxid):
        raise Conflict(
            f"{cls.KIND} {name!r} was modified: resourceVersion {wanted} is stale "
            f"(current {stat.mzxid}); re-read and retry"
        )
    current: dict[str, Any] = decode(data)
    new = resource.stored()
    cls.keep_secrets(new.get("spec", {}), current.get("spec", {}))
    # After keep_secrets, so a value still inside an old spec moves out too.
    given = split_secrets(cls, new.get("spec", {}))
    secrets = plan_secrets(
        cls,
        new.get("spec", {}),
        given,
        current.get(SECRET_DIGESTS),
        secret_stored=secret_version >= 0,
    )
    merged = merge_metadata(
        cls,
        name,
        current,
        new,
        keep_finalizers=keeps_finalizers(resource, apply=create),
        secrets_changed=bool(secrets.changed),
    )
    if merged is None and not secrets.writes:
        return SpecWrite(
            resource, "unchanged", path, (data, stat), current, secrets, secret_path, secret_version
        )
    after = {**current, "metadata": merged or current["metadata"], "spec": new["spec"]}
    if secrets.digests is not None:
        after[SECRET_DIGESTS] = secrets.digests
    if secrets.remove:
        after.pop(SECRET_DIGESTS, None)
    return SpecWrite(
        resource, "configured", path, (data, stat), after, secrets, secret_path, secret_version
    )


def add_to(txn: TransactionRequest, write: SpecWrite) -> dict[str, Any]:
    """Add ``write``'s operations to ``txn`` (its spec's first, then its secret's); returns
    the spec as it will be stored (a created object's with its new uid)."""
    after = dict(write.after)
    if write.read is None:
        after["metadata"] = {**after["metadata"], "uid": str(uuid.uuid4())}
        txn.create(write.path, encode(after))
    else:
        txn.set_data(write.path, encode(after), version=write.read[1].version)
    secrets = write.secrets
    if secrets.values is not None:
        data = encode(secrets.values)
        if write.secret_version >= 0:
            txn.set_data(write.secret_path, data, version=write.secret_version)
        else:
            txn.create(write.secret_path, data)
    if secrets.remove and write.secret_version >= 0:
        txn.delete(write.secret_path, version=write.secret_version)
    return after


def commit(client: KazooClient, write: SpecWrite) -> None:
    """Carry out ``write`` in one transaction. Raises Retry when something it read changed
    meanwhile, Conflict for a write pinned to a resourceVersion, NotFound when the object
    went, NoAuthError when this identity may not write a part of it."""
    txn = client.transaction()
    add_to(txn, write)
    check(write, txn.commit())


def check(write: SpecWrite, results: list[Any]) -> None:
    """What the results of ``write``'s operations (``add_to``) say: nothing when they were
    written, else the error ``commit`` raises."""
    cls = type(write.resource)
    name = write.resource.name
    secrets = write.secrets
    failures = [r for r in results if isinstance(r, Exception)]
    if not failures:
        if secrets.changed:
            log.info(
                "event=secret_written kind=%s name=%s fields=%s removed=%s",
                cls.KIND,
                name,
                ",".join(secrets.changed),
                secrets.remove,
            )
        return
    raise_if_refused(failures)  # this identity may not write a part of it: nothing written
    first = results[0]
    if write.read is None and isinstance(first, NodeExistsError):
        raise Retry  # created meanwhile: an apply updates it, a create says it exists
    if isinstance(first, BadVersionError) and write.resource.metadata.resource_version:
        raise Conflict(f"{cls.KIND} {name!r} was modified concurrently; re-read and retry")
    if isinstance(first, NoNodeError):
        raise NotFound(cls.KIND, name)
    log.debug(
        "event=spec_write_retry kind=%s name=%s results=%s",
        cls.KIND,
        name,
        [type(r).__name__ for r in results if not isinstance(r, RolledBackError)],
    )
    raise Retry


__all__ = [
    "ApplyOutcome",
    "PendingRead",
    "Retry",
    "SpecRead",
    "SpecWrite",
    "add_to",
    "check",
    "commit",
    "decide",
    "plan",
    "start_read",
]
