"""What the two weights checks share within one scan, so that each remote shard is fetched once.

weights.anomalies reads every tensor of the model (the statistics pass). When weights.base_diff
runs after it in the same scan and a base resolves, each tensor that pass reads is also diffed
against its base tensor (diff.TensorDiffer.feed), and the results wait here for
weights.base_diff to judge: one pass through the model's shards, and through the base's, instead
of one per check. Both checks see the same checkpoints (shard headers range-read once) through the
same two shard streams (the model's and the base's, each at most its window of shards on disk),
closed when the scan ends (ScanContext.resources). A check that runs without the other (or before
it) has a session of its own, closed when the check ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from hfguard.checks import ScanContext
from hfguard.target import Target
from hfguard.weights.diff import DiffBase, DiffResult, resolve_base
from hfguard.weights.shards import model_checkpoints
from hfguard.weights.stream import ShardStream
from hfguard.weights.tensors import Checkpoint, WeightsFormatError

SHARED = ("weights.anomalies", "weights.base_diff")   # in this order: the first diffs on its way
_KEY = "weights.session"


class WeightsSession:
    def __init__(self, progress: Callable[[str], None], diff_on_the_way: bool) -> None:
        self.model_stream = ShardStream("weights: model", progress)
        self.base_stream = ShardStream("weights: base", progress)
        self.diff_on_the_way = diff_on_the_way
        # checkpoint name -> its diff against the base, made by the statistics pass (or why not)
        self.diffs: dict[str, DiffResult | WeightsFormatError] = {}
        self.aborted: Exception | None = None   # the statistics pass gave up before diffing them all
        self._model: tuple[list[Checkpoint], list[tuple[str, str]]] | None = None
        self._base: DiffBase | None = None

    def __enter__(self) -> WeightsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.model_stream.close()
        self.base_stream.close()

    def checkpoints(self, target: Target) -> tuple[list[Checkpoint], list[tuple[str, str]]]:
        """The model's checkpoints and unreadable files (model_checkpoints), read once."""
        if self._model is None:
            self._model = model_checkpoints(target, self.model_stream)
        return self._model

    def base(self, target: Target, ctx: ScanContext) -> DiffBase:
        """The base (diff.resolve_base), resolved once; a failure is not kept (the next caller
        meets it again, so the check that reports it is weights.base_diff)."""
        if self._base is None:
            self._base = resolve_base(target, ctx, self.base_stream)
        return self._base


@contextlib.contextmanager
def weights_session(ctx: ScanContext) -> Iterator[WeightsSession]:
    """The scan's session when both weights checks run in it, in SHARED order (closed when the
    scan ends), else one for the calling check alone."""
    ids = list(ctx.checks)
    if not all(c in ids for c in SHARED) or ids.index(SHARED[0]) > ids.index(SHARED[1]):
        with WeightsSession(ctx.progress, diff_on_the_way=False) as own:
            yield own
        return
    session: Any = ctx.memo.get(_KEY)
    if session is None:
        session = ctx.memo[_KEY] = ctx.resources.enter_context(WeightsSession(ctx.progress, True))
    yield session
