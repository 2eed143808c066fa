"""Where pvcctl finds the API: --server, then PVC_SERVER, then the config file, then local."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from cli.errors import InputError

DEFAULT_SERVER = "http://127.0.0.1:7370"


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pvc" / "config.yaml"


@dataclass(frozen=True)
class ClientSettings:
    server: str
    token: str | None = None


def resolve(server: str | None, config_path: str | None) -> ClientSettings:
    path = Path(config_path) if config_path else default_config_path()
    file_settings: dict[str, object] = {}
    if config_path or path.exists():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise InputError(f"{path}: cannot read the config file: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise InputError(f"{path}: expected a mapping with 'server' (and 'token')")
        file_settings = loaded
    chosen = server or os.environ.get("PVC_SERVER") or file_settings.get("server") or DEFAULT_SERVER
    token = os.environ.get("PVC_TOKEN") or file_settings.get("token")
    if not isinstance(chosen, str) or not chosen.startswith(("http://", "https://")):
        raise InputError(f"server {chosen!r} must be an http:// or https:// URL")
    return ClientSettings(server=chosen, token=str(token) if token else None)
