"""The fence-agents agent against a tiny fake ClusterLabs agent on PATH: what it writes on
the agent's stdin, how it maps the exit codes, its deadline, and that the password shows
nowhere but on that stdin."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from controllers.fencing import agent_for
from hypervisor.fence import FenceAgentsAgent, FenceError, PowerState
from localcluster.process import pid_alive
from schemas import FenceConfig
from tests.helpers import wait_for

PASSWORD = "pw-0f9e8d"

# A fence agent as the FenceAgentAPI describes one: settings on stdin, status exits 0 when
# on, 2 when off, 1 on error. It records its stdin and argv, and keeps its power in a file.
FAKE_AGENT = """#!/bin/sh
dir={dir}
cat > "$dir/stdin"
input=$(cat "$dir/stdin")
printf '%s\\n' "$#" > "$dir/argc"
action=$(printf '%s\\n' "$input" | sed -n 's/^action=//p')
if [ -f "$dir/sleep" ]; then  # a hung agent, waiting on a child of its own
  sleep "$(cat "$dir/sleep")" &
  echo $! > "$dir/child"
  wait
fi
if [ -f "$dir/fail" ]; then
  echo "2026-01-01 00:00:00,000 ERROR: Failed: password $(printf '%s\\n' "$input" \
    | sed -n 's/^password=//p') refused" >&2
  exit 1
fi
case "$action" in
  off|on) echo "$action" > "$dir/power"; echo Success: Powered "$action"; exit 0 ;;
  status)
    power=$(cat "$dir/power" 2>/dev/null)
    echo "Status: $power"
    [ "$power" = on ] && exit 0
    [ "$power" = off ] && exit 2
    exit 1 ;;
esac
exit 1
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fence_fake"
    script.write_text(FAKE_AGENT.format(dir=tmp_path))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "power").write_text("on\n")
    return tmp_path


def agent(**options: str) -> FenceAgentsAgent:
    return FenceAgentsAgent(
        "fence_fake",
        address="10.0.0.9:6230",
        user="admin",
        password=PASSWORD,
        options={"lanplus": "1", **options},
        timeout=5.0,
    )


def test_off_writes_the_standard_stdin_and_no_arguments(fake: Path) -> None:
    agent().power_off()
    assert (fake / "stdin").read_text() == (
        f"action=off\nip=10.0.0.9\nipport=6230\nusername=admin\npassword={PASSWORD}\nlanplus=1\n"
    )
    assert (fake / "argc").read_text().strip() == "0"  # the password is on no command line
    assert (fake / "power").read_text().strip() == "off"


def test_status_exit_codes_map_to_power_states(fake: Path) -> None:
    a = agent()
    assert a.power_status() == PowerState.ON  # exit 0
    a.power_off()
    assert a.power_status() == PowerState.OFF  # exit 2
    a.power_on()
    assert a.power_status() == PowerState.ON
    (fake / "power").write_text("unplugged\n")
    with pytest.raises(FenceError, match=r"status exited 1"):  # exit 1: an error, not off
        a.power_status()


def test_a_failure_says_why_without_the_password(fake: Path) -> None:
    (fake / "fail").write_text("")
    for call in (agent().power_off, agent().power_on, agent().power_status):
        with pytest.raises(FenceError) as caught:
            call()
        message = str(caught.value)
        assert "exited 1" in message and "refused" in message
        assert PASSWORD not in message and "********" in message
        assert message.startswith("fence-agents fence_fake admin@10.0.0.9:6230:")
        assert "exited 1: ERROR: Failed: password ******** refused" in message


def test_each_call_has_a_deadline_of_the_agents_waits_plus_ours(fake: Path) -> None:
    assert agent().deadline == 5.0 + 20.0 + 5.0 + 3.0  # power, login, shell timeouts
    quick = {
        "power_timeout": "0.2",
        "login_timeout": "0",
        "shell_timeout": "0",
        "power_wait": "0",
        "delay": "0",
    }
    slow = FenceAgentsAgent("fence_fake", address="h", options=quick, timeout=0.3)
    assert slow.deadline == pytest.approx(0.5)
    (fake / "sleep").write_text("30")
    started = time.monotonic()
    with pytest.raises(FenceError, match=r"off timed out after 0.5s"):
        slow.power_off()
    assert time.monotonic() - started < 3.0
    # The agent went with everything it started, as ipmitool or ssh under a real agent.
    child = int((fake / "child").read_text())
    wait_for(lambda: not pid_alive(child), 5.0, f"the agent's child {child} to be gone")


def test_an_agent_not_installed_is_a_fence_error(fake: Path) -> None:
    with pytest.raises(FenceError, match="fence_nothere is not installed"):
        FenceAgentsAgent("fence_nothere", address="h").power_status()


@pytest.mark.parametrize(
    ("address", "lines"),
    [
        ("bmc.example", ["ip=bmc.example"]),
        ("bmc.example:623", ["ip=bmc.example", "ipport=623"]),
        ("[fd00::9]:6230", ["ip=fd00::9", "ipport=6230"]),
        ("fd00::9", ["ip=fd00::9"]),
    ],
)
def test_address_becomes_ip_and_ipport(address: str, lines: list[str]) -> None:
    text = FenceAgentsAgent("fence_x", address=address).stdin("status")
    assert text.splitlines() == ["action=status", *lines]


def test_node_fence_config_builds_the_agent(fake: Path) -> None:
    config = FenceConfig.model_validate(
        {
            "agent": "fence-agents",
            "fenceAgent": "fence_fake",
            "address": "10.0.0.9:6230",
            "user": "admin",
            "password": PASSWORD,
            "options": {"lanplus": "1"},
        }
    )
    built = agent_for(config)
    assert isinstance(built, FenceAgentsAgent)
    assert built.description == "fence-agents fence_fake admin@10.0.0.9:6230"
    assert built.power_status() == PowerState.ON
    assert f"password={PASSWORD}" in (fake / "stdin").read_text()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("ipmitool", {}),
        ("fence_IPMI", {}),
        ("/usr/bin/fence_ipmilan", {}),
        ("/usr/sbin/../bin/fence_x", {}),
        ("fence_x", {"password": "p"}),
        ("fence_x", {"Power-Timeout": "3"}),
        ("fence_x", {"plug": "1\naction=reboot"}),
    ],
)
def test_bad_agent_names_and_options_are_refused(name: str, options: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        FenceAgentsAgent(name, options=options)


def test_a_password_that_would_add_a_line_is_refused() -> None:
    with pytest.raises(ValueError, match="password must be one line"):
        FenceAgentsAgent("fence_x", password="pw\naction=reboot")
