"""Every API test that takes the ``store`` fixture gets the primary's request controller on
it: pvcapid asks the primary to write placements, remove objects and rename VMs, and these
tests run the API with no primary daemon."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.api.api_helpers import primary_requests


@pytest.fixture(autouse=True)
def _primary_for_the_store(request: pytest.FixtureRequest) -> Iterator[None]:
    if "store" not in request.fixturenames:
        yield
        return
    with primary_requests(request.getfixturevalue("store")):
        yield
