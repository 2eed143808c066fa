"""pvcapid under systemd's eyes: READY=1 on NOTIFY_SOCKET once it answers HTTP, STOPPING=1
on SIGTERM, and every line of its log (uvicorn's own too) with its journald priority."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from localcluster.zookeeper import ZooKeeperServer
from tests.sdnotify_listener import Listener, listening


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    yield from listening(tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ready_once_serving_and_logs_with_priorities(
    zookeeper: ZooKeeperServer, listener: Listener, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "pvcapid.yaml"
    settings = {
        "zookeeper": zookeeper.hosts,
        "root": f"/test-{uuid.uuid4().hex[:12]}",
        "port": port,
        "logPriority": "always",
    }
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "NOTIFY_SOCKET": listener.path}
    api = subprocess.Popen(
        [sys.executable, "-m", "api.server", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert listener.next("READY=1", timeout=30) is not None, "no READY=1"
        # Ready means serving: the very next request is answered.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        api.send_signal(signal.SIGTERM)
        assert listener.next("STOPPING=1", timeout=10) is not None
        _, stderr = api.communicate(timeout=20)
    finally:
        if api.poll() is None:
            api.kill()
            api.communicate()
    # uvicorn ends by raising the SIGTERM it caught again: systemd counts that as a clean stop.
    assert api.returncode in (0, -signal.SIGTERM), stderr
    lines = stderr.splitlines()
    assert lines and all(line[:3] in ("<4>", "<6>") for line in lines), stderr
    # pvcapid's warning, logfmt-quoted; uvicorn's own lines through the same handler.
    assert any(
        line.startswith("<4>") and 'event=open_access message="no API tokens configured' in line
        for line in lines
    ), stderr
    assert any(
        line.startswith("<6>") and "uvicorn.error Uvicorn running on" in line for line in lines
    )
