"""pvcctl: the command line, shaped like kubectl; talks to pvcapid over HTTP only.

Exit codes: 0 success; 1 a failure on the server's side (or a wait that timed
out); 2 bad usage or bad input. ``diff`` follows kubectl: 0 no changes, 1
changes, 2 bad input, 3 a server failure. Every error is one line on stderr.

Shell completion is click's: ``eval "$(_PVCCTL_COMPLETE=bash_source pvcctl)"``
(zsh_source, fish_source for the other shells).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from cli.client import API
from cli.common import Context, complete_kinds, complete_names, seconds, split_targets, told
from cli.completion import complete_node_names
from cli.errors import InputError, ServerError
from cli.lazygroup import LazyGroup
from cli.settings import context_names

if TYPE_CHECKING:
    from schemas.resource import Resource

# Heavy modules (rich, yaml, difflib, the schemas behind cli.manifests) are imported inside
# the commands that use them, and the command modules when their command is used: the
# shell runs pvcctl on every <TAB> (see cli.completion, cli.lazygroup).
COMMANDS = {
    "get": "cli.commands_get:get",
    "describe": "cli.commands_get:describe_cmd",
    "events": "cli.commands_get:events",
    "vm": "cli.vm_commands:vm",
    "wait": "cli.wait_commands:wait",
    "edit": "cli.edit_commands:edit",
    "patch": "cli.edit_commands:patch",
    "label": "cli.edit_commands:label",
    "annotate": "cli.edit_commands:annotate",
    "config": "cli.config_commands:config_group",
    "version": "cli.config_commands:version",
}


def _add_rename(vm: click.Command) -> None:
    from cli.data_commands import rename

    assert isinstance(vm, click.Group)
    vm.add_command(rename)


def _complete_contexts(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    try:
        names = context_names(ctx.params.get("config_path"))
    except InputError:
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    then={"vm": _add_rename},
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--server", "-s", metavar="URL", help="API address (env PVC_SERVER).")
@click.option(
    "--context",
    "context_name",
    metavar="NAME",
    shell_complete=_complete_contexts,
    help="a context from the config file (env PVC_CONTEXT).",
)
@click.option("--token", metavar="TOKEN", help="bearer token (env PVC_TOKEN).")
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="client config file (default ~/.config/pvc/config.yaml).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    server: str | None,
    context_name: str | None,
    token: str | None,
    config_path: str | None,
) -> None:
    """Manage a PVC cluster declaratively."""
    ctx.obj = Context(server, config_path, context_name, token)


# -- apply / diff ------------------------------------------------------------------


def _apply_params(dry_run: bool, prune: bool, selector: str | None) -> dict[str, str]:
    if prune and not selector:
        raise InputError("--prune needs -l/--selector naming the objects this set owns")
    if selector and not prune:
        raise InputError("-l/--selector goes with --prune")
    params = {"dryRun": "true"} if dry_run else {}
    if prune:
        params.update(prune="true", labelSelector=str(selector))
    return params


@cli.command()
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    help="a file, a folder of manifests, or - for stdin; repeatable.",
)
@click.option(
    "--dry-run",
    type=click.Choice(["none", "client", "server"]),
    default="none",
    show_default=True,
    help="client: check the manifests here, as strictly as the server does (types, fields, "
    "names), without contacting it; server: validate and report on the server (also "
    "against what is stored), write nothing.",
)
@click.option("--prune", is_flag=True, help="delete objects with -l labels missing from the set.")
@click.option("-l", "--selector", help="with --prune: the labels this set owns, e.g. app=shop.")
@click.pass_obj
def apply(
    ctx: Context, files: tuple[str, ...], dry_run: str, prune: bool, selector: str | None
) -> None:
    """Create or update the objects in manifests."""
    from cli.manifests import load_all
    from cli.output import console

    params = _apply_params(dry_run == "server", prune, selector)
    objects = load_all(files)
    if dry_run == "client":
        for obj in objects:
            told(obj.resource.kind.lower(), obj.resource.name, "checked (client dry run)")
        return
    body = [o.resource.stored() for o in objects]
    result = ctx.client.request("POST", f"{API}/apply", json=body, params=params)
    suffix = " (server dry run)" if dry_run == "server" else ""
    out = console()
    for item in result["items"]:
        out.print(f"{item['kind'].lower()}/{item['name']} {item['outcome']}{suffix}", markup=False)


def _as_yaml(doc: dict[str, Any] | None) -> list[str]:
    import yaml

    if doc is None:
        return []
    return yaml.safe_dump(doc, sort_keys=True).splitlines(keepends=True)


class DiffInputFailed(click.ClickException):
    """diff's exit codes are kubectl's: 1 means changes, so errors are >1 (bad input 2)."""

    exit_code = 2


class DiffServerFailed(click.ClickException):
    exit_code = 3


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True)
@click.option("--prune", is_flag=True, help="also show what apply --prune -l would delete.")
@click.option("-l", "--selector", help="with --prune: the labels this set owns.")
@click.pass_obj
def diff(ctx: Context, files: tuple[str, ...], prune: bool, selector: str | None) -> None:
    """Show what apply would change (labels, annotations, spec); exit 1 when anything would."""
    import difflib

    from cli.manifests import load_all

    try:
        params = _apply_params(True, prune, selector)
        objects = load_all(files)
        body = [o.resource.stored() for o in objects]
        result = ctx.client.request("POST", f"{API}/apply", json=body, params=params)
    except InputError as exc:
        raise DiffInputFailed(exc.message) from None
    except ServerError as exc:
        raise DiffServerFailed(exc.message) from None
    changed = False
    for item in result["items"]:
        if item["outcome"] == "unchanged":
            continue
        changed = True
        label = f"{item['kind'].lower()}/{item['name']}"
        lines = difflib.unified_diff(
            _as_yaml(item.get("before")),
            _as_yaml(item.get("after")),
            fromfile=f"live/{label}" if item.get("before") else "/dev/null",
            tofile=f"applied/{label}" if item.get("after") else "/dev/null",
        )
        text = "".join(lines)
        click.echo(text if text.endswith("\n") else text + "\n", nl=False)
    sys.exit(1 if changed else 0)


# -- delete ----------------------------------------------------------------------


@cli.command()
@click.argument(
    "kind", required=False, metavar="KIND NAME...|KIND/NAME...", shell_complete=complete_kinds
)
@click.argument("names", nargs=-1, metavar="", shell_complete=complete_names)
@click.option("-f", "--filename", "files", multiple=True, help="delete what these manifests name.")
@click.option(
    "--wait",
    "wait_",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    show_default="true",
    metavar="[true|false]",
    help="return only once the objects are gone, as kubectl does; --wait=false returns "
    "at once (a VM then shows Terminating until its domain is shut down).",
)
@click.option(
    "--timeout",
    metavar="DURATION",
    help="with --wait: give up after this long (exit 1; the deletion goes on). Default: a "
    "VM's shutdownTimeout plus 60s, 60s for other kinds.",
)
@click.option(
    "--force",
    is_flag=True,
    help="VMs: delete the object at once, without the graceful shutdown; its node destroys "
    "the domain (powers it off) when it sees the VM gone.",
)
@click.option(
    "--delete-volumes",
    is_flag=True,
    help="VMs only: also delete the volumes PVC created for them in storage pools, once "
    "their domains are gone (volumes a VM named with 'volume:' are kept). Without it, "
    "volumes are kept and a VM created again under the same name gets them back.",
)
@click.pass_obj
def delete(
    ctx: Context,
    kind: str | None,
    names: tuple[str, ...],
    files: tuple[str, ...],
    wait_: bool,
    timeout: str | None,
    force: bool,
    delete_volumes: bool,
) -> None:
    """Delete objects: KIND NAME..., KIND/NAME... or -f FILE.

    A VM is deleted gracefully: it shows Terminating while the node that runs it shuts
    the guest down (ACPI, then forced off at its shutdownTimeout) and undefines it; then
    the object goes. A VM that runs nowhere goes at once. This waits until every object
    is gone (--wait=false: it does not), then prints KIND "NAME" deleted.
    """
    from cli.manifests import load_all
    from cli.output import console

    targets: list[tuple[type[Resource], str]] = []
    if files:
        if kind or names:
            raise InputError("give either -f FILE or KIND NAME, not both")
        targets = [(type(o.resource), o.resource.name) for o in load_all(files)]
        # VMs first: a network or a pool is refused (409) while a VM uses it.
        targets.sort(key=lambda t: t[0].KIND != "VirtualMachine")
    else:
        if not kind or (not names and "/" not in kind):
            raise InputError("usage: pvcctl delete KIND NAME... or KIND/NAME... (or -f FILE)")
        targets = split_targets((kind, *names))
    vm_only = [
        flag for flag, on in (("--delete-volumes", delete_volumes), ("--force", force)) if on
    ]
    if vm_only and any(cls.KIND != "VirtualMachine" for cls, _ in targets):
        raise InputError(f"{' and '.join(vm_only)} is for VMs only")
    from cli.progress import progress
    from cli.watch import wait_until

    limit = seconds(timeout) if timeout else None
    out = console()
    told = " (its volumes are deleted once its domain is gone)" if delete_volumes else ""
    params = {k: "true" for k, on in (("deleteVolumes", delete_volumes), ("force", force)) if on}
    # VMs first, all asked at once and then waited for together (a slow guest delays none of
    # the others); then the rest, which a Terminating VM may still use (409).
    phases = [
        [t for t in targets if t[0].KIND == "VirtualMachine"],
        [t for t in targets if t[0].KIND != "VirtualMachine"],
    ]
    stuck: list[str] = []
    skipped: list[str] = []
    for index, phase in enumerate(phases):
        pending: list[tuple[type[Resource], str, dict[str, Any]]] = []
        for cls, name in phase:
            obj = ctx.client.request("DELETE", f"{API}/{cls.PLURAL}/{name}", params=params or None)
            if wait_ and (obj.get("metadata") or {}).get("deletionTimestamp"):
                pending.append((cls, name, obj))
            else:
                out.print(f'{cls.KIND.lower()} "{name}" deleted{told}', markup=False)
        if not pending:
            continue
        started = time.monotonic()
        for cls, name, obj in pending:
            left = (limit or _delete_limit(obj)) - (time.monotonic() - started)
            with progress(f'waiting for {cls.KIND.lower()} "{name}" to go (Terminating)'):
                gone = wait_until(
                    ctx.client, cls.PLURAL, lambda s: not s, max(left, 0.1), name=name
                )
            if gone:
                out.print(f'{cls.KIND.lower()} "{name}" deleted{told}', markup=False)
            else:
                stuck.append(f'{cls.KIND.lower()} "{name}"')
        if stuck:
            # What a Terminating VM may use stays until it is gone.
            skipped = [f'{c.KIND.lower()} "{n}"' for p in phases[index + 1 :] for c, n in p]
            break
    if stuck:
        raise ServerError(
            f"timed out: {', '.join(stuck)} still Terminating (the deletion goes on; "
            "pvcctl describe says what it waits for)"
            + (f"; not deleted, as it may still be in use: {', '.join(skipped)}" if skipped else "")
        )


def _delete_limit(obj: dict[str, Any]) -> float:
    """How long a delete waits by default: the VM's own shutdownTimeout, and a minute more."""
    shutdown = (obj.get("spec") or {}).get("shutdownTimeout")
    try:
        return 60.0 + (seconds(shutdown) if isinstance(shutdown, str) else 0.0)
    except InputError:
        return 60.0


