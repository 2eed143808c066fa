"""pvcapid settings: defaults, then a YAML file, then PVC_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from schemas.meta import Model


class Settings(Model):
    zookeeper: str = "127.0.0.1:2181"
    root: str = "/pvc"
    listen: str = "127.0.0.1"
    port: int = Field(default=7370, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 2**20, ge=1024)
    log_level: str = "info"


class SettingsError(ValueError):
    pass


_ENV = {
    "PVC_ZOOKEEPER": "zookeeper",
    "PVC_ROOT": "root",
    "PVC_API_LISTEN": "listen",
    "PVC_API_PORT": "port",
}


def load_settings(path: str | Path | None = None) -> Settings:
    raw: dict[str, object] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: expected a mapping at the top level")
        raw.update(loaded)
    for env, field in _ENV.items():
        if env in os.environ:
            raw[field] = os.environ[env]
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise SettingsError(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
