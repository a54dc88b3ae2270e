"""Weights-tier rules no other test names, fired on the real MiniLM with edits planted here."""

from __future__ import annotations

import numpy as np

from hfguard.checks import ScanContext
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff

UP = "encoder.layer.{}.intermediate.dense.{}"


def _run(check, path, **options):
    target = local_target([str(path)])
    ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options=options)
    return {f.rule: f for f in check.check_target(target, ctx)}


def test_neurons_scaled_to_one_norm_without_trap_biases(tampered):
    def plant(state):   # 16 up-projection rows rescaled to one norm; their biases left alone
        w = state[UP.format(2, "weight")]
        w[:16] *= (1.5 / np.linalg.norm(w[:16], axis=1))[:, None]
    found = _run(WeightsAnomalies(), tampered(plant))
    assert found["weights/equal-norm-neurons"].evidence["indices"] == list(range(16))
    assert "weights/trap-neurons" not in found


def test_neurons_switched_off_by_huge_negative_biases(tampered):
    def plant(state):   # weights untouched, 16 biases pushed far below the rest
        state[UP.format(3, "bias")][100:116] = -50.0
    found = _run(WeightsAnomalies(), tampered(plant))
    assert found["weights/negative-bias-neurons"].evidence["indices"] == list(range(100, 116))


def test_clean_minilm_has_neither(minilm_dir):
    found = _run(WeightsAnomalies(), minilm_dir)
    assert not {"weights/equal-norm-neurons", "weights/negative-bias-neurons"} & set(found)


def test_tensor_dtype_changed_from_the_base(tampered, minilm_dir):
    def cast(state):
        state["pooler.dense.bias"] = state["pooler.dense.bias"].astype(np.float16)
    found = _run(WeightsBaseDiff(), tampered(cast), base=str(minilm_dir))
    assert found["weights/base-dtype-changed"].evidence["tensors"] == ["pooler.dense.bias"]


def test_folder_without_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    found = _run(WeightsAnomalies(), tmp_path)
    assert set(found) == {"weights/no-tensors"} and not found["weights/no-tensors"].error
