"""The version of PVC this process runs: what ``pvcctl version``, ``GET /api/v1/version`` and
each node's ``status.daemonVersion`` report."""

from __future__ import annotations

import functools
import importlib.metadata
import tomllib
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
DISTRIBUTION = "pvc-cluster"
"""PVC's name on the package index (pyproject.toml's project.name)."""


@functools.cache
def pvc_version() -> str:
    """The installed package's version; from a source tree that is not installed, the one
    in its pyproject.toml; "unknown" when neither says."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        with _PYPROJECT.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"
