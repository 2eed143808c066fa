"""Start, find and stop the local cluster's processes by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# How each child this process reaped ended (``pid_alive`` reaps them): PID -> its exit code,
# or minus the signal that killed it (as Popen.returncode).
_ended: dict[int, int] = {}
# The children ``spawn`` started, kept so that nothing else reaps them unseen (a Popen
# dropped while its child runs is reaped by the next Popen, its status lost).
_children: dict[int, subprocess.Popen[bytes]] = {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    child = _children.get(pid)
    if child is not None:  # reaped through its Popen, which keeps the exit status
        if child.poll() is None:
            return True
        del _children[pid]
        _ended[pid] = child.returncode
        return False
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return _not_zombie(pid)
    if done:
        _ended[pid] = os.waitstatus_to_exitcode(status)
    return done == 0


def how_it_ended(pid: int) -> str:
    """How a child this process started and reaped ended ("exit code 1", "killed by
    SIGKILL"); "" when it is not known (not our child, or not reaped yet)."""
    code = _ended.get(pid)
    if code is None:
        return ""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start a detached process (own session) logging to a file; returns its PID."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A crash in C code (a segfault in an extension) leaves its traceback in the log.
            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
        )
    _ended.pop(proc.pid, None)  # a PID used again: not how an earlier process ended
    _children[proc.pid] = proc
    return proc.pid


def processes_naming(folder: Path) -> dict[int, str]:
    """Other processes whose command line names a file in ``folder``: PID -> command line."""
    marker = f"{folder}/"
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found[int(proc.name)] = cmdline
    return found


def cmdline(pid: int) -> str:
    """The process's command line, words joined by spaces; "" when there is none."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def is_ours(pid: int, marker: str | None) -> bool:
    """``pid`` runs and is still the process recorded: its command line names ``marker``
    (a folder or config file of its own). A PID is reused once its process was reaped (by
    ``pid_alive``, say), maybe by another cluster's daemon: a recorded PID alone is no proof.
    ``marker`` None trusts the PID (a child not yet reaped cannot be reused)."""
    if not pid or not pid_alive(pid):
        return False
    return marker is None or marker in cmdline(pid)


def signal_ours(pid: int, signum: int, marker: str | None) -> bool:
    """Send ``signum`` to ``pid`` only if it is still ours (``is_ours``); True if sent."""
    if not is_ours(pid, marker):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def stop_pid(pid: int, timeout: float = 10.0, marker: str | None = None) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; nothing is sent to a PID whose
    command line no longer names ``marker`` (see ``is_ours``)."""
    if not signal_ours(pid, signal.SIGTERM, marker):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    if not signal_ours(pid, signal.SIGKILL, marker):
        return
    wait_until(lambda: not pid_alive(pid), 5.0, f"process {pid} to die")


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
