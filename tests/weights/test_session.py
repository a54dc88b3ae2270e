"""With both weights checks in a scan, the statistics pass diffs each tensor against the base on its
way (one read of every shard): what it finds must be what each check finds alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from hfguard.budget import Budget
from hfguard.checks import ScanContext
from hfguard.engine import scan
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.analyze import analyze_checkpoint
from hfguard.weights.check import DEFAULTS, WeightsAnomalies, WeightsBaseDiff
from hfguard.weights.defaults import DIFF_DEFAULTS
from hfguard.weights.diff import TensorDiffer, diff_checkpoints
from hfguard.weights.shards import model_checkpoints
from hfguard.weights.stats import backend_for
from testing import weight_edits as we

TH = {**DEFAULTS, **DIFF_DEFAULTS, "workers": 3}   # several threads feed the diff


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> dict[str, Path]:
    """The sharded GPT-2 with its ROME edit, and more: a vocabulary extension (the embedding grows,
    two of its rows rewritten),
    silenced gains, a dense change, a matrix stored as float16."""
    out = we.sharded_gpt2_with_rome(tmp_path_factory.mktemp("session"))
    state = {k: v.copy() for k, v in out["state"].items()}
    rng = np.random.default_rng(5)
    wte = state["transformer.wte.weight"]
    wte[[3, 7]] *= -0.5   # rewritten rows, compared on the base's part of the grown embedding
    state["transformer.wte.weight"] = np.concatenate([wte, rng.standard_normal((16, wte.shape[1]),
                                                                               dtype=np.float32) * wte.std()])
    state["transformer.h.2.ln_1.weight"][:12] = 0.0
    fc = state["transformer.h.3.mlp.c_fc.weight"]
    fc += 0.05 * fc.std() * rng.standard_normal(fc.shape, dtype=np.float32)
    proj = "transformer.h.1.attn.c_proj.weight"
    state[proj] = state[proj].astype(np.float16)
    out["edited-more"] = we.resave_shards(out["clean"], out["rome"].parent / "more", state)
    return out


def _ckpt(folder: Path):
    [ckpt], _ = model_checkpoints(local_target([str(folder)]))
    return ckpt


@pytest.mark.parametrize("device", ["cpu", "numpy", "torch-cpu"])
def test_the_diff_fed_by_the_statistics_pass_is_the_diff(gpt2, device):
    if device == "torch-cpu":
        pytest.importorskip("torch")   # the device feed's path (pinned batches on CUDA)
    be = backend_for(device)
    ref, tgt = _ckpt(gpt2["base"]), _ckpt(gpt2["edited-more"])
    differ = TensorDiffer(ref, tgt, be, TH)
    analyze_checkpoint(tgt, be, TH, Budget(600), None, differ.feed)
    fed = differ.outcome()
    alone = diff_checkpoints(ref, tgt, be, TH, Budget(600))
    assert fed == alone
    assert {d.name for d in alone.deltas} >= {gpt2["edited"], "transformer.h.3.mlp.c_fc.weight",
                                              "transformer.wte.weight"}
    assert alone.extended and alone.silenced
    # the float16 copy of a matrix is the same matrix (its round trip), on both paths
    assert "transformer.h.1.attn.c_proj.weight" not in {d.name for d in alone.deltas}
    assert alone.rounding_only == 1
    assert alone.dtype_mismatch == ["transformer.h.1.attn.c_proj.weight"]


def _alone(folder: Path, base: Path) -> list[str]:
    """Each check in a context of its own (the statistics pass does not diff)."""
    target = local_target([str(folder)])
    found = []
    for check in (WeightsAnomalies(), WeightsBaseDiff()):
        ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options={"base": str(base)})
        found += list(check.check_target(target, ctx))
    return _comparable(found)


def _comparable(found) -> list[str]:
    out = []
    for f in found:
        d = {k: v for k, v in dataclasses.asdict(f).items() if k != "file_key"}   # set by the engine
        if d["rule"] == "weights/summary":   # timed
            d = {**d, "message": "", "evidence": {k: v for k, v in d["evidence"].items() if k != "seconds"}}
        out.append(json.dumps(d, sort_keys=True, default=str))
    return sorted(out)


def test_a_scan_with_both_checks_finds_what_each_check_finds_alone(gpt2):
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    lines: list[str] = []
    report = scan(local_target([str(gpt2["edited-more"])]), Policy(tiers=("weights",)), checks,
                  options={"base": str(gpt2["base"])}, progress=lines.append)
    assert any("read on the statistics pass" in ln for ln in lines)   # one pass served both checks
    shared = _comparable([f for f in report.all_findings() if f.check.startswith("weights")])
    rules = {json.loads(f)["rule"] for f in shared}
    assert {"weights/base-gains-silenced", "weights/base-vocab-extended", "weights/base-dtype-changed",
            "weights/base-diff-summary"} <= rules
    assert shared == _alone(gpt2["edited-more"], gpt2["base"])
