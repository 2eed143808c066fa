"""Runs one reconcile function over a work queue with worker threads and a periodic resync."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from controllers import metrics
from controllers.runtime.workqueue import Backoff, WorkQueue

log = logging.getLogger(__name__)

ReconcileFn = Callable[[str], "float | None"]
"""reconcile(key) -> seconds until it wants to run again, or None.

Raising requeues the key with back-off."""


class Controller:
    def __init__(
        self,
        name: str,
        reconcile: ReconcileFn,
        *,
        workers: int = 4,
        resync_period: float = 30.0,
        list_keys: Callable[[], Iterable[str]] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        self._resync_period = resync_period
        self._list_keys = list_keys
        self.queue = WorkQueue()
        self.backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)

    def queue_depth(self) -> int:
        return len(self.queue)

    def start(self) -> None:
        metrics.SCRAPE_TIME.add_controller(self)
        for i in range(self._workers):
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-worker-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self._list_keys is not None:
            thread = threading.Thread(target=self._resync, name=f"{self.name}-resync", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("event=controller_started controller=%s workers=%d", self.name, self._workers)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.shutdown()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        metrics.SCRAPE_TIME.remove_controller(self)
        log.info("event=controller_stopped controller=%s", self.name)

    def _work(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            started = time.perf_counter()
            try:
                again = self._reconcile(key)
            except Exception as exc:
                metrics.observe_reconcile(self.name, started, failed=True)
                delay = self.backoff.next_delay(key)
                log.warning(
                    "event=reconcile_failed controller=%s key=%s failures=%d retry_in=%.2fs "
                    "error=%r",
                    self.name,
                    key,
                    self.backoff.failures(key),
                    delay,
                    exc,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                self.queue.add_after(key, delay)
            else:
                metrics.observe_reconcile(self.name, started, failed=False)
                self.backoff.forget(key)
                if again is not None:
                    self.queue.add_after(key, again)
            finally:
                self.queue.done(key)

    def _resync(self) -> None:
        assert self._list_keys is not None
        while not self._stop.wait(self._resync_period):
            try:
                keys = list(self._list_keys())
            except Exception as exc:
                log.warning("event=resync_failed controller=%s error=%r", self.name, exc)
                continue
            for key in keys:
                self.queue.add(key)
            log.debug("event=resync controller=%s keys=%d", self.name, len(keys))
