"""Wait for objects to reach a state by list + watch (no polling loop).

List once for the state and its resourceVersion, then follow the watch
stream from there; a 410 (too old) or a stream the server ended re-lists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cli.client import API, ApiClient, Expired
from cli.progress import progress

State = dict[str, dict[str, Any]]

WATCH_SPAN = 300.0
"""The longest one watch stream is asked to last; a longer wait (or one without a deadline:
timeout inf) lists again and watches on."""


def wait_until(
    client: ApiClient,
    plural: str,
    done: Callable[[State], bool],
    timeout: float,
    *,
    name: str | None = None,
    selector: str | None = None,
    on_change: Callable[[State], None] | None = None,
) -> bool:
    """True once ``done(state)``; False at the deadline. ``state`` maps name to object (those
    with the label ``selector``, when given). ``done`` may raise to end the wait at once.
    A ``timeout`` of ``inf`` waits for ever."""
    deadline = time.monotonic() + timeout

    def relevant(obj: dict[str, Any]) -> bool:
        return name is None or obj["metadata"]["name"] == name

    while True:
        listed = client.get(f"{API}/{plural}", labelSelector=selector)
        state: State = {o["metadata"]["name"]: o for o in listed["items"] if relevant(o)}
        version = (listed.get("metadata") or {}).get("resourceVersion")
        if on_change:
            on_change(state)
        if done(state):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            for event in client.watch(plural, version, min(left, WATCH_SPAN), selector):
                obj = event["object"]
                if not relevant(obj):
                    continue
                if event["type"] == "DELETED":
                    state.pop(obj["metadata"]["name"], None)
                else:
                    state[obj["metadata"]["name"]] = obj
                if on_change:
                    on_change(state)
                if done(state):
                    return True
        except Expired:
            pass  # the server cannot resume from there: list again
        if time.monotonic() >= deadline:
            return done(state)


def wait_showing(
    client: ApiClient,
    plural: str,
    what: str,
    done: Callable[[State], bool],
    timeout: float,
    detail: Callable[[], str],
    *,
    name: str | None = None,
) -> bool:
    """``wait_until`` that shows, on a terminal, ``what`` and ``detail()`` after each change."""
    with progress(what) as update:
        return wait_until(
            client, plural, done, timeout, name=name, on_change=lambda _s: update(detail())
        )
