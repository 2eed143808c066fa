"""The store's schema version (``<root>/schema``) and the migrations that move it forward.

The version is an integer in the znode ``/schema`` (``{"version": N}``; a store without
the znode is version 0). ``MIGRATIONS`` is the ordered list of steps, each taking the
store from ``version - 1`` to ``version``; the code's version is the last one's.

Every daemon (``pvcnoded``, ``pvcapid``) calls ``ensure_schema`` when it connects
(``Store.start``):

- the store is newer than the code: refuse to start (``SchemaTooNew``, logged as
  ``event=schema_too_new store=N code=M``): an old daemon must not write objects it
  does not understand;
- the store is older: take the exclusive lock ``/locks/schema-migration`` (waiting, up to
  ``timeout``, while another daemon holds it), read the version again and run the steps
  still missing, writing the version after each one. So racing daemons run each step
  once, and a daemon that died half-way leaves the version at the last finished step
  for the next one to resume from (a step must therefore be safe to run again after a
  crash before its version was written).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from zkstore import paths
from zkstore.codec import decode, encode
from zkstore.errors import StoreError

log = logging.getLogger(__name__)

MIGRATION_LOCK = "schema-migration"


class SchemaTooNew(StoreError):
    """The store was migrated by newer code than this: this daemon must not run on it."""

    def __init__(self, store_version: int, code_version: int) -> None:
        self.store_version = store_version
        self.code_version = code_version
        super().__init__(
            f"the store's schema is version {store_version}, newer than this code's "
            f"{code_version}: upgrade this daemon (PVC) to a version that knows schema "
            f"{store_version}"
        )


class SchemaMigrationTimeout(StoreError):
    """Another daemon held the migration lock for longer than this one would wait."""


@dataclass(frozen=True)
class Migration:
    version: int
    """The version the store has once this step ran."""
    description: str
    run: Callable[[KazooClient, str], None]
    """Called with the client and the store's root path."""


def _create_version_znode(_client: KazooClient, _root: str) -> None:
    """0 -> 1: the version znode itself (written by the runner); no data changes."""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create the schema version znode", _create_version_znode),
)
CODE_VERSION = MIGRATIONS[-1].version


def read_version(client: KazooClient, root: str) -> tuple[int, int]:
    """The store's schema version as of now on the leader, and the znode's version (-1:
    no znode, schema 0)."""
    path = root + paths.SCHEMA
    client.sync(path)
    try:
        data, stat = client.get(path)
    except NoNodeError:
        return 0, -1
    return _version_of(decode(data)), int(stat.version)


def _version_of(raw: Any) -> int:
    if isinstance(raw, dict):
        raw = raw.get("version", 0)
    return int(raw) if isinstance(raw, int) else 0


def ensure_schema(
    client: KazooClient,
    root: str,
    *,
    holder: str = "",
    timeout: float = 45.0,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> int:
    """Bring the store at ``root`` to the code's schema version (the last of
    ``migrations``), or refuse (``SchemaTooNew``); returns the version now stored."""
    code = migrations[-1].version
    current, _ = read_version(client, root)
    if current > code:
        log.error("event=schema_too_new store=%d code=%d root=%s", current, code, root)
        raise SchemaTooNew(current, code)
    if current == code:
        return current
    lock = client.Lock(root + paths.lock(MIGRATION_LOCK), holder)
    log.info(
        "event=schema_migration_wait store=%d code=%d holder=%s timeout=%.0fs",
        current,
        code,
        holder,
        timeout,
    )
    if not lock.acquire(timeout=timeout):
        raise SchemaMigrationTimeout(
            f"another daemon held the schema migration lock ({root}{paths.lock(MIGRATION_LOCK)}) "
            f"for over {timeout:.0f} s; the store is still at schema {current}"
        )
    try:
        return _migrate(client, root, code, migrations, holder)
    finally:
        lock.release()


def _migrate(
    client: KazooClient, root: str, code: int, migrations: Sequence[Migration], holder: str
) -> int:
    """Under the lock: run each step the store still lacks, writing its version after it."""
    current, znode_version = read_version(client, root)
    if current > code:
        log.error("event=schema_too_new store=%d code=%d root=%s", current, code, root)
        raise SchemaTooNew(current, code)
    for step in migrations:
        if step.version <= current:
            continue
        log.info(
            "event=schema_migration_start from=%d to=%d holder=%s step=%r",
            current,
            step.version,
            holder,
            step.description,
        )
        step.run(client, root)
        znode_version = _write_version(client, root, step.version, znode_version)
        log.info("event=schema_migrated from=%d to=%d holder=%s", current, step.version, holder)
        current = step.version
    return current


def _write_version(client: KazooClient, root: str, version: int, znode_version: int) -> int:
    """Compare-and-set the version znode. Written meanwhile outside the lock with this very
    version (code from before the migrations wrote ``{"version": 1}`` as it connected):
    taken as done; with any other, fail loudly."""
    path = root + paths.SCHEMA
    data = encode({"version": version})
    try:
        if znode_version < 0:
            client.create(path, data)
            return 0
        return int(client.set(path, data, version=znode_version).version)
    except (NodeExistsError, BadVersionError):
        stored, stored_znode_version = read_version(client, root)
        if stored == version:
            return stored_znode_version
        raise StoreError(
            f"the schema version znode {path} changed to {stored} during the migration to "
            f"{version}, outside the migration lock; nothing more was migrated: start the "
            "daemon again to look again"
        ) from None
