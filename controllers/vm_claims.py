"""A node's side of the one-copy rule for the VMs placed on it (docs/ha.md): the claim
before anything is defined or started, the synced sole-holder read right before a start,
the release once the domain is gone from this host.

What this daemon claimed is remembered until it releases: only this node removes itself
from a set (the primary's fence aside, which ``forget`` follows), so the memory stays true.
A first claim sends the start's sole-holder read right behind its transaction on the same
session: ZooKeeper answers in order, so the read shows the claim, and the start waits one
round trip less (issue 16). That read serves the reconcile pass that sent it only, and not
once this node wrote to the set since (a live migration's hand-over): then it is read again.
"""

from __future__ import annotations

import logging
import threading

from kazoo.protocol.states import EventType, WatchedEvent

from controllers.departure import Departures
from zkstore import Holders
from zkstore.holders import PendingSoleRead, SoleRead

log = logging.getLogger(__name__)


def _held(found: SoleRead) -> frozenset[str]:
    return found[0]


class Claims:
    def __init__(self, holders: Holders, departures: Departures, node: str) -> None:
        self.holders = holders
        self.departures = departures
        self.node = node
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        # name -> (it carries the holder watch, the read) sent behind this pass's claim.
        self._sent: dict[str, tuple[bool, PendingSoleRead]] = {}

    def claim(self, name: str, *, starting: bool = True) -> bool:
        """Be among ``name``'s holders before defining or starting anything; False when the
        placement no longer names this node. ``starting``: a start may follow in this pass,
        so the read it needs goes behind the claim (a Halted VM's does not)."""
        with self._lock:
            if name in self._claimed:
                return True
        if not starting:
            claimed = self.holders.claim(name, self.node)
        else:
            claimed = self._claim_and_read(name)
        if claimed:
            with self._lock:
                self._claimed.add(name)
        return claimed

    def _claim_and_read(self, name: str) -> bool:
        fired = self.departures.holders_watcher(name)

        def watch(event: WatchedEvent) -> None:
            if event.type == EventType.DELETED:
                # The set itself went with the watch still set: it was empty at the read,
                # so this claim was refused and the set it made was tidied away (a set a
                # claim joined loses a child first, which fires the watch). That pass
                # looks again shortly anyway; a wake would only loop while the cache lags.
                self.departures.holders_unwatched(name)
            elif fired is not None:
                fired(event)

        carried = watch if fired is not None else None
        try:
            claimed, sent = self.holders.claim_then(
                name,
                self.node,
                lambda: self.holders.send_read_with_entry(name, self.node, watch=carried),
            )
        except BaseException:
            if fired is not None:
                self.departures.holders_unwatched(name)
            raise
        self._sent[name] = (fired is not None, sent)
        return claimed

    def sole_read(self, name: str) -> SoleRead:
        """The holders and this node's index entry, read after a sync, with the watch that
        wakes the VM when the set changes riding on the read (a release after it fires it,
        one before shows in it): the read this pass's claim sent when it is still good."""
        sent = self._sent.pop(name, None)
        if sent is not None and sent[1].stale():
            self._settle(name, sent)
            sent = None
        if sent is not None:
            return self.departures.collect_watched(name, sent[0], sent[1].get, _held)
        return self.departures.read_watched(
            name,
            lambda watch: self.holders.read_with_entry(name, self.node, watch=watch),
            _held,
        )

    def end_pass(self, name: str) -> None:
        """The reconcile pass is over: a read its claim sent and it did not use goes (its
        answer still settles the holder watch's mark: an empty set may have set none)."""
        sent = self._sent.pop(name, None)
        if sent is not None:
            self._settle(name, sent)

    def _settle(self, name: str, sent: tuple[bool, PendingSoleRead]) -> None:
        try:
            self.departures.collect_watched(name, sent[0], sent[1].get, _held)
        except Exception as exc:  # the connection dropped: its watch goes with it
            log.debug("event=sole_read_dropped vm=%s error=%r", name, exc)

    def release(self, name: str) -> None:
        """The domain is gone from this host (checked by the caller): let others start it."""
        self.holders.release(name, self.node)
        self.forget(name)

    def forget(self, name: str) -> None:
        """Not (or no longer) known to be a holder: the next pass claims again."""
        with self._lock:
            self._claimed.discard(name)


__all__ = ["Claims"]
