"""Stage-by-stage progress for behavior probes, and a budget error that says what the run needs.

A probe declares each stage with the number of texts it will run through the model; the meter
reports counts on the progress line and, from the time measured per text so far, stops the probe
as soon as the stage cannot finish within the budget, naming the `--budget` that would do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from hfguard.budget import Budget, BudgetExceeded


class Meter:
    def __init__(self, label: str, budget: Budget, progress: Callable[[str], None], every: float = 2.0):
        self.label, self.budget, self.progress, self.every = label, budget, progress, every
        self.name, self.total, self.done = "setup", 0, 0
        self._t0 = self._last = time.monotonic()
        self._warm: tuple[float, int] | None = None  # (time, texts) after the stage's first batch

    def stage(self, name: str, total: int) -> None:
        self.name, self.total, self.done, self._warm = name, total, 0, None
        self._t0 = self._last = time.monotonic()
        self.progress(f"{self.label}: {name}: {total} texts")
        self.tick()

    def advance(self, n: int) -> None:
        """`n` more texts went through the model."""
        now = time.monotonic()
        self.done += n
        if self._warm is None:  # the first batch carries warm-up costs: measure the rate after it
            self._warm = (now, self.done)
        if now - self._last >= self.every:
            self._last = now
            self.progress(f"{self.label}: {self.name}: {self.done}/{self.total} texts")
        self.tick()

    def _left(self) -> float | None:
        """Projected seconds to finish the stage, None before a rate could be measured."""
        now = time.monotonic()
        if self._warm is not None and self.done > self._warm[1]:
            per_text = (now - self._warm[0]) / (self.done - self._warm[1])
        elif self.done:
            per_text = (now - self._t0) / self.done
        else:
            return None
        return per_text * max(self.total - self.done, 0)

    def tick(self, what: str = "", item: str | None = None) -> None:
        """Stop now when the stage cannot finish within the budget (or the budget is spent)."""
        left, remaining = self._left(), self.budget.remaining()
        if remaining >= 0 and (left is None or left <= remaining):
            return
        spent = self.budget.seconds - remaining
        need = 10 * math.ceil(1.25 * (spent + (left or 0)) / 10)
        more = f"needs ~{left:.0f}s more for {self.total - self.done} texts" if left is not None else "ran"
        raise BudgetExceeded(
            f"{self.label}: {self.name} {more} after {spent:.0f}s of a {self.budget.seconds:.0f}s budget; "
            f"this run needs at least --budget {need}"
        )
