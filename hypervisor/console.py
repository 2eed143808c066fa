"""A domain's serial console output, read from the log file libvirt appends it to (the
domain XML's ``<serial><log file=… append='on'/>``), or made up where no guest runs.

Reads are cheap when nothing changed: a stat, and the tail read again only when the file's
size or modification time moved.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

from hypervisor.domain import ConsoleTail
from hypervisor.domaintype import is_local_uri

SYSTEM_LOG_DIR = "/var/log/libvirt/qemu"
"""Where libvirt's system QEMU driver keeps each domain's logs."""


def console_log_dir(uri: str) -> str | None:
    """Where the serial console logs of ``uri``'s domains go: libvirt's own log folder for
    a local QEMU, the session's under the user's cache; None for the test driver (no guest
    writes anything) or a remote host (its files are not readable here)."""
    parts = urlsplit(uri)
    if not parts.scheme.startswith("qemu") or not is_local_uri(uri):
        return None
    if parts.path == "/session":
        return str(Path.home() / ".cache" / "libvirt" / "qemu" / "log")
    return SYSTEM_LOG_DIR


def console_log_path(folder: str, domain: str) -> str:
    return os.path.join(folder, f"{domain}-console.log")


class ConsoleFiles:
    """The tails of console log files, cached per file by (size, mtime)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int, int], ConsoleTail]] = {}

    def tail(self, path: str, limit: int) -> ConsoleTail | None:
        try:
            stat = os.stat(path)
        except OSError:
            with self._lock:
                self._cache.pop(path, None)
            return None
        key = (stat.st_size, stat.st_mtime_ns, limit)
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            with open(path, "rb") as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - limit))
                data = file.read(limit)
        except OSError:
            return None
        found = ConsoleTail(data=data, end=size)
        with self._lock:
            self._cache[path] = (key, found)
        return found


class SimulatedConsoles:
    """Consoles for libvirt's test driver, whose domains run no guest: a line per start, as
    a real guest's log grows with each boot, so a follower has something to follow."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[str, bytes] = {}

    def started(self, domain: str) -> None:
        with self._lock:
            log = self._logs.get(domain, b"")
            boots = log.count(b"\n") + 1
            line = f"[pvc test console] {domain} boot {boots} (the test driver runs no guest)\n"
            self._logs[domain] = log + line.encode()

    def forget(self, domain: str) -> None:
        with self._lock:
            self._logs.pop(domain, None)

    def tail(self, domain: str, limit: int) -> ConsoleTail | None:
        with self._lock:
            log = self._logs.get(domain)
        if log is None:
            return None
        return ConsoleTail(data=log[-limit:], end=len(log))
