"""pvcctl: the command line, shaped like kubectl; talks to pvcapid over HTTP only."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from cli.client import ApiClient
from cli.errors import InputError, ServerError
from cli.manifests import load_all
from cli.output import FORMATS, condition, console, describe, render
from cli.settings import resolve
from schemas import kind_for, to_seconds
from schemas.resource import Resource

API = "/api/v1"


class Context:
    def __init__(self, server: str | None, config: str | None) -> None:
        self._server = server
        self._config = config
        self._client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            settings = resolve(self._server, self._config)
            self._client = ApiClient(settings.server, settings.token)
        return self._client


def _kind(word: str) -> type[Resource]:
    try:
        return kind_for(word)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--server", "-s", metavar="URL", help="API address (env PVC_SERVER).")
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    help="client config file (default ~/.config/pvc/config.yaml).",
)
@click.pass_context
def cli(ctx: click.Context, server: str | None, config_path: str | None) -> None:
    """Manage a PVC cluster declaratively."""
    ctx.obj = Context(server, config_path)


@cli.command()
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    help="a file, a folder of manifests, or - for stdin; repeatable.",
)
@click.pass_obj
def apply(ctx: Context, files: tuple[str, ...]) -> None:
    """Create or update the objects in manifests."""
    objects = load_all(files)
    body = [o.resource.stored() for o in objects]
    result = ctx.client.request("POST", f"{API}/apply", json=body)
    out = console()
    for item in result["items"]:
        out.print(f"{item['kind'].lower()}/{item['name']} {item['outcome']}", markup=False)


@cli.command()
@click.argument("kinds")
@click.argument("name", required=False)
@click.option(
    "-o", "--output", "fmt", type=click.Choice(FORMATS), default="table", show_default=True
)
@click.option("-l", "--selector", help="label selector, e.g. app=web,tier!=db")
@click.pass_obj
def get(ctx: Context, kinds: str, name: str | None, fmt: str, selector: str | None) -> None:
    """Show objects: KIND[,KIND...] [NAME]."""
    classes = [_kind(k) for k in kinds.split(",") if k]
    if not classes:
        raise InputError("no kind given")
    if name and len(classes) > 1:
        raise InputError("a NAME goes with one kind only")
    out = console()
    for i, cls in enumerate(classes):
        if name:
            items = [ctx.client.get(f"{API}/{cls.PLURAL}/{name}")]
        else:
            items = ctx.client.get(f"{API}/{cls.PLURAL}", labelSelector=selector)["items"]
        if fmt in ("table", "wide") and i:
            out.print()
        if not items and fmt in ("table", "wide"):
            click.echo(f"No {cls.PLURAL} found.", err=True)
            continue
        render(cls.KIND, items, fmt, out)


@cli.command(name="describe")
@click.argument("kind")
@click.argument("name")
@click.pass_obj
def describe_cmd(ctx: Context, kind: str, name: str) -> None:
    """Show one object's spec, status and conditions."""
    cls = _kind(kind)
    describe(ctx.client.get(f"{API}/{cls.PLURAL}/{name}"), console())


@cli.command()
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", "files", multiple=True, help="delete what these manifests name.")
@click.pass_obj
def delete(ctx: Context, kind: str | None, names: tuple[str, ...], files: tuple[str, ...]) -> None:
    """Delete objects: KIND NAME... or -f FILE."""
    targets: list[tuple[type[Resource], str]] = []
    if files:
        if kind or names:
            raise InputError("give either -f FILE or KIND NAME, not both")
        targets = [(type(o.resource), o.resource.name) for o in load_all(files)]
    else:
        if not kind or not names:
            raise InputError("usage: pvcctl delete KIND NAME... (or -f FILE)")
        cls = _kind(kind)
        targets = [(cls, n) for n in names]
    out = console()
    for cls, name in targets:
        ctx.client.request("DELETE", f"{API}/{cls.PLURAL}/{name}")
        out.print(f"{cls.KIND.lower()}/{name} deleted", markup=False)


@cli.command()
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
    try:
        limit = to_seconds(timeout)
    except ValueError as exc:
        raise InputError(f"--timeout: {exc}") from None
    want_delete = for_ == "delete"
    if not want_delete:
        if not for_.startswith("condition="):
            raise InputError("--for takes condition=TYPE[=True|False] or delete")
        cond_type, _, cond_status = for_.removeprefix("condition=").partition("=")
        cond_status = cond_status or "True"

    def pending() -> list[str]:
        if name:
            try:
                items = [ctx.client.get(f"{API}/{cls.PLURAL}/{name}")]
            except ServerError as exc:
                if want_delete and "(404" in str(exc):
                    return []
                raise
        else:
            items = ctx.client.get(f"{API}/{cls.PLURAL}")["items"]
        if want_delete:
            return [i["metadata"]["name"] for i in items]
        return [
            i["metadata"]["name"]
            for i in items
            if (condition(i, cond_type) or {}).get("status") != cond_status
        ]

    deadline = time.monotonic() + limit
    while True:
        left = pending()
        if not left:
            break
        if time.monotonic() >= deadline:
            raise ServerError(f"timed out after {timeout} waiting for {for_} on: {', '.join(left)}")
        time.sleep(0.25)
    click.echo(f"{target} condition met" if name else f"all {cls.PLURAL} condition met")


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
    from cli.localcluster import LocalCluster, LocalClusterError
    from cli.localcluster.zookeeper import ZooKeeperMissing

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


@local.command("down")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def local_down(state_dir: Path | None) -> None:
    """Stop every process the local cluster started (by PID)."""
    from cli.localcluster import LocalCluster

    stopped = LocalCluster(state_dir).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@local.command("power")
@click.argument("node")
@click.argument("action", type=click.Choice(["on", "off", "status"]))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def local_power(node: str, action: str, state_dir: Path | None) -> None:
    """The local nodes' power switch (their exec fence agent): off kills the node's daemon."""
    from cli.localcluster import LocalCluster, LocalClusterError

    try:
        click.echo(LocalCluster(state_dir).power(node, action))
    except (LocalClusterError, TimeoutError) as exc:
        raise ServerError(str(exc)) from None


@local.command("status")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path))
def local_status(state_dir: Path | None) -> None:
    """Show which local processes are running."""
    from cli.localcluster import LocalCluster

    cluster = LocalCluster(state_dir)
    state = cluster.load_state()
    if state is None:
        click.echo("not running")
        sys.exit(1)
    for name, ok in cluster.running(state).items():
        click.echo(f"{name:<10} {'running' if ok else 'stopped'}")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
