"""The primary carries out what the API asked of it (zkstore/requests.py): a VM's placement
(migrate, unmigrate, move), removing an object with its status and placement (a delete at
once), and a VM rename, each with the primary's identity and a check on its epoch.

For each request: take it (compare-and-set on the version the API created it with, in one
transaction with a check on the epoch: a deposed primary takes nothing), validate again
(the VM exists, is not Terminating, the node exists, the placement is still where the API
read it), carry it out, and write the outcome (done, or refused with the API's answer) in
one transaction with the same check. Finished requests the API did not remove are
collected once their asker has stopped waiting.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kazoo.exceptions import BadVersionError, KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.watchers import ChildrenWatch

from controllers.runtime import Controller
from schemas import MigrationMethod, Node, Placement, VirtualMachine, kind_by_name
from zkstore import EpochMoved, Store, paths
from zkstore.codec import encode
from zkstore.deletion import Deletions
from zkstore.errors import Conflict, StoreError, Terminating
from zkstore.events import EventLog
from zkstore.rename import rename_vm
from zkstore.requests import (
    DONE,
    PLACE,
    REFUSED,
    REMOVE,
    RENAME,
    TAKEN,
    Refused,
    Request,
    invalid_field,
    read,
    refusal,
)

log = logging.getLogger(__name__)

SOURCE = "primary"


class RequestController:
    """Runs on the primary: one watch on the request folder, one worker."""

    def __init__(self, store: Store, node: str, epoch: int) -> None:
        self.store = store
        self.node = node
        self.epoch = epoch
        self.events = EventLog(store)
        self._finished_since: dict[str, float] = {}
        self._mine: set[str] = set()
        """Requests this controller took and has not finished (a retry resumes them)."""
        self._watch: ChildrenWatch | None = None
        self._stopped = False
        self.controller = Controller(
            "requests", self.reconcile, workers=1, list_keys=self._keys, resync_period=10.0
        )

    def start(self) -> None:
        self.controller.start()
        self._watch = ChildrenWatch(
            self.store.client, self.store.path(paths.REQUESTS), self._on_children
        )

    def stop(self) -> None:
        self._stopped = True
        self.controller.stop()

    def _keys(self) -> list[str]:
        try:
            return list(self.store.client.get_children(self.store.path(paths.REQUESTS)))
        except NoNodeError:
            return []

    def _on_children(self, children: list[str]) -> bool:
        for key in children:
            self.controller.enqueue(key)
        gone = set(self._finished_since) - set(children)
        for key in gone:
            self._finished_since.pop(key, None)
        return not self._stopped

    # -- one request -----------------------------------------------------------

    def reconcile(self, key: str) -> float | None:
        relative = paths.request(key)
        found = read(self.store, relative)
        if found is None:
            self._finished_since.pop(key, None)
            return None
        request, version = found
        if request.finished:
            return self._collect(key, request)
        if request.state == TAKEN and request.epoch == self.epoch:
            if key not in self._mine:
                return None  # another's of this epoch (tests run two): never twice
            log.warning("event=request_resumed request=%s verb=%s", key, request.verb)
        try:
            version = self._take(relative, request, version)
        except BadVersionError:
            return 0.0  # changed since the read (withdrawn, or finished): look again
        except NoNodeError:
            return None  # withdrawn by its asker
        except EpochMoved:
            log.warning("event=request_not_ours request=%s epoch=%s", key, self.epoch)
            return None
        self._mine.add(key)
        log.info(
            "event=request_taken request=%s verb=%s kind=%s name=%s requester=%s uid=%s",
            key,
            request.verb,
            request.kind,
            request.name,
            request.requester,
            request.uid,
        )
        try:
            result = self._carry_out(request)
            outcome: dict[str, Any] = {"result": result}
            state = DONE
        except EpochMoved:
            log.warning("event=request_not_carried_out request=%s reason=epoch_moved", key)
            self._mine.discard(key)
            return None
        except StoreError as exc:
            outcome, state = refusal(exc), REFUSED
        except (KazooException, KazooTimeoutError):
            raise  # retried with back-off: the request stays taken by this epoch
        except Exception as exc:
            log.exception("event=request_failed request=%s error=%r", key, exc)
            outcome, state = refusal(exc), REFUSED
        self._finish(key, relative, request, version, state, outcome)
        self._mine.discard(key)
        # Its asker removes it once read; if it does not, it is collected then.
        self._finished_since[key] = time.monotonic()
        return request.wait_seconds

    def _take(self, relative: str, request: Request, version: int) -> int:
        request.state, request.epoch, request.taken_by = TAKEN, self.epoch, self.node
        return self._write(relative, request, version)

    def _write(self, relative: str, request: Request, version: int) -> int:
        """Set the request at ``version`` while the epoch is ours; its new version."""
        txn = self.store.client.transaction()
        txn.check(self.store.path(paths.EPOCH), version=self.epoch)
        txn.set_data(self.store.path(relative), encode(request.wire()), version=version)
        results = txn.commit()
        if isinstance(results[0], Exception):
            raise EpochMoved(f"the epoch moved past {self.epoch}")
        if isinstance(results[1], Exception):
            raise results[1]
        return int(results[1].version)

    def _finish(
        self,
        key: str,
        relative: str,
        request: Request,
        version: int,
        state: str,
        outcome: dict[str, Any],
    ) -> None:
        request.state, request.outcome = state, outcome
        try:
            self._write(relative, request, version)
        except NoNodeError:
            log.warning("event=request_asker_gone request=%s state=%s", key, state)
            return
        except (BadVersionError, EpochMoved) as exc:
            log.warning("event=request_outcome_unwritten request=%s error=%r", key, exc)
            return
        log.info(
            "event=request_finished request=%s verb=%s name=%s state=%s code=%s",
            key,
            request.verb,
            request.name,
            state,
            outcome.get("code", 200),
        )

    def _collect(self, key: str, request: Request) -> float | None:
        """Remove a finished request its asker did not (it stopped waiting, or failed)."""
        now = time.monotonic()
        since = self._finished_since.setdefault(key, now)
        left = since + request.wait_seconds - now
        if left > 0:
            return left
        try:
            self.store.client.delete(self.store.path(paths.request(key)))
        except NoNodeError:
            pass
        else:
            log.info(
                "event=request_collected request=%s verb=%s name=%s state=%s",
                key,
                request.verb,
                request.name,
                request.state,
            )
        self._finished_since.pop(key, None)
        return None

    # -- the verbs -------------------------------------------------------------

    def _carry_out(self, request: Request) -> dict[str, Any]:
        if request.verb == PLACE:
            self._place(request.name, request.args)
        elif request.verb == REMOVE:
            self._remove(request)
        elif request.verb == RENAME:
            rename_vm(self.store, request.name, str(request.args["newName"]), epoch=self.epoch)
        else:
            raise Refused(400, "BadRequest", f"unknown request verb {request.verb!r}")
        return {}

    def _place(self, vm: str, args: dict[str, Any]) -> None:
        """Today's API verb, on the primary: the ``...Requested`` event just before the
        write, ``...Refused`` with the reason when the write fails."""
        current = self.store.get(VirtualMachine, vm)
        if current.deleting:  # it goes: nothing may start or move it now
            raise Terminating(current.KIND, vm, str(current.metadata.deletion_timestamp))
        node = str(args["node"])
        if not self.store.exists(Node, node):
            raise invalid_field("node", f"node {node!r} does not exist")
        method = args.get("method")
        placement = Placement(
            node=node,
            epoch=self.epoch,
            reason=str(args["reason"]),
            migration=args.get("migration"),
            method=MigrationMethod(method) if method else None,
        )
        event_reason, message = str(args["event"]), str(args["message"])
        self.events.record(VirtualMachine.KIND, vm, event_reason, message)
        try:
            self.store.write_placement(
                vm, placement, epoch=self.epoch, only_from=args.get("onlyFrom")
            )
        except EpochMoved:
            raise
        except Exception as exc:
            refused = event_reason.removesuffix("Requested") + "Refused"
            self.events.record(VirtualMachine.KIND, vm, refused, str(exc), type_="Warning")
            raise

    def _remove(self, request: Request) -> None:
        cls = kind_by_name(request.kind)
        if cls is None:
            raise Refused(400, "BadRequest", f"unknown kind {request.kind!r}")
        args = request.args
        try:
            Deletions(self.store, self.events, SOURCE).remove_now(
                cls,
                request.name,
                args.get("resourceVersion"),
                bool(args.get("deleteVolumes")),
                unplaced_only=bool(args.get("unplacedOnly")),
                epoch=self.epoch,
            )
        except Conflict:
            # The epoch check fails the transaction as any change does: tell which.
            if self.store.read_epoch(sync=True) != self.epoch:
                raise EpochMoved(f"the epoch moved past {self.epoch}") from None
            raise


__all__ = ["RequestController"]
