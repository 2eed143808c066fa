"""Quantities (sizes like ``512Mi``) and durations (like ``5s``) as users write them.

Specs keep the user's text so that re-applying a manifest is a no-op; code
converts with :func:`to_bytes` and :func:`to_seconds` where it needs numbers.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_SIZE_RE = re.compile(r"^(?P<num>[0-9]+)(?P<unit>Ki|Mi|Gi|Ti|K|M|G|T)?$")

_DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<unit>ms|s|m|h)$")


def to_bytes(quantity: str) -> int:
    """``"2Gi"`` -> 2147483648. Raises ValueError with a user-facing message."""
    match = _SIZE_RE.fullmatch(quantity.strip()) if isinstance(quantity, str) else None
    if match is None:
        raise ValueError(
            f"invalid size {quantity!r}: expected a positive whole number with an optional "
            "unit Ki, Mi, Gi, Ti, K, M, G or T (for example 512Mi or 2Gi)"
        )
    return int(match["num"]) * _SIZE_UNITS[match["unit"] or ""]


def to_mib(quantity: str) -> int:
    """Size in MiB, rounded up: libvirt and the scheduler count memory in MiB."""
    return -(-to_bytes(quantity) // 2**20)


def to_seconds(duration: str) -> float:
    """``"500ms"`` -> 0.5, ``"5s"`` -> 5.0, ``"2m"`` -> 120.0."""
    match = _DURATION_RE.fullmatch(duration.strip()) if isinstance(duration, str) else None
    if match is None:
        raise ValueError(
            f"invalid duration {duration!r}: expected a number with a unit ms, s, m or h "
            "(for example 500ms, 5s or 3m)"
        )
    return float(match["num"]) * _DURATION_UNITS[match["unit"]]


def format_bytes(value: int) -> str:
    """The shortest exact binary form: 536870912 -> ``"512Mi"``."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        size = _SIZE_UNITS[unit]
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def approx_bytes(value: int) -> str:
    """Rounded to one decimal in the largest binary unit it reaches, for people reading
    space: 83053731840 -> ``"77.3Gi"`` (exact values: format_bytes)."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        size = _SIZE_UNITS[unit]
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def _check_size(value: str) -> str:
    if to_bytes(value) <= 0:
        raise ValueError(f"size {value!r} must be greater than zero")
    return value


def _check_duration(value: str) -> str:
    to_seconds(value)
    return value


Size = Annotated[str, AfterValidator(_check_size)]
"""A positive size such as ``512Mi``; kept as written."""

Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration such as ``5s``; kept as written."""
