"""A fence agent that runs an admin's command with the action appended (off, on, status)."""

from __future__ import annotations

import subprocess

from hypervisor.fence.base import FenceAgent, FenceError, PowerState
from hypervisor.fence.ipmi import parse_power_status


class ExecAgent(FenceAgent):
    """``command off`` and ``command on`` must exit 0 on success; ``command status`` prints
    'on' or 'off' (or ipmitool's 'Chassis Power is on/off')."""

    def __init__(self, command: list[str], *, timeout: float = 30.0) -> None:
        if not command:
            raise ValueError("the exec fence agent needs a command")
        self.command = command
        self.timeout = timeout

    @property
    def description(self) -> str:
        return f"exec {self.command[0]}"

    def _run(self, action: str) -> str:
        try:
            result = subprocess.run(
                [*self.command, action], capture_output=True, text=True, timeout=self.timeout
            )
        except FileNotFoundError:
            raise FenceError(f"fence command {self.command[0]!r} not found") from None
        except OSError as exc:  # not executable, and the like
            raise FenceError(f"fence command {self.command[0]!r}: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            raise FenceError(f"fence command {action} timed out after {self.timeout:g}s") from None
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise FenceError(
                f"fence command {action} exited {result.returncode}"
                + (f": {lines[-1]}" if lines else "")
            )
        return result.stdout

    def power_off(self) -> None:
        self._run("off")

    def power_on(self) -> None:
        self._run("on")

    def power_status(self) -> PowerState:
        out = self._run("status").strip().lower()
        if out in ("on", "off"):
            return PowerState(out)
        return parse_power_status(out)
