"""The primary's request controller on a real ZooKeeper: a deposed primary carries out
nothing, a withdraw that loses the race to the primary waits for its outcome, and a
finished request its asker left behind is collected."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from controllers.requests import RequestController
from schemas import Node, Placement, VirtualMachine, parse_resource
from tests.helpers import wait_for
from zkstore import Store, paths
from zkstore.codec import decode, encode
from zkstore.requests import DONE, PLACE, TAKEN, NoPrimary, Request, ask

PLACE_ON_N2 = {"node": "n2", "reason": "migrate", "event": "MigrateRequested", "message": "m"}


def requests_left(store: Store) -> list[str]:
    return sorted(store.client.get_children(store.path(paths.REQUESTS)))


@pytest.fixture
def placed(store: Store) -> Store:
    for name in ("n1", "n2"):
        store.create(
            parse_resource({"kind": "Node", "apiVersion": "pvc/v1", "metadata": {"name": name}})
        )
    store.create(
        parse_resource(
            {
                "kind": "VirtualMachine",
                "apiVersion": "pvc/v1",
                "metadata": {"name": "web1"},
                "spec": {"memory": "256Mi"},
            }
        )
    )
    store.write_placement("web1", Placement(node="n1", epoch=0, reason="scheduled"), epoch=None)
    assert store.exists(Node, "n2") and store.exists(VirtualMachine, "web1")
    return store


def test_a_deposed_primary_carries_out_nothing(
    placed: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = placed
    deposed = RequestController(store, "old", store.read_epoch())
    store.bump_epoch("new")  # another primary took over
    deposed.start()
    try:
        with (
            caplog.at_level(logging.WARNING, logger="controllers.requests"),
            pytest.raises(NoPrimary, match="nothing changed"),
        ):
            ask(store, PLACE, "VirtualMachine", "web1", PLACE_ON_N2, requester="t", timeout=1)
    finally:
        deposed.stop()
    assert store.read_placement("web1").node == "n1"  # type: ignore[union-attr]
    assert requests_left(store) == []
    assert "event=request_not_ours" in caplog.text
    # The primary of the current epoch does carry it out.
    current = RequestController(store, "new", store.read_epoch())
    current.start()
    try:
        ask(store, PLACE, "VirtualMachine", "web1", PLACE_ON_N2, requester="t", timeout=10)
    finally:
        current.stop()
    placement = store.read_placement("web1")
    assert placement is not None and (placement.node, placement.epoch) == ("n2", current.epoch)


def test_a_withdraw_that_loses_the_race_waits_for_the_outcome(placed: Store) -> None:
    store = placed
    answers: list[Any] = []

    def asking() -> None:
        try:
            answers.append(
                ask(store, PLACE, "VirtualMachine", "web1", PLACE_ON_N2, requester="t", timeout=0.5)
            )
        except Exception as exc:
            answers.append(exc)

    thread = threading.Thread(target=asking)
    thread.start()
    key = wait_for(lambda: requests_left(store), 10, "the request")[0]
    path = store.path(paths.request(key))
    # A primary takes it at once, and answers only after the asker's deadline.
    request = Request.from_wire(decode(store.client.get(path)[0]))
    request.state = TAKEN
    store.client.set(path, encode(request.wire()), version=0)
    thread.join(0.8)
    assert thread.is_alive()  # the withdraw failed: it waits again
    request.state, request.outcome = DONE, {"result": {"ok": True}}
    store.client.set(path, encode(request.wire()))
    thread.join(5)
    assert answers == [{"ok": True}]
    assert requests_left(store) == []


def test_a_finished_request_left_behind_is_collected(
    placed: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store = placed
    left = Request(PLACE, "VirtualMachine", "web1", PLACE_ON_N2, "t", wait_seconds=0.2)
    store.client.create(
        store.path(paths.REQUEST_PREFIX), encode(left.wire()), ephemeral=True, sequence=True
    )
    controller = RequestController(store, "p", store.read_epoch())
    with caplog.at_level(logging.INFO, logger="controllers.requests"):
        controller.start()
        try:
            wait_for(lambda: not requests_left(store), 10, "the leftover to be collected")
        finally:
            controller.stop()
    assert store.read_placement("web1").node == "n2"  # type: ignore[union-attr]
    assert "event=request_collected" in caplog.text
