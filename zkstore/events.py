"""A bounded log of cluster events under ``/events`` (for ``describe`` and ``pvcctl events``).

Each event is one sequential znode, so appends never contend and the order is
ZooKeeper's. The log keeps at most ``limit`` entries: every ``trim_every``-th
append deletes the oldest ones, so a busy cluster never grows it without bound.
"""

from __future__ import annotations

import logging
import threading
import time
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
TRIM_ROUNDS = 5
"""Times a trim lists the log again after another process's trim deleted under it."""
APPEND_BATCH = 100
"""Events one append transaction carries at most (some 200 bytes each)."""
APPEND_BYTES = 256 * 1024
"""Bytes of events one append transaction carries at most (ZooKeeper refuses a request
over 1 MB, and drops the whole session's connection for it)."""
UNANSWERED_AFTER = 30.0
"""Seconds after which an append still unanswered is given up on, and the next one sent."""


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
        _appender(self._store).append(self, encode(body), kind, name)

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
        """Delete the entries beyond ``limit``, oldest first, in transactions of TRIM_CHUNK
        (one commit, one zxid each). A chunk with an entry already gone fails whole: another
        process trimmed the same oldest entries meanwhile, so the log is listed again and
        what is still beyond the limit goes (deleting the failed chunk's entries one by one
        instead cost every trimmer a request per entry, issue 16)."""
        try:
            for _ in range(TRIM_ROUNDS):
                children = sorted(self._store.client.get_children(self._dir))
                extra = children[: max(0, len(children) - self.limit)]
                if self._delete_in_chunks(extra):
                    return
            log.info("event=event_trim_contended rounds=%d", TRIM_ROUNDS)
        except NoNodeError:
            return
        except KazooException as exc:  # runs in its own thread: log, the next trim catches up
            log.warning("event=event_trim_failed error=%r", exc)

    def _delete_in_chunks(self, names: list[str]) -> bool:
        """Delete ``names`` (oldest first); False at the first chunk that failed whole."""
        for start in range(0, len(names), TRIM_CHUNK):
            txn = self._store.client.transaction()
            for child in names[start : start + TRIM_CHUNK]:
                txn.delete(f"{self._dir}/{child}")
            if any(isinstance(r, Exception) for r in txn.commit()):
                return False
        return True

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


class _Appender:
    """Group commit of one Store's event appends: an event goes out at once when no append
    is in flight, and the events recorded meanwhile go together in one transaction when it
    is answered. Under load that is one request and one commit for up to APPEND_BATCH events,
    not one each (a 10,000-VM converge recorded three events a VM, a third of ZooKeeper's
    writes, issue 16); a lone event waits for nothing. Appends stay in the order recorded:
    ZooKeeper numbers a transaction's sequential creates in order. What is queued when the
    store stops is sent first (``flush``, STOP_FLUSH at most)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._path = f"{store.path(paths.EVENTS)}/{_PREFIX}"
        self._cond = threading.Condition()
        self._queue: list[tuple[EventLog, bytes, str, str]] = []
        self._in_flight = False
        self._sent_at = 0.0
        # Bumped when an append in flight is given up on (UNANSWERED_AFTER): its late
        # answer, if any, then sends nothing more (one batch in flight at a time).
        self._generation = 0

    def append(self, owner: EventLog, data: bytes, kind: str, name: str) -> None:
        with self._cond:
            self._queue.append((owner, data, kind, name))
            if self._in_flight:
                if time.monotonic() - self._sent_at < UNANSWERED_AFTER:
                    return  # goes with the next batch, sent when the one in flight is answered
                # A request kazoo dropped (a session expiring under it) is never answered:
                # the log must not stay stuck behind it.
                log.warning("event=event_append_unanswered after_s=%.0f", UNANSWERED_AFTER)
                self._generation += 1
            self._in_flight = True
            generation = self._generation
        self._send(generation)

    def flush(self, deadline: float) -> None:
        """Wait until what was recorded so far is answered, or ``deadline`` (monotonic)."""
        with self._cond:
            while self._in_flight or self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("event=event_log_unflushed queued=%d", len(self._queue))
                    return
                self._cond.wait(left)

    def _send(self, generation: int) -> None:
        """Send what is queued (runs on the caller's thread or kazoo's callback thread: it
        never blocks)."""
        with self._cond:
            if generation != self._generation:
                return
            batch: list[tuple[EventLog, bytes, str, str]] = []
            size = 0
            for item in self._queue[:APPEND_BATCH]:
                if batch and size + len(item[1]) > APPEND_BYTES:
                    break
                batch.append(item)
                size += len(item[1])
            del self._queue[: len(batch)]
            if not batch:
                self._in_flight = False
                self._cond.notify_all()
                return
            self._sent_at = time.monotonic()
        client = self._store.client
        try:
            if len(batch) == 1:
                pending = client.create_async(self._path, batch[0][1], sequence=True)
            else:
                txn = client.transaction()
                for _, data, _, _ in batch:
                    txn.create(self._path, data, sequence=True)
                pending = txn.commit_async()
        except Exception as exc:  # e.g. the client is closed: the actions went through
            self._failed(batch, exc)
            self._send(generation)
            return
        pending.rawlink(lambda result: self._answered(generation, batch, result))

    def _answered(
        self, generation: int, batch: list[tuple[EventLog, bytes, str, str]], result: Any
    ) -> None:
        try:
            created = result.get()
            results = [created] if isinstance(created, str) else list(created)
            failed = next((r for r in results if isinstance(r, Exception)), None)
            if failed is not None:
                self._failed(batch, failed)
                return
            for (owner, _, _, _), path in zip(batch, results, strict=True):
                if _seq(str(path).rsplit("/", 1)[-1]) % owner._trim_every == 0:
                    # Not on kazoo's callback thread: trimming makes blocking calls.
                    self._store.client.handler.spawn(owner.trim)
        except Exception as exc:
            self._failed(batch, exc)
        finally:
            self._send(generation)  # whatever happened above, the next batch goes

    @staticmethod
    def _failed(batch: list[tuple[EventLog, bytes, str, str]], exc: BaseException) -> None:
        """The log is a record, not the source of truth: a failed append is logged, and
        never fails (or slows down) the actions it describes."""
        for _, _, kind, name in batch:
            log.warning("event=event_log_failed kind=%s name=%s error=%r", kind, name, exc)


_appenders_lock = threading.Lock()


def _appender(store: Store) -> _Appender:
    """The one appender of ``store``, shared by every EventLog over it; it lives as long as
    the store does, and is flushed when the store stops."""
    with _appenders_lock:
        found = store.recipes.get(_Appender)
        if not isinstance(found, _Appender):
            found = store.recipes[_Appender] = _Appender(store)
            store.flush_on_stop(found.flush)
        return found
