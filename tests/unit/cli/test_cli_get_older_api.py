"""pvcctl get against an API from before ``view=table`` (a host not upgraded yet, in a
rolling upgrade): that API ignores the parameter and sends the List; pvcctl shows the same
table from it. The API is a stand-in that answers as the older one did (it cannot run here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from cli.main import cli

LIST = {
    "apiVersion": "pvc/v1",
    "kind": "VirtualMachineList",
    "metadata": {"resourceVersion": "7"},
    "items": [
        {
            "metadata": {"name": "web1", "creationTimestamp": "2020-01-01T00:00:00.000000Z"},
            "spec": {"vcpus": 2, "memory": "1Gi"},
            "status": {"phase": "Running", "node": "n1"},
        }
    ],
}


class OlderApi(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(LIST if self.path.startswith("/api/v1/vms") else {"items": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), OlderApi)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_table_from_an_api_that_sends_the_list(server: str) -> None:
    result = CliRunner().invoke(cli, ["--server", server, "get", "vms"])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == ["NAME", "PHASE", "NODE", "VCPUS", "MEMORY", "READY", "AGE"]
    assert row.split()[:5] == ["web1", "Running", "n1", "2", "1Gi"]
