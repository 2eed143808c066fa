"""The work queue's contract: de-duplicated keys, never one key twice at once, delayed adds."""

from __future__ import annotations

import threading
import time

from controllers.crashloop import CrashLoopPolicy
from controllers.runtime import Backoff, Controller, WorkQueue
from tests.helpers import wait_for


def test_a_key_added_twice_waits_once() -> None:
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["a", "b", None]


def test_a_key_added_while_processing_runs_again_after_done() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert queue.get(0) == "a"
    queue.add("a")
    assert queue.get(0) is None  # not while "a" is still being processed
    queue.done("a")
    assert queue.get(0) == "a"


def test_add_after_delays_the_key() -> None:
    queue = WorkQueue()
    start = time.monotonic()
    queue.add_after("late", 0.2)
    assert queue.get(0.05) is None
    assert queue.get(2.0) == "late"
    assert time.monotonic() - start >= 0.2


def test_backoff_doubles_up_to_the_cap_and_forgets() -> None:
    backoff = Backoff(base=0.5, cap=3.0)
    assert [backoff.next_delay("k") for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.forget("k")
    assert backoff.next_delay("k") == 0.5


def test_crash_loop_delays() -> None:
    policy = CrashLoopPolicy(base=10, cap=300)
    assert [policy.delay(n) for n in range(1, 9)] == [0, 10, 40, 90, 160, 250, 300, 300]


def test_controller_never_runs_one_key_twice_at_once() -> None:
    running: set[str] = set()
    overlaps: list[str] = []
    done = threading.Event()
    calls = 0
    lock = threading.Lock()

    def reconcile(key: str) -> float | None:
        nonlocal calls
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
            calls += 1
        time.sleep(0.01)  # the work under test: hold the key while others are added
        with lock:
            running.discard(key)
            if calls >= 20:
                done.set()
        return None

    controller = Controller("t", reconcile, workers=4)
    controller.start()
    try:
        for _ in range(200):
            controller.enqueue("same")
            controller.enqueue("other")
            time.sleep(0.001)
        wait_for(done.is_set, 10, "20 reconciles")
    finally:
        controller.stop()
    assert overlaps == []


def test_a_failing_reconcile_is_retried_with_backoff() -> None:
    attempts: list[float] = []

    def reconcile(key: str) -> float | None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return None

    controller = Controller("t", reconcile, workers=1, backoff=Backoff(base=0.05, cap=1.0))
    controller.start()
    try:
        controller.enqueue("k")
        wait_for(lambda: len(attempts) >= 3, 5, "three attempts")
    finally:
        controller.stop()
    assert attempts[2] - attempts[1] >= attempts[1] - attempts[0] >= 0.05
