"""The restart back-off for VMs that keep stopping unexpectedly."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CrashLoopPolicy:
    base: float = 10.0
    cap: float = 300.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before start number ``failures + 1``.

        The first unexpected stop is restarted at once (a guest powered off by
        hand under runStrategy Always comes straight back, as in PVC); after
        that base x (n-1)^2: 10, 40, 90, 160, 250, then 300 s.
        """
        if failures <= 1:
            return 0.0
        return min(self.cap, self.base * (failures - 1) ** 2)
