"""schemathesis against /openapi.json of a live pvcapid over a real ZooKeeper.

Every operation gets a bounded number of generated requests; none may answer
5xx, and every answer must match the schema (documented status code, content
type and body shape).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.config import Settings
from cli.localcluster.zookeeper import ZooKeeperServer
from tests.integration.api.api_helpers import live_server, node, vm
from zkstore import Store

EXAMPLES_PER_OPERATION = 12
NAMES = {"vms": ["a", "b"], "nodes": ["n1"], "networks": ["lan"], "clusters": ["cluster"]}


@pytest.fixture(scope="module")
def api_url(zookeeper: ZooKeeperServer) -> Iterator[str]:
    import uuid

    store = Store(zookeeper.hosts, f"/schemathesis-{uuid.uuid4().hex[:8]}", timeout=6.0)
    store.start()
    try:
        with live_server(store, Settings(root=store.root)) as url:
            import httpx

            # Some objects to find, so gets, patches and verbs reach past 404 too.
            httpx.post(
                f"{url}/api/v1/apply", json=[vm("a"), vm("b"), node("n1")]
            ).raise_for_status()
            yield url
    finally:
        store.stop()


@pytest.fixture(scope="module")
def api_schema(api_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_no_5xx_and_responses_match_the_schema(api_schema: Any) -> None:
    # One hypothesis run per operation, driven here rather than through schemathesis'
    # pytest plugin, whose lazy fixture loading does not work with this pytest.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 40
    failures: list[str] = []
    for operation in operations:
        plural = operation.path.removeprefix("/api/v1/").split("/")[0]
        names = NAMES.get(plural, [])

        @given(case=operation.as_strategy(), name=st.sampled_from([*names, "ghost"]))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def run(case: Any, name: str) -> None:
            # Mostly names that exist, so requests reach past the 404 into the handlers.
            if case.path_parameters and "name" in case.path_parameters:
                case.path_parameters["name"] = name
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except BaseException as exc:  # schemathesis' FailureGroup is an exception group
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
