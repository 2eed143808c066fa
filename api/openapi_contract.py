"""The kinds' JSON schemas as the OpenAPI document gives them: exactly what the server takes.

Pydantic writes a schema from the types, but the schemas' validators (a size above zero, a
disk's one form, a pool's fields by type) are code it cannot see. Every validator the kinds
run is named here: either as JSON Schema (``EXPRESSED``) or, where JSON Schema cannot say it
(one field compared with another, or with other objects), as a rule in words on the field
(``x-pvc-rules``, shown in its description). A validator named in neither stops the
document from being built, so a new one cannot widen the document unseen. The rules that
admission checks against the cluster's other objects are added the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from schemas import API_VERSION, CLUSTER_NAME, KINDS, Resource

Schema = dict[str, Any]
RULES = "x-pvc-rules"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
# schemas.quantity strips the text before it reads a size or a duration.
SIZE = r"^\s*0*[1-9][0-9]*(Ki|Mi|Gi|Ti|K|M|G|T)?\s*$"
DURATION = r"^\s*[0-9]+(\.[0-9]+)?(ms|s|m|h)\s*$"
POSITIVE_DURATION = r"^\s*([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)(ms|s|m|h)\s*$"
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
DOMAIN = rf"^({_LABEL}\.)*{_LABEL}$"
# A label or annotation key: [prefix/]name (schemas.meta._check_key).
LABEL_KEY = rf"^(({_LABEL}\.)*{_LABEL}/|/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
MAC = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4 = rf"^({_OCTET}\.){{3}}{_OCTET}$"
NAME_128 = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # volume names, Ceph pool and user names
MONITOR = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*)(:[0-9]{1,5})?$"
CEPHX_KEY = r"^([A-Za-z0-9+/]{20,}={0,2}|\*{8})$"  # or the mask the API shows it as
# An absolute path with no '..' segment.
_SEGMENT = r"(?:[^/.][^/]*|\.(?:[^/.][^/]*)?|\.\.[^/]+)"
ABSOLUTE_PATH = rf"^(/{_SEGMENT}?)+$"
FENCE_AGENT = r"^(/usr/sbin/)?fence_[a-z0-9_]+$"  # schemas.fence_agents.agent_name_problem
ONE_LINE = r"^[^\r\n\x00]*$"  # schemas.fence_agents.one_line
FENCE_LINES = ("address", "user", "password")

NULL: Schema = {"type": "null"}


def add_rule(schema: Schema, rule: str) -> None:
    schema.setdefault(RULES, []).append(rule)
    description = schema.get("description")
    schema["description"] = f"{description} {rule}." if description else f"{rule}."


def _pattern(pattern: str) -> Callable[[Schema], None]:
    def apply(schema: Schema) -> None:
        schema["pattern"] = pattern

    return apply


def _rule(text: str) -> Callable[[Schema], None]:
    return lambda schema: add_rule(schema, text)


def _string(pattern: str | None = None) -> Schema:
    return {"type": "string", **({"pattern": pattern} if pattern else {})}


def _disk_forms(schema: Schema) -> None:
    pool_only = {"source": NULL}
    schema["anyOf"] = [
        {  # an image path on the node
            "required": ["source"],
            "properties": {
                "source": _string(r"^/"),
                "pool": NULL,
                "volume": NULL,
                "from": NULL,
                "size": NULL,
            },
        },
        {  # a new image of this size, no pool
            "required": ["size"],
            "properties": {
                **pool_only,
                "pool": NULL,
                "volume": NULL,
                "from": NULL,
                "size": _string(),
            },
            "not": {"required": ["pool"], "properties": {"pool": _string()}},
        },
        {  # an existing volume of a pool
            "required": ["pool", "volume"],
            "properties": {
                **pool_only,
                "pool": _string(),
                "volume": _string(),
                "size": NULL,
                "from": NULL,
            },
        },
        {  # a new volume of a pool: a size, a clone, or both
            "required": ["pool"],
            "properties": {**pool_only, "pool": _string(), "volume": NULL},
            "anyOf": [
                {"required": ["size"], "properties": {"size": _string()}},
                {"required": ["from"], "properties": {"from": _string()}},
            ],
        },
    ]


def _pool_fields(schema: Schema) -> None:
    schema["anyOf"] = [
        {
            "required": ["type", "rbd"],
            "properties": {"type": {"const": "rbd"}, "path": NULL, "rbd": {"type": "object"}},
        },
        {
            "required": ["type", "path"],
            "properties": {
                "type": {"enum": ["shared", "local"]},
                "path": _string(ABSOLUTE_PATH),
                "rbd": NULL,
            },
        },
    ]


def _network_fields(schema: Schema) -> None:
    schema["anyOf"] = [
        {
            "required": ["type", "vni"],
            "properties": {"type": {"const": "managed"}, "vni": {"type": "integer"}, "vlan": NULL},
        },
        {
            "required": ["type"],
            "properties": {
                "type": {"const": "bridged"},
                "vni": NULL,
                "ipv4": NULL,
                "domain": NULL,
                "reservations": {"maxItems": 0},
            },
        },
    ]


def _fence_agent(schema: Schema) -> None:
    schema["anyOf"] = [
        {"properties": {"agent": {"const": "none"}}},
        {
            "required": ["agent", "address"],
            "properties": {"agent": {"const": "ipmi"}, "address": _string(r"^.+$")},
        },
        {
            "required": ["agent", "command"],
            "properties": {"agent": {"const": "exec"}, "command": {"minItems": 1}},
        },
        {
            "required": ["agent", "fenceAgent"],
            "properties": {
                "agent": {"const": "fence-agents"},
                "fenceAgent": _string(FENCE_AGENT),
                # each goes on one line of the agent's stdin
                **{field: {"anyOf": [NULL, _string(ONE_LINE)]} for field in FENCE_LINES},
            },
        },
    ]


def _fence_agent_name(schema: Schema) -> None:
    schema["anyOf"][0]["pattern"] = FENCE_AGENT
    add_rule(schema, "the agent must be installed (on PATH or in /usr/sbin) where the API runs")


def _fence_agent_options(schema: Schema) -> None:
    schema["propertyNames"] = {"pattern": r"^[a-z][a-z0-9_]*$"}
    schema["additionalProperties"] = _string(ONE_LINE)
    add_rule(
        schema,
        "no action, ip, ipaddr, ipport, username, login, password, passwd (PVC writes them), "
        "nor debug, debug_file, verbose, verbose_level",
    )


def _rbd_names(schema: Schema) -> None:
    props = schema["properties"]
    props["monitors"]["items"]["pattern"] = MONITOR
    props["pool"]["pattern"] = NAME_128
    props["user"]["pattern"] = NAME_128
    props["key"]["pattern"] = CEPHX_KEY


def _reservation(schema: Schema) -> None:
    schema["properties"]["mac"]["pattern"] = MAC
    schema["properties"]["ip"]["pattern"] = IPV4


def _label_keys(schema: Schema) -> None:
    schema["propertyNames"] = {"pattern": LABEL_KEY}
    add_rule(schema, "a key's prefix is at most 253 characters")


def _singleton(schema: Schema) -> None:
    meta = schema["properties"]["metadata"]
    schema["properties"]["metadata"] = {
        "allOf": [meta, {"properties": {"name": {"const": CLUSTER_NAME}}}]
    }


def _no_failed_fence_migrate(schema: Schema) -> None:
    failed = schema["properties"]["failedFence"]
    failed["enum"] = ["none"]
    add_rule(failed, "migrate is refused: a node whose power-off was not confirmed may still run")


EXPRESSED: dict[str, Callable[[Schema], None]] = {
    "_check_dns_label": _pattern(DNS_LABEL),
    "_check_size": _pattern(SIZE),
    "_check_domain": lambda s: s.update(pattern=DOMAIN, maxLength=253),
    "_check_duration": _pattern(DURATION),
    "FencingConfig._positive_interval": _pattern(POSITIVE_DURATION),
    "Nic._mac": lambda s: s["anyOf"][0].update(pattern=MAC),
    "Disk._volume_name": lambda s: s["anyOf"][0].update(pattern=NAME_128),
    "Resource._known_api_version": lambda s: s.update(enum=[API_VERSION]),
    "Cluster._singleton": _singleton,
    "_check_keys": _label_keys,
    "Disk._one_form": _disk_forms,
    "StoragePoolSpec._type_fields": _pool_fields,
    "NetworkSpec._type_fields": _network_fields,
    "FenceConfig._agent_settings": _fence_agent,
    "FenceConfig._agent_name": _fence_agent_name,
    "FenceConfig._agent_options": _fence_agent_options,
    "FencingConfig._no_recovery_without_power_off": _no_failed_fence_migrate,
    "RbdConfig._names": _rbd_names,
    "Reservation._valid": _reservation,
}

STATED: dict[str, str] = {
    "VMPlacement._home_allowed": "home must be one of nodes when nodes are given",
    "VirtualMachineSpec._unique_disk_names": "disk names are unique within the VM",
    "IPv4Config._addresses_in_network": (
        "network is an IPv4 network in CIDR form with no host bits; gateway, dhcp.start and "
        "dhcp.end are host addresses inside it (start not above end); DHCP needs a /30 or wider"
    ),
    "NetworkSpec._reservations_fit": (
        "each reservation's ip is a host address inside ipv4.network, not the gateway's; no "
        "MAC or ip twice; a managed network needs ipv4 for reservations"
    ),
    "FencingConfig._self_fence_before_recovery": (
        "selfFenceAfter is below keepaliveInterval x (min(fenceIntervals, 2) + savingThrows)"
    ),
    "VirtualMachineStatus._converged_only_when_settled": "written by the cluster only",
}

# What admission checks against the cluster's other objects (zkstore.admission,
# zkstore.network_admission): (kind, path in the object, rule).
ADMISSION: list[tuple[str, tuple[str, ...], str]] = [
    ("VirtualMachine", ("Disk", "pool"), "must name an existing StoragePool"),
    (
        "VirtualMachine",
        ("Disk", "format"),
        "rbd pools hold raw images only; a clone in a folder pool is qcow2; a volume's "
        "format never changes",
    ),
    (
        "VirtualMachine",
        ("Disk", "volume"),
        "an existing volume of the pool, no other VM's disk; in a local pool the VM is "
        "pinned to one node",
    ),
    (
        "VirtualMachine",
        ("Disk", "size"),
        "never below the volume's size, and the growth fits in the pool's free space",
    ),
    ("StoragePool", ("RbdConfig", "key"), "the key itself, not its mask, when first given"),
    (
        "StoragePool",
        ("StoragePoolSpec", "type"),
        "type, path and rbd.pool do not change while VMs use the pool",
    ),
    ("StoragePool", ("StoragePoolSpec", "path"), "does not change while VMs use the pool"),
    ("Network", ("NetworkSpec", "vni"), "no other network has this number (vni or vlan)"),
    ("Network", ("NetworkSpec", "vlan"), "no other network has this number (vni or vlan)"),
    ("Network", ("IPv4Config", "network"), "overlaps no other network's"),
    (
        "",
        ("ObjectMeta", "name"),
        "in a PUT, the name in the path; a Cluster is named 'cluster'",
    ),
]


UNDESCRIBED: set[str] = set()
"""Validators met that are in neither table (tests/unit/api/test_openapi_contract.py)."""


class ContractSchema(GenerateJsonSchema):
    """Pydantic's schema, with each validator's rule added where the validator sits."""

    def function_after_schema(self, schema: core_schema.AfterValidatorFunctionSchema) -> Any:
        inner: JsonSchemaValue = super().function_after_schema(schema)
        function = schema["function"]["function"]
        name = getattr(function, "__qualname__", repr(function))
        target = self._resolve(inner)
        if name in EXPRESSED:
            EXPRESSED[name](target)
        elif name in STATED:
            add_rule(target, STATED[name])
        else:  # a validator this module does not know yet: say so; a test keeps this empty
            UNDESCRIBED.add(name)
            add_rule(target, "further checked by the server")
        return inner

    def _resolve(self, value: JsonSchemaValue) -> Schema:
        ref = value.get("$ref")
        if ref is None:
            return value
        return self.definitions[self.get_defs_ref_from_json_ref(ref)]  # type: ignore[no-any-return,attr-defined]


def kind_components() -> dict[str, Any]:
    """JSON schemas of the kinds and their parts, for the OpenAPI document."""
    components: dict[str, Any] = {}
    for cls in KINDS:
        schema = cls.model_json_schema(
            by_alias=True,
            ref_template="#/components/schemas/{model}",
            schema_generator=ContractSchema,
        )
        components.update(schema.pop("$defs", {}))
        components[cls.KIND] = schema
        # Status is the cluster's: sent back in a body it is ignored, so clients need not.
        schema["properties"]["status"]["readOnly"] = True
    for _kind, (component, field), rule in ADMISSION:
        add_rule(components[component]["properties"][field], rule)
    return components


def _merge_patch_of(components: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """A value as a merge patch may give it: an object's fields each optional and, unless
    required, null (which removes it); lists and other values as they are (they replace)."""
    if not isinstance(schema, dict) or depth > 8:
        return schema
    if "$ref" in schema:
        target = components[schema["$ref"].rsplit("/", 1)[-1]]
        if target.get("type") != "object":
            return schema  # an enum or a value: it replaces
        schema = target
    if "anyOf" in schema and "properties" not in schema:
        return {
            **schema,
            "anyOf": [_merge_patch_of(components, s, depth + 1) for s in schema["anyOf"]],
        }
    if schema.get("type") != "object":
        return schema
    extra = schema.get("additionalProperties")
    if "properties" not in schema:
        if isinstance(extra, dict):  # a map: null removes a key
            return {**schema, "additionalProperties": {"anyOf": [extra, NULL]}}
        return schema
    patch = copy.deepcopy({k: v for k, v in schema.items() if k not in ("anyOf", "required")})
    if "anyOf" in schema or "required" in schema:
        # Which fields go together (a type's fields, the required ones) is checked on the
        # result: this patch merged into what is stored.
        add_rule(patch, "merged with the stored value, the result must be valid as a whole")
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        value = _merge_patch_of(components, prop, depth + 1)
        patch["properties"][name] = value if name in required else {"anyOf": [value, NULL]}
    return patch


def patch_schema(components: dict[str, Any], cls: type[Resource]) -> Schema:
    """An RFC 7386 merge patch of a kind: its fields, each optional; ``null`` removes one
    (so not the required ones); lists and values replace, objects merge."""
    kind = components[cls.KIND]
    spec = _merge_patch_of(components, kind["properties"]["spec"])
    spec.pop("required", None)  # the stored object has them; a patch need not repeat them
    nullable_map = {
        "anyOf": [
            {
                "type": "object",
                "propertyNames": {"pattern": LABEL_KEY},
                "additionalProperties": {"anyOf": [_string(), NULL]},
            },
            NULL,
        ]
    }
    metadata = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "labels": nullable_map,
            "annotations": nullable_map,
            "finalizers": {"anyOf": [{"type": "array", "items": _string()}, NULL]},
            "resourceVersion": {
                "anyOf": [_string(), {"type": "integer"}, NULL],
                "description": "pins the patch: 409 when the object changed since",
            },
        },
    }
    spec_required = "spec" in kind.get("required", [])
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": cls.KIND},
            "metadata": {"anyOf": [metadata, NULL]},
            "spec": spec if spec_required else {"anyOf": [spec, NULL]},
            "status": {"description": "ignored: status is the cluster's"},
        },
    }


def components() -> dict[str, Any]:
    """Every kind, its parts, and its merge patch (``<Kind>Patch``)."""
    parts = kind_components()
    for cls in KINDS:
        parts[f"{cls.KIND}Patch"] = patch_schema(parts, cls)
    return parts
