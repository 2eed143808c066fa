"""Typed store errors; the API maps each to one HTTP status."""

from __future__ import annotations

from collections.abc import Iterable

from kazoo.exceptions import NoAuthError


class StoreError(Exception):
    """Base of every store error."""


class NotFound(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found")


class AlreadyExists(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} already exists")


class Conflict(StoreError):
    """A compare-and-set lost: the object changed since the caller read it."""


class EpochMoved(Conflict):
    """A primary-only write was refused: another primary has taken over since."""


class Unavailable(StoreError):
    """ZooKeeper cannot be reached (or the session is suspended) right now."""


class AlreadyPlaced(Conflict):
    """A first placement was refused: the VM already has a node (the caller's view lagged)."""

    def __init__(self, vm: str, node: str) -> None:
        self.vm = vm
        self.node = node
        super().__init__(f"VM {vm!r} is already placed on {node!r}")


class PlacementMoved(Conflict):
    """A placement change was refused: the VM is no longer where the decision read it."""

    def __init__(self, vm: str, expected: str | None, actual: str | None) -> None:
        self.vm = vm
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"VM {vm!r} is no longer on {expected or 'no node'} (now {actual or 'no node'})"
        )


class Terminating(Conflict):
    """A write to an object that is being deleted (it has a deletionTimestamp and waits for
    its finalizers): nothing but removing finalizers may change it."""

    def __init__(self, kind: str, name: str, since: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(
            f"{kind} {name!r} is being deleted (Terminating since {since}): it cannot be "
            "changed now, except to remove finalizers"
        )


def raise_if_refused(results: Iterable[object]) -> None:
    """Raise the NoAuthError among a transaction's results, if any: the store's ACLs refused
    this identity a part of it, so none of it was written, and trying again cannot help (a
    retry loop would report it as a conflict)."""
    refused = next((r for r in results if isinstance(r, NoAuthError)), None)
    if refused is not None:
        raise refused
