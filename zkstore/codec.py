"""JSON on the wire of every znode: compact, sorted, UTF-8."""

from __future__ import annotations

import json
from typing import Any


def encode(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes | None) -> Any:
    if not data:
        return None
    return json.loads(data)
