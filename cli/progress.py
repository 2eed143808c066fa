"""A spinner for long waits, only on a terminal: scripts and pipes see plain lines."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress(what: str) -> Iterator[Callable[[str], None]]:
    """Yields ``update(detail)``; on a TTY shows what/detail/elapsed, elsewhere nothing."""
    if not sys.stdout.isatty():
        yield lambda _detail: None
        return
    from rich.console import Console  # imported only when there is a terminal to draw on

    started = time.monotonic()
    console = Console(stderr=True)
    with console.status(what) as status:

        def update(detail: str) -> None:
            status.update(f"{what}: {detail} ({time.monotonic() - started:.0f}s)")

        yield update
