"""kazoo's threading handler with a ``select`` that does not make an epoll set per call.

kazoo's connection thread waits in ``handler.select`` before every read and before every
write of a request. Its stock ``select`` (``kazoo.handlers.utils.selector_select``) builds
a ``selectors.DefaultSelector`` each time: on Linux an epoll set, so three extra system
calls (``epoll_create1``, ``epoll_ctl``, ``close``) and their Python around every wait. In
a profile of the scale bench (issue 16) that was 30 to 48 % of the busy CPU of pvcapid, the
primary and the node daemons. ``select.poll`` needs no kernel object: one ``poll`` call
per wait. The answer is the same as kazoo's: readable objects (also on error or hang-up,
so the read sees it) before writable ones, nothing in the third list.
"""

from __future__ import annotations

import math
import select
from collections.abc import Sequence
from typing import Any

from kazoo.handlers.threading import SequentialThreadingHandler

_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT


def _fd(obj: Any) -> int:
    if isinstance(obj, int):
        fd = obj
    else:
        try:
            fd = int(obj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {obj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def poll_select(
    rlist: Sequence[Any],
    wlist: Sequence[Any],
    xlist: Sequence[Any],
    timeout: float | None = None,
) -> tuple[list[Any], list[Any], list[Any]]:
    """``select.select``'s contract (as kazoo's ``selector_select`` keeps it) over ``poll``:
    the objects of ``rlist`` ready to read and of ``wlist`` ready to write, within
    ``timeout`` seconds (None: wait until one is)."""
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative")
    masks: dict[int, int] = {}
    objects: dict[int, list[Any]] = {}
    for objs, mask in ((rlist, _READ), (wlist, _WRITE)):
        for obj in objs:
            fd = _fd(obj)
            masks[fd] = masks.get(fd, 0) | mask
            objects.setdefault(fd, []).append(obj)
    poller = select.poll()
    for fd, mask in masks.items():
        poller.register(fd, mask)
    wait = None if timeout is None else math.ceil(timeout * 1000)
    readable: list[Any] = []
    writable: list[Any] = []
    for fd, happened in poller.poll(wait):
        # As selectors.PollSelector: anything but POLLOUT (error, hang-up) wakes a reader,
        # anything but POLLIN a writer; kazoo's own select then lists a reader first.
        if masks[fd] & _READ and happened & ~_WRITE:
            readable.extend(objects[fd])
        elif masks[fd] & _WRITE and happened & ~_READ:
            writable.extend(objects[fd])
    return readable, writable, []


class PollHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's SequentialThreadingHandler, waiting with :func:`poll_select`."""

    name = "sequential_threading_poll_handler"

    def select(self, *args: Any, **kwargs: Any) -> tuple[list[Any], list[Any], list[Any]]:
        return poll_select(*args, **kwargs)


__all__ = ["PollHandler", "poll_select"]
