"""What the red team (bench/redteam_weights.py) found, rebuilt the way it builds its cases
(testing/redteam.py): a tiny OPT trained for 60 AdamW steps on a synthetic language."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from hfguard.engine import scan
from hfguard.findings import Report, Severity, Verdict
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff
from hfguard.weights.traps import UP_PROJ
from testing import redteam as rt

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def opt_base(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)   # the same weights on any machine
    return rt.build("opt", 7, tmp_path_factory.mktemp("opt"), steps=60)


def report_of(path: Path, base: Path | None = None) -> Report:
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    return scan(local_target([str(path)]), Policy(tiers=("weights",)), checks,
                options={"base": str(base)} if base else {}, budget_seconds=120)


def verdict(path: Path, base: Path | None = None) -> tuple[Verdict, dict[str, list[str]]]:
    """The verdict and, per rule above info, the tensors it names."""
    report = report_of(path, base)
    rules: dict[str, list[str]] = {}
    for f in report.all_findings():
        if f.severity > Severity.INFO:
            rules.setdefault(f.rule, []).append(str(f.location))
    return report.verdict, rules


def key_biases(folder: Path) -> list[np.ndarray]:
    state = rt.state_dict_np(folder)
    return [state[f"model.decoder.layers.{i}.self_attn.k_proj.bias"] for i in range(rt.LAYERS)]


def test_key_bias_noise_of_a_trained_opt_is_no_layer_outlier(opt_base):
    # softmax ignores a shift shared by all keys: k_proj.bias gets no gradient and holds only
    # AdamW's noise, larger in layer 0 than elsewhere (the premise of the test)
    stds = [float(b.std()) for b in key_biases(opt_base)]
    assert stds[0] > 3 * float(np.median(stds[1:]))
    v, rules = verdict(opt_base)
    assert "weights/layer-outlier" not in rules, rules
    assert v is Verdict.PASS


def test_a_key_bias_made_to_matter_is_still_an_outlier(opt_base, tmp_path):
    name = "model.decoder.layers.3.self_attn.k_proj.bias"

    def edit(state: dict[str, np.ndarray]) -> None:
        w = state[name[: -len("bias")] + "weight"]
        scale = float(np.median(np.linalg.norm(w, axis=1)))   # the pre-activation's spread
        rng = np.random.default_rng(5)
        state[name] = (0.1 * scale * rng.standard_normal(state[name].shape)).astype(np.float32)

    v, rules = verdict(rt.transformed(opt_base, tmp_path / "kbias", edit))
    assert name in rules.get("weights/layer-outlier", []), rules
    assert v in (Verdict.FLAG, Verdict.BLOCK)


def test_a_live_bias_shrunk_below_resolution_is_still_an_outlier(opt_base, tmp_path):
    # below resolution exempts a role that is noise throughout, not a bias silenced among live ones
    name = "model.decoder.layers.3.self_attn.q_proj.bias"

    def shrink(state: dict[str, np.ndarray]) -> None:
        state[name] = (state[name] * 1e-4).astype(np.float32)

    v, rules = verdict(rt.transformed(opt_base, tmp_path / "qbias", shrink))
    assert name in rules.get("weights/layer-outlier", []), rules
    assert v in (Verdict.FLAG, Verdict.BLOCK)


def test_a_live_bias_a_tenth_of_its_siblings_is_no_outlier(opt_base, tmp_path):
    # zero-initialised biases grow with the gradient their layer gets: a clean 200-step OPT (red
    # team seed 53) had layer 0's out_proj.bias at 1/3.3 of its siblings' spread (z -7.2). Even at
    # a tenth, still above resolution, it is not silenced; grown 10x it is still judged, and the
    # one shrunk below resolution too (test above)
    name = "model.decoder.layers.3.self_attn.out_proj.bias"

    def scaled(factor: float) -> Path:
        def edit(state: dict[str, np.ndarray]) -> None:
            state[name] = (state[name] * factor).astype(np.float32)
        return rt.transformed(opt_base, tmp_path / f"x{factor}", edit)

    v, rules = verdict(scaled(0.1))
    assert "weights/layer-outlier" not in rules, rules
    assert v is Verdict.PASS
    assert name in verdict(scaled(10.0))[1].get("weights/layer-outlier", [])


@pytest.mark.parametrize("name", [
    "model.decoder.layers.2.fc1.weight",                        # OPT, BART, Whisper, M2M
    "text_model.encoder.layers.0.mlp.fc1.weight",               # CLIP
    "encoder.layers.1.feed_forward.intermediate_dense.weight",  # wav2vec2 / HuBERT
    "decoder.layers.1.mlp.linear_fc1.weight",                   # Megatron
])
def test_up_projections_of_other_families_are_searched_for_traps(name):
    assert UP_PROJ.search(name)


@pytest.mark.parametrize("name", ["model.decoder.layers.2.fc2.weight", "layers.0.self_attn.out_proj.weight"])
def test_down_and_attention_projections_are_not_up_projections(name):
    assert not UP_PROJ.search(name)


def test_jittered_traps_in_an_opt_fc1_are_found_without_a_base(opt_base, tmp_path):
    _, clean = verdict(opt_base)
    assert not {"weights/near-duplicate-neurons", "weights/trap-neurons"} & set(clean)
    trapped = rt.transformed(opt_base, tmp_path / "traps", lambda s: rt.traps(s, seed=7, jitter=1e-3))
    v, rules = verdict(trapped)
    named = rules.get("weights/near-duplicate-neurons", []) + rules.get("weights/trap-neurons", [])
    assert "model.decoder.layers.2.fc1.weight" in named, rules
    assert v in (Verdict.FLAG, Verdict.BLOCK)


def test_a_lora_on_attention_and_mlp_is_judged_role_by_role(opt_base, tmp_path):
    # a merged rank-8 LoRA in every block moves v_proj / out_proj several times more than k_proj
    # or the MLP: measured against every changed matrix the most moved out_proj stood out
    both = re.compile(f"{rt.ATTN.pattern}|{rt.MLP.pattern}")
    merged, _ = rt.lora("opt", opt_base, tmp_path / "lora", 8, both, seed=14, alpha=16, lr=2e-3)
    v, rules = verdict(merged, opt_base)
    assert "weights/outlier-edit" not in rules, rules
    assert v is Verdict.PASS


@pytest.fixture(scope="module")
def neox_base(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return rt.build("gpt_neox", 7, tmp_path_factory.mktemp("neox"), steps=60)


def test_an_mlp_lora_that_dominates_its_layers_holds_no_near_duplicate_neurons(neox_base, tmp_path):
    # rank 2, alpha 16, lr 2e-3: the merged update outweighs the up-projection itself, so every
    # neuron leans on the same two directions and plain cosines found cliques of 10-36 neurons in
    # three layers here (112-157 in the red team's)
    merged, rel = rt.lora("gpt_neox", neox_base, tmp_path / "lora", 2, rt.MLP, seed=10, alpha=16, lr=2e-3)
    assert rel > 1.0, rel
    for base in (None, neox_base):
        v, rules = verdict(merged, base)
        assert not {"weights/near-duplicate-neurons", "weights/trap-neurons"} & set(rules), rules
        assert v is Verdict.PASS, rules
    trapped = rt.transformed(merged, tmp_path / "traps", lambda s: rt.traps(s, seed=7, jitter=1e-3))
    v, rules = verdict(trapped)
    named = rules.get("weights/near-duplicate-neurons", []) + rules.get("weights/trap-neurons", [])
    assert "gpt_neox.layers.2.mlp.dense_h_to_4h.weight" in named, rules


def test_a_head_the_bin_names_lm_head_is_the_base_head_embed_out(neox_base, tmp_path):
    # transformers 5 writes GPT-NeoX's head as embed_out.weight through save_pretrained (and so
    # in the base) and as lm_head.weight in the state dict a torch.save writes
    import torch

    clean = rt.state_dict_np(neox_base)
    bad = {k: v.copy() for k, v in clean.items()}
    # eight vocabulary rows of the head flipped, keyed as the model in memory names it (the
    # loader of save_model_state skips names it does not know)
    bad["lm_head.weight"] = bad.pop("embed_out.weight")
    bad["lm_head.weight"][:8] *= -1.0
    for name, head in (("clean", clean), ("edited", bad)):
        rt.save_model_state("gpt_neox", neox_base, clean, tmp_path / name, safe=True)
        rt.save_model_state("gpt_neox", neox_base, head, tmp_path / name, safe=False, dtype=torch.float16)
    report = report_of(tmp_path / "clean", neox_base)
    found = {f.rule: f for f in report.all_findings()}
    assert found["weights/base-tensors-renamed"].evidence["tensors"] == [
        {"base": "embed_out.weight", "model": "lm_head.weight"}]
    assert report.verdict is Verdict.PASS, verdict(tmp_path / "clean", neox_base)
    report = report_of(tmp_path / "edited")   # no base: the copies vouch for each other, or do not
    [hit] = [f for f in report.all_findings() if f.rule == "weights/inconsistent-copies"]
    assert [(t["tensor"], t.get("stored_as")) for t in hit.evidence["tensors"]] == [
        ("embed_out.weight", "lm_head.weight")]


def test_a_rank_one_edit_inside_a_fine_tune_still_stands_out_of_its_role(opt_base, tmp_path):
    tuned = rt.finetune("opt", opt_base, tmp_path / "ft", steps=10, seed=8)
    target = "model.decoder.layers.3.fc2.weight"

    def rank_one(state: dict[str, np.ndarray]) -> None:
        w = state[target]
        rng = np.random.default_rng(9)
        u, x = rng.standard_normal(w.shape[0]), rng.standard_normal(w.shape[1])
        d = np.outer(u, x)
        state[target] = (w + 0.5 * np.linalg.norm(w) * d / np.linalg.norm(d)).astype(np.float32)

    v, rules = verdict(rt.transformed(tuned, tmp_path / "ft-rome", rank_one), opt_base)
    assert target in rules.get("weights/outlier-edit", []), rules
    assert v in (Verdict.FLAG, Verdict.BLOCK)


def test_memit_inside_a_fine_tune_stands_out_densely(opt_base, tmp_path):
    """MEMIT's closed form over three consecutive MLP layers (six facts: a rank-6 change, not
    narrow), published as a fine-tune: each edited matrix is judged against the other changed
    matrices and against its role without itself (the median of its role, taken with two more
    MEMIT layers among six, was the edit's own), by the dense cut. Before: PASS."""
    tuned = rt.finetune("opt", opt_base, tmp_path / "ft", steps=20, seed=8)
    v, rules = verdict(tuned, opt_base)
    assert v is Verdict.PASS, rules
    edited, _ = rt.memit("opt", tuned, tmp_path / "ft-memit", [1, 2, 3], 6, seed=7)
    report = report_of(edited, opt_base)
    hits = [f for f in report.all_findings() if f.rule == "weights/outlier-edit"]
    assert {f.location for f in hits} == {f"model.decoder.layers.{i}.fc2.weight" for i in (1, 2, 3)}
    assert all(f.evidence["cut"] == "dense" and f.evidence["shape_of_change"] is None
               and f.evidence["ratio_to_role"] > 5 for f in hits)
    assert report.verdict is Verdict.FLAG


@pytest.fixture(scope="module")
def roberta_base(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return rt.build("roberta", 31, tmp_path_factory.mktemp("roberta"), steps=200)


@pytest.mark.slow
def test_a_fine_tuned_mlm_head_transform_is_no_outlier_edit(roberta_base, tmp_path):
    # fine-tunes move the head most: lm_head.dense 0.37 relative, low-rank, 3.3 sigmas above the
    # blocks' matrices, with no sibling to compare it with
    tuned = rt.finetune("roberta", roberta_base, tmp_path / "ft", steps=150, seed=33)
    v, rules = verdict(tuned, roberta_base)
    assert "weights/outlier-edit" not in rules, rules
    assert v is Verdict.PASS


@pytest.mark.slow
def test_an_attention_lora_is_no_outlier_edit_where_its_role_changed_narrowly(roberta_base, tmp_path):
    # rank 8 on attention: layer 0's query moved 2x the other blocks', low-rank like 4 of the 5
    merged, _ = rt.lora("roberta", roberta_base, tmp_path / "lora", 8, rt.ATTN, seed=39)
    v, rules = verdict(merged, roberta_base)
    assert "weights/outlier-edit" not in rules, rules
    assert v is Verdict.PASS