# -- verbs ----------------------------------------------------------------------------


@cli.group()
def node() -> None:
    """Imperative verbs on nodes."""


_WAIT_OPTIONS = [
    click.option(
        "--wait",
        "wait_",
        is_flag=True,
        help="return once the node reports the change done; shows progress on a terminal.",
    ),
    click.option(
        "--timeout",
        metavar="DURATION",
        help="with --wait: give up after this long (exit 1; the change goes on). "
        "Default: no limit (a flush takes as long as its VMs take to move).",
    ),
]


def _with_wait(func: Any) -> Any:
    for option in reversed(_WAIT_OPTIONS):
        func = option(func)
    return func


@node.command()
@click.argument("name", shell_complete=complete_node_names)
@_with_wait
@click.pass_obj
def flush(ctx: Context, name: str, wait_: bool, timeout: str | None) -> None:
    """Drain NODE: move its VMs away (spec.drain true)."""
    ctx.client.request("POST", f"{API}/nodes/{name}/flush")
    told("node", name, "flush requested")
    if wait_:
        from cli.wait_commands import wait_for_node

        wait_for_node(
            ctx,
            name,
            "domainState",
            "flushed",
            timeout,
            "the drain controller on the primary carries out flushes",
        )


@node.command()
@click.argument("name", shell_complete=complete_node_names)
@_with_wait
@click.pass_obj
def ready(ctx: Context, name: str, wait_: bool, timeout: str | None) -> None:
    """Undrain NODE: it takes VMs again (spec.drain false)."""
    ctx.client.request("POST", f"{API}/nodes/{name}/ready")
    told("node", name, "ready requested")
    if wait_:
        from cli.wait_commands import wait_for_node

        wait_for_node(
            ctx,
            name,
            "domainState",
            "ready",
            timeout,
            "the drain controller on the primary carries out unflushes",
        )


