"""sd_notify over a real unix datagram socket, as systemd listens for it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_messages_arrive_as_one_datagram_each(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = Notifier(path, watchdog_seconds=20)
    assert notifier.ready("running node n1")
    assert notifier.watchdog()
    assert notifier.extend_timeout(330, "flushing")
    assert sock.recv(4096) == b"READY=1\nSTATUS=running node n1"
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=330000000\nSTATUS=flushing"


def test_no_socket_or_no_watchdog_sends_nothing(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    assert not Notifier("").ready("x")
    assert not Notifier(path, watchdog_seconds=None).watchdog()
    assert not Notifier(path + "-gone").ready("x")  # logged, never raised
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)


def test_environment_as_systemd_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@pvc-test")
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert notifier.address == "@pvc-test" and notifier.watchdog_seconds == 20.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # the watchdog is another process's
    assert Notifier.from_environment().watchdog_seconds is None
