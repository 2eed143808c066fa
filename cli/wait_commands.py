"""``pvcctl wait``: block until objects meet a condition, a JSONPath value, or are gone.

The objects are fixed at the start: those named (a name that does not exist fails at once,
NotFound), or those matching ``-l`` / ``--all`` then. A condition counts only once the status
was computed for the current spec (``status.observedGeneration`` reaches
``metadata.generation``), so a wait right after an apply never passes on the old status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from cli.common import Context, kind_named, seconds, split_targets
from cli.errors import InputError, ServerError
from cli.progress import progress
from cli.watch import State, wait_showing, wait_until

if TYPE_CHECKING:
    from schemas.resource import Resource

# cli.output and cli.jsonpath are imported where used: see cli.completion.

Check = Callable[[dict[str, Any]], bool]


def targets(words: tuple[str, ...]) -> tuple[type[Resource], list[str]]:
    """``KIND NAME...``, ``KIND/NAME...`` or a bare ``KIND``: one kind and its names."""
    if not words:
        raise InputError("name what to wait for: KIND/NAME..., KIND NAME... or KIND -l/--all")
    if len(words) == 1 and "/" not in words[0]:
        return kind_named(words[0]), []
    pairs = split_targets(words)
    if len({cls for cls, _ in pairs}) > 1:
        raise InputError("wait takes one kind at a time")
    return pairs[0][0], [name for _, name in pairs]


@dataclass(frozen=True)
class Wanted:
    """What ``--for`` asks, as a check of one object (deletion is the absence of one)."""

    text: str
    delete: bool = False
    check: Check | None = None


def fresh(obj: dict[str, Any]) -> bool:
    """The status was computed for the spec as it is now (or the kind does not say)."""
    observed = (obj.get("status") or {}).get("observedGeneration")
    generation = (obj.get("metadata") or {}).get("generation")
    return observed is None or generation is None or observed >= generation


def condition_check(spec: str) -> Wanted:
    cond_type, _, cond_status = spec.partition("=")
    if not cond_type:
        raise InputError("--for=condition= needs a condition type, e.g. condition=Ready")
    status = cond_status or "True"
    from schemas.columns import condition

    def check(obj: dict[str, Any]) -> bool:
        return fresh(obj) and (condition(obj, cond_type) or {}).get("status") == status

    return Wanted(f"condition={cond_type}={status}", check=check)


def _split_jsonpath(spec: str) -> tuple[str, str | None]:
    """kubectl's ``{.status.phase}=Running`` (braces optional; without ``=VALUE``: exists)."""
    if spec.startswith("{"):
        end = spec.find("}")
        if end < 0:
            raise InputError(f"--for=jsonpath={spec}: no closing brace")
        expr, rest = spec[1:end], spec[end + 1 :]
        if rest and not rest.startswith("="):
            raise InputError(f"--for=jsonpath={spec}: expected =VALUE after the braces")
        return expr, rest[1:] if rest else None
    # Without braces the value follows the last '=' that is not part of '==' or '!='.
    for i in range(len(spec) - 1, -1, -1):
        if spec[i] == "=" and spec[i - 1 : i] not in ("=", "!") and spec[i + 1 : i + 2] != "=":
            return spec[:i], spec[i + 1 :]
    return spec, None


def jsonpath_check(spec: str) -> Wanted:
    expr, value = _split_jsonpath(spec)
    if not expr.strip() or expr.strip() == ".":
        raise InputError("--for=jsonpath= needs an expression, e.g. '{.status.phase}=Running'")
    from cli.jsonpath import compile_path, text_of

    path = compile_path(expr)  # the same JSONPath as -o jsonpath (jsonpath-ng)

    def check(obj: dict[str, Any]) -> bool:
        found = [text_of(v) for v in path.find(obj, obj)]
        if value is None:
            return bool(found)
        return bool(found) and all(f == value for f in found)

    shown = f"jsonpath={{{expr}}}" + (f"={value}" if value is not None else "")
    return Wanted(shown, check=check)


def wanted_from(for_: str) -> Wanted:
    if for_ == "delete":
        return Wanted("delete", delete=True)
    how, eq, spec = for_.partition("=")
    if eq and how == "condition":
        return condition_check(spec)
    if eq and how == "jsonpath":
        return jsonpath_check(spec)
    raise InputError(
        f"--for={for_}: expected condition=TYPE[=True|False], jsonpath=EXPR[=VALUE] or delete"
    )


