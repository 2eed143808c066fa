"""A chaos cluster's nodes: each ``NodeSlot`` and the ``Incarnation`` (one run of its daemon)
that boots, crashes, is paused or powered off and boots again."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from controllers.daemon import Daemon
from tests.chaos.gates import Gate
from tests.chaos.zkproxy import ZkProxy


@dataclass
class Incarnation:
    """One run of a node's daemon, from its start to its crash, power-off or stop."""

    node: str
    number: int
    gate: Gate
    proxy: ZkProxy
    daemon: Daemon | None = None
    thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)
    ended: bool = False

    @property
    def name(self) -> str:
        return f"{self.node}#{self.number}"

    @property
    def alive(self) -> bool:
        return not self.gate.dead


@dataclass
class NodeSlot:
    name: str
    coordinator: bool
    uri: str
    current: Incarnation | None = None
    incarnations: list[Incarnation] = field(default_factory=list)
    killed: bool = False
    """Crashed and not yet rebooted."""
