"""Object metadata and Kubernetes-shaped conditions shared by every kind."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_VERSION = "pvc/v1"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: a name is a DNS label of at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return value


DnsLabel = Annotated[str, AfterValidator(_check_dns_label)]

_DOMAIN_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"({_DOMAIN_LABEL}\.)*{_DOMAIN_LABEL}")


def _check_domain(value: str) -> str:
    if len(value) > 253 or not _DOMAIN.fullmatch(value):
        raise ValueError(
            f"invalid domain {value!r}: dot-separated labels of letters, digits and '-' "
            "(each starting and ending with a letter or digit), e.g. lan.example.com"
        )
    return value


DomainName = Annotated[str, AfterValidator(_check_domain)]


def utcnow() -> str:
    """Timestamps are RFC 3339 strings in UTC, like Kubernetes'."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Model(BaseModel):
    """Base of every resource part: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_assignment=True,
        # A field's docstring is its description: in the OpenAPI document and `pvcctl explain`.
        use_attribute_docstrings=True,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready form users see: camelCase, no unset optional noise."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


_KEY_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _check_key(key: str) -> None:
    """A label or annotation key as Kubernetes has them: [prefix/]name, the prefix a DNS
    subdomain (at most 253), the name at most 63 letters, digits, '-', '_' or '.', starting
    and ending with a letter or digit."""
    prefix, _, name = key.rpartition("/")
    if not _KEY_NAME.fullmatch(name) or (
        prefix and (len(prefix) > 253 or not _DOMAIN.fullmatch(prefix))
    ):
        raise ValueError(
            f"invalid key {key!r}: [prefix/]name, the name at most 63 letters, digits, '-', "
            "'_' or '.' (starting and ending with a letter or digit), the prefix a DNS domain"
        )


def _check_keys(mapping: dict[str, str]) -> dict[str, str]:
    """Labels' and annotations' keys (their values are the user's text, shown literally)."""
    for key in mapping:
        _check_key(key)
    return mapping


class ObjectMeta(Model):
    name: DnsLabel
    labels: Annotated[dict[str, str], AfterValidator(_check_keys)] = Field(default_factory=dict)
    annotations: Annotated[dict[str, str], AfterValidator(_check_keys)] = Field(
        default_factory=dict
    )
    # The store owns the fields below; a user may send resourceVersion back for a CAS write.
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    finalizers: list[str] = Field(default_factory=list)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: str = Field(default_factory=utcnow)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
) -> list[Condition]:
    """Return conditions with ``type_`` set; lastTransitionTime moves only when status does."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    result: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            result.append(cond)
            continue
        found = True
        moved = cond.status != status
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=utcnow() if moved else cond.last_transition_time,
            )
        )
    if not found:
        result.append(Condition(type=type_, status=status, reason=reason, message=message))
    return result


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def condition_is_true(conditions: list[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == ConditionStatus.TRUE


class Status(Model):
    """Every kind's status carries these two."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
