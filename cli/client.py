"""The API client: httpx, and server errors turned into one-line messages."""

from __future__ import annotations

from typing import Any

import httpx

from cli.errors import InputError, ServerError


class ApiClient:
    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerError(
                f"cannot reach the PVC API at {self.server}: {exc or type(exc).__name__} "
                "(is the cluster up? `pvcctl local up` starts a local one; --server or "
                "PVC_SERVER point elsewhere)"
            ) from None
        if response.status_code >= 400:
            raise _error_for(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"the API answered {method} {path} with non-JSON content") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})


def _error_for(response: httpx.Response) -> ServerError | InputError:
    try:
        body = response.json()
        message = body.get("message") or response.reason_phrase
        reason = body.get("reason") or ""
    except ValueError:
        message, reason = response.text.strip()[:200] or response.reason_phrase, ""
    text = f"{message} ({response.status_code}{' ' + reason if reason else ''})"
    # The server judged our input invalid: that is the user's input, exit 2.
    if response.status_code in (400, 413, 422):
        return InputError(text)
    return ServerError(text)
