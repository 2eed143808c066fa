"""A bounded log of cluster events under ``/events`` (for ``describe`` and ``pvcctl events``).

Each event is one sequential znode, so appends never contend and the order is
ZooKeeper's. The log keeps at most ``limit`` entries: every ``trim_every``-th
append deletes the oldest ones, so a busy cluster never grows it without bound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

from kazoo.exceptions import KazooException, NoNodeError

from schemas import utcnow
from zkstore import paths
from zkstore.codec import decode, encode
from zkstore.store import Store

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
_PREFIX = "ev-"
TRIM_CHUNK = 100


@dataclass(frozen=True)
class Event:
    kind: str
    name: str
    reason: str
    message: str
    type: EventType = "Normal"
    source: str = ""
    timestamp: str = ""
    seq: int = 0

    def wire(self) -> dict[str, Any]:
        return {
            "involvedObject": {"kind": self.kind, "name": self.name},
            "reason": self.reason,
            "message": self.message,
            "type": self.type,
            "source": self.source,
            "timestamp": self.timestamp,
            "seq": self.seq,
        }


class EventLog:
    def __init__(self, store: Store, *, limit: int = 1000, trim_every: int = 50) -> None:
        self._store = store
        self._dir = store.path(paths.EVENTS)
        self.limit = limit
        self._trim_every = trim_every
        self._trim_state = threading.Lock()
        self._trimming = False
        self._trim_again = False

    def record(
        self,
        kind: str,
        name: str,
        reason: str,
        message: str,
        *,
        type_: EventType = "Normal",
        source: str = "",
    ) -> None:
        """Append one event without waiting for ZooKeeper's answer.

        The log is a record, not the source of truth: a failure to write it is
        logged and must never fail (or slow down) the action it describes.
        """
        body = {
            "kind": kind,
            "name": name,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": source,
            "timestamp": utcnow(),
        }
        try:
            pending = self._store.client.create_async(
                f"{self._dir}/{_PREFIX}", encode(body), sequence=True
            )
        except Exception as exc:  # e.g. the client is closed: the action itself went through
            log.warning("event=event_log_failed kind=%s name=%s error=%r", kind, name, exc)
            return

        def done(result: Any) -> None:
            try:
                created = result.get()
            except Exception as exc:
                log.warning("event=event_log_failed kind=%s name=%s error=%r", kind, name, exc)
                return
            if _seq(str(created).rsplit("/", 1)[-1]) % self._trim_every == 0:
                # Not on kazoo's callback thread: trimming makes blocking calls.
                self._store.client.handler.spawn(self.trim)

        pending.rawlink(done)

    def trim(self) -> None:
        """Delete the oldest entries beyond ``limit``. One trim runs at a time: a trim asked
        for meanwhile makes the running one go round again instead of listing the log
        beside it. The deletes of a round go out together, not one round trip after the
        other (a 10,000-VM apply records 10,000 events, issue 16)."""
        with self._trim_state:
            if self._trimming:
                self._trim_again = True
                return
            self._trimming = True
        done = False
        try:
            while True:
                self._trim_once()
                with self._trim_state:
                    if not self._trim_again:
                        # Stop in the same locked step that sees no new ask: a trim()
                        # after it finds none running and runs itself.
                        self._trimming = False
                        done = True
                        return
                    self._trim_again = False
        finally:
            if not done:  # an error: the next ask runs again
                with self._trim_state:
                    self._trimming = False

    def _trim_once(self) -> None:
        try:
            children = sorted(self._store.client.get_children(self._dir))
            extra = children[: max(0, len(children) - self.limit)]
            # Deleted in transactions of TRIM_CHUNK: one commit (one zxid) each, not one per
            # event. A chunk with an entry already gone (another process trimmed it) fails
            # whole, and its entries are then deleted one by one.
            for start in range(0, len(extra), TRIM_CHUNK):
                chunk = [f"{self._dir}/{c}" for c in extra[start : start + TRIM_CHUNK]]
                txn = self._store.client.transaction()
                for path in chunk:
                    txn.delete(path)
                if all(not isinstance(r, Exception) for r in txn.commit()):
                    continue
                for result in [self._store.client.delete_async(path) for path in chunk]:
                    with contextlib.suppress(NoNodeError):
                        result.get()
        except NoNodeError:
            return
        except KazooException as exc:  # runs in its own thread: log, the next trim catches up
            log.warning("event=event_trim_failed error=%r", exc)

    def list(
        self, kind: str | None = None, name: str | None = None, limit: int = 100
    ) -> list[Event]:
        """The newest ``limit`` events (oldest first), optionally of one object."""
        try:
            children = sorted(self._store.client.get_children(self._dir), reverse=True)
        except NoNodeError:
            return []
        found: list[Event] = []
        # Read newest first in batches, so a filter over a long log stops early.
        batch = 64
        for start in range(0, len(children), batch):
            chunk = children[start : start + batch]
            reads = [self._store.client.get_async(f"{self._dir}/{c}") for c in chunk]
            for child, read in zip(chunk, reads, strict=True):
                try:
                    raw = decode(read.get()[0]) or {}
                except NoNodeError:
                    continue  # trimmed meanwhile
                if kind and raw.get("kind") != kind:
                    continue
                if name and raw.get("name") != name:
                    continue
                found.append(
                    Event(
                        kind=str(raw.get("kind", "")),
                        name=str(raw.get("name", "")),
                        reason=str(raw.get("reason", "")),
                        message=str(raw.get("message", "")),
                        type="Warning" if raw.get("type") == "Warning" else "Normal",
                        source=str(raw.get("source", "")),
                        timestamp=str(raw.get("timestamp", "")),
                        seq=_seq(child),
                    )
                )
                if len(found) >= limit:
                    return found[::-1]
        return found[::-1]


def _seq(child: str) -> int:
    digits = child.removeprefix(_PREFIX)
    return int(digits) if digits.isdigit() else 0
