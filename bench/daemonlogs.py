"""The daemons' logs as events: every ``event=...`` line of a local cluster's logs, parsed
(for the HA benchmarks' breakdowns), and the errors and tracebacks among them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) (\S+) (.*)$")
# logfmt (schemas/daemon_logging.py): a value in double quotes may hold \" and \\.
FIELD = re.compile(r"(\w+)=('[^']*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


@dataclass
class LogEvent:
    wall: float
    """Unix time of the line (its asctime, local time, millisecond resolution)."""
    log: str
    level: str
    event: str
    fields: dict[str, str]
    line: str


def read_events(
    state_dir: Path, since_wall: float = 0.0, pattern: str = "node*.log"
) -> list[LogEvent]:
    """Every event=... line of the daemon logs at or after ``since_wall`` (minus 1 ms for
    the truncated timestamps), in time order."""
    events: list[LogEvent] = []
    for path in sorted(state_dir.glob(pattern)):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            match = LOG_LINE.match(line)
            if not match or "event=" not in match.group(4):
                continue
            wall = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if wall < since_wall - 0.001:
                continue
            fields = {k: v.strip("'\"") for k, v in FIELD.findall(match.group(4))}
            events.append(
                LogEvent(wall, path.stem, match.group(2), fields.get("event", ""), fields, line)
            )
    events.sort(key=lambda e: e.wall)
    return events


def first(events: Sequence[LogEvent], event: str, **fields: str) -> LogEvent | None:
    for e in events:
        if e.event == event and all(e.fields.get(k) == v for k, v in fields.items()):
            return e
    return None


def log_problems(state_dir: Path, limit: int = 30) -> list[str]:
    found: list[str] = []
    for path in sorted(state_dir.glob("*.log")):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if any(m in line for m in ("Traceback", " ERROR ", "CRITICAL")):
                found.append(f"{path.name}: {line.strip()[:300]}")
                if len(found) >= limit:
                    return found
    return found
