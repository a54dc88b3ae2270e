"""weights.base_diff: surgical edits are flagged, an honest fine-tune is not."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file

from hfguard.checks import ScanContext
from hfguard.cli import main
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.hub.resolve import ModelSpecError, resolve_model
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff
from hfguard.weights.diff import declared_base


def diff(path, **options):
    target = local_target([str(path)])
    ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options=options)
    return {f.rule: f for f in WeightsBaseDiff().check_target(target, ctx)}


def test_rank_one_mlp_edit_is_surgical(gpt2_models):
    rules = diff(gpt2_models["rome"], base=str(gpt2_models["base"]))
    hit = rules["weights/surgical-edit"]
    assert hit.severity is Severity.HIGH and hit.location == "transformer.h.1.mlp.c_proj.weight"
    [t] = hit.evidence["tensors"]
    assert t["shape_of_change"] == "low-rank" and t["top1_energy"] > 0.99
    assert t["relative_change"] == pytest.approx(0.5, rel=1e-3)
    assert rules["weights/base-diff-summary"].evidence["changed"] == 1


def test_honest_finetune_is_not_surgical(gpt2_models):
    rules = diff(gpt2_models["finetune"], base=str(gpt2_models["base"]))
    summary = rules["weights/base-diff-summary"].evidence
    assert summary["changed"] == summary["compared"] > 20 and not summary["confined"]
    assert all(f.severity <= Severity.LOW for f in rules.values()), rules


def test_edited_embedding_rows_are_reported_by_index(tampered, minilm_dir):
    rows = [1037, 2054, 29999]

    def surgery(state):
        w = state["embeddings.word_embeddings.weight"]
        for r in rows:
            w[r] = w[r] * -0.5 + 0.1
    rules = diff(tampered(surgery), base=str(minilm_dir))
    hit = rules["weights/edited-embedding-rows"]
    assert hit.severity is Severity.HIGH and hit.evidence["row_indices"] == rows
    assert rules["weights/surgical-edit"].evidence["tensors"][0]["shape_of_change"] == "row-sparse"


def test_added_removed_and_reshaped_tensors(tampered, minilm_dir):
    def build(state):
        state["backdoor.extra"] = np.ones(4, dtype=np.float32)
        del state["pooler.dense.bias"]
        state["pooler.dense.weight"] = state["pooler.dense.weight"][:10]
    rules = diff(tampered(build), base=str(minilm_dir))
    assert rules["weights/base-tensors-added"].evidence["tensors"] == ["backdoor.extra"]
    assert rules["weights/base-tensors-removed"].evidence["tensors"] == ["pooler.dense.bias"]
    assert rules["weights/base-shape-mismatch"].evidence["tensors"] == [
        {"tensor": "pooler.dense.weight", "base": [384, 384], "model": [10, 384]}]
    assert rules["weights/base-diff-summary"].evidence["changed"] == 0


def test_base_comes_from_the_card_front_matter(gpt2_models, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(gpt2_models["rome"], model)
    (model / "README.md").write_text(f"---\nbase_model: {gpt2_models['base']}\nlicense: mit\n---\n# hi\n")
    assert declared_base(local_target([str(model)])) == str(gpt2_models["base"])
    assert "weights/surgical-edit" in diff(model)


def test_missing_bases_are_findings_not_silence(gpt2_models, monkeypatch):
    assert "weights/no-base" in diff(gpt2_models["rome"])
    with pytest.raises(ModelSpecError, match="neither an existing path"):
        resolve_model("/no/such/dir and spaces")
    rules = diff(gpt2_models["rome"], base="/no/such/dir and spaces")
    assert rules["weights/base-unavailable"].error   # asked for explicitly: ERROR, never PASS


def test_cli_end_to_end_with_base(gpt2_models):
    result = CliRunner().invoke(main, ["scan", str(gpt2_models["rome"]), "--tier", "weights", "--base",
                                       str(gpt2_models["base"]), "--format", "json", "-q"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    assert doc["verdict"] == "BLOCK"
    rules = {f["rule"] for f in doc["findings"]}
    assert {"weights/surgical-edit", "weights/summary", "weights/base-diff-summary"} <= rules
    clean = CliRunner().invoke(main, ["scan", str(gpt2_models["finetune"]), "--tier", "weights", "--base",
                                      str(gpt2_models["base"]), "--format", "json", "-q", "--device", "cpu"])
    assert clean.exit_code == 0 and json.loads(clean.output)["verdict"] == "PASS"


def test_torch_zip_copy_of_the_base_is_unchanged(gpt2_models, tmp_path):
    import torch
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_models["base"])
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    rules = diff(tmp_path / "bin", base=str(gpt2_models["base"]))
    summary = rules["weights/base-diff-summary"].evidence
    assert summary["compared"] > 20 and summary["changed"] == 0


def test_rank_one_edit_hidden_in_a_finetune_stands_out(gpt2_models, tmp_path):
    from safetensors.numpy import save_file

    state = load_file(str(gpt2_models["finetune"] / "model.safetensors"))
    w = state["transformer.h.0.mlp.c_fc.weight"]
    rng = np.random.default_rng(5)
    u, v = rng.standard_normal((w.shape[0], 1)), rng.standard_normal((1, w.shape[1]))
    w += (0.5 * np.linalg.norm(w) * (u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))).astype(np.float32)
    (tmp_path / "m").mkdir()
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    rules = diff(tmp_path / "m", base=str(gpt2_models["base"]))
    hit = rules["weights/outlier-edit"]
    assert hit.location == "transformer.h.0.mlp.c_fc.weight" and hit.severity is Severity.MEDIUM
    assert hit.evidence["shape_of_change"] == "low-rank" and "weights/surgical-edit" not in rules


C_PROJ = "transformer.h.1.mlp.c_proj.weight"
MOVED = "transformer.h.1.mlp.proj_out.weight"   # a name no GPT-2 has: paired by its shape only


def both_checks(path, **options):
    """Verdict and findings by rule of a scan with both weights checks (the statistics pass diffs
    on its way)."""
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    report = scan(local_target([str(path)]), Policy(tiers=("weights",)), checks, options=options)
    return report.verdict, {f.rule: f for f in report.all_findings()}


def renamed_bin(base, folder, dtype=np.float32, edit=None):
    """The base's tensors in a torch.save'd pytorch_model.bin, C_PROJ stored as MOVED (and edited)."""
    import torch

    state = {k: v.astype(dtype) for k, v in load_file(str(base / "model.safetensors")).items()}
    state[MOVED] = state.pop(C_PROJ)
    if edit is not None:
        edit(state[MOVED])
    folder.mkdir()
    shutil.copy(base / "config.json", folder / "config.json")
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, folder / "pytorch_model.bin")
    return folder


def rank_one(w):   # 2% of the tensor's norm in one direction
    rng = np.random.default_rng(3)
    d = np.outer(rng.standard_normal(w.shape[0]), rng.standard_normal(w.shape[1]))
    w += (0.02 * np.linalg.norm(w) * d / np.linalg.norm(d)).astype(w.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_base_tensor_stored_under_another_name_is_no_removed_tensor(gpt2_models, tmp_path, dtype):
    base = gpt2_models["base"]
    every = load_file(base / "model.safetensors")   # all float: all compared, the moved one too
    clean = renamed_bin(base, tmp_path / "clean", dtype)
    verdict, found = both_checks(clean, base=str(base))
    for rules in (found, diff(clean, base=str(base))):   # fed by the statistics pass, and alone
        assert rules["weights/base-tensors-renamed"].evidence["tensors"] == [{"base": C_PROJ, "model": MOVED}]
        assert not {"weights/base-tensors-removed", "weights/base-tensors-added"} & set(rules), rules
        assert rules["weights/base-diff-summary"].evidence["compared"] == len(every)
    assert verdict is Verdict.PASS, found
    # renamed and edited: the values do not confirm the pairing, so the base tensor is missing
    edited = renamed_bin(base, tmp_path / "edited", dtype, rank_one)
    verdict, found = both_checks(edited, base=str(base))
    for rules in (found, diff(edited, base=str(base))):
        assert rules["weights/base-tensors-removed"].evidence["tensors"] == [C_PROJ]
        assert rules["weights/base-tensors-added"].evidence["tensors"] == [MOVED]
        assert "weights/base-tensors-renamed" not in rules
    assert verdict in (Verdict.FLAG, Verdict.BLOCK)


def test_a_copy_that_stores_an_edited_tensor_under_another_name_disagrees(gpt2_models, tmp_path):
    base = gpt2_models["base"]
    for name, edit in (("clean", None), ("edited", rank_one)):
        renamed_bin(base, tmp_path / name, edit=edit)
        shutil.copy(base / "model.safetensors", tmp_path / name / "model.safetensors")
    verdict, rules = both_checks(tmp_path / "clean")   # no base: the copies vouch for each other
    assert verdict is Verdict.PASS and "weights/inconsistent-copies" not in rules, rules
    verdict, rules = both_checks(tmp_path / "edited")
    hit = rules["weights/inconsistent-copies"]
    [t] = hit.evidence["tensors"]
    assert (t["tensor"], t["stored_as"]) == (C_PROJ, MOVED)
    assert t["relative_difference"] == pytest.approx(0.02, rel=0.05)
    assert hit.severity is Severity.HIGH and verdict is Verdict.BLOCK


def test_a_model_saved_with_a_prefix_its_base_lacks_is_diffed_tensor_by_tensor(tampered, minilm_dir):
    # `bert.encoder...` (as a BertFor... head model saves it) against the base's `encoder...`;
    # the up-projections of 2 of the 6 layers edited: a role changed in few layers, judged as such
    up = "encoder.layer.{}.intermediate.dense.weight"

    def prefixed(state):
        for i in (1, 4):
            rank_one(state[up.format(i)])
        for k in list(state):
            state["bert." + k] = state.pop(k)
    rules = diff(tampered(prefixed), base=str(minilm_dir))
    assert not {"weights/base-tensors-removed", "weights/base-tensors-added"} & set(rules), rules
    hit = rules["weights/surgical-edit"]
    assert [t["tensor"] for t in hit.evidence["tensors"]] == ["bert." + up.format(i) for i in (1, 4)]
    floats = [v for v in load_file(str(minilm_dir / "model.safetensors")).values() if v.dtype.kind == "f"]
    assert hit.evidence["compared"] == len(floats)


def test_the_outlier_model_helpers_equal_their_plain_definitions():
    """outlier_scores' grouped arithmetic (a 36k-matrix MoE took 4 minutes with a loop per cell):
    the median without one entry, and Tukey's median polish with repeated cells (experts), equal
    the plain definitions."""
    from hfguard.weights.diff import _median_polish, _median_without

    rng = np.random.default_rng(0)
    for n in (2, 3, 8, 9):
        v = np.round(rng.normal(size=n), 1)   # ties included
        for x in v:
            rest = list(v)
            rest.remove(x)
            assert _median_without(np.sort(v), float(x)) == pytest.approx(float(np.median(rest)))
    roles, blocks = rng.integers(0, 4, 200), rng.integers(0, 6, 200)
    values = rng.normal(size=200)
    role_fx, block_fx = _median_polish(roles, blocks, values)
    cells = list(zip(roles, blocks, values, strict=True))
    want_r, want_b = np.zeros(4), dict.fromkeys(range(6), 0.0)
    for _ in range(4):
        want_r = np.array([np.median([v - want_b[b] for r, b, v in cells if r == k]) for k in range(4)])
        want_b = {k: float(np.median([v - want_r[r] for r, b, v in cells if b == k])) for k in range(6)}
    np.testing.assert_allclose(role_fx, want_r)
    assert block_fx == pytest.approx(want_b)


def test_expert_layouts_pair_and_colliding_keys_fall_back_to_names():
    """Per-expert files and transformers 5's fused halves pair expert by expert (Mixtral's
    block_sparse_moe / w1 / w2 / w3 names too); a checkpoint whose own names would share a key keeps
    its plain names (pairing must not drop one of them)."""
    from hfguard.weights.names import pair_tensors
    from hfguard.weights.tensors import TensorMeta

    def metas(*names):
        return {n: TensorMeta(n, "float32", (4, 4), "f", None, 0, 64) for n in names}
    moe, mlp = "model.layers.0.block_sparse_moe.experts.1.", "model.layers.0.mlp.experts."
    per_expert = metas(moe + "w1.weight", moe + "w3.weight", moe + "w2.weight")
    fused = metas(mlp + "gate_up_proj[1, :4]", mlp + "gate_up_proj[1, 4:]", mlp + "down_proj[1]")
    assert sorted(pair_tensors(per_expert, fused).named) == [
        (moe + "w1.weight", mlp + "gate_up_proj[1, :4]"), (moe + "w2.weight", mlp + "down_proj[1]"),
        (moe + "w3.weight", mlp + "gate_up_proj[1, 4:]")]
    both = metas("model.layers.0.mlp.gate.weight", "model.layers.0.block_sparse_moe.gate.weight")
    assert sorted(pair_tensors(both, both).named) == sorted((n, n) for n in both)
