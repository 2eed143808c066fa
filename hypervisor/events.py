"""libvirt's event loop: one thread per process that delivers domain lifecycle events.

libvirt requires the loop implementation to be registered before a connection
that should carry events is opened, so drivers call ``ensure_event_loop`` first.
"""

from __future__ import annotations

import logging
import threading

import libvirt

log = logging.getLogger(__name__)

_lock = threading.Lock()
_started = False


def ensure_event_loop() -> None:
    global _started
    with _lock:
        if _started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run, name="libvirt-events", daemon=True).start()
        _started = True


def _run() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as exc:  # keep the loop: a dead loop loses every event
            log.warning("event=libvirt_event_loop_error error=%s", exc)
