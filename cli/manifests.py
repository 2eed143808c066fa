"""Read manifests from files, folders (their *.yaml, *.yml, *.json, sorted) or stdin.

A List (``kind: List`` or ``<Kind>List`` with ``items``, what ``get KIND -o yaml|json``
prints) stands for its items, as in kubectl, so get, delete and apply round-trip.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from cli.errors import InputError
from schemas import LoadedObject, ManifestError, load_manifests

_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """(source name, text) for each file named or found in a folder."""
    out: list[tuple[str, str]] = []
    for raw in paths:
        if raw == "-":
            out.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
            if not files:
                raise InputError(f"{raw}: no *.yaml, *.yml or *.json files in this folder")
        elif path.exists():
            files = [path]
        else:
            raise InputError(f"{raw}: no such file or folder")
        for file in files:
            try:
                out.append((str(file), file.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{file}: cannot read: {exc}") from None
    return out


def load_all(paths: tuple[str, ...]) -> list[LoadedObject]:
    """Every object, validated; the first error (with file:line and field) stops it all."""
    if not paths:
        raise InputError("no manifests given: use -f FILE, -f DIR or -f -")
    objects: list[LoadedObject] = []
    seen: dict[tuple[str, str], str] = {}
    for source, text in manifest_files(paths):
        loaded: list[LoadedObject] = []
        try:
            for piece in _without_lists(text):
                loaded += load_manifests(piece, source, strict=True)
        except ManifestError as exc:
            raise InputError(str(exc)) from None
        for obj in loaded:
            key = (obj.resource.kind, obj.resource.name)
            if key in seen:
                raise InputError(
                    f"{obj.source}:{obj.line}: {key[0]} {key[1]!r} is also defined at {seen[key]}"
                )
            seen[key] = f"{obj.source}:{obj.line}"
            objects.append(obj)
    if not objects:
        raise InputError(f"no objects found in {', '.join(paths)}")
    return objects


def _list_items(node: yaml.Node) -> list[yaml.Node] | None:
    """The item nodes of a List document, or None for any other document."""
    if not isinstance(node, yaml.MappingNode):
        return None
    fields = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    kind, items = fields.get("kind"), fields.get("items")
    if not isinstance(kind, yaml.ScalarNode) or not str(kind.value).endswith("List"):
        return None
    return list(items.value) if isinstance(items, yaml.SequenceNode) else None


def _without_lists(text: str) -> list[str]:
    """The text as it is, or, when it holds a List, one text per object in which every
    object keeps its line and column (so errors still point at file:line)."""
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if n is not None]
    except yaml.YAMLError:
        return [text]  # load_manifests reports it, with the line
    if not any(_list_items(n) is not None for n in nodes):
        return [text]
    pieces = []
    for node in nodes:
        for part in _list_items(node) or [node]:
            start, end = part.start_mark, part.end_mark
            pieces.append("\n" * start.line + " " * start.column + text[start.index : end.index])
    return pieces
