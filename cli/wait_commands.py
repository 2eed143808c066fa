"""``pvcctl wait``: block until objects meet a condition, or are gone."""

from __future__ import annotations

import click

from cli.common import Context, seconds
from cli.errors import InputError, ServerError
from cli.output import condition
from cli.progress import progress
from cli.watch import State, wait_until
from schemas import kind_for
from schemas.resource import Resource


def _kind(word: str) -> type[Resource]:
    try:
        return kind_for(word)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None


@click.command()
@click.argument("target")
@click.option(
    "--for",
    "for_",
    required=True,
    metavar="condition=TYPE",
    help="what to wait for: condition=Ready (or condition=Ready=False), or delete.",
)
@click.option("--all", "all_", is_flag=True, help="every object of the kind.")
@click.option("--timeout", default="60s", show_default=True, help="give up after this long.")
@click.pass_obj
def wait(ctx: Context, target: str, for_: str, all_: bool, timeout: str) -> None:
    """Wait until KIND/NAME (or KIND --all) meets a condition; exit 1 on timeout."""
    kind, _, name = target.partition("/")
    cls = _kind(kind)
    if bool(name) == all_:
        raise InputError("give KIND/NAME, or KIND with --all")
    limit = seconds(timeout)
    want_delete = for_ == "delete"
    cond_type, cond_status = "", ""
    if not want_delete:
        if not for_.startswith("condition="):
            raise InputError("--for takes condition=TYPE[=True|False] or delete")
        cond_type, _, cond_status = for_.removeprefix("condition=").partition("=")
        cond_status = cond_status or "True"

    def pending(state: State) -> list[str]:
        if want_delete:
            return sorted(state)
        if name and name not in state:
            return [name]
        return sorted(
            n
            for n, o in state.items()
            if (condition(o, cond_type) or {}).get("status") != cond_status
        )

    last: list[str] = []

    def track(state: State) -> None:
        last[:] = pending(state)
        update(", ".join(last) or "done")

    with progress(f"waiting for {for_} on {target}") as update:
        met = wait_until(
            ctx.client,
            cls.PLURAL,
            lambda s: not pending(s),
            limit,
            name=name or None,
            on_change=track,
        )
    if not met:
        raise ServerError(f"timed out after {timeout} waiting for {for_} on: {', '.join(last)}")
    click.echo(f"{target} condition met" if name else f"all {cls.PLURAL} condition met")
