"""Fencing through any ClusterLabs fence agent (``fence_ipmilan``, ``fence_redfish``, ...).

The agent runs with no arguments and reads its settings from stdin, one ``key=value`` a
line, as Pacemaker and fenced run it (the FenceAgentAPI): ``action=off|on|status``, ``ip``,
``ipport``, ``username``, ``password`` and the admin's options. So the password is never on a
command line (``ps``), and never in our logs or errors. Exit codes: 0 success (for
``status``: power on), 2 for ``status``: power off, anything else a failure.

Each call has a deadline: the agent's own waits (``login_timeout``, ``power_timeout``,
``power_wait``, ``shell_timeout``, ``delay``: its defaults, or the admin's options) plus
``timeout`` of ours, so the agent gives up by itself before we kill it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping

from hypervisor.fence.base import FenceAgent, FenceError, PowerState
from schemas.fence_agents import (
    agent_name_problem,
    one_line,
    option_problem,
    resolve_agent,
    split_address,
)

# The fence library's defaults (fencing.py of fence-agents) for the waits of one call.
AGENT_WAITS: dict[str, float] = {
    "delay": 0.0,
    "login_timeout": 5.0,
    "power_timeout": 20.0,
    "power_wait": 0.0,
    "shell_timeout": 3.0,
}

# The fence library's log lines start with a timestamp: "2026-01-31 12:00:00,123 ERROR: ..."
LOG_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")

STATUS_ON = 0
STATUS_OFF = 2


class FenceAgentsAgent(FenceAgent):
    """One ClusterLabs fence agent, run per action with its settings on stdin."""

    def __init__(
        self,
        agent: str,
        *,
        address: str | None = None,
        user: str | None = None,
        password: str | None = None,
        options: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        problem = agent_name_problem(agent)
        if problem is not None:
            raise ValueError(problem)
        for key, value in (options or {}).items():
            problem = option_problem(key, value)
            if problem is not None:
                raise ValueError(problem)
        for field, text in (("address", address), ("user", user), ("password", password)):
            if text and not one_line(text):
                raise ValueError(f"the fence agent's {field} must be one line")
        self.agent = agent
        self.address = address
        self.user = user
        self._password = password
        self.options = dict(options or {})
        self.timeout = timeout

    @property
    def description(self) -> str:
        where = f"{self.user}@{self.address}" if self.user else (self.address or "")
        return f"fence-agents {os.path.basename(self.agent)} {where}".strip()

    @property
    def deadline(self) -> float:
        """Seconds one call may take: the agent's own waits plus ours."""
        waits = 0.0
        for key, default in AGENT_WAITS.items():
            try:
                waits += max(0.0, float(self.options.get(key, default)))
            except ValueError:
                waits += default  # the agent itself refuses it, and says so
        return waits + self.timeout

    def stdin(self, action: str) -> str:
        """What the agent reads: one ``key=value`` a line, the password among them."""
        lines = [f"action={action}"]
        if self.address:
            host, port = split_address(self.address)
            lines.append(f"ip={host}")
            if port:
                lines.append(f"ipport={port}")
        if self.user:
            lines.append(f"username={self.user}")
        if self._password:
            lines.append(f"password={self._password}")
        lines.extend(f"{key}={value}" for key, value in sorted(self.options.items()))
        return "".join(f"{line}\n" for line in lines)

    def _run(self, action: str) -> subprocess.CompletedProcess[str]:
        executable = resolve_agent(self.agent)
        if executable is None:
            raise FenceError(
                f"{self.description}: {self.agent} is not installed (Debian package fence-agents)"
            )
        deadline = self.deadline
        try:
            # Its own session, so that at the deadline the agent and what it started
            # (ipmitool, ssh, ...) go together.
            process = subprocess.Popen(
                [executable],  # no arguments: the agent reads stdin
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "LC_ALL": "C", "PYTHONWARNINGS": "ignore"},
                start_new_session=True,
            )
        except OSError as exc:
            raise FenceError(f"{self.description}: {action}: {exc.strerror}") from None
        try:
            stdout, stderr = process.communicate(self.stdin(action), timeout=deadline)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise FenceError(
                f"{self.description}: {action} timed out after {deadline:g}s"
            ) from None
        return subprocess.CompletedProcess([executable], process.returncode, stdout, stderr)

    def _failure(self, action: str, result: subprocess.CompletedProcess[str]) -> FenceError:
        lines = [
            line.strip()
            for line in (result.stderr or result.stdout).splitlines()
            if line.strip() and not line.lstrip().startswith("Traceback")
        ]
        last = self._redact(LOG_STAMP.sub("", lines[-1])) if lines else ""
        return FenceError(
            f"{self.description}: {action} exited {result.returncode}"
            + (f": {last}" if last else "")
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._password, "********") if self._password else text

    def power_off(self) -> None:
        result = self._run("off")
        if result.returncode != 0:
            raise self._failure("off", result)

    def power_on(self) -> None:
        result = self._run("on")
        if result.returncode != 0:
            raise self._failure("on", result)

    def power_status(self) -> PowerState:
        result = self._run("status")
        if result.returncode == STATUS_ON:
            return PowerState.ON
        if result.returncode == STATUS_OFF:
            return PowerState.OFF
        raise self._failure("status", result)
