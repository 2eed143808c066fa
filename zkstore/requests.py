"""Requests the API leaves for the primary: the writes only the primary may make (a VM's
placement and node-index entry, the removal of an object with its status, a VM rename).

One queue, ``<root>/requests/req-<seq>``, not one per VM: the primary watches one folder
(its watch cost is the number of requests in flight, not the cluster's size), the sequence
keeps them in the order asked, and a request may name any kind (removing a Node removes its
status too). Each request is an EPHEMERAL znode of the API's session: if pvcapid dies, its
requests go with it, so none is carried out later for a caller who can no longer be told.

The life of a request (``state`` in its data):

    pending  --the primary takes it (CAS on version 0, check on the epoch)-->  taken
    taken    --the primary writes the outcome (check on the epoch)---------->  done | refused
    pending  --the API withdraws it (delete at version 0: only if not taken)-> gone

The API (``ask``) creates the request, waits for the outcome with a watch up to its
deadline, reads it and deletes the request. With no outcome by the deadline it withdraws
the request and answers that nothing changed; if the withdraw loses the race (the primary
took it meanwhile) it waits for the outcome once more. The primary's side is
controllers/requests.py; the refusal it writes is the API's answer (code, reason, message,
details), so the API answers as it did when it wrote the placement itself.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from kazoo.exceptions import BadVersionError, NoNodeError

from zkstore import paths
from zkstore.codec import decode, encode
from zkstore.errors import (
    AlreadyExists,
    AlreadyPlaced,
    Conflict,
    NotFound,
    StoreError,
    Unavailable,
)
from zkstore.store import Store

log = logging.getLogger(__name__)

PENDING = "pending"
TAKEN = "taken"
DONE = "done"
REFUSED = "refused"
FINISHED = (DONE, REFUSED)

PLACE = "place"
REMOVE = "remove"
RENAME = "rename"
VERBS = (PLACE, REMOVE, RENAME)

PREFIX = "req-"


class Refused(StoreError):
    """The primary refused the request: ``code`` and the rest are the API's answer."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        error: str = "",
    ) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}
        self.error = error
        """The class name of the store error the primary met (e.g. ``AlreadyPlaced``)."""
        self.error_args: dict[str, str] = {}
        """The arguments to raise that store error with again (AlreadyPlaced's node)."""
        super().__init__(message)

    def as_store_error(self) -> StoreError:
        """The store error the primary met, as the asker's own code catches it (NotFound,
        AlreadyExists, AlreadyPlaced, Conflict); itself for any other refusal."""
        kind, name = str(self.details.get("kind", "")), str(self.details.get("name", ""))
        if self.code == 404 and kind:
            return NotFound(kind, name)
        if self.reason == "AlreadyExists" and kind:
            return AlreadyExists(kind, name)
        if self.error == "AlreadyPlaced":
            return AlreadyPlaced(self.error_args.get("vm", ""), self.error_args.get("node", ""))
        if self.code == 409:
            return Conflict(self.message)
        return self


class NoPrimary(Unavailable):
    """No primary carried out the request in time (the message says whether anything may
    still change)."""


