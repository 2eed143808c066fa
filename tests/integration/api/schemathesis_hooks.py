"""schemathesis hooks for test_api_schemathesis.py (loaded by the CLI via SCHEMATHESIS_HOOKS).

- Path names: mostly objects that exist, so requests reach past the 404 into the handlers.
- One failure is dropped, and only one: a schema-valid request refused (ST202) for a rule the
  document states in words because JSON Schema cannot (``x-pvc-rules``: one field compared
  with another, or with the cluster's other objects). Every field the refusal names must
  carry such a rule in that operation's request; anything else still fails the run.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import schemathesis
from hypothesis import strategies as st

RULES = "x-pvc-rules"
NAMES: dict[str, list[str]] = json.loads(os.environ.get("PVC_TEST_NAMES", "{}"))


@schemathesis.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    operation = context.operation
    if operation is None or not path_parameters or "name" not in path_parameters:
        return st.just(path_parameters)
    plural = operation.path.removeprefix("/api/v1/").split("/")[0]
    names = [*NAMES.get(plural, []), "ghost"]
    return st.sampled_from(names).map(lambda name: {**path_parameters, "name": name})


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """In the stateful phase a DELETE deletes: its use-after-delete check cannot know that a
    dry run (documented: writes nothing) leaves the object there."""
    phase = getattr(getattr(getattr(case, "meta", None), "phase", None), "name", None)
    stateful = str(getattr(phase, "value", phase)).lower() == "stateful"
    if stateful and case.method.upper() == "DELETE" and case.query:
        case.query.pop("dryRun", None)
    return case


def deref(doc: dict[str, Any], schema: Any) -> Any:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 20:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
        seen += 1
    return schema


def branches(doc: dict[str, Any], schema: Any) -> list[dict[str, Any]]:
    """The schema and every alternative or part of it (anyOf, oneOf, allOf), dereferenced."""
    schema = deref(doc, schema)
    if not isinstance(schema, dict):
        return []
    found = [schema]
    for key in ("anyOf", "oneOf", "allOf"):
        for part in schema.get(key, []):
            found.extend(branches(doc, part))
    return found


def field_has_rule(doc: dict[str, Any], schema: Any, path: list[str]) -> bool:
    """Whether the field at ``path``, or an object holding it (where a rule about several
    of its fields sits), carries a stated rule."""
    nodes = branches(doc, schema)
    if any(RULES in node for node in nodes):
        return True
    if not path:
        return False
    head, rest = path[0], path[1:]
    for node in nodes:
        if head.isdigit() and "items" in node:
            if field_has_rule(doc, node["items"], rest):
                return True
        child = node.get("properties", {}).get(head)
        if child is not None and field_has_rule(doc, child, rest):
            return True
    return False


def split_field(field: str) -> list[str]:
    return [p for p in re.split(r"[.\[\]]+", field) if p]


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    if getattr(failure, "code", None) != "ST202" or response.status_code not in (400, 422):
        return True
    try:
        details = json.loads(response.content)["details"]
    except (ValueError, KeyError, TypeError):
        return True
    fields = [c["field"] for c in details.get("causes", [])] or [details.get("field", "")]
    doc = case.operation.schema.raw_schema
    operation = doc["paths"][case.operation.path][case.operation.method.lower()]
    body_schemas = [
        media["schema"]
        for media in operation.get("requestBody", {}).get("content", {}).values()
        if "schema" in media
    ]
    parameters = {p["name"]: p for p in operation.get("parameters", [])}

    def stated(field: str) -> bool:
        if field in parameters:
            return RULES in parameters[field].get("schema", {})
        path = split_field(field)
        return any(field_has_rule(doc, schema, path) for schema in body_schemas)

    # Keep the failure unless every field the refusal names has a stated rule.
    return not (fields and all(stated(f) for f in fields))
