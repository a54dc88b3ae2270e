"""Progress with ETA for the weights tier, and a budget that says what a large model needs.

A pass over a checkpoint (statistics, base diff, copy comparison) reads tensors that may lie in
dozens of shards. The meter is the pass's Budget: the passes `tick("<doing> <tensor>", item=<tensor>)`
before each tensor, so the meter counts a tensor's bytes the first time its name is ticked, reports
bytes done / total, rate, ETA and the shard being read on the progress line (every few seconds),
and stops the pass as soon as the measured rate says it cannot finish within the budget, naming
the `--budget` that would do (as behavior.progress.Meter does for probes).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hfguard.budget import Budget, BudgetExceeded
from hfguard.report.escape import safe
from hfguard.weights.tensors import ITEM_BITS, Checkpoint, TensorMeta

MEASURE_S = 1.0   # seconds of reading before the rate is trusted for a budget projection


def tensor_bytes(meta: TensorMeta) -> int:
    """Bytes the tensor's values occupy (a torch storage may be larger, or shared by several)."""
    return meta.numel * ITEM_BITS.get(meta.dtype, 0) // 8


def weight_bytes(ckpts: Iterable[Checkpoint]) -> int:
    """The float tensor bytes of some checkpoints: what a pass over them reads."""
    return sum(tensor_bytes(m) for c in ckpts for m in c.tensors.values() if m.is_float)


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def duration(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 \
        else f"{s}s"


@dataclass(frozen=True)
class Work:
    """One item of a pass: its bytes and the file (shard) it is read from."""

    nbytes: int
    file: str


class ByteMeter(Budget):
    """A Budget that measures a pass in bytes. Thread-safe: analysis workers tick concurrently."""

    def __init__(self, label: str, seconds: float, work: dict[str, Work],
                 progress: Callable[[str], None] = lambda msg: None, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, checks: int = 1, streamed: bool = False):
        # `checks`: the pass does the work of that many checks (the statistics and the base diff
        # in one read), each allowed `seconds`; `streamed`: its shards are downloaded as it goes
        super().__init__(seconds=seconds * checks, started=clock())
        self.streamed = streamed
        self._shard_starts: list[tuple[float, int]] = []   # (when, bytes started before) per file's start
        self._files_started: set[str] = set()
        self.checks = checks
        self.label, self.work, self.progress, self.every, self.clock = label, work, progress, every, clock
        self.total = sum(w.nbytes for w in work.values())
        self.shards = sorted({w.file for w in work.values()})
        self.done = 0          # bytes of the items finished (those started before the latest one)
        self.started_bytes = 0
        self.file: str | None = None
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._last = self.started
        self._t0: float | None = None   # when the first item was started: the rate is measured from there

    def remaining(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def tick(self, what: str = "", item: str | None = None) -> None:
        """`item`: the work item (tensor name) that starts here; a tick without one only checks
        the budget (the message is for people, never parsed)."""
        with self._lock:
            now = self.clock()
            w = self.work.get(item) if item is not None else None
            if w is not None and item is not None and item not in self._seen:
                self._seen.add(item)
                if self._t0 is None:
                    self._t0 = now
                self.done, self.started_bytes = self.started_bytes, self.started_bytes + w.nbytes
                if w.file != self.file:
                    if w.file not in self._files_started:
                        self._files_started.add(w.file)
                        self._shard_starts.append((now, self.done))
                    self.file = w.file
                    self._last = now - self.every   # a new shard: say so now
                if now - self._last >= self.every:
                    self._last = now
                    self.progress(self.line())
            self._check(now, what)

    def rate(self) -> float | None:
        """Bytes per second since the first item was started; None before one was finished.
        Streamed: over whole shards, from the second one's start to the latest one's; None before
        two have started after the first. A shard's first read waits for its download and its items
        then go fast, so a rate over part of a shard says nothing (the first shard's download, not
        overlapped with anything, made a 100 GB model look 15x slower than it was)."""
        if self.streamed:
            if len(self._shard_starts) < 3:
                return None
            (t1, b1), (tn, bn) = self._shard_starts[1], self._shard_starts[-1]
            return (bn - b1) / (tn - t1) if tn > t1 and bn > b1 else None
        if self._t0 is None:
            return None
        elapsed = self.clock() - self._t0
        return self.done / elapsed if elapsed > 0 and self.done else None

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [f"{safe(self.label)}: {gb(self.done)} of {gb(self.total)} ({pct:.0f}%)"]
        if self.file is not None and len(self.shards) > 1:
            shard = self.file.rsplit("/", 1)[-1]   # the label names the checkpoint (its folder)
            parts.append(f"shard {self.shards.index(self.file) + 1}/{len(self.shards)} {safe(shard)}")
        rate = self.rate()
        if rate:
            parts.append(f"{gb(rate)}/s, ETA {duration((self.total - self.done) / rate)}")
        return ", ".join(parts)

    def finish(self) -> None:
        self.done = self.started_bytes = self.total
        spent = self.clock() - self.started
        rate = f" ({gb(self.total / spent)}/s)" if spent > 0 and len(self.shards) > 1 else ""
        self.progress(f"{self.label}: {gb(self.total)} in {duration(spent)}{rate}")

    def _check(self, now: float, what: str) -> None:
        remaining = self.seconds - (now - self.started)
        rate = self.rate()
        measured = self._t0 is not None and (self.streamed or now - self._t0 >= MEASURE_S)
        left = (self.total - self.done) / rate if rate else None
        if remaining >= 0 and (not measured or left is None or left <= remaining):
            return
        spent = now - self.started
        if left is None:   # spent before anything could be measured: the plain budget message
            raise BudgetExceeded(f"time budget of {self.seconds:.0f}s exceeded{' ' + what if what else ''}")
        need = 10 * math.ceil(1.25 * (spent + left) / self.checks / 10)
        allowed = _s(self.seconds) + (f" ({self.checks} checks' budgets)" if self.checks > 1 else "")
        raise BudgetExceeded(
            f"{self.label}: {gb(self.done)} of {gb(self.total)} read in {_s(spent)} at {gb(rate or 0)}/s; "
            f"the remaining {gb(self.total - self.done)} need ~{_s(left)} more, beyond the "
            f"{allowed} budget: this model needs at least --budget {need}")


def _s(x: float) -> str:
    return f"{x:.1f}s" if x < 10 else f"{x:.0f}s"
