"""The compact JSON a list joins: made by orjson, the same document the standard library
made before, and non-ASCII text still escaped as it was."""

from __future__ import annotations

import json
from typing import Any

from api.cache import Cached


def cached(wire: dict[str, Any]) -> Cached:
    return Cached(wire=wire, pos=1, spec_version=1, labels={})


def vm(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", "annotations": annotations, "generation": 3},
        "spec": {"memory": "1Gi", "vcpus": 2, "nics": [{"network": "lan"}]},
        "status": {"phase": "Running", "load": 0.25, "ready": True, "node": None},
    }


def test_an_ascii_object_is_encoded_as_the_standard_library_did() -> None:
    wire = vm(note="plain")
    assert cached(wire).json == json.dumps(wire, separators=(",", ":"))


def test_non_ascii_text_stays_escaped() -> None:
    wire = vm(note="caf\u00e9 \u2603")
    made = cached(wire).json
    assert made.isascii() and "\\u00e9" in made
    assert made == json.dumps(wire, separators=(",", ":"))


def test_an_integer_orjson_refuses_is_still_encoded() -> None:
    wire = vm()
    wire["status"]["huge"] = 2**70
    assert json.loads(cached(wire).json)["status"]["huge"] == 2**70
