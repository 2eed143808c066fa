"""pvcapid: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import re
import socket
import sys

import uvicorn
from kazoo.handlers.threading import KazooTimeoutError

from api.app import create_app, store_for
from api.config import Settings, SettingsError, load_settings
from api.tokens import MIN_TOKEN_LENGTH, hash_token
from schemas.daemon_logging import setup_logging
from schemas.sdnotify import Notifier
from zkstore import Store, StoreError

log = logging.getLogger("pvcapid")


class NotifyingServer(uvicorn.Server):
    """uvicorn's server that tells systemd READY=1 once it listens (its lifespan startup,
    the store and the first watch-cache wait, is done by then), and STOPPING=1 on exit."""

    def __init__(self, config: uvicorn.Config, notifier: Notifier) -> None:
        super().__init__(config)
        self.notifier = notifier

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.notifier.ready(
            f"serving on {self.config.host}:{self.config.port}"
        ):
            log.info("event=sd_notify_ready listen=%s port=%s", self.config.host, self.config.port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.notifier.stopping("stopping")
        await super().shutdown(sockets)


HASH_TOKEN_HELP = """Read a token from stdin (one line; a trailing newline is dropped) and print
the line to put under `tokens:` in pvcapid's config, holding only the token's SHA-256 digest.
Make a token with e.g. `openssl rand -hex 32`."""


def hash_token_command(name: str, role: str) -> int:
    token = sys.stdin.readline().rstrip("\r\n")
    if len(token) < MIN_TOKEN_LENGTH:
        print(
            f"pvcapid hash-token: a token needs at least {MIN_TOKEN_LENGTH} characters "
            f"(got {len(token)}); make one with `openssl rand -hex 32`",
            file=sys.stderr,
        )
        return 2
    print(f'- {{name: {name}, role: {role}, hash: "{hash_token(token)}"}}')
    return 0


def warn_of_clear_tokens(settings: Settings) -> None:
    """One warning at start per token configured in clear (``token:`` instead of ``hash:``)."""
    for token in settings.tokens:
        if token.token is not None:
            log.warning(
                "event=clear_token name=%s message=%s",
                token.name or "-",
                "this token is configured in clear: replace token: with hash: (pvcapid hash-token)",
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvcapid", description="PVC API server")
    parser.add_argument("--config", help="path to the API's YAML config")
    parser.add_argument("--listen", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 7370)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    hashing = commands.add_parser(
        "hash-token",
        help="print a tokens: line for a token read from stdin",
        description=HASH_TOKEN_HELP,
    )
    hashing.add_argument(
        "--name",
        default="ops",
        type=_token_name,
        help="who holds it, in logs and audit records (default ops)",
    )
    hashing.add_argument(
        "--role",
        choices=("admin", "readonly"),
        default="admin",
        help="admin may write; readonly may only read (default admin)",
    )
    args = parser.parse_args(argv)
    if args.command == "hash-token":
        return hash_token_command(args.name, args.role)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"pvcapid: {exc}", file=sys.stderr)
        return 2
    if args.listen:
        settings.listen = args.listen
    if args.port is not None:
        settings.port = args.port
    setup_logging(settings.log_level, settings.log_priority)
    warn_of_clear_tokens(settings)
    if not settings.tokens:
        log.warning(
            "event=open_access message=%s",
            f"no API tokens configured: anyone who reaches {settings.listen}:{settings.port} "
            "may read and write the cluster",
        )
    # Connected (and the schema checked or migrated) before serving: a store newer than this
    # code is a clear error and exit 1, not a failed application startup.
    store = store_for(settings)
    try:
        store.start(
            holder=f"pvcapid/{socket.gethostname()}:{settings.port}",
            migration_timeout=settings.schema_migration_timeout,
        )
    except StoreError as exc:  # SchemaTooNew, SchemaMigrationTimeout, a failed migration
        store.stop()
        print(f"pvcapid: {exc}", file=sys.stderr)
        return 1
    except KazooTimeoutError:
        store.stop()
        print(f"pvcapid: cannot reach ZooKeeper at {settings.zookeeper}", file=sys.stderr)
        return 1
    try:
        return _serve(settings, store)
    finally:
        store.stop()


def _serve(settings: Settings, store: Store) -> int:
    config = uvicorn.Config(
        create_app(settings, store),
        host=settings.listen,
        port=settings.port,
        log_level=settings.log_level,
        # uvicorn's loggers go through the root handler above (one format, journald's
        # priorities) instead of uvicorn's own.
        log_config=None,
        access_log=False,
        ssl_certfile=settings.cert_file,
        ssl_keyfile=settings.key_file,
        # Watch streams are long-lived: end them on shutdown instead of waiting forever.
        timeout_graceful_shutdown=5,
    )
    server = NotifyingServer(config, Notifier.from_environment())
    server.run()
    # uvicorn returns after a failed start (port in use) having logged why.
    return 0 if server.started else 1


def _token_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,63}", text):
        raise argparse.ArgumentTypeError(
            "1 to 63 letters, digits or . _ @ - (it is written into logs as it is)"
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
