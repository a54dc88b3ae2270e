"""weights.base_diff: surgical edits are flagged, an honest fine-tune is not."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from hfguard.checks import ScanContext
from hfguard.cli import main
from hfguard.findings import Severity
from hfguard.hub.resolve import ModelSpecError, resolve_model
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import WeightsBaseDiff
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
    from safetensors.numpy import load_file, save_file

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
