"""Multi-document apply: check every object first, then create or update each.

Not all-or-nothing, but nothing is written until every document is valid, admitted and,
where it pins a ``metadata.resourceVersion``, current. A write that still fails (another
client changed or deleted an object meanwhile, the store was lost) stops the apply there:
the error names the document that failed and lists the ones already written and the ones
not written (``details.written``, ``details.notWritten``), so re-running the same apply
finishes it. (One ZooKeeper transaction cannot hold an apply of any size: it is limited to
about 1 MB, the request body to 4 MiB.)

``dryRun=true`` reports what would happen (with the object before and after,
secrets masked) and writes nothing. ``prune=true`` with a ``labelSelector``
also deletes the objects of the applied kinds that carry those labels but are
not in the applied set (outcome ``pruned``), as ``kubectl apply --prune -l``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.deps import CacheDep, EventsDep, SettingsDep, StoreDep, parse_documents, read_body
from api.errors import STORE_UNAVAILABLE, ApiError, invalid
from api.primary_requests import Primary, PrimaryDep
from api.routes.resources import (
    API_PREFIX,
    SELECTOR_RULE,
    DryRun,
    body_doc,
    error_responses,
    example_of,
    kind_schema_ref,
    parse_strictly,
    refuse_if_in_use,
    settle,
)
from schemas import KINDS, FieldError, InvalidResource, Resource
from zkstore import AlreadyExists, Conflict, NotFound, Selector, Store, bulkwrite, parse_selector
from zkstore.admission import Reads, admit
from zkstore.planning import plan_write

router = APIRouter()

# In an apply each document says what it is: apiVersion and kind are required.
_ANY_KIND = {
    "anyOf": [
        {"allOf": [kind_schema_ref(cls), {"required": ["apiVersion", "kind"]}]} for cls in KINDS
    ]
}
# The body of an apply (and of a restore): one object of any kind, or a list of them.
MANIFESTS_DOC = body_doc(
    {"anyOf": [_ANY_KIND, {"type": "array", "items": _ANY_KIND}]},
    example=[example_of(cls) for cls in KINDS],
)


CHANGED_SECRET = "******** (changed)"
"""What a diff shows, after the write, for a secret whose stored value the write changes."""


def _diffable(obj: Resource | None, changed_secrets: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """What diff shows: labels, annotations and spec (secrets masked; a secret the write
    changes shown as CHANGED_SECRET, so the diff is not empty)."""
    if obj is None:
        return None
    wire = obj.wire()
    meta = wire["metadata"]
    spec = wire.get("spec", {})
    for dotted in changed_secrets:
        *parents, last = dotted.split(".")
        holder = spec
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and last in holder:
            holder[last] = CHANGED_SECRET
    return {
        "metadata": {k: meta[k] for k in ("labels", "annotations") if meta.get(k)},
        "spec": spec,
    }


def _result(obj: Resource, outcome: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": obj.kind,
        "name": obj.name,
        "outcome": outcome,
        "resourceVersion": obj.metadata.resource_version,
        "generation": obj.metadata.generation,
        **extra,
    }


@router.post(
    f"{API_PREFIX}/apply",
    tags=["apply"],
    openapi_extra=MANIFESTS_DOC,
    responses=error_responses(400, 401, 403, 409, 413, 415, 422, 503),
)
async def apply(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    cache: CacheDep,
    events: EventsDep,
    primary: PrimaryDep,
    dryRun: DryRun = False,
    prune: Annotated[
        bool, Query(description="delete labelled objects of the applied kinds not in the body")
    ] = False,
    labelSelector: Annotated[
        str | None,
        Query(
            description="with prune: which objects the set owns",
            json_schema_extra={
                "x-pvc-rules": [SELECTOR_RULE, "with prune=true, required and not empty"]
            },
        ),
    ] = None,
) -> dict[str, Any]:
    body = await read_body(request, settings)
    docs = parse_documents(body, request.headers.get("content-type", ""))
    selector: Selector | None = None
    if prune:
        selector = parse_selector(labelSelector or "")
        if not selector.requirements:
            # An empty selector matches everything: prune would delete all of a kind.
            raise ApiError(
                400,
                "prune needs a labelSelector naming the objects this set owns",
                details={"field": "labelSelector"},
            )
    objects = parse_objects(docs)

    def run() -> list[dict[str, Any]]:
        # Every document admitted, and a prune checked, before anything is written: a
        # refusal (422, 409) leaves the cluster as it was.
        batch = {(o.kind, o.name): o for o in objects}
        reads = Reads(store)
        for index, obj in enumerate(objects):
            try:
                admit(store, obj, batch, reads)
            except InvalidResource as exc:
                raise invalid(exc.errors, prefix=f"document {index + 1}: ") from None
        if not dryRun:
            for index, obj in enumerate(objects):
                if obj.metadata.resource_version:
                    _check_pinned_version(store, obj, index)
        if selector is not None and not dryRun:
            _prune(store, cache, events, objects, selector, True, [], primary)
        results = write_objects(store, cache, events, objects, dry_run=dryRun)
        if selector is not None:
            try:
                _prune(store, cache, events, objects, selector, dryRun, results, primary)
            except (Conflict, *STORE_UNAVAILABLE) as exc:
                code = 503 if isinstance(exc, STORE_UNAVAILABLE) else 409
                raise ApiError(
                    code,
                    f"every document was written, then pruning stopped: {exc} (the objects "
                    "pruned before it are in details.written)",
                    details={"written": results},
                ) from None
        return results

    items = await run_in_threadpool(run)
    return {"apiVersion": "pvc/v1", "kind": "ApplyResult", "dryRun": dryRun, "items": items}


def parse_objects(docs: list[Any], *, unpinned: bool = False) -> list[Resource]:
    """The documents of an apply or a restore as objects, each valid and named once (422
    naming the document otherwise). ``unpinned``: their resourceVersion is dropped (a
    restore's objects come from another time or cluster)."""
    objects: list[Resource] = []
    seen: set[tuple[str, str]] = set()
    for index, doc in enumerate(docs):
        try:
            obj = parse_strictly(doc)
        except InvalidResource as exc:
            # Nothing is written unless every document is valid.
            raise invalid(exc.errors, prefix=f"document {index + 1}: ") from None
        if unpinned:
            obj.metadata.resource_version = None
        key = (obj.kind, obj.name)
        if key in seen:
            duplicate = FieldError(("metadata", "name"), f"{obj.kind} {obj.name!r} appears twice")
            raise invalid([duplicate], prefix=f"document {index + 1}: ")
        seen.add(key)
        objects.append(obj)
    return objects


def write_objects(
    store: Store,
    cache: Any,
    events: Any,
    objects: list[Resource],
    *,
    order: list[int] | None = None,
    dry_run: bool = False,
    reason: str = "",
    verb: str = "apply",
) -> list[dict[str, Any]]:
    """Create or update each checked object (an apply's, a restore's) in turn, in ``order``
    (indexes into ``objects``, as the documents came; default: that order), recording an
    event (``reason``, else the outcome) for each one changed. A write that fails stops it
    there: the error names its document and what was and was not written."""
    order = list(range(len(objects))) if order is None else order
    done = _Done(events, reason, verb)
    results: list[dict[str, Any]] = []
    try:
        if not dry_run and len(order) >= PARALLEL_FROM:
            _write_in_bulk(store, objects, order, results, done)
            return results
        for position, index in enumerate(order):
            obj = objects[index]
            try:
                results.append(_apply_one(store, cache, obj, dry_run, done))
            except WRITE_STOPS as exc:
                pending = [objects[i] for i in order[position:]]
                raise _stopped_at(exc, index, pending, results, verb) from None
    finally:
        # Wait for the cache once, after the writes (even those of a stopped apply):
        # by then most have arrived, and a client reads what was written.
        for obj, stored in done.written:
            settle(cache.of(type(obj)), obj.name, stored)
    return results


def _check_pinned_version(store: Store, obj: Resource, index: int) -> None:
    """409 before anything is written when a document pins a stale resourceVersion."""
    try:
        plan_write(store, obj, create=True, update=True)
    except Conflict as exc:
        raise ApiError(
            409,
            f"document {index + 1} ({obj.kind} {obj.name!r}): {exc}; nothing was written",
            details={"document": index + 1, "kind": obj.kind, "name": obj.name, "written": []},
        ) from None


PARALLEL_FROM = 64
"""An apply or restore of this many documents or more is written in bulk
(zkstore/bulkwrite.py): its reads pipelined, its creates in transactions of many objects.
One object at a time is a few ZooKeeper round trips each, and 10,000 VMs took minutes
(issue 16)."""
WRITE_STOPS = (Conflict, AlreadyExists, NotFound, *STORE_UNAVAILABLE)
"""The errors of one document's write that stop an apply there (with what was written and
what not); any other error is the request's."""


def _write_in_bulk(
    store: Store,
    objects: list[Resource],
    order: list[int],
    results: list[dict[str, Any]],
    done: _Done,
) -> None:
    """Write in ``order``, many documents at once. A failure stops it after the group of
    documents written together (bulkwrite.SEGMENT): the error names the first document that
    failed, what was written (a later document of the same group may have been) and what
    was not."""
    ordered = [objects[i] for i in order]
    try:
        for applied in bulkwrite.apply_all(store, ordered, WRITE_STOPS):
            obj = ordered[applied.position]
            results.append(done.result(obj, applied.stored, applied.outcome))
    except bulkwrite.Stopped as stop:
        first_position, first = stop.failed[0]
        pending = [ordered[p] for p, _ in stop.failed] + [ordered[p] for p in stop.rest]
        raise _stopped_at(first, order[first_position], pending, results, done.verb) from None


def _stopped_at(
    exc: Exception,
    index: int,
    pending: list[Resource],
    results: list[dict[str, Any]],
    verb: str,
) -> ApiError:
    """The error of a write that failed mid-way: which document (``index``, the first of
    ``pending``), what was and was not written."""
    obj = pending[0]
    changed = [r for r in results if r["outcome"] != "unchanged"]
    done = ", ".join(f"{r['kind']} {r['name']!r} {r['outcome']}" for r in changed)
    rest = len(pending) - 1
    code = 503 if isinstance(exc, STORE_UNAVAILABLE) else 409
    message = (
        f"document {index + 1} ({obj.kind} {obj.name!r}) was not written: {exc}. "
        f"Written before it: {done or 'nothing'}"
        + (f"; not written: it and the {rest} after it" if rest else "")
        + f". {verb.capitalize()} again to finish."
    )
    details = {
        "document": index + 1,
        "kind": obj.kind,
        "name": obj.name,
        "written": results,
        "notWritten": [{"kind": o.kind, "name": o.name} for o in pending],
    }
    return ApiError(code, message, details=details)


@dataclass
class _Done:
    """What an apply or a restore does with each document applied: an event for each one
    changed (``reason``, else the outcome; "... by ``verb``"), listed in ``written`` for
    the wait for the cache."""

    events: Any
    reason: str
    verb: str
    written: list[tuple[Resource, Resource]] = field(default_factory=list)

    def result(self, obj: Resource, stored: Resource, outcome: str) -> dict[str, Any]:
        if outcome != "unchanged":
            what = self.reason or outcome.capitalize()
            self.events.record(obj.kind, obj.name, what, f"{outcome} by {self.verb}")
            self.written.append((obj, stored))
        return _result(stored, outcome)


def _apply_one(
    store: Store, cache: Any, obj: Resource, dry_run: bool, done: _Done
) -> dict[str, Any]:
    if dry_run:
        plan = plan_write(store, obj, create=True, update=True)
        return _result(
            plan.result,
            plan.outcome,
            before=_diffable(plan.current),
            after=_diffable(plan.result, plan.changed_secrets),
            **({"changedSecrets": list(plan.changed_secrets)} if plan.changed_secrets else {}),
        )
    kind = cache.of(type(obj))
    likely_new = kind.ready.is_set() and kind.get(obj.name) is None
    stored, outcome = store.apply(obj, likely_new=likely_new)
    return done.result(obj, stored, outcome)


def _prune(
    store: Store,
    cache: Any,
    events: Any,
    applied: list[Resource],
    selector: Selector,
    dry_run: bool,
    results: list[dict[str, Any]],
    primary: Primary,
) -> None:
    """Delete (or with ``dry_run`` only check) what the set no longer has, adding each
    pruned object to ``results`` as it goes (``primary`` removes what goes at once)."""
    keep = {(o.kind, o.name) for o in applied}
    # VMs first: a network or a pool is refused (409) while a VM uses it.
    kinds = sorted({type(o) for o in applied}, key=lambda c: (c.KIND != "VirtualMachine", c.KIND))
    for cls in kinds:
        for obj in store.list(cls, selector):
            if (obj.kind, obj.name) in keep:
                continue
            refuse_if_in_use(store, cls, obj.name)
            if not dry_run:
                # As a delete: a VM is shut down gracefully first (Terminating), then goes.
                try:
                    marked, gone = primary.deletions(events).request(
                        cls, obj.name, resource_version=obj.metadata.resource_version
                    )
                except NotFound:
                    continue  # gone already: nothing left to prune
                events.record(obj.kind, obj.name, "Pruned", "pruned by apply")
                settle(cache.of(cls), obj.name, None if gone else marked)
            results.append(_result(obj, "pruned", before=_diffable(obj), after=None))