@dataclass
class Request:
    """One request, as stored."""

    verb: str
    kind: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    requester: str = ""
    """Who asked: the API token's name (the audit's), ``-`` without tokens."""
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    wait_seconds: float = 10.0
    """How long the asker waits for the outcome (the primary collects a finished request
    once it has been finished that long: its asker has stopped waiting by then)."""
    state: str = PENDING
    epoch: int | None = None
    """The epoch of the primary that took it."""
    taken_by: str | None = None
    outcome: dict[str, Any] | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "verb": self.verb,
            "kind": self.kind,
            "name": self.name,
            "args": self.args,
            "requester": self.requester,
            "uid": self.uid,
            "waitSeconds": self.wait_seconds,
            "state": self.state,
            "epoch": self.epoch,
            "takenBy": self.taken_by,
            "outcome": self.outcome,
        }

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Request:
        return cls(
            verb=str(raw["verb"]),
            kind=str(raw["kind"]),
            name=str(raw["name"]),
            args=dict(raw.get("args") or {}),
            requester=str(raw.get("requester") or ""),
            uid=str(raw.get("uid") or ""),
            wait_seconds=float(raw.get("waitSeconds") or 10.0),
            state=str(raw.get("state") or PENDING),
            epoch=raw.get("epoch"),
            taken_by=raw.get("takenBy"),
            outcome=raw.get("outcome"),
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def read(store: Store, relative: str) -> tuple[Request, int] | None:
    """The request at ``relative`` (a path under the root) and its version; None if gone."""
    try:
        data, stat = store.client.get(store.path(relative))
    except NoNodeError:
        return None
    return Request.from_wire(decode(data)), int(stat.version)


def refusal(exc: Exception) -> dict[str, Any]:
    """The outcome of a request refused with ``exc``: the answer the API gives for it (the
    same code, reason and details as api/errors.py gives the store's errors)."""
    if isinstance(exc, Refused):
        code, reason, details = exc.code, exc.reason, exc.details
    elif isinstance(exc, NotFound):
        code, reason, details = 404, "NotFound", {"kind": exc.kind, "name": exc.name}
    elif isinstance(exc, AlreadyExists):
        code, reason, details = 409, "AlreadyExists", {"kind": exc.kind, "name": exc.name}
    elif isinstance(exc, StoreError):
        code, reason, details = 409, "Conflict", {}
    else:
        code, reason, details = 500, "InternalError", {}
    message = str(exc) if code != 500 else f"internal error: {type(exc).__name__}"
    return {
        "code": code,
        "reason": reason,
        "message": message,
        "details": details,
        "error": type(exc).__name__,
        # What the asker needs to raise the same store error (AlreadyPlaced's node).
        "errorArgs": {
            a: getattr(exc, a) for a in ("vm", "node") if isinstance(getattr(exc, a, None), str)
        },
    }


def invalid_field(field_name: str, message: str) -> Refused:
    """A 422 on one field of the request's body, in the shape of the API's own."""
    details = {"field": field_name, "causes": [{"field": field_name, "message": message}]}
    return Refused(422, "Invalid", f"{field_name}: {message}", details)


def _set_event(event: threading.Event, _watched: object) -> None:
    event.set()


def _wait_finished(store: Store, path: str, seconds: float) -> Request | None:
    """The request once finished (a watch on its znode, no polling), or None when it is not
    within ``seconds``; raises NoPrimary when it went (collected, or its session ended)."""
    deadline = time.monotonic() + seconds
    while True:
        changed = threading.Event()
        try:
            data, _ = store.client.get(path, watch=functools.partial(_set_event, changed))
        except NoNodeError:
            raise NoPrimary(
                "the request to the primary went away before its outcome was read"
            ) from None
        request = Request.from_wire(decode(data))
        if request.finished:
            return request
        left = deadline - time.monotonic()
        if left <= 0 or not changed.wait(left):
            return None


def _withdraw(store: Store, path: str, request: Request) -> Request:
    """No outcome in time: withdraw the request, only if no primary took it (it is still at
    the version the API created), and raise NoPrimary; else wait for its outcome again."""
    key = path.rsplit("/", 1)[1]
    timeout = request.wait_seconds
    try:
        store.client.delete(path, version=0)
    except BadVersionError:
        # Taken meanwhile: the primary is carrying it out; its outcome is the answer.
        log.info("event=request_withdraw_lost request=%s", key)
        finished = _wait_finished(store, path, timeout)
        if finished is not None:
            return finished
        raise NoPrimary(
            f"the primary took the request but gave no outcome within {timeout:g} s more; it "
            f"may still be carried out: read {request.kind} {request.name!r} to see"
        ) from None
    except NoNodeError:
        pass
    log.warning(
        "event=request_withdrawn request=%s verb=%s kind=%s name=%s timeout=%s",
        key,
        request.verb,
        request.kind,
        request.name,
        timeout,
    )
    raise NoPrimary(f"no primary carried out the request within {timeout:g} s; nothing changed")


def ask(
    store: Store,
    verb: str,
    kind: str,
    name: str,
    args: dict[str, Any],
    *,
    requester: str,
    timeout: float,
) -> dict[str, Any]:
    """Have the primary carry out ``verb`` on ``kind``/``name``; its result when done.

    Raises ``Refused`` (the primary's answer) or ``NoPrimary`` (nothing changed, unless the
    message says the primary took the request and may still carry it out)."""
    request = Request(verb, kind, name, args, requester or "-", wait_seconds=timeout)
    path = store.client.create(
        store.path(paths.REQUEST_PREFIX), encode(request.wire()), ephemeral=True, sequence=True
    )
    key = path.rsplit("/", 1)[1]
    log.info(
        "event=request_asked request=%s verb=%s kind=%s name=%s requester=%s uid=%s",
        key,
        verb,
        kind,
        name,
        request.requester,
        request.uid,
    )
    finished = _wait_finished(store, path, timeout) or _withdraw(store, path, request)
    with contextlib.suppress(NoNodeError):  # collected already
        store.client.delete(path)
    outcome = finished.outcome or {}
    log.info("event=request_answered request=%s state=%s", key, finished.state)
    if finished.state == REFUSED:
        refused = Refused(
            int(outcome.get("code") or 409),
            str(outcome.get("reason") or "Conflict"),
            str(outcome.get("message") or "refused by the primary"),
            dict(outcome.get("details") or {}),
            str(outcome.get("error") or ""),
        )
        refused.error_args = {str(k): str(v) for k, v in (outcome.get("errorArgs") or {}).items()}
        raise refused
    return dict(outcome.get("result") or {})


__all__ = [
    "DONE",
    "PENDING",
    "PLACE",
    "REFUSED",
    "REMOVE",
    "RENAME",
    "TAKEN",
    "NoPrimary",
    "Refused",
    "Request",
    "ask",
    "invalid_field",
    "read",
    "refusal",
]
