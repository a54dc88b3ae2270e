"""Cooperative bounds on time and work for one check on one file. Low level: parsers import it
without pulling in the plugin layer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class BudgetExceeded(Exception):
    """Raised by `Budget.tick` when a check outruns its time or work limit."""


@dataclass
class Budget:
    """Cooperative bounds on time and work for one check on one file (hostile input)."""

    seconds: float = 60.0
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    def tick(self, what: str = "", item: str | None = None) -> None:
        """`item`: the unit of work that starts here (a tensor's name), for meters that count
        work done (hfguard.weights.progress.ByteMeter); a plain budget only checks the time."""
        if self.remaining() < 0:
            raise BudgetExceeded(f"time budget of {self.seconds:.0f}s exceeded{' ' + what if what else ''}")
