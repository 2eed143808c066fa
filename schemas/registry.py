"""The kinds, and how names users type (``vm``, ``vms``, ``VirtualMachine``) map to them."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from schemas.cluster import Cluster
from schemas.errors import FieldError, InvalidResource
from schemas.network import Network
from schemas.node import Node
from schemas.resource import Resource
from schemas.storage import StoragePool
from schemas.vm import VirtualMachine

KINDS: tuple[type[Resource], ...] = (VirtualMachine, Node, Network, StoragePool, Cluster)

_BY_KIND: dict[str, type[Resource]] = {k.KIND: k for k in KINDS}
_BY_PLURAL: dict[str, type[Resource]] = {k.PLURAL: k for k in KINDS}


def kind_for(word: str) -> type[Resource]:
    """Resolve what a user typed: a kind, plural or short name, any case."""
    lowered = word.lower()
    for cls in KINDS:
        if lowered in (cls.KIND.lower(), cls.PLURAL, *cls.SHORT_NAMES):
            return cls
    known = ", ".join(f"{k.PLURAL} ({k.KIND})" for k in KINDS)
    raise KeyError(f"unknown kind {word!r}; known kinds: {known}")


def kind_by_name(kind: str) -> type[Resource] | None:
    return _BY_KIND.get(kind)


def kind_by_plural(plural: str) -> type[Resource] | None:
    return _BY_PLURAL.get(plural)


def errors_from_validation(exc: ValidationError) -> list[FieldError]:
    result = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        result.append(FieldError(path=loc, message=message))
    return result


def parse_resource(
    data: Any, *, strict: bool = False, context: dict[str, Any] | None = None
) -> Resource:
    """Validate one object of any kind; raises InvalidResource naming the field.

    ``strict``: take JSON's own types only, as pvcapid does and its OpenAPI document says
    (pydantic's lax mode alone takes 0 or "yes" for a boolean and "5" for a number). pvcctl
    checks manifests this way too, so its errors and the server's agree. ``context``: the
    strict check's validation context (pvcapid's checks of its own host, e.g. a Node's
    fence agent installed, which pvcctl's machine cannot answer for)."""
    if not isinstance(data, dict):
        raise InvalidResource(
            [FieldError((), f"expected an object (a mapping), got {type(data).__name__}")]
        )
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InvalidResource([FieldError(("kind",), "missing 'kind'")])
    cls = kind_by_name(kind)
    if cls is None:
        known = ", ".join(k.KIND for k in KINDS)
        raise InvalidResource([FieldError(("kind",), f"unknown kind {kind!r} (known: {known})")])
    if "apiVersion" not in data:
        raise InvalidResource([FieldError(("apiVersion",), "missing 'apiVersion' (pvc/v1)")])
    try:
        obj = cls.model_validate(data)
        if strict:
            cls.model_validate_json(json.dumps(data, default=str), strict=True, context=context)
    except ValidationError as exc:
        raise InvalidResource(errors_from_validation(exc)) from None
    return obj
