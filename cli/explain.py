"""``pvcctl explain KIND[.field[.sub]]``: a kind's fields from the schemas' own docs.

Read from the pydantic models pvcctl validates manifests with (each field's docstring is its
description), so it needs no server and says what this pvcctl accepts. Field names are as
written in manifests (camelCase); a list's or a map's fields are those of its items.
"""

from __future__ import annotations

import enum
import inspect
import json
import sys
import textwrap
import types
import typing
from typing import Any

import click
from click.shell_completion import CompletionItem
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from cli.common import kind_named
from cli.errors import InputError
from schemas import KINDS

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_CHECKS = {"_check_size": "size", "_check_duration": "duration", "_check_dns_label": "name"}
"""Validators that make a string a size (512Mi), a duration (5s) or a DNS-label name."""


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """Strip Annotated and Optional: (the type, the Annotated metadata seen)."""
    extras: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *meta = typing.get_args(annotation)
            extras += meta
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, extras
            annotation = args[0]
        else:
            return annotation, extras


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field leads to: itself, or its list's items, or its map's values."""
    inner, _ = _unwrap(annotation)
    origin = typing.get_origin(inner)
    if origin in (list, tuple, set, dict):
        args = typing.get_args(inner)
        return _model_of(args[-1]) if args else None
    if inspect.isclass(inner) and issubclass(inner, BaseModel):
        return inner
    return None


def type_name(annotation: Any, metadata: list[Any] | None = None) -> str:
    inner, extras = _unwrap(annotation)
    for meta in [*extras, *(metadata or [])]:
        name = getattr(getattr(meta, "func", None), "__name__", "")
        if name in _CHECKS:
            return _CHECKS[name]
    origin = typing.get_origin(inner)
    args = typing.get_args(inner)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple, set):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {type_name(args[0])} to {type_name(args[1])}" if args else "map"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if inspect.isclass(inner) and issubclass(inner, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in inner)
    if inspect.isclass(inner) and issubclass(inner, BaseModel):
        return f"object ({inner.__name__})"
    return _SCALARS.get(inner, getattr(inner, "__name__", str(inner)))


def _wire_name(name: str, info: FieldInfo) -> str:
    return info.alias or name


def _default(info: FieldInfo) -> str | None:
    if info.is_required():
        return None
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return None
    else:
        value = info.default
    if isinstance(value, BaseModel) or value is None:
        return None  # an object's defaults are its fields'; no default is not worth a line
    if isinstance(value, enum.Enum):
        value = value.value
    return json.dumps(value, default=str)


def _fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {_wire_name(n, f): f for n, f in model.model_fields.items()}


def _describe(info: FieldInfo | None, model: type[BaseModel] | None) -> str:
    """The field's docstring, then its model's own (not inherited) docstring; for a kind,
    its module's, which says what the kind is for."""
    parts = [info.description] if info is not None and info.description else []
    if model is not None and model.__dict__.get("__doc__"):
        parts.append(str(model.__doc__))
    elif model is not None and info is None:
        parts.append(sys.modules[model.__module__].__doc__ or "")
    return "\n\n".join(inspect.cleandoc(p) for p in parts if p) or "<no description>"


def explain(target: str) -> str:
    """The text for ``KIND[.field[.sub]]``; InputError naming the valid fields when one is
    unknown."""
    word, *path = target.split(".")
    kind = kind_named(word)
    model: type[BaseModel] = kind
    info: FieldInfo | None = None
    walked: list[str] = []
    for part in path:
        fields = _fields(model)
        if part not in fields:
            where = ".".join([kind.KIND, *walked])
            raise InputError(f"{where} has no field {part!r}; its fields: {', '.join(fields)}")
        info = fields[part]
        walked.append(part)
        child = _model_of(info.annotation)
        if child is None:
            if part != path[-1]:
                raise InputError(
                    f"{'.'.join([kind.KIND, *walked])} is a "
                    f"{type_name(info.annotation, info.metadata)}: "
                    "it has no fields"
                )
            break
        model = child
    lines = [f"KIND:     {kind.KIND}", "VERSION:  pvc/v1"]
    is_leaf = info is not None and _model_of(info.annotation) is None
    if info is not None:
        lines.append(f"FIELD:    {'.'.join(walked)} <{type_name(info.annotation, info.metadata)}>")
    lines += ["", "DESCRIPTION:"]
    text = _describe(info, None if is_leaf else model)
    lines += [textwrap.indent(text, "   "), ""]
    if info is not None:
        default = _default(info)
        if default is not None:
            lines += [f"DEFAULT:  {default}", ""]
    if is_leaf:
        return "\n".join(lines).rstrip() + "\n"
    lines.append("FIELDS:")
    for name, field in _fields(model).items():
        required = " -required-" if field.is_required() else ""
        lines.append(f"   {name}  <{type_name(field.annotation, field.metadata)}>{required}")
        default = _default(field)
        text = field.description or ""
        if default is not None and default not in ("[]", "{}"):
            text = f"{text} (default {default})" if text else f"default {default}"
        if text:
            first = inspect.cleandoc(text).split("\n\n")[0]
            lines.append(textwrap.indent(textwrap.fill(first, 88), "     "))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _complete_targets(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    word, dot, rest = incomplete.partition(".")
    if not dot:
        kinds = sorted({w for cls in KINDS for w in (cls.KIND.lower(), *cls.SHORT_NAMES[:1])})
        return [CompletionItem(k) for k in kinds if k.startswith(word)]
    *walked, last = rest.split(".")
    try:
        model: type[BaseModel] | None = kind_named(word)
    except InputError:
        return []
    for part in walked:
        field = _fields(model).get(part) if model else None
        model = _model_of(field.annotation) if field else None
    if model is None:
        return []
    prefix = ".".join([word, *walked])
    return [CompletionItem(f"{prefix}.{n}") for n in _fields(model) if n.startswith(last)]
