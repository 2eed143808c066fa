"""zkstore/pollhandler.py: the poll-based select answers as kazoo's own select does."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from kazoo.handlers.utils import selector_select

from zkstore.pollhandler import PollHandler, poll_select


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("select", [poll_select, selector_select], ids=["poll", "kazoo"])
def test_the_same_answers_as_kazoos_select(
    select: object, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    assert callable(select)
    # Nothing to read yet: the timeout passes, nothing is ready.
    started = time.monotonic()
    assert select([a], [], [], 0.05) == ([], [], [])
    assert time.monotonic() - started >= 0.04
    # A fresh socket can be written at once.
    assert select([], [a], [], 1.0) == ([], [a], [])
    b.sendall(b"x")
    assert select([a], [], [], 1.0) == ([a], [], [])
    # Ready for both: kazoo lists it as readable only (once per list it was given in).
    assert select([a], [a], [], 1.0) == ([a, a], [], [])
    a.recv(1)
    # The peer hangs up: a reader wakes (and reads the end of the stream).
    b.close()
    assert select([a], [], [], 1.0) == ([a], [], [])


def test_a_wait_without_timeout_returns_when_ready(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.sendall(b"y")
    assert poll_select([a, b], [], [], None) == ([a], [], [])


def test_bad_arguments_are_refused_as_kazoo_refuses_them(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, _ = pair
    with pytest.raises(ValueError, match="non-negative"):
        poll_select([a], [], [], -1)
    with pytest.raises(ValueError, match="Invalid"):
        poll_select([object()], [], [], 0)
    with pytest.raises(ValueError, match="Invalid"):
        poll_select([-1], [], [], 0)


def test_the_handler_waits_with_poll(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.sendall(b"z")
    assert PollHandler().select([a], [], [], 1.0) == ([a], [], [])
