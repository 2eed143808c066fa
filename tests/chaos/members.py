"""The ZooKeeper ensemble under a chaos cluster: which member leads, and stopping (kill -9) and
starting members again, never more than a minority down at once."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

from localcluster.process import pid_alive, signal_ours, wait_until
from localcluster.zookeeper import four_letter
from tests.chaos.gates import CallLog

if TYPE_CHECKING:
    from localcluster.zookeeper import ZooKeeperServer


class EnsembleMembers:
    """``ChaosCluster``'s ZooKeeper members (set up by its ``__init__``)."""

    members: list[ZooKeeperServer]
    members_down: set[int]
    _members_lock: threading.Lock
    _members_restarting: set[int]
    calls: CallLog

    @property
    def max_members_down(self) -> int:
        """How many members may be down at once with a quorum left: a minority."""
        return (len(self.members) - 1) // 2

    def _members_down_now(self) -> list[int]:
        with self._members_lock:
            return sorted(self.members_down)

    def leader_member(self) -> int | None:
        """The index of the member that leads the ensemble now (``srvr``: ``Mode: leader``)."""
        down = self._members_down_now()
        for index, member in enumerate(self.members):
            if index not in down and "Mode: leader" in four_letter(member.port, "srvr"):
                return index
        return None

    def stop_member(self, index: int) -> bool:
        """Kill -9 member ``index``: its connections break and the daemons' clients
        reconnect to the others. False (nothing done) when it is down already or when one
        more member down would leave no quorum."""
        with self._members_lock:
            if index in self.members_down or len(self.members_down) >= self.max_members_down:
                return False
            member = self.members[index]
            pid = member.pid
            if pid is None:
                return False
            self.members_down.add(index)
        if signal_ours(pid, signal.SIGKILL, str(member.workdir)):
            wait_until(lambda: not pid_alive(pid), 10.0, f"ZooKeeper member {index + 1} to die")
        member.pid = None
        self.calls.add(f"zk member {index + 1} (port {member.port}) killed")
        return True

    def start_member(self, index: int, timeout: float = 60.0) -> bool:
        """Start member ``index`` again (same ports, same data) and wait until it serves
        clients in the quorum. False when it was not down."""
        with self._members_lock:
            if index not in self.members_down:
                return False
            restarting = index in self._members_restarting
            self._members_restarting.add(index)
        member = self.members[index]
        if restarting:  # by another thread: wait for it
            wait_until(lambda: index not in self.members_down, timeout + 10.0, "a restart")
            return False
        try:
            member.start(timeout)
            wait_until(member.serving, timeout, f"ZooKeeper member {index + 1} to rejoin")
        finally:
            with self._members_lock:
                self._members_restarting.discard(index)
                if member.pid is not None:
                    self.members_down.discard(index)
        self.calls.add(f"zk member {index + 1} (port {member.port}) back")
        return True
