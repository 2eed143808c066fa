"""The API client: httpx, and server errors turned into one-line messages.

httpx is imported when a client is first made, not with this module: commands that never
talk to the API (``--help``, completion, which uses one plain GET) start without it."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cli.errors import InputError, ServerError

if TYPE_CHECKING:
    import httpx

API = "/api/v1"


def load_httpx() -> None:
    """Import httpx without its own command-line tool: httpx's ``__init__`` imports
    ``httpx._main`` (rich, pygments: the ``httpx`` command) whenever they are installed,
    as they are beside pvcctl, which is most of httpx's import time and more than the rest
    of ``pvcctl get`` takes. A stand-in takes that one module's place; pvcctl never runs
    the ``httpx`` command."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stand_in = types.ModuleType("httpx._main")

    def main() -> None:
        raise SystemExit("the httpx command is not available inside pvcctl")

    stand_in.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stand_in


class Expired(ServerError):
    """A watch asked for a resourceVersion the server can no longer replay (410)."""


class ApiClient:
    def __init__(
        self,
        server: str,
        token: str | None = None,
        timeout: float = 30.0,
        ca: str | None = None,
    ) -> None:
        import ssl

        load_httpx()
        import httpx

        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Plain http uses no TLS: no CA bundle to load (certifi's, some 10 ms on every run).
        tls = self.server.startswith("https:")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else tls
        self._http = httpx.Client(
            base_url=self.server, headers=headers, timeout=timeout, verify=verify
        )

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: Exception) -> ServerError:
        return ServerError(
            f"cannot reach the PVC API at {self.server}: {exc or type(exc).__name__} "
            "(is the cluster up? `pvcctl local up` starts a local one; --server, "
            "--context or PVC_SERVER point elsewhere)"
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise error_for(response)
        if not response.content:
            return None
        import orjson  # (the standard library's json is slower on a list of 10,000 VMs)

        try:
            return orjson.loads(response.content)
        except ValueError:
            raise ServerError(f"the API answered {method} {path} with non-JSON content") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def watch(
        self, plural: str, resource_version: str | None, timeout: float, selector: str | None
    ) -> Iterator[dict[str, Any]]:
        """Events of one kind after ``resource_version``, until the server ends the stream."""
        import httpx

        params: dict[str, Any] = {"watch": "true", "timeoutSeconds": max(1, int(timeout + 0.999))}
        if resource_version:
            params["resourceVersion"] = resource_version
        if selector:
            params["labelSelector"] = selector
        read_timeout = httpx.Timeout(10.0, read=timeout + 10.0)
        try:
            with self._http.stream(
                "GET", f"{API}/{plural}", params=params, timeout=read_timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_for(response)
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None


def error_for(response: httpx.Response) -> ServerError | InputError:
    try:
        body = response.json()
        message = body.get("message") or response.reason_phrase
        reason = body.get("reason") or ""
    except ValueError:
        message, reason = response.text.strip()[:200] or response.reason_phrase, ""
    text = f"{message} ({response.status_code}{' ' + reason if reason else ''})"
    if response.status_code == 410:
        return Expired(text)
    # The server judged our input invalid: that is the user's input, exit 2.
    if response.status_code in (400, 413, 415, 422):
        return InputError(text)
    error = ServerError(text)
    error.status_code = response.status_code
    return error
