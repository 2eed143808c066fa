"""kubectl's everyday changes to one object: ``edit`` (in $EDITOR), ``patch`` (a JSON merge
patch), ``label`` and ``annotate``.

``edit`` writes back with the resourceVersion it read, so a change made meanwhile by someone
else is a conflict, never silently overwritten; the user's edit is then kept in a file.
``label``/``annotate`` patch at the resourceVersion they read too (``--overwrite`` was judged
against what they read).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.client import API
from cli.common import Context, complete_kinds, complete_names, split_target, told
from cli.errors import InputError, ServerError

if TYPE_CHECKING:
    import yaml

    from schemas.resource import Resource

# yaml is imported where used: see cli.completion.

MERGE_PATCH = "application/merge-patch+json"


def _target(kind: str, name: str | None) -> tuple[type[Resource], str]:
    cls, found = split_target(kind, name)
    if not found:
        raise InputError(f"name the object: {kind} NAME or {kind}/NAME")
    return cls, found


def _short(cls: type[Resource]) -> str:
    return cls.SHORT_NAMES[0] if cls.SHORT_NAMES else cls.KIND.lower()


def _editor() -> list[str]:
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise InputError(f"cannot read the editor command {command!r}: {exc}") from None
    if not words:
        raise InputError("VISUAL/EDITOR is empty: set it to an editor, e.g. EDITOR=vi")
    return words


def _editable(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "status"}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where and what (PyYAML's own text spans several lines)."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"line {exc.problem_mark.line + 1}: {exc.problem}"
    return " ".join(str(exc).split())


def _is_conflict(exc: ServerError) -> bool:
    return exc.status_code == 409


@click.command()
@click.argument("kind", shell_complete=complete_kinds)
@click.argument("name", required=False, shell_complete=complete_names)
@click.pass_obj
def edit(ctx: Context, kind: str, name: str | None) -> None:
    """Edit an object in $VISUAL, $EDITOR or vi: KIND NAME or KIND/NAME.

    The YAML (without status) is written back when the editor exits, with the resourceVersion
    it was read at: if the object changed meanwhile, nothing is written, your edit is kept in
    a file whose path is printed, and the exit code is 1. An unchanged file writes nothing
    ("Edit cancelled, no changes made", exit 0)."""
    import yaml

    cls, found = _target(kind, name)
    short = _short(cls)
    obj = ctx.client.get(f"{API}/{cls.PLURAL}/{found}")
    original = yaml.safe_dump(_editable(obj), sort_keys=False, allow_unicode=True)
    header = (
        f"# Edit {short}/{found}; save and quit to apply it (at resourceVersion "
        f"{obj['metadata'].get('resourceVersion')}). Unchanged: nothing is written.\n"
    )
    fd, temp = tempfile.mkstemp(prefix=f"pvcctl-edit-{short}-{found}-", suffix=".yaml")
    path = Path(temp)
    with os.fdopen(fd, "w") as out:
        out.write(header + original)
    try:
        ran = subprocess.run([*_editor(), str(path)], check=False)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ServerError(f"cannot run the editor: {exc}") from None
    if ran.returncode != 0:
        path.unlink(missing_ok=True)
        raise ServerError(f"the editor exited with {ran.returncode}: nothing changed")
    text = path.read_text()
    try:
        edited = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(
            f"{path}: invalid YAML, nothing changed (your edit is there): {_yaml_problem(exc)}"
        ) from None
    if edited == _editable(obj) or text.strip() == (header + original).strip():
        path.unlink(missing_ok=True)
        click.echo("Edit cancelled, no changes made")
        return
    if not isinstance(edited, dict) or not isinstance(edited.get("metadata"), dict):
        raise InputError(f"{path}: expected the object with its metadata; nothing changed")
    if edited["metadata"].get("name") != found or edited.get("kind") != cls.KIND:
        raise InputError(f"{path}: the kind and name cannot change in an edit; nothing changed")
    edited.pop("status", None)
    edited["metadata"]["resourceVersion"] = obj["metadata"].get("resourceVersion")
    try:
        ctx.client.request("PUT", f"{API}/{cls.PLURAL}/{found}", json=edited)
    except ServerError as exc:
        if _is_conflict(exc):
            raise ServerError(
                f"{short}/{found} was changed by someone else since it was read "
                f"({exc.message}): nothing written; your edit is kept in {path}"
            ) from None
        raise ServerError(f"{exc.message}; your edit is kept in {path}") from None
    except InputError as exc:
        raise InputError(f"{exc.message}; your edit is kept in {path}") from None
    path.unlink(missing_ok=True)
    told(short, found, "edited")


def _patch_document(text: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"-p: not JSON or YAML: {_yaml_problem(exc)}") from None
    if not isinstance(doc, dict):
        raise InputError('-p: a merge patch is one JSON/YAML object, e.g. {"spec": {"vcpus": 2}}')
    return doc


@click.command()
@click.argument("kind", shell_complete=complete_kinds)
@click.argument("name", required=False, shell_complete=complete_names)
@click.option(
    "-p",
    "--patch",
    "patch_text",
    required=True,
    metavar="JSON|YAML",
    help='a JSON merge patch (RFC 7386), e.g. \'{"spec": {"vcpus": 2}}\'; null removes a key.',
)
@click.pass_obj
def patch(ctx: Context, kind: str, name: str | None, patch_text: str) -> None:
    """Change an object by a JSON merge patch: KIND NAME -p PATCH (or KIND/NAME).

    Objects merge key by key, null deletes, anything else (lists too) replaces. With
    metadata.resourceVersion in the patch, it applies only at that version (else 409)."""
    cls, found = _target(kind, name)
    doc = _patch_document(patch_text)
    short = _short(cls)
    url = f"{API}/{cls.PLURAL}/{found}"
    before = ctx.client.get(url)
    after = ctx.client.request("PATCH", url, json=doc, headers={"Content-Type": MERGE_PATCH})
    same = before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion")
    told(short, found, "patched (no change)" if same else "patched")


def _changes(words: tuple[str, ...], what: str) -> tuple[dict[str, str], list[str]]:
    """``k=v`` to set, ``k-`` to remove."""
    sets: dict[str, str] = {}
    removes: list[str] = []
    for word in words:
        if "=" in word:
            key, _, value = word.partition("=")
            if not key:
                raise InputError(f"{word!r}: expected KEY=VALUE or KEY-")
            sets[key] = value
        elif word.endswith("-") and len(word) > 1:
            removes.append(word[:-1])
        else:
            raise InputError(f"{word!r}: expected KEY=VALUE to set a {what} or KEY- to remove it")
    both = sorted(set(sets) & set(removes))
    if both:
        raise InputError(f"{', '.join(both)}: both set and removed")
    if not sets and not removes:
        raise InputError(f"no {what} changes given: KEY=VALUE or KEY-")
    return sets, removes


def _relabel(ctx: Context, field: str, what: str, words: tuple[str, ...], overwrite: bool) -> None:
    if not words:
        raise InputError("usage: KIND NAME KEY=VALUE... KEY-... (or KIND/NAME ...)")
    first, rest = words[0], words[1:]
    if "/" in first:
        cls, found = _target(first, None)
    elif rest:
        cls, found = _target(first, rest[0])
        rest = rest[1:]
    else:
        raise InputError(f"name the object: {first} NAME KEY=VALUE...")
    sets, removes = _changes(rest, what)
    short = _short(cls)
    url = f"{API}/{cls.PLURAL}/{found}"
    obj = ctx.client.get(url)
    current: dict[str, str] = obj["metadata"].get(field) or {}
    taken = sorted(k for k, v in sets.items() if k in current and current[k] != v)
    if taken and not overwrite:
        shown = ", ".join(f"{k}={current[k]!r}" for k in taken)
        raise ServerError(f"{short}/{found} already has {shown}; --overwrite changes it")
    for key in removes:
        if key not in current:
            click.echo(f"{what} {key!r} not found.", err=True)
    change: dict[str, str | None] = {k: v for k, v in sets.items() if current.get(k) != v}
    change.update({k: None for k in removes if k in current})
    verb = "labeled" if what == "label" else "annotated"
    if not change:
        told(short, found, f"not {verb}")
        return
    body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"], field: change}}
    try:
        ctx.client.request("PATCH", url, json=body, headers={"Content-Type": MERGE_PATCH})
    except ServerError as exc:
        if _is_conflict(exc):
            raise ServerError(
                f"{short}/{found} changed while it was {verb} ({exc.message}): nothing written; "
                "run it again"
            ) from None
        raise
    told(short, found, verb)


def _relabel_command(name: str, field: str, what: str) -> click.Command:
    @click.command(
        name=name,
        help=f"""Set or remove {field}: KIND NAME KEY=VALUE... KEY-... (or KIND/NAME ...).

    A key that already has another value changes only with --overwrite (exit 1 otherwise);
    KEY- removes it. Written at the resourceVersion read (a change meanwhile: exit 1).""",
    )
    @click.argument("args", nargs=-1, required=True)
    @click.option(
        "--overwrite", is_flag=True, help="allow changing a key that already has another value."
    )
    @click.pass_obj
    def command(ctx: Context, args: tuple[str, ...], overwrite: bool) -> None:
        _relabel(ctx, field, what, args, overwrite)

    return command


label = _relabel_command("label", "labels", "label")
annotate = _relabel_command("annotate", "annotations", "annotation")
