"""Errors raised by domain drivers.

Controllers catch these, never a backend's own exception type, so a
reconcile loop can tell "retry later" (HypervisorUnavailable) from "the spec
is wrong" (InvalidDomain) without knowing which driver it talks to.
"""

from __future__ import annotations


class HypervisorError(Exception):
    """Base of every error a driver raises.

    `operation` and `domain` are kept apart from the message so callers can
    log them as structured fields.
    """

    def __init__(self, message: str, *, operation: str = "", domain: str = "") -> None:
        super().__init__(message)
        self.operation = operation
        self.domain = domain


class HypervisorUnavailable(HypervisorError):
    """The hypervisor cannot be reached, or the connection was lost."""


class DomainNotFound(HypervisorError):
    """The named domain is not defined on this host."""


class InvalidDomain(HypervisorError):
    """The hypervisor rejected the domain's definition."""


class OperationFailed(HypervisorError):
    """Any other failure: the hypervisor was reached but refused or failed."""


class MigrationUnsupported(HypervisorError):
    """This hypervisor cannot live-migrate at all (libvirt's test driver); nothing changed."""


class MigrationFailed(OperationFailed):
    """A live migration failed or was aborted: the domain is still on the source."""
