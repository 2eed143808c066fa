"""IPMI fencing through ipmitool (lanplus)."""

from __future__ import annotations

import os
import subprocess

from hypervisor.fence.base import FenceAgent, FenceError, PowerState


class IpmiAgent(FenceAgent):
    def __init__(
        self, address: str, user: str, password: str, *, port: int = 623, timeout: float = 10.0
    ) -> None:
        self.address = address
        self.user = user
        self._password = password
        self.port = port
        self.timeout = timeout

    @property
    def description(self) -> str:
        return f"ipmi {self.user}@{self.address}:{self.port}"

    def _ipmitool(self, *args: str) -> str:
        # The password goes through the environment (-E), never the command line (ps).
        argv = [
            "ipmitool",
            "-I",
            "lanplus",
            "-H",
            self.address,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-E",
            *args,
        ]
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env={**os.environ, "IPMI_PASSWORD": self._password},
            )
        except FileNotFoundError:
            raise FenceError("ipmitool is not installed") from None
        except OSError as exc:
            raise FenceError(f"ipmitool: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            raise FenceError(
                f"{self.description}: {' '.join(args)} timed out after {self.timeout:g}s"
            ) from None
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise FenceError(
                f"{self.description}: {' '.join(args)} failed: "
                f"{message[-1] if message else 'exit ' + str(result.returncode)}"
            )
        return result.stdout

    def power_off(self) -> None:
        self._ipmitool("chassis", "power", "off")

    def power_on(self) -> None:
        self._ipmitool("chassis", "power", "on")

    def power_status(self) -> PowerState:
        return parse_power_status(self._ipmitool("chassis", "power", "status"))


def parse_power_status(output: str) -> PowerState:
    """'Chassis Power is on' (capital P, or any case) -> ON; anything unclear -> UNKNOWN."""
    text = output.strip().lower()
    if text.endswith(" is on"):
        return PowerState.ON
    if text.endswith(" is off"):
        return PowerState.OFF
    return PowerState.UNKNOWN
