"""Shared by the API tests: object builders, the error-shape check, and a live server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from api.app import create_app
from api.config import Settings
from controllers.requests import RequestController
from tests.helpers import wait_for
from zkstore import Store


def vm(name: str = "web1", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "web"} if labels is None else labels},
        "spec": {"memory": "256Mi", **spec},
    }


def node(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "pvc/v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


def assert_status(response: Any, code: int, reason: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body = dict(response.json())
    assert body["kind"] == "Status" and body["code"] == code and body["reason"] == reason
    assert body["message"]
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def primary_requests(store: Store, node: str = "primary") -> Iterator[RequestController]:
    """The primary's request controller (the real one, at the store's current epoch), for
    an API with no primary daemon: the verbs that write a placement, a delete that removes
    an object, and a rename are requests only the primary carries out."""
    controller = RequestController(store, node, store.read_epoch())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@contextmanager
def live_server(
    store: Store, settings: Settings | None = None, *, primary: bool = True
) -> Iterator[str]:
    """A real uvicorn serving the app on a free loopback port, in a thread; with
    ``primary``, the primary's request controller too (``primary_requests``)."""
    if primary:
        with primary_requests(store), live_server(store, settings, primary=False) as url:
            yield url
        return
    settings = settings or Settings(root=store.root)
    config = uvicorn.Config(
        create_app(settings, store),
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        timeout_graceful_shutdown=2,
        ssl_certfile=settings.cert_file,
        ssl_keyfile=settings.key_file,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    scheme = "https" if settings.cert_file else "http"
    try:
        yield f"{scheme}://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(15)
