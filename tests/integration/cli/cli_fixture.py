"""A real pvcapid (uvicorn on a free port, real ZooKeeper behind it) and the real pvcctl binary."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from api.config import Settings
from localcluster.zookeeper import ZooKeeperServer
from tests.integration.api.api_helpers import live_server
from zkstore import Store

PVCCTL = str(Path(sys.executable).parent / "pvcctl")


@dataclass
class Api:
    url: str
    store: Store
    home: Path

    def pvcctl(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PVCCTL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(env),
            timeout=60,
        )

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PVC_")}
        # A private XDG_CONFIG_HOME: the user's own ~/.config/pvc never leaks in.
        return {**base, "PVC_SERVER": self.url, "XDG_CONFIG_HOME": str(self.home), **(extra or {})}

    def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", timeout=10, **kwargs)


def start_api(
    zookeeper: ZooKeeperServer, home: Path, settings: dict[str, Any] | None = None
) -> Iterator[Api]:
    store = Store(zookeeper.hosts, f"/cli-{uuid.uuid4().hex[:10]}", timeout=6.0)
    store.start()
    try:
        config = Settings.model_validate({"root": store.root, **(settings or {})})
        with live_server(store, config) as url:
            yield Api(url, store, home)
    finally:
        store.stop()


def manifest(name: str, labels: dict[str, str] | None = None, vcpus: int = 1) -> str:
    doc = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"memory": "256Mi", "vcpus": vcpus},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
