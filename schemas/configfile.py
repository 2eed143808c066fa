"""Reading a daemon's YAML config file: one mapping, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigFileError(ValueError):
    pass


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The file's top-level mapping (an empty file is an empty mapping)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigFileError(f"{path}: expected a mapping at the top level")
    return loaded
