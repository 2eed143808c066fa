"""monitoring/prometheus: the alert rules load in Prometheus (promtool check rules) and the
alerts their unit tests cover fire when they should (promtool test rules)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[3] / "monitoring" / "prometheus"
PROMTOOL = shutil.which("promtool")

# scripts/setup-host.sh installs Debian's prometheus package, which ships promtool.
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (scripts/setup-host.sh installs it)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=60)


def test_the_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", "pvc-alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_fence_failed_and_zookeeper_lost_fire_when_they_should() -> None:
    result = promtool("test", "rules", "pvc-alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
