"""The one facade over ZooKeeper that every component holds (like kazoo's client.py)."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
)
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.retry import KazooRetry
from pydantic import ValidationError

from schemas import Placement, Resource, Status, utcnow
from zkstore import paths, specwrite
from zkstore.acl import AclPolicy, Identity
from zkstore.codec import decode, encode
from zkstore.connection import AclClient, ZookeeperTls, make_client
from zkstore.errors import (
    AlreadyPlaced,
    Conflict,
    EpochMoved,
    NotFound,
    PlacementMoved,
    Terminating,
    Unavailable,
    raise_if_refused,
)
from zkstore.migrations import CODE_VERSION, ensure_schema
from zkstore.secrets import reveal_stored
from zkstore.selector import Selector, parse_selector
from zkstore.specwrite import ApplyOutcome, SpecWrite

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)
SCHEMA_VERSION = CODE_VERSION
_CAS_RETRIES = 8
STOP_FLUSH = 2.0
"""Seconds ``Store.stop`` gives the writes it flushes (``flush_on_stop``) at most."""


def _set_event(event: threading.Event, _watched: object) -> None:
    event.set()


class Store:
    """Typed access to the cluster's objects under one root path.

    Spec, status and placement live in separate znodes so that a user's spec
    write never races a controller's status write; every update is a
    compare-and-set on the znode version.
    """

    def __init__(
        self,
        hosts: str,
        root: str = "/pvc",
        *,
        timeout: float = 10.0,
        client: KazooClient | None = None,
        auth: Identity | None = None,
        tls: ZookeeperTls | None = None,
        identities: Mapping[str, str] | None = None,
    ) -> None:
        """``auth``: the digest identity to connect with (zkstore/acl.py); then every znode
        this store creates gets the ACL of its path, from the identities' digests stored at
        ``/identities`` (or ``identities``, for the bootstrap that writes them)."""
        self.root = root.rstrip("/")
        self._index_dirs: set[str] = set()
        self._identities = identities
        self.client = client or make_client(hosts, timeout, identity=auth, tls=tls)
        self.recipes: dict[object, object] = {}
        """Per-store state of recipes that keep some (zkstore/events.py's appender), so it
        lives and dies with the store."""
        self._flush_on_stop: list[Callable[[float], None]] = []

    # -- lifecycle -------------------------------------------------------

    def flush_on_stop(self, flush: Callable[[float], None]) -> None:
        """Have ``stop`` call ``flush(deadline)`` (a ``time.monotonic()`` value) before the
        session closes: for writes sent without waiting, which a graceful stop must not
        lose (events recorded by the last steps of a shutdown)."""
        self._flush_on_stop.append(flush)

    def start(
        self, timeout: float = 30.0, *, holder: str = "", migration_timeout: float = 45.0
    ) -> None:
        """Connect, create the layout, and bring the schema to this code's version (running
        the migrations under their lock, zkstore/migrations.py); raises ``SchemaTooNew``
        when the store is newer than this code."""
        self.client.start(timeout=timeout)
        # A server that has just come up may still drop the first connection.
        retry = KazooRetry(max_tries=10, delay=0.1, max_delay=2.0)
        if isinstance(self.client, AclClient):
            self.client.acl_policy = AclPolicy(self.root, self._wait_identities(timeout))
        try:
            # The layout's folders (a version may add some) and the schema's migrations.
            retry(self.ensure_layout)
            ensure_schema(self.client, self.root, holder=holder, timeout=migration_timeout)
        except NoAuthError:
            if not isinstance(self.client, AclClient):
                raise Unavailable(
                    f"ZooKeeper refused this anonymous client under {self.root}: the store is "
                    "secured (ACLs); give this daemon its zookeeperAuth identity"
                ) from None
            raise Unavailable(
                f"{self.root} needs folders or a schema migration of this version, which this "
                "ZooKeeper identity may not make (pvcapid's api identity): start a pvcnoded "
                "of this version first"
            ) from None

    def _wait_identities(self, timeout: float) -> Mapping[str, str]:
        """The identities' digests; while the root has none yet (pvc-secure-store still
        running, as when the local cluster starts), wait for them (a watch, no polling) up
        to ``timeout`` seconds."""
        if self._identities is not None:
            return self._identities
        retry = KazooRetry(max_tries=10, delay=0.1, max_delay=2.0)
        path = self.path(paths.IDENTITIES)
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, _ = retry(self.client.get, path)
                return dict(decode(data)["digests"])
            except NoAuthError:
                break
            except NoNodeError:
                appeared = threading.Event()
                watch = functools.partial(_set_event, appeared)
                if retry(self.client.exists, path, watch=watch):
                    continue  # made meanwhile
                log.info("event=identities_awaited root=%s timeout=%s", self.root, timeout)
                if not appeared.wait(max(0.0, deadline - time.monotonic())):
                    break
        raise Unavailable(
            f"ZooKeeper root {self.root} has no {self.path(paths.IDENTITIES)} this identity "
            "may read: a wrong zookeeperAuth password, or a store not yet secured (run "
            "pvc-secure-store; docs/configuration.md, ZooKeeper identities)"
        )

    def stop(self) -> None:
        deadline = time.monotonic() + STOP_FLUSH
        for flush in list(self._flush_on_stop):
            try:
                flush(deadline)
            except Exception as exc:  # a record left unsent must not keep the session open
                log.warning("event=store_flush_failed error=%r", exc)
        self.client.stop()
        self.client.close()

    def add_state_listener(self, listener: Callable[[KazooState], None]) -> None:
        self.client.add_listener(listener)

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    def path(self, relative: str) -> str:
        return self.root + relative

    def ensure_layout(self) -> None:
        from schemas import KINDS

        for relative in (
            paths.INDEX_NODES,
            paths.LEASES_NODES,
            paths.LEASES_COORDINATORS,
            paths.LOCKS,
            paths.EVENTS,
            paths.HOLDERS,
            paths.FENCING,
            paths.DISKS,
            paths.VOLUME_DELETIONS,
            paths.REQUESTS,
        ):
            self.client.ensure_path(self.path(relative))
        for cls in KINDS:
            self.client.ensure_path(self.path(paths.kind_root(cls.PLURAL)))
            if cls.SECRET_FIELDS:
                self.client.ensure_path(self.path(paths.secrets_kind(cls.PLURAL)))
        # The schema version znode is the migrations' (zkstore/migrations.py), not the layout's.
        if self.client.exists(self.path(paths.EPOCH)) is None:
            with contextlib.suppress(NodeExistsError):
                self.client.create(self.path(paths.EPOCH), encode({}))

    # -- reading ---------------------------------------------------------

    def _read(self, cls: type[R], name: str, data: bytes, stat: ZnodeStat, status: Any) -> R:
        raw = decode(data)
        raw.setdefault("metadata", {})["resourceVersion"] = str(stat.mzxid)
        if status is None:
            return cls.model_validate(raw)
        try:
            return cls.model_validate({**raw, "status": status})
        except ValidationError as exc:
            # A status written by a newer or older controller must not hide the spec.
            log.warning(
                "event=unreadable_status kind=%s name=%s error=%s",
                cls.KIND,
                name,
                str(exc).replace("\n", " "),
            )
            return cls.model_validate(raw)

    def _get_status_raw(self, plural: str, name: str) -> Any:
        try:
            data, _ = self.client.get(self.path(paths.status(plural, name)))
        except NoNodeError:
            return None
        return decode(data)

    def get(self, cls: type[R], name: str) -> R:
        try:
            data, stat = self.client.get(self.path(paths.resource(cls.PLURAL, name)))
        except NoNodeError:
            raise NotFound(cls.KIND, name) from None
        return self._read(cls, name, data, stat, self._get_status_raw(cls.PLURAL, name))

    def exists(self, cls: type[Resource], name: str) -> bool:
        return self.client.exists(self.path(paths.resource(cls.PLURAL, name))) is not None

    def names(self, cls: type[Resource]) -> list[str]:
        return sorted(self.client.get_children(self.path(paths.kind_root(cls.PLURAL))))

    def list(self, cls: type[R], selector: str | Selector | None = None) -> list[R]:
        """Every object of a kind (optionally matching a label selector), sorted by name."""
        match = parse_selector(selector) if isinstance(selector, str) else selector
        names = self.names(cls)
        spec_reads = [
            self.client.get_async(self.path(paths.resource(cls.PLURAL, n))) for n in names
        ]
        status_reads = [
            self.client.get_async(self.path(paths.status(cls.PLURAL, n))) for n in names
        ]
        result: list[R] = []
        for name, spec_read, status_read in zip(names, spec_reads, status_reads, strict=True):
            try:
                data, stat = spec_read.get()
            except NoNodeError:
                continue  # deleted since we listed
            try:
                status = decode(status_read.get()[0])
            except NoNodeError:
                status = None
            obj = self._read(cls, name, data, stat, status)
            if match is None or match.matches(obj.metadata.labels):
                result.append(obj)
        return result

    # -- writing spec ----------------------------------------------------

    def create(self, resource: R) -> R:
        """Create the object (AlreadyExists when it does), its secrets in the same
        transaction; the store sets uid, generation and creationTimestamp."""
        created, _ = self._write_spec(resource, create=True, update=False)
        return created

    def update(self, resource: R) -> R:
        """Replace spec, labels and annotations. With metadata.resourceVersion: compare-and-set."""
        updated, _ = self._write_spec(resource, create=False, update=True)
        return updated

    def apply(self, resource: R, *, likely_new: bool = False) -> tuple[R, ApplyOutcome]:
        """Create or update; a no-op apply writes nothing and keeps generation/resourceVersion.
        A new secret value is a change (``configured``) though its spec keeps the same mask;
        the same value again is none (told by its digest, zkstore/secrets.py).

        ``likely_new``: the caller's cache has no such object (the API's). For a kind with no
        secrets the first try then plans a create without reading the store: its
        transaction's create is the check (the object exists after all: planned again from
        a read, as any plan that a write finds stale). One round trip fewer on the way from
        an apply to a running VM (issue 16)."""
        return self._write_spec(resource, create=True, update=True, likely_new=likely_new)

    def plan(self, resource: Resource, *, create: bool, update: bool) -> SpecWrite:
        """What a write of ``resource`` would do, read now (zkstore/specwrite.py)."""
        return specwrite.plan(self.client, self.root, resource, create=create, update=update)

    def _write_spec(
        self, resource: R, *, create: bool, update: bool, likely_new: bool = False
    ) -> tuple[R, ApplyOutcome]:
        cls = type(resource)
        # A kind with secrets always reads: a secret znode left without its spec is replaced
        # by the plan, which must know it is there.
        guess = likely_new and create and not cls.SECRET_FIELDS
        for _ in range(_CAS_RETRIES):
            if guess:
                guess = False
                absent = specwrite.SpecRead(spec=None, secret_version=-1)
                write = specwrite.decide(self.root, resource, absent, create=create, update=update)
            else:
                write = self.plan(resource, create=create, update=update)
            if write.outcome == "unchanged":
                assert write.read is not None
                data, stat = write.read
                status = self._get_status_raw(cls.PLURAL, resource.name)
                return self._read(cls, resource.name, data, stat, status), "unchanged"
            txn = self.client.transaction()
            specwrite.add_to(txn, write)
            committed = txn.commit_async()
            # The object as stored, read back in the same round trip: one session's requests
            # are answered in order, so these reads see the transaction (and whatever
            # another writer did after it, as a read after the commit would).
            spec_read = self.client.get_async(write.path)
            status_read = self.client.get_async(self.path(paths.status(cls.PLURAL, resource.name)))
            try:
                specwrite.check(write, committed.get())
            except specwrite.Retry:
                continue
            try:
                data, stat = spec_read.get()
            except NoNodeError:
                raise NotFound(cls.KIND, resource.name) from None
            try:
                status = decode(status_read.get()[0])
            except NoNodeError:
                status = None
            return self._read(cls, resource.name, data, stat, status), write.outcome
        raise Conflict(
            f"{cls.KIND} {resource.name!r} kept changing; gave up after {_CAS_RETRIES} tries"
        )

    def mutate_spec(self, cls: type[R], name: str, change: Callable[[R], None]) -> R:
        """Read, apply ``change`` to the model, write back with CAS; retried on conflict."""
        for _ in range(_CAS_RETRIES):
            obj = self.get(cls, name)
            change(obj)
            try:
                return self.update(obj)
            except Terminating:
                raise
            except Conflict:
                continue
        raise Conflict(f"{cls.KIND} {name!r} kept changing; gave up after {_CAS_RETRIES} tries")

    def delete(
        self,
        cls: type[Resource],
        name: str,
        resource_version: str | None = None,
        also: Callable[[TransactionRequest], None] | None = None,
        *,
        unplaced_only: bool = False,
    ) -> None:
        """Delete the object with its status, placement and node-index entry, atomically,
        whatever its finalizers (zkstore/deletion.py honours them); ``also`` adds operations
        to the same transaction (read anew on each try). With ``unplaced_only``, only while
        the VM is placed on no node (AlreadyPlaced otherwise, checked in the transaction)."""
        path = self.path(paths.resource(cls.PLURAL, name))
        for _ in range(_CAS_RETRIES):
            try:
                _, stat = self.client.get(path)
                children = self.client.get_children(path)
            except NoNodeError:
                raise NotFound(cls.KIND, name) from None
            if resource_version and resource_version != str(stat.mzxid):
                raise Conflict(f"{cls.KIND} {name!r} was modified: resourceVersion is stale")
            txn = self.client.transaction()
            if paths.PLACEMENT in children:
                placement, pstat = self._get_placement_raw(name)
                if unplaced_only and placement is not None and placement.node:
                    raise AlreadyPlaced(name, placement.node)
                if placement is not None and placement.node:
                    txn.delete(self.path(paths.node_index_entry(placement.node, name)))
                txn.delete(self.path(paths.placement(name)), version=pstat)
            for child in children:
                if child != paths.PLACEMENT:
                    txn.delete(f"{path}/{child}")
            txn.delete(path, version=stat.version)
            secret = self.path(paths.secret(cls.PLURAL, name))
            if cls.SECRET_FIELDS and self.client.exists(secret) is not None:
                txn.delete(secret)
            if also is not None:
                also(txn)
            results = txn.commit()
            if not any(isinstance(r, Exception) for r in results):
                return
            raise_if_refused(results)
            if any(isinstance(r, NoNodeError) for r in results) and not self.exists(cls, name):
                raise NotFound(cls.KIND, name)
            if resource_version and any(isinstance(r, BadVersionError) for r in results):
                raise Conflict(f"{cls.KIND} {name!r} was modified concurrently")
            log.debug("event=delete_retry kind=%s name=%s results=%s", cls.KIND, name, results)
        raise Conflict(f"{cls.KIND} {name!r} kept changing; gave up deleting it")

    def reveal(self, obj: R) -> R:
        """``obj`` with its secrets (the fence password, a pool's key) in place of their mask,
        for the code that uses them (fencing on the primary, storage on the nodes). Raises
        SecretMissing when a secret is not stored, SecretUnreadable when this identity may
        not read it: the mask never goes on as the value."""
        cls = type(obj)
        if not cls.SECRET_FIELDS:
            return obj
        stored = obj.stored()
        path = self.path(paths.secret(cls.PLURAL, obj.name))
        if not reveal_stored(self.client, path, cls, obj.name, stored):
            return obj
        return obj.model_copy(update={"spec": cls.model_validate(stored).spec})

    def mark_deleting(
        self,
        cls: type[R],
        name: str,
        resource_version: str | None = None,
        stamped: tuple[str, ...] = (),
    ) -> R:
        """Set ``metadata.deletionTimestamp`` (the first one stays) and the annotations
        ``stamped`` to it; nothing else changes, generation included. The object then waits
        for its finalizers (zkstore/deletion.py)."""
        path = self.path(paths.resource(cls.PLURAL, name))
        for _ in range(_CAS_RETRIES):
            try:
                data, stat = self.client.get(path)
            except NoNodeError:
                raise NotFound(cls.KIND, name) from None
            if resource_version and resource_version != str(stat.mzxid):
                raise Conflict(f"{cls.KIND} {name!r} was modified: resourceVersion is stale")
            current = decode(data)
            meta = current["metadata"]
            since = meta.get("deletionTimestamp") or utcnow()
            wanted = {**meta.get("annotations", {}), **dict.fromkeys(stamped, since)}
            if meta.get("deletionTimestamp") and wanted == meta.get("annotations", {}):
                return self._read(cls, name, data, stat, self._get_status_raw(cls.PLURAL, name))
            meta["deletionTimestamp"] = since
            meta["annotations"] = wanted
            written = encode(current)
            try:
                written_stat = self.client.set(path, written, version=stat.version)
            except BadVersionError:
                if resource_version:
                    raise Conflict(f"{cls.KIND} {name!r} was modified concurrently") from None
                continue
            except NoNodeError:
                raise NotFound(cls.KIND, name) from None
            log.info("event=deletion_requested kind=%s name=%s", cls.KIND, name)
            # As written, not read again: its node may finish the deletion (the object gone)
            # before a read, and the caller asked for the marking, which did happen.
            return self._read(
                cls, name, written, written_stat, self._get_status_raw(cls.PLURAL, name)
            )
        raise Conflict(f"{cls.KIND} {name!r} kept changing; gave up marking it deleted")

    # -- status ----------------------------------------------------------

    def read_status(self, cls: type[Resource], name: str) -> Any:
        return self._get_status_raw(cls.PLURAL, name)

    def write_status(self, cls: type[Resource], name: str, status: Status) -> int:
        """Replace the status of an existing object (controllers own status); returns the
        zxid of the write, so a writer can later tell whether anyone wrote since."""
        data = encode(status.wire())
        path = self.path(paths.status(cls.PLURAL, name))
        try:
            return int(self.client.set(path, data).mzxid)
        except NoNodeError:
            try:
                self.client.create(path, data)
            except NoNodeError:
                raise NotFound(cls.KIND, name) from None
            except NodeExistsError:
                return int(self.client.set(path, data).mzxid)
            stat = self.client.exists(path)
            return int(stat.mzxid) if stat is not None else 0

    def status_zxid(self, cls: type[Resource], name: str) -> int | None:
        """The zxid of the status's last write (None when it has none)."""
        stat = self.client.exists(self.path(paths.status(cls.PLURAL, name)))
        return int(stat.mzxid) if stat is not None else None

    def update_status(
        self,
        cls: type[Resource],
        name: str,
        change: Callable[[Any], Status | None],
        *,
        known: tuple[Any, int] | None = None,
    ) -> tuple[Any, int] | None:
        """Read-modify-write the status with compare-and-set, for status with two writers
        (a node's own agent and the primary's drain controller).

        ``change`` gets the stored status (or None) and returns the new one, or None
        to leave it; it runs again when another writer got in between. ``known``: the
        stored status and its znode version as this caller last wrote them (what this
        returns), tried first without a read; a write by anyone since fails its
        compare-and-set, and the status is then read (a heartbeat read its node's status
        before every write, issue 16). Returns the status written and its version, or
        None when ``change`` left it as it was.
        """
        path = self.path(paths.status(cls.PLURAL, name))
        for _ in range(_CAS_RETRIES):
            if known is not None:
                (current, version), known = known, None
            else:
                try:
                    data, stat = self.client.get(path)
                    current, version = decode(data), stat.version
                except NoNodeError:
                    current, version = None, None
            new = change(current)
            if new is None:
                return None
            wire = new.wire()
            encoded = encode(wire)
            try:
                if version is None:
                    self.client.create(path, encoded)
                    return wire, 0
                written = self.client.set(path, encoded, version=version)
                return wire, int(written.version)
            except NoNodeError:
                if version is None:
                    raise NotFound(cls.KIND, name) from None
            except (BadVersionError, NodeExistsError):
                pass
        raise Conflict(f"status of {cls.KIND} {name!r} kept changing; gave up")

    # -- placement (primary-owned) -----------------------------------------

    def _get_placement_raw(self, vm: str) -> tuple[Placement | None, int]:
        try:
            data, stat = self.client.get(self.path(paths.placement(vm)))
        except NoNodeError:
            return None, -1
        return Placement.model_validate(decode(data)), stat.version

    def read_placement(self, vm: str) -> Placement | None:
        return self._get_placement_raw(vm)[0]

    def read_placement_versioned(self, vm: str) -> tuple[Placement | None, int]:
        """The placement and its znode's version (-1 when there is none): every write of
        the placement makes a new version, so it names one decision to move."""
        return self._get_placement_raw(vm)

    def write_placement(
        self,
        vm: str,
        placement: Placement,
        *,
        epoch: int | None,
        only_if_unplaced: bool = False,
        only_from: str | None = None,
        only_version: int | None = None,
    ) -> None:
        """Set where a VM runs, moving its node-index entry in the same transaction.

        With ``epoch`` the write only succeeds while the cluster epoch is still
        that value, so a deposed primary's writes fail (EpochMoved). With
        ``only_from`` it only succeeds while the VM is still placed on that node
        (PlacementMoved otherwise): compare-and-set against the decision's read; with
        ``only_version`` only while the placement is still that version.

        ``only_if_unplaced`` first tries the transaction as for a VM never placed (it
        creates the placement znode, so it fails if there is one) without reading it: a
        new VM's placement costs one round trip; the read follows only when that fails.
        """
        guess_new = only_if_unplaced
        for _ in range(_CAS_RETRIES):
            if guess_new:
                old, version, guess_new = None, -1, False
            else:
                old, version = self._get_placement_raw(vm)
            if only_if_unplaced and old is not None and old.node:
                raise AlreadyPlaced(vm, old.node)
            if only_from is not None and (old is None or old.node != only_from):
                raise PlacementMoved(vm, only_from, old.node if old else None)
            if only_version is not None and version != only_version:
                raise PlacementMoved(vm, only_from or "-", old.node if old else None)
            txn = self.client.transaction()
            if epoch is not None:
                txn.check(self.path(paths.EPOCH), version=epoch)
            data = encode(placement.wire())
            if old is None:
                txn.create(self.path(paths.placement(vm)), data)
            else:
                txn.set_data(self.path(paths.placement(vm)), data, version=version)
            old_node = old.node if old else None
            if old_node and old_node != placement.node:
                txn.delete(self.path(paths.node_index_entry(old_node, vm)))
            if placement.node:
                index_dir = self.ensure_node_index(placement.node)
                if old_node == placement.node:
                    txn.set_data(f"{index_dir}/{vm}", data)
                else:
                    txn.create(f"{index_dir}/{vm}", data)
            results = txn.commit()
            failures = [
                r
                for r in results
                if isinstance(r, Exception) and not isinstance(r, RolledBackError)
            ]
            if not failures:
                return
            raise_if_refused(failures)
            if epoch is not None and isinstance(results[0], BadVersionError | NoNodeError):
                raise EpochMoved(
                    f"placement of {vm!r} refused: the cluster epoch moved past {epoch}"
                )
            if not self.client.exists(self.path(paths.resource("vms", vm))):
                raise NotFound("VirtualMachine", vm)
            log.debug("event=placement_retry vm=%s failures=%s", vm, failures)
        raise Conflict(f"placement of {vm!r} kept changing; gave up")

    def ensure_node_index(self, node: str) -> str:
        """The path of ``node``'s index folder, created the first time this store asks."""
        index_dir = self.path(paths.node_index(node))
        if index_dir not in self._index_dirs:
            self.client.ensure_path(index_dir)
            self._index_dirs.add(index_dir)
        return index_dir

    def node_index_entry(self, node: str, vm: str, *, sync: bool = False) -> Placement | None:
        """With ``sync``, the value as of now on the leader, not a lagging follower's.

        The sync and the read are sent together: ZooKeeper answers one session's
        requests in order, so the read still sees everything the sync waited for.
        """
        path = self.path(paths.node_index_entry(node, vm))
        pending_sync = self.client.sync_async(path) if sync else None
        read = self.client.get_async(path)
        if pending_sync is not None:
            pending_sync.get()
        try:
            data, _ = read.get()
        except NoNodeError:
            return None
        return Placement.model_validate(decode(data))

    def node_index_zxid(self, node: str, vm: str) -> int | None:
        """When the VM was last placed on ``node`` (the zxid of its index entry), after a sync."""
        path = self.path(paths.node_index_entry(node, vm))
        self.client.sync(path)
        stat = self.client.exists(path)
        return int(stat.mzxid) if stat is not None else None

    def read_status_zxid(self, cls: type[Resource], name: str) -> tuple[Any, int]:
        """The status and the zxid of its last write, after a sync (ordering "this report
        came after that change" needs ZooKeeper's order, never host clocks)."""
        path = self.path(paths.status(cls.PLURAL, name))
        self.client.sync(path)
        try:
            data, stat = self.client.get(path)
        except NoNodeError:
            return None, 0
        return decode(data), int(stat.mzxid)

    def node_index(self, node: str) -> dict[str, Placement]:
        index_dir = self.path(paths.node_index(node))
        try:
            names = self.client.get_children(index_dir)
        except NoNodeError:
            return {}
        result: dict[str, Placement] = {}
        for name in names:
            try:
                data, _ = self.client.get(f"{index_dir}/{name}")
            except NoNodeError:
                continue
            result[name] = Placement.model_validate(decode(data))
        return result

    # -- epoch -------------------------------------------------------------

    def read_epoch(self, *, sync: bool = False) -> int:
        """The cluster epoch is the version of the /epoch znode: each new primary bumps it."""
        if sync:
            self.client.sync(self.path(paths.EPOCH))
        _, stat = self.client.get(self.path(paths.EPOCH))
        return int(stat.version)

    def bump_epoch(
        self, holder: str, expected: int | None = None, *, lock_path: str | None = None
    ) -> int:
        """Start a new epoch; with ``expected``, only if nobody else started one since; with
        ``lock_path`` (an absolute path), only while that znode (the caller's election lock
        node) exists, in the same transaction."""
        data = encode({"holder": holder, "at": utcnow()})
        version = -1 if expected is None else expected
        if lock_path is None:
            try:
                stat = self.client.set(self.path(paths.EPOCH), data, version=version)
            except BadVersionError:
                raise EpochMoved(
                    f"the epoch moved past {expected} before {holder} could take it"
                ) from None
            return int(stat.version)
        txn = self.client.transaction()
        txn.check(lock_path, version=-1)
        txn.set_data(self.path(paths.EPOCH), data, version=version)
        results = txn.commit()
        if isinstance(results[0], Exception):
            raise EpochMoved(f"{holder} no longer holds its election lock; no new epoch")
        if isinstance(results[1], Exception):
            raise EpochMoved(f"the epoch moved past {expected} before {holder} could take it")
        return int(results[1].version)


__all__ = ["ApplyOutcome", "Store", "Unavailable"]