@click.command()
@click.argument("target", nargs=-1)
@click.option(
    "--for",
    "for_",
    required=True,
    metavar="CONDITION",
    help="condition=TYPE (=True, or condition=TYPE=False); jsonpath='{.status.phase}'=Running "
    "(kubectl's JSONPath; without =VALUE: the field exists); or delete.",
)
@click.option("--all", "all_", is_flag=True, help="every object of the kind (as listed at start).")
@click.option(
    "-l", "--selector", help="every object with these labels at start, e.g. app=shop,tier!=db."
)
@click.option("--timeout", default="60s", show_default=True, help="give up after this long.")
@click.pass_obj
def wait(
    ctx: Context,
    target: tuple[str, ...],
    for_: str,
    all_: bool,
    selector: str | None,
    timeout: str,
) -> None:
    """Wait until objects meet a condition: KIND/NAME..., KIND NAME..., or KIND with -l or --all.

    Exit 0 when every one meets it; 1 at the timeout, at once when a named object does not
    exist (NotFound) or when -l/--all match nothing, or when an object is deleted while
    waited on (but --for=delete). A condition counts only when the status was computed for
    the current spec (status.observedGeneration). On a terminal it shows what it waits on.
    """
    cls, names = targets(target)
    if sum((bool(names), all_, selector is not None)) != 1:
        raise InputError("give names, or -l SELECTOR, or --all (one of them)")
    limit = seconds(timeout)
    wanted = wanted_from(for_)
    short = cls.SHORT_NAMES[0] if cls.SHORT_NAMES else cls.KIND.lower()
    label = ", ".join(f"{short}/{n}" for n in names) or (
        f"{cls.PLURAL} -l {selector}" if selector else f"all {cls.PLURAL}"
    )
    fixed: list[str] = []
    last: list[str] = []

    def pending(state: State) -> list[str]:
        if not fixed:
            fixed.extend(names or sorted(state))
            if not fixed:
                raise ServerError(
                    f"no {cls.PLURAL} found" + (f" with {selector}" if selector else "")
                )
            missing = [n for n in fixed if n not in state]
            if missing and not wanted.delete:
                shown = ", ".join(f"{short}/{n}" for n in missing)
                raise ServerError(f"{shown} not found (NotFound)")
        if wanted.delete:
            return [n for n in fixed if n in state]
        gone = [n for n in fixed if n not in state]
        if gone:
            raise ServerError(
                f"{short}/{gone[0]} was deleted (or lost its labels) while waiting "
                f"for {wanted.text}"
            )
        assert wanted.check is not None
        return [n for n in fixed if not wanted.check(state[n])]

    def track(state: State) -> None:
        last[:] = pending(state)
        update(", ".join(last) or "done")

    with progress(f"waiting for {wanted.text} on {label}") as update:
        met = wait_until(
            ctx.client,
            cls.PLURAL,
            lambda s: not pending(s),
            limit,
            name=names[0] if len(names) == 1 else None,
            selector=selector,
            on_change=track,
        )
    if not met:
        raise ServerError(
            f"timed out after {timeout} waiting for {wanted.text} on: {', '.join(last)}"
        )
    if names:
        for n in names:
            click.echo(f"{short}/{n} condition met")
    else:
        click.echo(f"{label} condition met ({len(fixed)})")


# -- the node verbs' --wait (pvcctl node flush|ready|primary|secondary) -------------------


def _limit(timeout: str | None) -> float:
    return seconds(timeout) if timeout else float("inf")


def _vms_left(status: dict[str, Any]) -> str:
    held = sorted(status.get("domains") or [])
    if not held:
        return "no VMs on it"
    shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
    return f"{len(held)} VM{'s' if len(held) > 1 else ''} on it: {shown}"


def wait_for_node(
    ctx: Context, name: str, field: str, value: str, timeout: str | None, hint: str
) -> None:
    """Follow node/NAME until status.<field> is ``value`` (no deadline without a timeout),
    showing on a terminal the state and the VMs its hypervisor still runs."""
    seen: dict[str, str] = {}

    def done(state: State) -> bool:
        if name not in state:
            raise ServerError(f"node/{name} was deleted while waiting for {field} {value}")
        status = state[name].get("status") or {}
        seen["now"] = str(status.get(field) or "-")
        seen["vms"] = _vms_left(status)
        return seen["now"] == value

    met = wait_showing(
        ctx.client,
        "nodes",
        f"waiting for node/{name} {field}={value}",
        done,
        _limit(timeout),
        lambda: f"{seen.get('now', '-')}, {seen.get('vms', '-')}",
        name=name,
    )
    if not met:
        raise ServerError(
            f"timed out after {timeout} waiting for node/{name} {field} {value} "
            f"(still {seen.get('now', '-')}, {seen.get('vms', '-')}; it goes on); {hint}"
        )
    click.echo(f"node/{name} {field} {value}")


def wait_for_primary(ctx: Context, name: str, want: bool, timeout: str | None) -> None:
    """Wait until the handover is complete: NODE is (or is not) primary and no node is
    still in takeover or relinquish."""
    seen: dict[str, str] = {}

    def done(state: State) -> bool:
        routers = {
            node: str((obj.get("status") or {}).get("routerState") or "-")
            for node, obj in state.items()
        }
        primaries = sorted(n for n, r in routers.items() if r == "primary")
        moving = sorted(f"{n} {r}" for n, r in routers.items() if r in ("takeover", "relinquish"))
        seen["now"] = ", ".join(moving) or (", ".join(primaries) or "none")
        if moving or len(primaries) != 1:
            return False
        return (primaries[0] == name) == want

    what = f"waiting for the primary to {'be' if want else 'leave'} {name}"
    met = wait_showing(
        ctx.client, "nodes", what, done, _limit(timeout), lambda: seen.get("now", "-")
    )
    if not met:
        raise ServerError(f"timed out after {timeout}: the primary is still {seen.get('now', '-')}")
    click.echo(f"node/{name} {'primary' if want else 'not primary'}")