@node.command()
@click.argument("name", shell_complete=complete_node_names)
@_with_wait
@click.pass_obj
def primary(ctx: Context, name: str, wait_: bool, timeout: str | None) -> None:
    """Make NODE the preferred primary coordinator (a graceful switchover)."""
    ctx.client.request("POST", f"{API}/nodes/{name}/primary")
    told("node", name, "primary requested")
    if wait_:
        from cli.wait_commands import wait_for_primary

        wait_for_primary(ctx, name, True, timeout)


@node.command()
@click.argument("name", shell_complete=complete_node_names)
@_with_wait
@click.pass_obj
def secondary(ctx: Context, name: str, wait_: bool, timeout: str | None) -> None:
    """Stop preferring NODE as primary."""
    ctx.client.request("POST", f"{API}/nodes/{name}/secondary")
    told("node", name, "secondary requested")
    if wait_:
        from cli.wait_commands import wait_for_primary

        wait_for_primary(ctx, name, False, timeout)


@cli.group(
    name="cluster",
    cls=LazyGroup,
    lazy={"backup": "cli.data_commands:backup", "restore": "cli.data_commands:restore"},
)
def cluster_group() -> None:
    """Cluster-wide verbs."""


@cluster_group.command()
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_obj
def maintenance(ctx: Context, state: str) -> None:
    """Maintenance mode on or off (no fencing while on)."""
    body = {"enabled": state == "on"}
    ctx.client.request("POST", f"{API}/clusters/cluster/maintenance", json=body)
    click.echo(f"cluster maintenance {state}")


