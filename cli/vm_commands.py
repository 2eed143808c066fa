"""``pvcctl vm``: imperative verbs on VMs, each writing only spec, an annotation or the
placement; ``migrate --wait`` follows the move until the VM runs on the target."""

from __future__ import annotations

from typing import Any

import click

from cli.client import API
from cli.common import Context, seconds, told
from cli.errors import ServerError
from cli.progress import progress
from cli.vm_console import dumpxml, logs
from cli.watch import State, wait_until


@click.group()
def vm() -> None:
    """Imperative verbs on VMs (each only writes spec, an annotation or the placement)."""


def _vm_verb(verb: str, help_text: str) -> None:
    @vm.command(name=verb, help=help_text)
    @click.argument("name")
    @click.pass_obj
    def command(ctx: Context, name: str) -> None:
        ctx.client.request("POST", f"{API}/vms/{name}/{verb}")
        told("vm", name, f"{verb} requested")


_vm_verb("start", "Run the VM: runStrategy Always.")
_vm_verb("stop", "Shut the VM down: runStrategy Halted (ACPI, then force off).")
_vm_verb("force-stop", "Power the VM off at once, and keep it off.")
_vm_verb("restart", "Restart the VM once (like kubectl rollout restart).")
_vm_verb("unmigrate", "Return a migrated VM to where it came from (or its home node).")


@vm.command()
@click.argument("name")
@click.option("--to", "node", required=True, metavar="NODE", help="the target node.")
@click.option(
    "--live",
    is_flag=True,
    help="live migration only, whatever spec.migration.method says: never a shutdown. "
    "Refused at once where it cannot be live; if it fails, the VM keeps running where it is.",
)
@click.option(
    "--force",
    is_flag=True,
    help="allow a node outside the VM's node limit (spec.placement.nodes); nothing else.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="return only once the VM runs on NODE (exit 1 if the migration fails); "
    "shows progress on a terminal.",
)
@click.option("--timeout", metavar="DURATION", help="with --wait: give up after this long.")
@click.pass_obj
def migrate(
    ctx: Context, name: str, node: str, live: bool, force: bool, wait: bool, timeout: str | None
) -> None:
    """Move the VM to NODE for now (spec unchanged; unmigrate brings it back).

    It moves as its spec.migration.method says: live (the guest keeps running), shutdown
    (shut down, then started on NODE) or auto (live, else a shutdown move)."""
    limit = seconds(timeout) if timeout else None
    before = ctx.client.get(f"{API}/vms/{name}") if wait else {}
    body = {"node": node, "live": live, "force": force}
    ctx.client.request("POST", f"{API}/vms/{name}/migrate", json=body)
    if not wait:
        told("vm", name, f"migrate to {node} requested{' (live only)' if live else ''}")
        return
    _wait_for_migration(ctx, name, node, _migration(before).get("started"), limit, timeout)
    told("vm", name, f"runs on {node}")


@vm.command()
@click.argument("name")
@click.option("--to", "node", required=True, metavar="NODE", help="the new home node.")
@click.pass_obj
def move(ctx: Context, name: str, node: str) -> None:
    """Change the VM's home node for good (spec.placement.home) and place it there."""
    ctx.client.request("POST", f"{API}/vms/{name}/move", json={"node": node})
    told("vm", name, f"moved to {node}")


def _migration(obj: dict[str, Any] | None) -> dict[str, Any]:
    return ((obj or {}).get("status") or {}).get("migration") or {}


def _describe(status: dict[str, Any]) -> str:
    migration = status.get("migration") or {}
    phase = status.get("phase") or "-"
    where = status.get("node") or "-"
    if not migration or migration.get("state") not in ("Waiting", "Running"):
        return f"{phase} on {where}"
    text = f"{migration.get('state', '').lower()} {migration['source']} -> {migration['target']}"
    total, left = migration.get("dataTotal"), migration.get("dataRemaining")
    if total and left is not None:
        done = max(0.0, 1.0 - left / total)
        text += f", {done:.0%} ({left / 2**20:.0f} of {total / 2**20:.0f} MiB left)"
    if migration.get("attempts", 0) > 1:
        text += f", attempt {migration['attempts']}"
    return text


def _wait_for_migration(
    ctx: Context,
    name: str,
    node: str,
    earlier: str | None,
    limit: float | None,
    timeout: str | None,
) -> None:
    seen: dict[str, Any] = {}

    def done(state: State) -> bool:
        obj = state.get(name)
        if obj is None:
            raise ServerError(f"vm/{name} was deleted while it migrated")
        status = obj.get("status") or {}
        seen["status"] = status
        migration = _migration(obj)
        if (
            migration.get("state") == "Failed"
            and migration.get("target") == node
            and migration.get("started") != earlier
        ):
            raise ServerError(
                f"vm/{name} did not migrate to {node}: {migration.get('lastError') or 'failed'}; "
                f"it runs on {status.get('node') or '-'}"
            )
        return status.get("node") == node and status.get("phase") == "Running"

    with progress(f"migrating vm/{name} to {node}") as update:
        met = wait_until(
            ctx.client,
            "vms",
            done,
            limit if limit is not None else float("inf"),
            name=name,
            on_change=lambda _s: update(_describe(seen.get("status") or {})),
        )
    if not met:
        raise ServerError(
            f"timed out after {timeout} waiting for vm/{name} to run on {node} "
            f"(now: {_describe(seen.get('status') or {})}); the migration goes on"
        )


vm.add_command(logs)
vm.add_command(dumpxml)
