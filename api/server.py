"""pvcapid: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import uvicorn
from kazoo.handlers.threading import KazooTimeoutError

from api.app import create_app
from api.config import Settings, SettingsError, load_settings
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvcapid", description="PVC API server")
    parser.add_argument("--config", help="path to the API's YAML config")
    parser.add_argument("--listen", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 7370)")
    args = parser.parse_args(argv)
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
    if not settings.tokens:
        log.warning(
            "event=open_access message=%s",
            f"no API tokens configured: anyone who reaches {settings.listen}:{settings.port} "
            "may read and write the cluster",
        )
    # Connected (and the schema checked or migrated) before serving: a store newer than this
    # code is a clear error and exit 1, not a failed application startup.
    store = Store(settings.zookeeper, settings.root)
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


if __name__ == "__main__":
    sys.exit(main())
