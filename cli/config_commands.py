"""``pvcctl config`` (the client's contexts, as kubectl's) and ``pvcctl version``."""

from __future__ import annotations

import json
from typing import Any

import click

from cli.client import API
from cli.common import Context
from cli.errors import InputError, ServerError
from cli.settings import read_config, write_config


def _config_path() -> str | None:
    """The global --config, if given (else the default file)."""
    root = click.get_current_context().find_root()
    value = root.params.get("config_path")
    return str(value) if value else None


def _contexts(doc: dict[str, Any], path: object) -> dict[str, Any]:
    contexts = doc.get("contexts") or {}
    if not isinstance(contexts, dict):
        raise InputError(f"{path}: 'contexts' must be a mapping of name to settings")
    return contexts


@click.group(name="config")
def config_group() -> None:
    """The client's contexts (server, token, CA) in ~/.config/pvc/config.yaml (or --config)."""


@config_group.command(name="get-contexts")
def get_contexts() -> None:
    """List the contexts; * marks the current one."""
    path, doc = read_config(_config_path())
    contexts = _contexts(doc, path)
    current = doc.get("current-context")
    if not contexts:
        click.echo(f"No contexts in {path}.", err=True)
        return
    rows = []
    for name in sorted(contexts):
        entry = contexts[name] if isinstance(contexts[name], dict) else {}
        rows.append(
            [
                "*" if name == current else "",
                name,
                str(entry.get("server") or "-"),
                "yes" if entry.get("token") else "no",
            ]
        )
    from cli.output import plain_table

    click.echo(plain_table(["CURRENT", "NAME", "SERVER", "TOKEN"], rows), nl=False)


@config_group.command(name="use-context")
@click.argument("name")
def use_context(name: str) -> None:
    """Make NAME the current context (current-context in the config file)."""
    path, doc = read_config(_config_path())
    contexts = _contexts(doc, path)
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise InputError(f"no context {name!r} in {path} (known: {known})")
    doc["current-context"] = name
    write_config(path, doc)
    click.echo(f'Switched to context "{name}".')


@config_group.command(name="set-context")
@click.argument("name")
@click.option("--server", metavar="URL", help="the API address (needed for a new context).")
@click.option("--token", metavar="TOKEN", help="the bearer token ('' removes it).")
@click.option("--ca", metavar="FILE", help="a CA file to trust for https ('' removes it).")
def set_context(name: str, server: str | None, token: str | None, ca: str | None) -> None:
    """Create or change context NAME; the file is replaced atomically and kept 0600."""
    path, doc = read_config(_config_path(), missing_ok=True)
    contexts = _contexts(doc, path)
    existing = contexts.get(name)
    if existing is not None and not isinstance(existing, dict):
        raise InputError(f"{path}: context {name!r} must be a mapping")
    entry = dict(existing or {})
    if server is not None:
        if not server.startswith(("http://", "https://")):
            raise InputError(f"--server {server!r} must be an http:// or https:// URL")
        entry["server"] = server
    elif existing is None:
        raise InputError(f"context {name!r} is new: give --server URL")
    for key, value in (("token", token), ("ca", ca)):
        if value == "":
            entry.pop(key, None)
        elif value is not None:
            entry[key] = value
    contexts[name] = entry
    doc["contexts"] = contexts
    write_config(path, doc)
    click.echo(f'Context "{name}" {"modified" if existing is not None else "created"}.')


def _server_version(ctx: Context) -> dict[str, str]:
    try:
        answer = ctx.client.get(f"{API}/version")
    except ServerError as exc:
        if exc.status_code == 404:
            return {"server": "unknown", "why": f"{exc.message}: a pvcapid without /version"}
        raise
    return {"server": str(answer.get("server")), "apiVersion": str(answer.get("apiVersion"))}


@click.command()
@click.option("--client", "client_only", is_flag=True, help="this pvcctl's version only.")
@click.option(
    "-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.pass_obj
def version(ctx: Context, client_only: bool, fmt: str) -> None:
    """pvcctl's version, the server's (pvcapid), and each node's pvcnoded (its Node status
    daemonVersion; "unknown" from a pvcnoded that does not report it).

    Exit 1 when the server cannot be reached (after printing the client's version)."""
    from schemas.version import pvc_version

    report: dict[str, Any] = {"client": pvc_version()}
    if fmt == "text":
        click.echo(f"Client: {report['client']}")
    if client_only:
        if fmt == "json":
            click.echo(json.dumps(report, indent=2))
        return
    report.update(_server_version(ctx))
    report["nodes"] = {
        n["metadata"]["name"]: (n.get("status") or {}).get("daemonVersion") or "unknown"
        for n in ctx.client.get(f"{API}/nodes")["items"]
    }
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    said = report.get("apiVersion") or report.get("why")
    click.echo(f"Server: {report['server']} ({said})")
    for name, node_version in sorted(report["nodes"].items()):
        click.echo(f"Node {name}: {node_version}")