@cli.group()
def local() -> None:
    """Run a whole cluster on this machine (ZooKeeper, pvcnoded x N, pvcapid)."""


@local.command("up")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 16))
@click.option(
    "--api-port",
    default=7370,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="where logs, configs and PIDs go (env PVC_LOCAL_DIR).",
)
@click.option("--node-memory", default="8Gi", show_default=True)
def local_up(nodes: int, api_port: int, state_dir: Path | None, node_memory: str) -> None:
    """Start the local cluster, or reuse it if it is already running."""
    from localcluster import LocalCluster, LocalClusterError
    from localcluster.zookeeper import ZooKeeperMissing

    cluster = LocalCluster(state_dir, nodes=nodes, api_port=api_port, node_memory=node_memory)
    started = time.monotonic()
    try:
        state, reused = cluster.up()
    except (LocalClusterError, ZooKeeperMissing, TimeoutError, RuntimeError) as exc:
        raise ServerError(str(exc)) from None
    verb = "already running" if reused else f"started in {time.monotonic() - started:.1f}s"
    click.echo(
        f"local cluster {verb}: {len(state.nodes)} nodes, API {cluster.server_url(state)}, "
        f"ZooKeeper 127.0.0.1:{state.zookeeper_port}, state in {cluster.dir}"
    )
    urls = ", ".join(f"{n} {cluster.metrics_url(state, n)}" for n in sorted(state.metrics_ports))
    click.echo(f"node metrics (Prometheus): {urls}")


@local.command("down")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def local_down(state_dir: Path | None) -> None:
    """Stop every process the local cluster started (by PID)."""
    from localcluster import LocalCluster

    stopped = LocalCluster(state_dir).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@local.command("power")
@click.argument("node")
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def local_power(node: str, action: str, state_dir: Path | None) -> None:
    """The local nodes' power switch (their exec fence agent): off kills the node's daemon."""
    from localcluster import LocalCluster, LocalClusterError

    try:
        click.echo(LocalCluster(state_dir).power(node, action))
    except (LocalClusterError, TimeoutError) as exc:
        raise ServerError(str(exc)) from None


@local.command("status")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def local_status(state_dir: Path | None) -> None:
    """Show which local processes are running."""
    from localcluster import LocalCluster

    cluster = LocalCluster(state_dir)
    state = cluster.load_state()
    if state is None:
        click.echo("not running")
        sys.exit(1)
    for name, ok in cluster.running(state).items():
        click.echo(f"{name:<10} {'running' if ok else 'stopped'}")


def _explain_targets(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    from cli.explain import _complete_targets

    return _complete_targets(ctx, param, incomplete)


@cli.command(name="explain")
@click.argument(
    "target",
    metavar="KIND[.FIELD[.FIELD...]]",
    shell_complete=_explain_targets,
)
def explain_cmd(target: str) -> None:
    """Describe a kind or one of its fields (type, default, description), e.g.
    ``explain vm.spec.disks``. From this pvcctl's schemas: no server is asked."""
    from cli.explain import explain  # the schemas' models: imported only for explain

    click.echo(explain(target), nl=False)


def main() -> None:
    """Run pvcctl; every error ends as one line on stderr and its exit code."""
    try:
        code = cli.main(standalone_mode=False)
    except KeyboardInterrupt:
        sys.exit(130)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
