"""Where pvcctl finds the API, and with which credentials.

Order: flags (--server, --token), then the environment (PVC_SERVER, PVC_TOKEN,
PVC_CA), then the chosen context of the config file (--context, else
PVC_CONTEXT, else ``current-context``), then the file's top-level
``server``/``token``/``ca``, then the local cluster at http://127.0.0.1:7370.

~/.config/pvc/config.yaml::

    current-context: prod
    contexts:
      prod: {server: "https://pvc1:7370", token: "...", ca: /etc/pvc/ca.pem}
      local: {server: "http://127.0.0.1:7370"}

``pvcctl config set-context|use-context`` write it back (write_config: atomically, 0600).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.errors import InputError

DEFAULT_SERVER = "http://127.0.0.1:7370"


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pvc" / "config.yaml"


@dataclass(frozen=True)
class ClientSettings:
    server: str
    token: str | None = None
    ca: str | None = None
    context: str | None = None


def _read_config(config_path: str | None) -> tuple[Path, dict[str, Any]]:
    path = Path(config_path) if config_path else default_config_path()
    if not config_path and not path.exists():
        return path, {}
    import yaml  # only when there is a file: completion and --help start faster without

    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise InputError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: expected a mapping (contexts, current-context, server, token)")
    return path, loaded


def read_config(config_path: str | None, missing_ok: bool = False) -> tuple[Path, dict[str, Any]]:
    """The config file's path and contents: {} when the default file does not exist (or,
    ``missing_ok``, any file)."""
    if missing_ok and config_path and not Path(config_path).exists():
        return Path(config_path), {}
    return _read_config(config_path)


def write_config(path: Path, doc: dict[str, Any]) -> None:
    """Replace the config file atomically (a reader sees the old file or the new one, never
    half of one), readable by its owner only (0600): it holds tokens."""
    import yaml

    temp: str | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        import tempfile  # (shutil, random...): only when the config file is written

        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(yaml.safe_dump(doc, sort_keys=False))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        if isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write the config file: {exc}") from None
        raise


def context_names(config_path: str | None = None) -> list[str]:
    _, loaded = _read_config(config_path)
    contexts = loaded.get("contexts")
    return sorted(contexts) if isinstance(contexts, dict) else []


def resolve(
    server: str | None,
    config_path: str | None,
    context: str | None = None,
    token: str | None = None,
) -> ClientSettings:
    path, loaded = _read_config(config_path)
    contexts = loaded.get("contexts") or {}
    if not isinstance(contexts, dict):
        raise InputError(f"{path}: 'contexts' must be a mapping of name to settings")
    chosen_name = context or os.environ.get("PVC_CONTEXT") or loaded.get("current-context")
    chosen: dict[str, Any] = {}
    if chosen_name:
        if chosen_name not in contexts:
            known = ", ".join(sorted(contexts)) or "none"
            raise InputError(f"context {chosen_name!r} is not in {path} (known: {known})")
        chosen = contexts[chosen_name] or {}
        if not isinstance(chosen, dict):
            raise InputError(f"{path}: context {chosen_name!r} must be a mapping")

    def pick(flag: str | None, env: str, key: str) -> Any:
        return flag or os.environ.get(env) or chosen.get(key) or loaded.get(key)

    url = pick(server, "PVC_SERVER", "server") or DEFAULT_SERVER
    bearer = pick(token, "PVC_TOKEN", "token")
    ca = pick(None, "PVC_CA", "ca")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InputError(f"server {url!r} must be an http:// or https:// URL")
    if ca is not None and not Path(str(ca)).expanduser().is_file():
        raise InputError(f"CA file {ca!r} does not exist")
    return ClientSettings(
        server=url,
        token=str(bearer) if bearer else None,
        ca=str(Path(str(ca)).expanduser()) if ca else None,
        context=str(chosen_name) if chosen_name else None,
    )
