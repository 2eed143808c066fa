"""What a local cluster costs, read from outside PVC: ZooKeeper's own counters (four-letter
words) and the kernel's view of each process (/proc). For bench/scale.py and the scale test.

- Writes: every write ZooKeeper commits (create, set, delete, each multi) takes the next
  zxid, so the zxid's growth over a window is the write rate, as the server counts it.
- Watches: ``wchc`` lists every session's watched paths; ``cons`` names each session's
  client port, and /proc tells which process owns that socket.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from localcluster.zookeeper import four_letter

_TICKS = os.sysconf("SC_CLK_TCK")


def zxid(port: int) -> int:
    """The server's last committed zxid (``srvr``), counter part only (within one epoch)."""
    match = re.search(r"Zxid: 0x([0-9a-f]+)", four_letter(port, "srvr", timeout=5.0))
    if match is None:
        raise RuntimeError(f"ZooKeeper on port {port} did not answer srvr")
    return int(match.group(1), 16) & 0xFFFFFFFF


def packets(port: int) -> tuple[int, int, int]:
    """The server's packets received (requests, pings included) and sent (answers and watch
    notifications) since it started, and its last zxid (``srvr``)."""
    text = four_letter(port, "srvr", timeout=5.0)
    found = [re.search(rf"{key}: (\d+)", text) for key in ("Received", "Sent")]
    last = re.search(r"Zxid: 0x([0-9a-f]+)", text)
    if None in found or last is None:
        raise RuntimeError(f"ZooKeeper on port {port} did not answer srvr")
    received, sent = (int(m.group(1)) for m in found if m is not None)
    return received, sent, int(last.group(1), 16) & 0xFFFFFFFF


def writes_per_second(port: int, seconds: float) -> tuple[float, int]:
    """ZooKeeper's committed writes per second over ``seconds`` (and the count)."""
    start, began = zxid(port), time.monotonic()
    time.sleep(seconds)
    end, ended = zxid(port), time.monotonic()
    return (end - start) / (ended - began), end - start


def znode_count(port: int) -> int:
    match = re.search(r"zk_znode_count\s+(\d+)", four_letter(port, "mntr", timeout=5.0))
    return int(match.group(1)) if match else 0


def watch_total(port: int) -> int:
    """Watches the server holds (``wchs``: one per path per session)."""
    match = re.search(r"Total watches:(\d+)", four_letter(port, "wchs", timeout=5.0))
    return int(match.group(1)) if match else 0


def _watches_by_session(port: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    session: int | None = None
    for line in four_letter(port, "wchc", timeout=20.0).splitlines():
        if line.startswith("0x"):
            session = int(line.strip(), 16)
            counts[session] = 0
        elif line.startswith("\t") and session is not None:
            counts[session] += 1
    return counts


def _sessions_by_client_port(port: int) -> dict[int, int]:
    """``cons``: each connection's client port -> session id."""
    found: dict[int, int] = {}
    for line in four_letter(port, "cons", timeout=10.0).splitlines():
        match = re.search(r":(\d+)\[\d+\]\(.*sid=0x([0-9a-f]+)", line)
        if match:
            found[int(match.group(1))] = int(match.group(2), 16)
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _tcp_sockets() -> list[tuple[int, int, bool]]:
    """(inode, local port, listening) of every TCP socket on the machine."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            found.append((int(fields[9]), port, fields[3] == "0A"))  # 0A: TCP_LISTEN
    return found


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (so an answer on
    that port is its, not another process's that took the port first)."""
    mine = _socket_inodes(pid)
    return any(inode in mine and p == port and up for inode, p, up in _tcp_sockets())


def _local_ports_by_inode() -> dict[int, int]:
    """Socket inode -> local port, for every TCP socket on the machine."""
    return {inode: port for inode, port, _listening in _tcp_sockets()}


def watches_by_process(port: int, pids: list[int]) -> dict[int, int]:
    """Watches ZooKeeper holds for the sessions of each of ``pids`` (0 when none)."""
    by_session = _watches_by_session(port)
    sessions = _sessions_by_client_port(port)
    ports = _local_ports_by_inode()
    result: dict[int, int] = {}
    for pid in pids:
        local = {ports[i] for i in _socket_inodes(pid) if i in ports}
        result[pid] = sum(by_session.get(sessions[p], 0) for p in local if p in sessions)
    return result


@dataclass
class ProcessSample:
    rss_bytes: int
    cpu_seconds: float
    """User + system CPU time since the process started."""
    at: float
    """time.monotonic() of the sample."""

    @property
    def rss_mb(self) -> float:
        return self.rss_bytes / 2**20


def sample(pid: int) -> ProcessSample:
    """RSS and CPU time of ``pid`` now."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    rss = int(match.group(1)) * 1024 if match else 0
    # Fields after the command name (which may hold spaces): utime, stime are 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    return ProcessSample(rss, cpu, time.monotonic())


def cpu_percent(before: ProcessSample, after: ProcessSample) -> float:
    """Share of one core used between two samples, in percent."""
    elapsed = after.at - before.at
    return 100.0 * (after.cpu_seconds - before.cpu_seconds) / elapsed if elapsed > 0 else 0.0
