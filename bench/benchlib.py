"""What every benchmark shares: percentiles and summaries, the machine and commit a figure
was measured on, and JSON without NaN. (bench/ is not a package: scripts import this by
name, since Python puts a script's own folder first on sys.path.)"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks
    (numpy's default). With few samples p99 lies close to the maximum."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """p50/p99/mean/min/max of samples in seconds."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_s": percentile(values, 50),
        "p99_s": percentile(values, 99),
        "mean_s": statistics.fmean(values),
        "min_s": min(values),
        "max_s": max(values),
    }


def nproc() -> int | None:
    """What `nproc` prints: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str | None:
    return git("rev-parse", "HEAD") or None


def git_dirty() -> bool | None:
    status = git("status", "--porcelain")
    return None if status is None else bool(status)


def nan_to_none(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    return value
