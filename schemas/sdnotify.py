"""sd_notify(3): tell systemd that a daemon is ready, alive (watchdog) or stopping.

systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket path, or ``@name`` for the
abstract namespace) to a ``Type=notify`` service; each message is one datagram of
``KEY=value`` lines. Fifteen lines of socket code here rather than a dependency:
``systemd-python`` needs libsystemd-dev and a C build on every host, and ``sdnotify``
(PyPI) has had no release since 2017; the protocol is small and stable. Without
``NOTIFY_SOCKET`` (not under systemd: the local cluster, the tests) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to the socket ``address`` (none: sends nothing); never
    raises. ``watchdog_seconds``: systemd's WatchdogSec (None: no watchdog, no pings)."""

    def __init__(self, address: str = "", watchdog_seconds: float | None = None) -> None:
        self.address = address
        self.watchdog_seconds = watchdog_seconds

    @classmethod
    def from_environment(cls) -> Notifier:
        """What systemd passed: ``NOTIFY_SOCKET``, and ``WATCHDOG_USEC`` when
        ``WATCHDOG_PID`` is unset or this process (sd_watchdog_enabled(3))."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        watchdog = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        return cls(os.environ.get("NOTIFY_SOCKET", ""), watchdog)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``READY=1``, ``STATUS=...``) as one datagram; False if not sent."""
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            log.warning("event=sd_notify_failed socket=%s error=%r", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        """Tell systemd this process is alive (only when it watches: WatchdogSec set)."""
        return self.watchdog_seconds is not None and self.notify("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def extend_timeout(self, seconds: float, status: str) -> bool:
        """Ask systemd for ``seconds`` more before it gives up on this start or stop."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", f"STATUS={status}")
