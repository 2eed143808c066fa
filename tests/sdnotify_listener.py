"""systemd's end of NOTIFY_SOCKET for tests: a real unix datagram socket that records what
a daemon tells systemd (READY=1, WATCHDOG=1, STOPPING=1...) and when."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path


class Listener:
    """Every datagram with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, wanted: str, timeout: float) -> float | None:
        """Wait for a message holding ``wanted``; the monotonic time it came, or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                return None
            if wanted in message.split("\n"):
                return time.monotonic()
        return None

    def all(self, wanted: str, seconds: float) -> list[float]:
        """The times of every message holding ``wanted`` in the next ``seconds``."""
        deadline = time.monotonic() + seconds
        times = []
        while (at := self.next(wanted, deadline - time.monotonic())) is not None:
            times.append(at)
        return times

    def drain(self) -> None:
        self.sock.settimeout(0)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass


def listening(folder: Path) -> Iterator[Listener]:
    """For a fixture: ``yield from listening(tmp_path)``; pass ``.path`` as NOTIFY_SOCKET."""
    the_listener = Listener(folder / "notify")
    yield the_listener
    the_listener.sock.close()
