"""`weights/outlier-edit` on diffs built by hand: which block matrices of a dense change stand out
of the rest, and which natural patterns of fine-tunes do not (real models: test_redteam.py)."""

from __future__ import annotations

import numpy as np

from hfguard.weights.check import WeightsBaseDiff
from hfguard.weights.defaults import DIFF_DEFAULTS
from hfguard.weights.diff import DiffResult, TensorDelta, judge

ROLES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.up_proj", "mlp.down_proj")
LAYERS = 6
TH = {**DIFF_DEFAULTS, "min-siblings": 4}


def fine_tune(seed: int = 0, scales: tuple[float, ...] = (0.05, 0.05, 0.15, 0.12, 0.07, 0.07),
              **moved: float) -> dict[str, float]:
    """Relative change per block matrix of a dense fine-tune (each role on a scale of its own,
    layers within ~10% of each other); `moved`: tensor name -> factor on top."""
    rng = np.random.default_rng(seed)
    scale = dict(zip(ROLES, scales, strict=True))
    rels = {f"model.layers.{i}.{r}.weight": scale[r] * float(rng.uniform(0.9, 1.1))
            for i in range(LAYERS) for r in ROLES}
    for name, factor in moved.items():
        rels[name] *= factor
    return rels


def outlier_edits(rels: dict[str, float], narrow: tuple[str, ...] = ()) -> dict[str, dict]:
    """Tensor -> evidence of each `weights/outlier-edit` the diff judge gives these changes."""
    deltas = [TensorDelta(n, rel, 1.0, top1_energy=0.95 if n in narrow else 0.2, topk_energy=0.99,
                          rows_90=40, rows=64, surgical_shape="low-rank" if n in narrow else None)
              for n, rel in rels.items()]
    res = DiffResult(compared=len(deltas) + 20, deltas=deltas, roles={f"model.layers.{{i}}.{r}.weight": LAYERS
                                                                      for r in ROLES})
    return {f.location: f.evidence for f in judge(WeightsBaseDiff(), res, "model.safetensors", "base", TH)
            if f.rule == "weights/outlier-edit"}


def down(i: int) -> str:
    return f"model.layers.{i}.mlp.down_proj.weight"


def test_a_plain_fine_tune_has_no_outlier():
    assert outlier_edits(fine_tune()) == {}


def test_memit_over_half_the_layers_of_a_role_stands_out_densely():
    # three of six down_proj moved 8x: each one's role median is taken without it (two MEMIT
    # layers among the other five still leave a clean median) and against the spread of every
    # matrix around its own role's (one role's own spread would be the edit's)
    hits = outlier_edits(fine_tune(**{down(i): 8.0 for i in (1, 2, 3)}))
    assert set(hits) == {down(1), down(2), down(3)}
    assert all(e["cut"] == "dense" and e["ratio_to_role"] > 6 for e in hits.values())


def test_a_rank_one_edit_stands_out_narrowly():
    # roles move on scales 3x apart: against every changed matrix, an edit must move its matrix
    # several times the fine-tune's movement (ROME's 0.2 over a fine-tune's 0.001-0.05)
    hits = outlier_edits(fine_tune(**{down(2): 10.0}), narrow=(down(2),))
    assert list(hits) == [down(2)] and hits[down(2)]["cut"] == "narrow"


def test_one_layer_of_a_role_moving_2x_is_no_edit():
    # fine-tunes fit role + block effects closely, so a small departure has a large z: layer 0's
    # o_proj of a fine-tuned Qwen2 moved 2.0x what its role and block predict (z 4.6). An edit
    # must also move its matrix outlier-min-ratio (3) times that
    rels = fine_tune(**{"model.layers.0.self_attn.o_proj.weight": 2.0})
    assert outlier_edits(rels) == {}
    assert outlier_edits(rels, narrow=("model.layers.0.self_attn.o_proj.weight",)) == {}
    rels = fine_tune(**{"model.layers.0.self_attn.o_proj.weight": 4.0})
    assert list(outlier_edits(rels)) == ["model.layers.0.self_attn.o_proj.weight"]


def test_a_block_that_moved_more_in_every_role_is_no_edit():
    # the last block of an adapter run moved ~2x in every role (DistilBERT's LoRA: 1.5-2x, all roles
    # on one scale): the block's own excess, not an edit of one of its matrices; an edit of one
    # role of the same block on top still stands out
    last = {f"model.layers.5.{r}.weight": 2.2 for r in ROLES}
    alike = (0.1,) * len(ROLES)
    assert outlier_edits(fine_tune(scales=alike, **last)) == {}
    last[down(5)] *= 10
    assert list(outlier_edits(fine_tune(scales=alike, **last))) == [down(5)]
