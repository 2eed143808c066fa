"""An apply of many objects at once (an apply or a restore of hundreds or thousands of
documents, issue 16): the same plans and transactions as one object's apply
(zkstore/specwrite.py), without one thread and a few round trips per object.

- Read: every object's spec znode (and secret znode's version) is asked for at once,
  pipelined; each plan is then decided from what was read (``specwrite.decide``, the one
  decision both paths share).
- Write, ``SEGMENT`` objects at a time, in the order given: the objects a segment creates
  go in one ZooKeeper transaction (all or nothing; each object's operations exactly as its
  own apply would add them), the ones it configures each in their own, all sent at once.
  Unchanged objects are not written.
- A transaction that fails (an object created meanwhile, another write in between, an ACL
  refusal) is not reported: its objects are applied again one by one, each read anew
  (``Store.apply``), so a race or an error comes out exactly as in a single apply.
- A failure stops the apply after its segment (``Stopped``): what came before it, and
  the others of its segment, are written; what comes after it is not.

The objects returned are as written: metadata and spec with their resourceVersion (the
zxid of their transaction), without status (what an apply's answer and its wait for the
API's cache need).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import TransactionRequest
from kazoo.exceptions import NoNodeError
from kazoo.interfaces import IAsyncResult
from kazoo.protocol.states import ZnodeStat

from schemas import Resource
from zkstore import paths, specwrite
from zkstore.specwrite import ApplyOutcome, SpecRead, SpecWrite
from zkstore.store import Store

log = logging.getLogger(__name__)

SEGMENT = 50
"""Objects written per step: the creates of a segment are one transaction (ZooKeeper writes
a transaction of 50 creates at ~14,000 creates/s, one create at a time at ~450/s)."""
TRANSACTION_BYTES = 256 * 1024
"""Data after which a transaction takes no more objects: a transaction is one request, and
ZooKeeper refuses a request over its jute.maxbuffer (1 MB by default)."""

Errors = tuple[type[Exception], ...]


@dataclass(frozen=True)
class Applied:
    position: int
    """Where the object is in the sequence given."""
    stored: Resource
    """The object as written, or as stored when unchanged (no status)."""
    outcome: ApplyOutcome


class Stopped(Exception):
    """A write failed: ``failed`` (position, error) of the segment's objects not written,
    in order; ``rest`` the positions after the segment, none of them written."""

    def __init__(self, failed: list[tuple[int, Exception]], rest: range) -> None:
        super().__init__(str(failed[0][1]))
        self.failed = failed
        self.rest = rest


def apply_all(store: Store, resources: Sequence[Resource], stops: Errors) -> Iterator[Applied]:
    """Apply ``resources`` (each a checked object of a distinct kind and name) in order,
    yielding each one applied, segment by segment. An error of the ``stops`` types for an
    object (a stale resourceVersion, the object deleted meanwhile, the store lost) raises
    Stopped once the rest of its segment is written; any other error is raised at once."""
    reads = _read_all(store, resources)
    for start in range(0, len(resources), SEGMENT):
        segment = range(start, min(start + SEGMENT, len(resources)))
        step = _Segment(store, stops)
        for position in segment:
            try:
                read = reads[position]()
                plan = specwrite.decide(
                    store.root, resources[position], read, create=True, update=True
                )
            except stops as exc:
                step.failed.append((position, exc))
                continue
            step.plans[position] = plan
        step.write()
        for position in segment:
            if position in step.done:
                yield step.done[position]
        if step.failed:
            raise Stopped(
                sorted(step.failed, key=lambda f: f[0]), range(segment.stop, len(resources))
            )


def _read_all(store: Store, resources: Sequence[Resource]) -> list[Callable[[], SpecRead]]:
    """Send every read the plans need at once. An object its kind's children do not name
    (nor its secrets') is not there: nothing more to read for it (an apply that creates
    thousands reads one list, not thousands of znodes). One created meanwhile makes its
    transaction fail, and it is then planned anew like any other race."""
    client = store.client
    listed: dict[str, IAsyncResult] = {}
    for cls in {type(r) for r in resources}:
        kind_dirs = [paths.kind_root(cls.PLURAL)]
        if cls.SECRET_FIELDS:
            kind_dirs.append(paths.secrets_kind(cls.PLURAL))
        for relative in kind_dirs:
            listed[relative] = client.get_children_async(store.path(relative))
    present: set[str] = set()
    for relative, children in listed.items():
        try:
            present.update(f"{relative}/{name}" for name in children.get())
        except NoNodeError:
            continue  # no such kind yet: its objects' creates fail as alone (NotFound)
    reads: list[Callable[[], SpecRead]] = []
    for obj in resources:
        cls = type(obj)
        here = {paths.resource(cls.PLURAL, obj.name), paths.secret(cls.PLURAL, obj.name)}
        if here & present:
            reads.append(specwrite.start_read(client, store.root, cls, obj.name).wait)
        else:
            reads.append(_absent)
    return reads


def _absent() -> SpecRead:
    return SpecRead(None, -1)


@dataclass
class _Segment:
    store: Store
    stops: Errors
    plans: dict[int, SpecWrite] = field(default_factory=dict)
    done: dict[int, Applied] = field(default_factory=dict)
    failed: list[tuple[int, Exception]] = field(default_factory=list)

    def write(self) -> None:
        client = self.store.client
        txns: list[_Txn] = []
        creates: _Txn | None = None
        for position, plan in self.plans.items():
            if plan.outcome == "unchanged":
                assert plan.read is not None
                self._done(position, plan, plan.after, plan.read[1].mzxid)
                continue
            if plan.outcome == "configured":
                txn = _Txn(client.transaction(), creates=False)
                txns.append(txn)
                txn.add(position, plan)
            elif creates is None or not creates.add(position, plan):
                # A new transaction of creates: the first, or the last one is full.
                creates = _Txn(client.transaction(), creates=True)
                txns.append(creates)
                creates.add(position, plan)
        # Every transaction is sent before any answer is awaited.
        sent = [(txn, txn.request.commit_async()) for txn in txns]
        created: list[tuple[_Txn, IAsyncResult]] = []
        for txn, answer in sent:
            try:
                results = answer.get()
            except self.stops as exc:  # the store lost: written or not, unknown, as alone
                self.failed.extend((position, exc) for position, _plan, _form in txn.objects)
                continue
            if any(isinstance(r, Exception) for r in results):
                self._one_by_one(txn, results)
            elif not txn.creates:
                # A set_data answers with the znode's stat: its mzxid is the new version.
                self._checked(txn, results, results[0].mzxid)
            else:
                # A create answers with its path only; the transaction's zxid is the czxid
                # of every znode it created, one exists away.
                created.append((txn, client.exists_async(txn.objects[0][1].path)))
        for txn, exists in created:
            try:
                zxid = _created_zxid(self.store, txn, exists.get())
            except self.stops:
                zxid = None  # written all the same: reported without a version
            self._checked(txn, [True] * txn.ops, zxid)

    def _checked(self, txn: _Txn, results: list[Any], zxid: int | None) -> None:
        at = 0
        for position, plan, form, ops in txn.objects_with_ops():
            specwrite.check(plan, results[at : at + ops])  # logs what secrets it wrote
            at += ops
            self._done(position, plan, form, zxid)

    def _done(self, position: int, plan: SpecWrite, form: dict[str, Any], zxid: int | None) -> None:
        metadata = {**form["metadata"]}
        if zxid is not None:
            metadata["resourceVersion"] = str(zxid)
        stored = type(plan.resource).model_validate({**form, "metadata": metadata})
        self.done[position] = Applied(position, stored, plan.outcome)

    def _one_by_one(self, txn: _Txn, results: list[Any]) -> None:
        """After ``txn`` failed (``results``): each of its objects committed alone (a
        transaction of one already was: its results say why), and planned anew when
        something it read had changed (specwrite.Retry), as Store.apply does."""
        log.debug("event=bulk_write_one_by_one objects=%d", len(txn.objects))
        for position, plan, _form in txn.objects:
            cls, name = type(plan.resource), plan.resource.name
            try:
                try:
                    if len(txn.objects) == 1:
                        specwrite.check(plan, results)
                    else:
                        specwrite.commit(self.store.client, plan)
                    stored, outcome = self.store.get(cls, name), plan.outcome
                except specwrite.Retry:
                    stored, outcome = self.store.apply(plan.resource)
            except self.stops as exc:
                self.failed.append((position, exc))
                continue
            self.done[position] = Applied(position, stored, outcome)


def _created_zxid(store: Store, txn: _Txn, first: ZnodeStat | None) -> int:
    """The zxid of ``txn``, a transaction of creates that succeeded, from the stat of its
    first object (``first``), or of another when that one is gone already."""
    if first is not None:
        return int(first.czxid)
    for _position, plan, _form in txn.objects[1:]:
        stat = store.client.exists(plan.path)
        if stat is not None:
            return int(stat.czxid)
    # All deleted meanwhile: their kind's last change of children is no older than them.
    kind_root = store.path(paths.kind_root(type(txn.objects[0][1].resource).PLURAL))
    stat = store.client.exists(kind_root)
    return int(stat.pzxid) if stat is not None else 0


@dataclass
class _Txn:
    """One transaction of a segment and the objects in it."""

    request: TransactionRequest
    creates: bool
    """Objects it creates (any number, up to TRANSACTION_BYTES), else one it updates."""
    objects: list[tuple[int, SpecWrite, dict[str, Any]]] = field(default_factory=list)
    op_counts: list[int] = field(default_factory=list)
    size: int = 0

    @property
    def ops(self) -> int:
        return len(self.request.operations)

    def add(self, position: int, plan: SpecWrite) -> bool:
        """Add ``plan``'s operations, unless the transaction holds objects already and they
        would take it past TRANSACTION_BYTES (False: nothing added). An object alone is
        always taken: one bigger than that is as big as its own apply would send."""
        before = self.ops
        form = specwrite.add_to(self.request, plan)
        added = self.request.operations[before:]
        size = sum(len(getattr(op, "data", b"") or b"") for op in added)
        if self.objects and self.size + size > TRANSACTION_BYTES:
            del self.request.operations[before:]
            return False
        self.size += size
        self.objects.append((position, plan, form))
        self.op_counts.append(len(added))
        return True

    def objects_with_ops(self) -> Iterator[tuple[int, SpecWrite, dict[str, Any], int]]:
        for (position, plan, form), ops in zip(self.objects, self.op_counts, strict=True):
            yield position, plan, form, ops


__all__ = ["SEGMENT", "Applied", "Stopped", "apply_all"]
