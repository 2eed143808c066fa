"""Read manifests from files, folders (their *.yaml, *.yml, *.json, sorted) or stdin."""

from __future__ import annotations

import sys
from pathlib import Path

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
        try:
            loaded = load_manifests(text, source)
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
