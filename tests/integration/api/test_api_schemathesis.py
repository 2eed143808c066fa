"""schemathesis, every check, against /openapi.json of a live pvcapid over a real ZooKeeper.

Run as its CLI runs it (``schemathesis run --checks all``): the examples, coverage
(boundary values, undeclared methods), fuzzing (positive and negative data) and stateful
phases; no 5xx, every answer as documented, schema-valid requests accepted and
schema-invalid ones refused, 405s with Allow. schemathesis_hooks.py points path names
mostly at objects that exist and drops one kind of failure only: a schema-valid request
refused for a rule the document states in ``x-pvc-rules`` (what JSON Schema cannot say).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.config import Settings
from localcluster.zookeeper import ZooKeeperServer
from tests.integration.api.api_helpers import live_server, node, vm
from zkstore import Store

EXAMPLES_PER_OPERATION = 6
SEED = 14
HOOKS = "tests.integration.api.schemathesis_hooks"
NAMES = {"vms": ["a", "b"], "nodes": ["n1"], "clusters": ["cluster"]}
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture(scope="module")
def api_url(zookeeper: ZooKeeperServer) -> Iterator[str]:
    store = Store(zookeeper.hosts, f"/schemathesis-{uuid.uuid4().hex[:8]}", timeout=6.0)
    store.start()
    try:
        with live_server(store, Settings(root=store.root)) as url:
            body = [vm("a"), vm("b"), node("n1")]
            httpx.post(f"{url}/api/v1/apply", json=body).raise_for_status()
            yield url
    finally:
        store.stop()


# The coverage phase sweeps every boundary of every body: each kind's POST sweeps its
# schema (JSON and YAML). Apply's body (any kind, one or a list: 5,000 more requests), the
# same body of restore, and each PUT's (the POST's schema again, 3,000 more) are left to the
# other phases, or the test takes minutes.
CONFIG = """
[[operations]]
include-path = "/api/v1/apply"
[operations.phases.coverage]
enabled = false

[[operations]]
include-path = "/api/v1/restore"
[operations.phases.coverage]
enabled = false

[[operations]]
include-method = "PUT"
[operations.phases.coverage]
enabled = false
"""


def test_every_schemathesis_check_passes(api_url: str, tmp_path: Path) -> None:
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": HOOKS,
        "PVC_TEST_NAMES": json.dumps(NAMES),
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{api_url}/openapi.json",
            "--checks=all",
            f"--max-examples={EXAMPLES_PER_OPERATION}",
            f"--seed={SEED}",
            # One worker: hypothesis moves the interpreter's recursion limit while it runs,
            # and CPython 3.11.7's ast.parse, run by it in another thread, then fails with
            # "AST constructor recursion depth mismatch" (gh-106905).
            "--workers=1",
            "--no-color",
            "--warnings=off",
            f"--report-dir={tmp_path}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]
    assert "Selected: " in summary and "Tested: " in summary
    # Every operation ran (none skipped or errored), and it tested something.
    assert "Skipped" not in summary and "Errors" not in summary, summary
