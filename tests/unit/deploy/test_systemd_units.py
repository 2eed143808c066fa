"""The systemd units in deploy/systemd: valid for systemd (``systemd-analyze verify``), and
timed so that a hung pvcnoded is restarted before the primary would fence its host."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controllers.config import DaemonConfig
from schemas import FencingConfig, to_seconds

UNITS = ("pvcnoded.service", "pvcapid.service")
START_UP = 5.0
"""Seconds pvcnoded takes from exec to its first heartbeat once its lease is free (Python
imports, ZooKeeper connect): measured 2-3 s on a loaded 2-core machine."""


def service(repo_root: Path, unit: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(repo_root / "deploy/systemd" / unit)
    return parser["Service"]


def test_units_pass_systemd_analyze_verify(repo_root: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: make setup installs the systemd package")
    # ExecStart must name an executable: this run's own pvcnoded and pvcapid stand in for
    # /opt/pvc's (deploy/install.sh rewrites the path the same way).
    here = f"{Path(sys.executable).parent}/"
    for unit in UNITS:
        text = (repo_root / "deploy/systemd" / unit).read_text()
        assert "ExecStart=/opt/pvc/bin/" in text
        (tmp_path / unit).write_text(text.replace("/opt/pvc/bin/", here))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u) for u in UNITS)],
        capture_output=True,
        text=True,
    )
    # Unknown keys and bad values are only warnings (exit 0): no output at all is the test.
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_both_tell_systemd_when_ready(repo_root: Path) -> None:
    for unit in UNITS:
        assert service(repo_root, unit)["Type"] == "notify"
        assert service(repo_root, unit)["RestartPreventExitStatus"] == "2"  # a bad config


def test_a_hung_pvcnoded_is_restarted_before_its_host_is_fenced(repo_root: Path) -> None:
    unit = service(repo_root, "pvcnoded.service")
    watchdog = to_seconds(unit["WatchdogSec"])
    restart = to_seconds(unit["RestartSec"])
    fencing, daemon = FencingConfig(), DaemonConfig(node="n1")
    keepalive = to_seconds(fencing.keepalive_interval)
    # Pings come once per heartbeat: the watchdog must outlast a couple of them.
    assert watchdog >= 2 * keepalive
    # Killed at t+watchdog, started at +restart, its old session's lease gone at
    # +sessionTimeout, heartbeating a few seconds later: before the fence at
    # keepalive x (fenceIntervals + savingThrows).
    back = watchdog + restart + daemon.session_seconds + START_UP
    assert back < fencing.fence_after(), (back, fencing.fence_after())


def test_stop_timeout_covers_flush_on_shutdown(repo_root: Path) -> None:
    unit = service(repo_root, "pvcnoded.service")
    flush = to_seconds(DaemonConfig(node="n1").flush_timeout)
    assert to_seconds(unit["TimeoutStopSec"]) > flush + 30
