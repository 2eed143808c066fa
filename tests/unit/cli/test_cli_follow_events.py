"""``pvcctl events -w``'s loop (cli/vm_console.py follow_events): the newest events once,
then each new one once, in order, until Ctrl-C."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from cli.errors import InputError
from cli.vm_console import follow_events


def event(seq: int, reason: str) -> dict[str, Any]:
    return {
        "involvedObject": {"kind": "VirtualMachine", "name": "web"},
        "reason": reason,
        "message": f"[{reason}] 52:54:00:ab:cd:ef",
        "type": "Normal",
        "source": "node1",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "seq": seq,
    }


class FakeClient:
    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.asked.append({"path": path, **params})
        return {"items": self.pages[min(len(self.asked), len(self.pages)) - 1]}


def test_each_event_is_printed_once_then_ctrl_c_ends_it() -> None:
    pages = [
        [event(1, "Started")],
        [event(1, "Started")],
        [event(1, "Started"), event(2, "Stopped"), event(3, "DomainRemoved")],
    ]
    client = FakeClient(pages)
    text = io.StringIO()
    out = Console(file=text, width=200)
    sleeps = iter([None, None, KeyboardInterrupt()])

    def sleep(_seconds: float) -> None:
        step = next(sleeps)
        if isinstance(step, BaseException):
            raise step

    follow_events(client, out, "VirtualMachine", "web", 10, sleep=sleep)  # type: ignore[arg-type]
    printed = text.getvalue()
    assert printed.count("[Started]") == 1
    assert printed.count("[Stopped]") == 1
    assert printed.index("Stopped") < printed.index("DomainRemoved")
    assert "[Stopped] 52:54:00:ab:cd:ef" in printed  # literal: no markup, no emoji
    assert client.asked[0] == {
        "path": "/api/v1/events",
        "kind": "VirtualMachine",
        "name": "web",
        "limit": 10,
    }


def test_a_limit_below_one_is_bad_input() -> None:
    with pytest.raises(InputError):
        follow_events(FakeClient([[]]), Console(file=io.StringIO()), None, None, 0)  # type: ignore[arg-type]
