"""Multi-document YAML manifests, with errors that point at file, line and field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from schemas.errors import InvalidResource, ManifestError
from schemas.registry import parse_resource
from schemas.resource import Resource


@dataclass(frozen=True)
class LoadedObject:
    resource: Resource
    source: str
    line: int


def _line_of(node: yaml.Node, path: tuple[int | str, ...]) -> int:
    """Line (1-based) of the deepest YAML node along ``path`` that exists."""
    line = node.start_mark.line + 1
    for part in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _yaml_error(exc: yaml.YAMLError, source: str, text: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        problem += f" ({context} at line {context_mark.line + 1})"
    # A problem found at the end of the stream is reported on the last line, not past it.
    last_line = max(1, len(text.splitlines()))
    line = min(mark.line + 1, last_line) if mark else None
    return ManifestError(source, line, f"invalid YAML: {problem}")


def load_manifests(
    text: str, source: str = "<stdin>", *, strict: bool = False
) -> list[LoadedObject]:
    """Parse and validate every document; raises ManifestError at the first bad one.
    ``strict``: JSON's own types only, as the API takes them (``parse_resource``)."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, text) from None
    loaded: list[LoadedObject] = []
    for node in nodes:
        if node is None:
            continue
        try:
            data: Any = yaml.SafeLoader(text).construct_document(node)
        except yaml.YAMLError as exc:
            raise ManifestError(source, node.start_mark.line + 1, f"invalid YAML: {exc}") from None
        if data is None:
            continue
        try:
            resource = parse_resource(data, strict=strict)
        except InvalidResource as exc:
            first = exc.errors[0]
            more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
            raise ManifestError(
                source, _line_of(node, first.path), first.message + more, field=first.field
            ) from None
        loaded.append(LoadedObject(resource, source, node.start_mark.line + 1))
    return loaded
