"""``pvcctl vm``: imperative verbs on VMs, each writing only spec, an annotation or the
placement; with ``--wait`` each returns 0 only once the change is carried out (the VM runs, or
is stopped, where it should), and 1 with the reason when the VM fails or at ``--timeout``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from cli.client import API
from cli.common import Context, seconds, told
from cli.completion import complete_node_names, complete_vm_names
from cli.errors import ServerError
from cli.vm_console import dumpxml, logs
from cli.watch import State, wait_showing

Goal = Callable[[dict[str, Any]], bool]
"""True once the VM object shows the change done; raises ServerError when it cannot be."""

_MOVING = ("Waiting", "Running")
"""Migration states of a move under way."""


@click.group()
def vm() -> None:
    """Imperative verbs on VMs (each only writes spec, an annotation or the placement)."""


def _valid_timeout(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        seconds(value)  # refused (exit 2) before anything is written
    return value


def _with_wait(done_means: str) -> Callable[[Any], Any]:
    def add(func: Any) -> Any:
        func = click.option(
            "--timeout",
            metavar="DURATION",
            callback=_valid_timeout,
            help="with --wait: give up after this long (exit 1; the change goes on). "
            "Default: no limit.",
        )(func)
        return click.option(
            "--wait",
            "wait_",
            is_flag=True,
            help=f"return only once {done_means}; exit 1 with the reason if the VM fails "
            "(or its move does). Shows progress on a terminal.",
        )(func)

    return add


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _fresh(obj: dict[str, Any], generation: int | None) -> bool:
    """The status was computed for this spec generation (or a later one)."""
    observed = _status(obj).get("observedGeneration")
    return generation is None or observed is None or observed >= generation


def _converged(obj: dict[str, Any]) -> bool:
    """The Converged condition when the cluster writes it; without one, nothing against."""
    found = [c for c in _status(obj).get("conditions") or [] if c.get("type") == "Converged"]
    return not found or found[0].get("status") == "True"


def _failed(name: str, obj: dict[str, Any]) -> None:
    status = _status(obj)
    if status.get("phase") == "Failed":
        why = status.get("reason") or "Failed"
        found = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
        said = found[0].get("message") if found else ""
        raise ServerError(f"vm/{name} failed: {why}{': ' + said if said else ''}")


def _moving(obj: dict[str, Any]) -> bool:
    return (_status(obj).get("migration") or {}).get("state") in _MOVING


def runs(name: str, generation: int | None, on: Callable[[str | None], bool]) -> Goal:
    """Running on a node ``on`` accepts, converged, no move under way (fails if Failed)."""

    def goal(obj: dict[str, Any]) -> bool:
        if not _fresh(obj, generation):
            return False
        _failed(name, obj)
        status = _status(obj)
        return (
            status.get("phase") == "Running"
            and on(status.get("node"))
            and not _moving(obj)
            and _converged(obj)
        )

    return goal


def stopped(generation: int | None) -> Goal:
    def goal(obj: dict[str, Any]) -> bool:
        return _fresh(obj, generation) and _status(obj).get("phase") == "Stopped"

    return goal


def handled(field: str, stamp: str | None, then: Goal) -> Goal:
    """The node carried out the annotation ``stamp`` (status.<field>), and then ``then``."""

    def goal(obj: dict[str, Any]) -> bool:
        return stamp is not None and _status(obj).get(field) == stamp and then(obj)

    return goal


def moved(name: str, verb: str, node: str, earlier: str | None, halted: bool) -> Goal:
    """Runs on ``node`` (a Halted VM: stays stopped); a failed move there ends the wait."""
    on_node = runs(name, None, lambda where: where == node)

    def goal(obj: dict[str, Any]) -> bool:
        migration = _status(obj).get("migration") or {}
        if (
            migration.get("state") == "Failed"
            and migration.get("target") == node
            and migration.get("started") != earlier
        ):
            raise ServerError(
                f"vm/{name} did not {verb} to {node}: {migration.get('lastError') or 'failed'}; "
                f"it runs on {_status(obj).get('node') or '-'}"
            )
        return _status(obj).get("phase") == "Stopped" if halted else on_node(obj)

    return goal


def _describe(status: dict[str, Any]) -> str:
    migration = status.get("migration") or {}
    phase = status.get("phase") or "-"
    where = status.get("node") or "-"
    if not migration or migration.get("state") not in _MOVING:
        reason = status.get("reason")
        return f"{phase} on {where}" + (f" ({reason})" if reason else "")
    text = f"{migration.get('state', '').lower()} {migration['source']} -> {migration['target']}"
    total, left = migration.get("dataTotal"), migration.get("dataRemaining")
    if total and left is not None:
        done = max(0.0, 1.0 - left / total)
        text += f", {done:.0%} ({left / 2**20:.0f} of {total / 2**20:.0f} MiB left)"
    if migration.get("attempts", 0) > 1:
        text += f", attempt {migration['attempts']}"
    return text


def wait_for_vm(ctx: Context, name: str, goal: Goal, what: str, timeout: str | None) -> None:
    """Follow vm/NAME until ``goal``; exit 1 at the timeout (none: wait for ever)."""
    limit = seconds(timeout) if timeout else float("inf")
    seen: dict[str, Any] = {}

    def done(state: State) -> bool:
        obj = state.get(name)
        if obj is None:
            raise ServerError(f"vm/{name} was deleted while waiting until it {what}")
        seen["status"] = _status(obj)
        return goal(obj)

    met = wait_showing(
        ctx.client,
        "vms",
        f"waiting until vm/{name} {what}",
        done,
        limit,
        lambda: _describe(seen.get("status") or {}),
        name=name,
    )
    if not met:
        raise ServerError(
            f"timed out after {timeout} waiting until vm/{name} {what} "
            f"(now: {_describe(seen.get('status') or {})}); the change goes on"
        )
    told("vm", name, what)


def _generation(obj: dict[str, Any]) -> int | None:
    value = (obj.get("metadata") or {}).get("generation")
    return int(value) if value is not None else None


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def _anywhere(node: str | None) -> bool:
    return node is not None


def _started(name: str, answer: dict[str, Any]) -> Goal:
    return runs(name, _generation(answer), _anywhere)


def _stopped(_name: str, answer: dict[str, Any]) -> Goal:
    return stopped(_generation(answer))


def _forced_off(_name: str, answer: dict[str, Any]) -> Goal:
    from schemas import verbs

    off = stopped(_generation(answer))
    # The node records the force-stop it carried out; a VM already off needs none.
    carried = handled("forceStopHandled", _annotation(answer, verbs.FORCE_STOP), off)
    return lambda obj: carried(obj) or off(obj)


def _restarted(name: str, answer: dict[str, Any]) -> Goal:
    from schemas import verbs

    return handled("restartHandled", _annotation(answer, verbs.RESTART), _started(name, answer))


def _vm_verb(
    verb: str, help_text: str, done_means: str, what: str, goal: Callable[..., Goal]
) -> None:
    @vm.command(name=verb, help=help_text)
    @click.argument("name", shell_complete=complete_vm_names)
    @_with_wait(done_means)
    @click.pass_obj
    def command(ctx: Context, name: str, wait_: bool, timeout: str | None) -> None:
        answer = ctx.client.request("POST", f"{API}/vms/{name}/{verb}")
        if wait_:
            wait_for_vm(ctx, name, goal(name, answer), what, timeout)
        else:
            told("vm", name, f"{verb} requested")


_vm_verb(
    "start", "Run the VM: runStrategy Always.", "the VM runs (where it is placed)", "runs", _started
)
_vm_verb(
    "stop",
    "Shut the VM down: runStrategy Halted (ACPI, then force off after shutdownTimeout).",
    "the VM is stopped",
    "is stopped",
    _stopped,
)
_vm_verb(
    "force-stop",
    "Power the VM off at once, and keep it off.",
    "the VM is powered off",
    "is stopped",
    _forced_off,
)
_vm_verb(
    "restart",
    "Restart the VM once (like kubectl rollout restart).",
    "its node has restarted the VM and it runs again",
    "restarted",
    _restarted,
)


def _halted(answer: dict[str, Any]) -> bool:
    return (answer.get("spec") or {}).get("runStrategy") == "Halted"


@vm.command()
@click.argument("name", shell_complete=complete_vm_names)
@_with_wait("the VM runs on the node it returns to (a Halted VM: stays stopped)")
@click.pass_obj
def unmigrate(ctx: Context, name: str, wait_: bool, timeout: str | None) -> None:
    """Return a migrated VM to where it came from (or its home node)."""
    before = ctx.client.get(f"{API}/vms/{name}") if wait_ else {}
    answer = ctx.client.request("POST", f"{API}/vms/{name}/unmigrate")
    if not wait_:
        return told("vm", name, "unmigrate requested")
    if _halted(answer):
        return wait_for_vm(ctx, name, _stopped(name, answer), "is stopped", timeout)
    # The verb refuses a VM already where it returns to: it must run elsewhere than before.
    source = _status(before).get("node")
    goal = runs(name, _generation(answer), lambda where: where is not None and where != source)
    wait_for_vm(ctx, name, goal, "runs where it returned", timeout)


def _move(ctx: Context, name: str, verb: str, body: dict[str, Any], timeout: str | None) -> None:
    """POST the move and follow it until the VM runs on body['node']."""
    before = ctx.client.get(f"{API}/vms/{name}")
    answer = ctx.client.request("POST", f"{API}/vms/{name}/{verb}", json=body)
    node = str(body["node"])
    earlier = (_status(before).get("migration") or {}).get("started")
    goal = moved(name, verb, node, earlier, _halted(answer))
    wait_for_vm(ctx, name, goal, f"runs on {node}", timeout)


@vm.command()
@click.argument("name", shell_complete=complete_vm_names)
@click.option(
    "--to",
    "node",
    required=True,
    metavar="NODE",
    shell_complete=complete_node_names,
    help="the target node.",
)
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
@_with_wait("the VM runs on NODE (a Halted VM: stays stopped)")
@click.pass_obj
def migrate(
    ctx: Context,
    name: str,
    node: str,
    live: bool,
    force: bool,
    wait_: bool,
    timeout: str | None,
) -> None:
    """Move the VM to NODE for now (spec unchanged; unmigrate brings it back).

    It moves as its spec.migration.method says: live (the guest keeps running), shutdown
    (shut down, then started on NODE) or auto (live, else a shutdown move)."""
    body = {"node": node, "live": live, "force": force}
    if wait_:
        return _move(ctx, name, "migrate", body, timeout)
    ctx.client.request("POST", f"{API}/vms/{name}/migrate", json=body)
    told("vm", name, f"migrate to {node} requested{' (live only)' if live else ''}")


@vm.command()
@click.argument("name", shell_complete=complete_vm_names)
@click.option("--to", "node", required=True, metavar="NODE", help="the new home node.")
@_with_wait("the VM runs on NODE (a Halted VM: stays stopped)")
@click.pass_obj
def move(ctx: Context, name: str, node: str, wait_: bool, timeout: str | None) -> None:
    """Change the VM's home node for good (spec.placement.home) and place it there."""
    if wait_:
        return _move(ctx, name, "move", {"node": node}, timeout)
    ctx.client.request("POST", f"{API}/vms/{name}/move", json={"node": node})
    told("vm", name, f"moved to {node}")


vm.add_command(logs)
vm.add_command(dumpxml)
