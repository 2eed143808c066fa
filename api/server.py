"""pvcapid: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from api.app import create_app
from api.config import SettingsError, load_settings


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
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    if not settings.tokens:
        logging.getLogger("pvcapid").warning(
            "event=open_access message=no API tokens configured: anyone who reaches "
            "%s:%s may read and write the cluster",
            settings.listen,
            settings.port,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.listen,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        ssl_certfile=settings.cert_file,
        ssl_keyfile=settings.key_file,
        # Watch streams are long-lived: end them on shutdown instead of waiting forever.
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
