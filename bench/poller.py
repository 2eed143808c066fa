"""A poller of GET /api/v1/vms that records when each VM was first listed Running: for
benchmarks that watch VMs through the API only (reconcile_isolation.py). apply_latency.py
times with a ZooKeeper watch instead (chain_floor.StatusWatch)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

POLL_INTERVAL_S = 0.020


def is_running(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    return bool(status.get("phase") == "Running")


@dataclass
class Poller:
    """Polls GET /api/v1/vms every `interval` seconds in one thread and records, per
    watched VM, the first time.monotonic() at which a list response showed it Running.

    The time recorded is when that response arrived, so it is late by at most one
    interval plus one list round trip: that bounds the resolution. The send time of
    the last list that did not yet show the VM Running is kept as a lower bound."""

    client: httpx.Client
    interval: float = POLL_INTERVAL_S
    running_at: dict[str, float] = field(default_factory=dict)
    not_running_sent: dict[str, float] = field(default_factory=dict)
    """Per VM, when the last list that did not show it Running was sent: a lower bound."""
    last_phase: dict[str, str] = field(default_factory=dict)
    list_latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _watched: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, names: Sequence[str]) -> None:
        with self._lock:
            self._watched.update(names)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="running-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def pending(self) -> set[str]:
        with self._lock:
            return self._watched - self.running_at.keys()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            sent = time.monotonic()
            ok = False
            try:
                response = self.client.get("/api/v1/vms")
                response.raise_for_status()
                items: list[dict[str, Any]] = response.json()["items"]
                ok = True
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                items = []
            received = time.monotonic()
            self.list_latencies.append(received - sent)
            with self._lock:
                seen_running: set[str] = set()
                for item in items:
                    name = (item.get("metadata") or {}).get("name")
                    if name not in self._watched:
                        continue
                    self.last_phase[name] = str((item.get("status") or {}).get("phase"))
                    if is_running(item):
                        seen_running.add(name)
                        self.running_at.setdefault(name, received)
                if ok:
                    # Not Running in this list's snapshot, taken after `sent`.
                    for name in self._watched - seen_running - self.running_at.keys():
                        self.not_running_sent[name] = sent
            next_tick += self.interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # a slow list: do not try to catch up with a burst
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)
