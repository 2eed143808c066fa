"""zkstore/events.py's appender when ZooKeeper does not answer: a request dropped under it
(kazoo loses one queued as a session expires) must not hold the event log back for good,
and an error while handling an answer must not either. The client here stands in for
kazoo's only to leave one request unanswered; the real one is tested against ZooKeeper in
tests/integration/zkstore/test_zkstore_events.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kazoo.handlers.threading import SequentialThreadingHandler

from tests.helpers import wait_for
from zkstore import Store, events
from zkstore.events import EventLog


class DroppingClient:
    """Answers every create but the first ones ``drop`` asks for."""

    def __init__(self, drop: int = 1) -> None:
        self.handler = SequentialThreadingHandler()
        self.handler.start()
        self.drop = drop
        self.created: list[str] = []

    def create_async(self, path: str, data: bytes, sequence: bool = False) -> Any:
        result = self.handler.async_result()
        if self.drop:
            self.drop -= 1
            return result  # never answered
        self.created.append(data.decode())
        result.set(f"{path}{len(self.created):010d}")
        return result

    def transaction(self) -> Any:
        return Transaction(self)


class Transaction:
    def __init__(self, client: DroppingClient) -> None:
        self.client = client
        self.items: list[tuple[str, bytes]] = []

    def create(self, path: str, data: bytes, sequence: bool = False) -> None:
        self.items.append((path, data))

    def commit_async(self) -> Any:
        results = [self.client.create_async(p, d, True) for p, d in self.items]
        answer = self.client.handler.async_result()
        answer.set([r.get() for r in results])
        return answer


def test_an_append_never_answered_is_given_up_on_and_later_events_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "UNANSWERED_AFTER", 0.2)
    client = DroppingClient(drop=1)
    log = EventLog(Store("127.0.0.1:1", "/x", client=client))  # type: ignore[arg-type]
    log.record("Node", "lost", "Ready", "its request is dropped")
    for i in range(5):
        log.record("Node", f"n{i}", "Ready", "queued behind it")
    assert client.created == []  # all wait for the unanswered one
    wait_for(
        lambda: log.record("Node", "n5", "Ready", "later") or len(client.created) >= 7,
        5,
        "the queued events sent once the dropped one is given up on",
    )
    names = [json.loads(c)["name"] for c in client.created]
    assert names[:6] == [f"n{i}" for i in range(6)]


def test_an_error_handling_an_answer_does_not_stop_the_next_batch() -> None:
    client = DroppingClient(drop=0)
    broken = EventLog(Store("127.0.0.1:1", "/x", client=client))  # type: ignore[arg-type]
    broken._trim_every = 0  # the trim check now raises ZeroDivisionError in the callback
    broken.record("Node", "n0", "Ready", "first")
    broken.record("Node", "n1", "Ready", "second")
    wait_for(lambda: len(client.created) == 2, 5, "both events sent")
