"""The fence-agent interface: power a node off, confirm it, power it on."""

from __future__ import annotations

import abc
import enum


class PowerState(enum.Enum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class FenceError(Exception):
    """The agent could not carry out or confirm an action."""


class FenceAgent(abc.ABC):
    """One node's out-of-band power control. Every call has a deadline."""

    @abc.abstractmethod
    def power_off(self) -> None:
        """Request power off; raises FenceError when the request fails."""

    @abc.abstractmethod
    def power_on(self) -> None: ...

    @abc.abstractmethod
    def power_status(self) -> PowerState: ...

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """For logs and events; never includes secrets."""
