"""What a route asks the primary to do (zkstore/requests.py), and its answer as the API's.

pvcapid may not write a placement, a node-index entry or a status (zkstore/acl.py): the
verbs that need one (migrate, unmigrate, move), a delete that removes an object at once,
and a rename become requests the primary carries out. The route waits for the outcome up
to ``primaryRequestTimeout`` seconds and answers with it: the primary's refusal is the same
404/409/422 as before; no primary in time is a 503 that says nothing changed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from api.errors import ApiError
from api.middleware import CALLER
from schemas import Resource
from zkstore import Store
from zkstore.deletion import Deletions
from zkstore.events import EventLog
from zkstore.requests import REMOVE, NoPrimary, Refused, ask


class Primary:
    """The primary, as one route's caller asks it."""

    def __init__(self, store: Store, requester: str, timeout: float) -> None:
        self.store = store
        self.requester = requester
        self.timeout = timeout

    def ask(self, verb: str, kind: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Its result once done. Its refusal is raised as the store error it met (NotFound,
        Conflict, AlreadyPlaced...: the caller's code and the API's handlers treat it as
        before), else as an ApiError with its code; 503 when no primary acted in time."""
        try:
            return ask(
                self.store,
                verb,
                kind,
                name,
                args,
                requester=self.requester,
                timeout=self.timeout,
            )
        except Refused as exc:
            error = exc.as_store_error()
            if error is not exc:
                raise error from None
            raise ApiError(exc.code, exc.message, reason=exc.reason, details=exc.details) from None
        except NoPrimary as exc:
            raise ApiError(503, str(exc)) from None

    def remove(
        self,
        cls: type[Resource],
        name: str,
        resource_version: str | None,
        delete_volumes: bool,
        *,
        unplaced_only: bool = False,
    ) -> None:
        """A ``Remover`` (zkstore/deletion.py) that has the primary remove the object."""
        args = {
            "resourceVersion": resource_version,
            "deleteVolumes": delete_volumes,
            "unplacedOnly": unplaced_only,
        }
        self.ask(REMOVE, cls.KIND, name, args)

    def deletions(self, events: EventLog) -> Deletions:
        return Deletions(self.store, events, remover=self.remove)


async def get_primary(request: Request) -> Primary:
    """The route's caller (the audit's token name) and pvcapid's deadline."""
    return Primary(
        request.app.state.store,
        str(request.scope.get(CALLER) or "-"),
        request.app.state.settings.primary_request_timeout,
    )


PrimaryDep = Annotated[Primary, Depends(get_primary)]

__all__ = ["Primary", "PrimaryDep", "get_primary"]
