"""pvcapid settings: defaults, then a YAML file, then PVC_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from api.tokens import MIN_TOKEN_LENGTH, is_token_hash
from schemas.configfile import ConfigFileError, read_yaml_mapping
from schemas.daemon_logging import LogLevel, LogPriority
from schemas.meta import Model
from zkstore.connection import ZookeeperAuth, ZookeeperTls


class ApiToken(Model):
    hash: SecretStr | None = None
    """``sha256:<64 hex digits>`` of the token, as ``pvcapid hash-token`` prints it."""
    token: SecretStr | None = Field(default=None, min_length=MIN_TOKEN_LENGTH)
    """The token in clear: still taken, with a warning at start; prefer ``hash``."""
    role: Literal["admin", "readonly"] = "readonly"
    name: str = Field(default="", pattern=r"^[A-Za-z0-9._@-]{0,63}$")
    """Who holds it (in logs and audit records); never the token itself."""

    @field_validator("hash")
    @classmethod
    def _hash_form(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the value: a config error must not print a secret.
        if value is not None and not is_token_hash(value.get_secret_value()):
            raise ValueError("must be sha256: and 64 lowercase hex digits (pvcapid hash-token)")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> ApiToken:
        if (self.hash is None) == (self.token is None):
            raise ValueError("give a token either hash (preferred) or token (in clear)")
        return self


class Settings(Model):
    zookeeper: str = "127.0.0.1:2181"
    root: str = "/pvc"
    listen: str = "127.0.0.1"
    port: int = Field(default=7370, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 2**20, ge=1024)
    log_level: LogLevel = "info"
    log_priority: LogPriority = "auto"
    tokens: list[ApiToken] = Field(default_factory=list)
    """Bearer tokens. None configured means OPEN ACCESS: anyone who reaches the port
    may read and write (the local demo relies on it). Configure tokens in production."""
    cert_file: str | None = None
    key_file: str | None = None
    """Serve HTTPS with this certificate and key (PEM)."""
    watch_cache_events: int = Field(default=10_000, ge=10)
    """Changes per kind a watch can resume across; older resourceVersions get 410."""
    watch_cache_start_wait: float = Field(default=10.0, ge=0)
    """Seconds pvcapid waits at start for its watch cache to load before it serves;
    after that it serves anyway (lists read from ZooKeeper) while the load finishes."""
    watch_cache_load_timeout: float = Field(default=900.0, gt=0)
    event_log_limit: int = Field(default=1000, ge=10)
    """Events kept under /events for describe and `pvcctl events`."""
    schema_migration_timeout: float = Field(default=45.0, gt=0)
    """Seconds pvcapid waits at start for another daemon's schema migration before it
    exits 1 (docs/backup.md)."""
    primary_request_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds a write the primary carries out (migrate, unmigrate, move, a delete that
    removes an object at once, rename) waits for the primary's outcome; past it the API
    withdraws the request and answers 503, nothing changed."""
    zookeeper_auth: ZookeeperAuth | None = None
    """The ZooKeeper identity pvcapid connects with (user ``api``); None: anonymous, for a
    store made before ACLs."""
    zookeeper_tls: ZookeeperTls | None = None
    """Connect to ZooKeeper's secure client port with TLS."""

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("certFile and keyFile go together")
        return self


class SettingsError(ValueError):
    pass


_ENV = {
    "PVC_ZOOKEEPER": "zookeeper",
    "PVC_ROOT": "root",
    "PVC_API_LISTEN": "listen",
    "PVC_API_PORT": "port",
    "PVC_API_CERT_FILE": "certFile",
    "PVC_API_KEY_FILE": "keyFile",
}


def load_settings(path: str | Path | None = None) -> Settings:
    raw: dict[str, object] = {}
    if path is not None:
        try:
            raw.update(read_yaml_mapping(path))
        except ConfigFileError as exc:
            raise SettingsError(str(exc)) from None
    for env, field in _ENV.items():
        if env in os.environ:
            raw[field] = os.environ[env]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SettingsError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None
    if settings.zookeeper_auth is not None:
        try:
            settings.zookeeper_auth.identity()
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    return settings
