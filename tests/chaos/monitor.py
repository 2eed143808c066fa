"""The chaos cluster's invariant monitor: one-copy violations, primaries per epoch, holders."""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING

from schemas import RouterState

if TYPE_CHECKING:
    from tests.chaos.harness import ChaosCluster

log = logging.getLogger("chaos")


class InvariantMonitor:
    """Polls every ~20 ms: the world's violations, primaries per epoch, holders per VM."""

    def __init__(self, cluster: ChaosCluster, interval: float = 0.02) -> None:
        self.cluster = cluster
        self.interval = interval
        self.failures: list[str] = []
        self.info: list[str] = []
        self.polls = 0
        self._seen_violations = 0
        self._primary_pairs: set[tuple[str, str, int, int]] = set()
        self._holders: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.poll()  # a last look

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception as exc:  # the monitor must outlive anything it looks at
                log.exception("event=monitor_failed error=%r", exc)

    def poll(self) -> None:
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        self.polls += 1
        world = self.cluster.world
        violations = list(world.violations)
        for v in violations[self._seen_violations :]:
            line = f"ONE-COPY: {v.vm} held by {', '.join(v.nodes)} at once: {v.detail}"
            self.failures.append(line)
            self.cluster.calls.add(f"VIOLATION {line}")
        self._seen_violations = len(violations)
        self._check_primaries()
        for vm in sorted(self.cluster.known_vms):
            holders = frozenset(world.holders(vm))
            if self._holders.get(vm, frozenset()) != holders:
                self._holders[vm] = holders
                self.cluster.calls.add(f"holders {vm} = {{{', '.join(sorted(holders))}}}")

    def _check_primaries(self) -> None:
        acting: list[tuple[str, int]] = []
        for inc in self.cluster.incarnations():
            daemon = inc.daemon
            if not inc.alive or daemon is None or daemon.election is None:
                continue
            election = daemon.election
            if election.state == RouterState.PRIMARY and election.epoch is not None:
                acting.append((inc.name, election.epoch))
        for (a, ea), (b, eb) in itertools.combinations(sorted(acting), 2):
            key = (a, b, ea, eb)
            if key in self._primary_pairs:
                continue
            self._primary_pairs.add(key)
            if ea == eb:
                line = f"TWO PRIMARIES: {a} and {b} both act as primary in epoch {ea}"
                self.failures.append(line)
            else:
                line = f"two primaries at once in different epochs: {a}@{ea}, {b}@{eb}"
                self.info.append(line)
            self.cluster.calls.add(line)
