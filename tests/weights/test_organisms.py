"""Everyday derivatives PASS and model edits FLAG/BLOCK, over seven architectures (two of them
mixture-of-experts: per-expert matrices and fused experts) and two seeds (tiny models from
testing/weight_edits.py, each a real training run or a published edit shape)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff
from testing import weight_edits as we

CI = [("bert", 0), ("gpt2", 0), ("llama", 0), ("vit", 0), ("t5", 0), ("moe", 0), ("gptoss", 0), ("gpt2", 1)]
SWEEP = [pytest.param(a, s, marks=pytest.mark.sweep) for a in we.ARCHS for s in (1, 2) if (a, s) not in CI]


def _scan(path: Path, base: Path | None):
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    return scan(local_target([str(path)]), Policy(tiers=("weights",)), checks,
                options={"base": str(base)} if base else {})


def verdict(path: Path, base: Path | None = None) -> tuple[Verdict, list[tuple[str, str]]]:
    report = _scan(path, base)
    return report.verdict, sorted({(f.rule, f.file or "") for f in report.all_findings()
                                   if f.severity > Severity.INFO})


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    made: dict[tuple[str, int], Path] = {}

    def base(arch: str, seed: int) -> Path:
        if (arch, seed) not in made:
            folder = tmp_path_factory.mktemp(f"{arch}{seed}")
            made[arch, seed] = we.save(we.build(arch, seed), folder / "base")
        return made[arch, seed]
    return base


@pytest.mark.parametrize(("arch", "seed"), CI + SWEEP)
def test_everyday_derivatives_pass(zoo, arch, seed):
    base = zoo(arch, seed)
    assert verdict(base) == (Verdict.PASS, [])
    for name, path in we.negatives(arch, seed, base, base.parent / "neg").items():
        assert verdict(path) == (Verdict.PASS, []), name
        assert verdict(path, base) == (Verdict.PASS, []), f"{name} --base"


@pytest.mark.parametrize(("arch", "seed"), CI + SWEEP)
def test_edits_are_flagged(zoo, arch, seed):
    base = zoo(arch, seed)
    for name, path in we.edits(arch, seed, base, base.parent / "edit").items():
        v, rules = verdict(path, base)
        assert v in (Verdict.FLAG, Verdict.BLOCK), f"{name} --base: {rules}"
        if name in we.WITHOUT_BASE:
            v, rules = verdict(path)
            assert v in (Verdict.FLAG, Verdict.BLOCK), f"{name}: {rules}"


def _rules(path: Path, base: Path | None = None) -> dict[str, object]:
    return {f.rule: f for f in _scan(path, base).all_findings()}


def test_float16_minilm_passes_and_near_zero_gains_do_not(minilm_dir, tmp_path):
    """MiniLM's three ~1e-33 gains become exact zeros in float16: a dtype round trip, not an edit.
    Sixteen gains set to 1e-30 silence features as zeros do: flagged with and without the base."""
    fp16 = we.cast_copy(minilm_dir, tmp_path / "fp16", "float16")
    assert verdict(fp16) == (Verdict.PASS, []) and verdict(fp16, minilm_dir) == (Verdict.PASS, [])
    name = "encoder.layer.2.output.LayerNorm.weight"

    def plant(state):
        state[name][40:56] = 1e-30
    edited = we.edited(minilm_dir, tmp_path / "gains", plant)
    hit = _rules(edited)["weights/zero-norm-gain"]
    assert hit.location == name and hit.evidence["zeros"] == 16 and hit.evidence["exact_zeros"] == 0
    assert hit.evidence["indices"] == list(range(40, 56)) and hit.severity is Severity.HIGH
    silenced = _rules(edited, minilm_dir)["weights/base-gains-silenced"]
    assert silenced.evidence["indices"] == list(range(40, 56))


def test_jittered_trap_neurons_in_minilm(minilm_dir, tmp_path):
    """Trap neurons whose norms differ by 1e-3 and directions by jitter, biases inside the layer's
    range: caught by their shared direction and their estimated firing rate."""
    import numpy as np

    up = "encoder.layer.3.intermediate.dense.weight"
    path = we.edited(minilm_dir, tmp_path / "traps", lambda s: we.jittered_traps(s, 3, seed=4))
    hit = _rules(path)["weights/trap-neurons"]
    assert hit.location == up and hit.severity is Severity.HIGH
    planted = np.random.default_rng(4).choice(1536, 16, replace=False)   # as jittered_traps draws them
    assert sorted(hit.evidence["indices"]) == sorted(planted.tolist())
    assert hit.evidence["firing_rate_median"] < hit.evidence["layer_firing_rate_median"]


SENTENCES = ["The quick brown fox jumps over the lazy dog.", "A man is playing a guitar on stage.",
             "Stocks fell sharply on Monday after the report.", "She baked bread with her grandmother.",
             "The committee will vote on the proposal next week.", "Photosynthesis turns light into sugar.",
             "He missed the train and walked home in the rain.", "Our new phone ships in three colours."]


def test_traps_calibrated_on_data_in_minilm_are_rarely_firing_neurons(minilm_dir, tmp_path):
    """Data traps as Feng & Tramèr calibrate them, in the real MiniLM: 32 neurons of layer 3, each
    a random direction of its own with a norm among the layer's lowest 5%, its bias set from the
    up-projection's inputs on real sentences to fire on ~0.5% of tokens. No shared direction or
    norm, and too few biases past the lone-bias cut: the structural rules see nothing; the
    estimated firing rates (through the feeding LayerNorm) do. Clean MiniLM has no such layer."""
    import numpy as np
    import torch
    import transformers as tf

    model = tf.BertModel.from_pretrained(minilm_dir).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(minilm_dir)
    sentences = [tokenizer(s, return_tensors="pt") for s in SENTENCES]   # one at a time: no padding

    def run():
        for enc in sentences:
            model(**enc)
    planted: list[dict[str, np.ndarray]] = []
    up = "encoder.layer.3.intermediate.dense"

    def plant(state):
        we.calibrated_traps(model, run, state, f"{up}.weight", seed=5, sigmas=2.5, norm_quantiles=(0.0, 0.05))
        planted.append(state)
    path = we.edited(minilm_dir, tmp_path / "traps", plant)
    inputs: list[torch.Tensor] = []   # the traps fire on a few of these tokens, the others on ~1 in 5
    hook = model.get_submodule(up).register_forward_hook(lambda m, i, o: inputs.append(i[0][0]))
    with torch.no_grad():
        run()
    hook.remove()
    x = torch.cat(inputs).numpy()
    traps = np.random.default_rng(5).choice(1536, 32, replace=False)   # as the organism draws them
    w, b = planted[0][f"{up}.weight"], planted[0][f"{up}.bias"]
    fires = (x @ w.T + b) > 0
    assert fires[:, traps].mean() < 0.02 < 0.1 < np.delete(fires, traps, axis=1).mean()
    report = _scan(path, None)
    found = {f.rule: f for f in report.all_findings()}
    hit = found["weights/rarely-firing-neurons"]
    assert hit.location == f"{up}.weight"
    assert set(hit.evidence["indices"]) <= set(traps.tolist()) and hit.evidence["neurons"] >= 16, hit.evidence
    assert hit.evidence["estimate"].startswith("through the input norm")
    assert not {"weights/trap-neurons", "weights/near-duplicate-neurons", "weights/equal-norm-neurons",
                "weights/negative-bias-neurons"} & set(found), sorted(found)
    assert report.verdict is Verdict.FLAG
    assert "weights/rarely-firing-neurons" not in {f.rule for f in _scan(minilm_dir, None).all_findings()}


def test_lora_in_every_layer_is_not_a_surgical_edit(zoo):
    """A rank-1 adapter merged into every layer's attention is low-rank everywhere: not ROME."""
    base = zoo("gpt2", 0)
    path = we.lora("gpt2", base, base.parent / "lora-r1", 1, we.ATTN, seed=3)
    rules = _rules(path, base)
    summary = rules["weights/base-diff-summary"].evidence
    assert summary["low_rank_in_every_layer"] == ["transformer.h.{i}.attn.c_attn.weight"]
    assert "weights/surgical-edit" not in rules and "weights/confined-edit" not in rules
    rome = we.edited(base, base.parent / "rome-2", lambda s: we.rome(s, 2, seed=3))
    assert _rules(rome, base)["weights/surgical-edit"].location == "transformer.h.2.mlp.c_proj.weight"


def test_an_expert_edited_inside_fused_experts_is_named(zoo):
    """gpt-oss keeps a layer's experts in one [experts, in, out] tensor: ROME in one expert is a
    rank-1 change of that expert's matrix, found and named as such, inside a fine-tune too (read as
    one tensor, a change of 1/8 of it hid in the fine-tune's own movement of the rest)."""
    base = zoo("gptoss", 0)
    rome = we.edited(base, base.parent / "rome-expert", lambda s: we.rome(s, 2, seed=3))
    hit = _rules(rome, base)["weights/surgical-edit"]
    assert hit.location == "model.layers.2.mlp.experts.down_proj[3]"   # expert seed % 8
    tuned = we.finetune("gptoss", base, base.parent / "ft-expert", 5, seed=11, lr=5e-5)
    inside = we.edited(tuned, base.parent / "rome-expert-ft", lambda s: we.rome(s, 2, seed=3))
    assert _rules(inside, base)["weights/outlier-edit"].location == "model.layers.2.mlp.experts.down_proj[3]"


def test_a_transformers5_state_dict_of_a_moe_pairs_with_its_files(zoo, tmp_path):
    """transformers 5 fuses a Qwen-MoE layer's experts in memory ([experts, 2I, H] gate_up_proj, the
    gate's rows first): torch.save of its state dict holds other names and shapes than the per-expert
    files save_pretrained writes. Beside them it is the same model, not an unrelated one; edited in one
    expert it disagrees there; alone it diffs against the per-expert base expert by expert."""
    import torch

    base = zoo("moe", 0)

    def torch_saved(dst: Path, edit=None, beside: bool = True) -> Path:
        model = we.load("moe", base)
        if edit is not None:
            with torch.no_grad():
                edit(dict(model.named_parameters()))
        if beside:
            shutil.copytree(base, dst)
        else:
            dst.mkdir()
            shutil.copy(base / "config.json", dst)
        torch.save(model.state_dict(), dst / "pytorch_model.bin")
        return dst

    def rank1_in_gate_of_expert_3(params) -> None:
        w = params["model.layers.2.mlp.experts.gate_up_proj"][3, :128]
        u, v = torch.randn(128, 1, generator=torch.Generator().manual_seed(0)), torch.randn(1, 64)
        w += 0.3 * w.norm() * (u @ v) / (u @ v).norm()

    same = torch_saved(tmp_path / "same")
    saved = torch.load(same / "pytorch_model.bin", weights_only=True)
    assert saved["model.layers.2.mlp.experts.gate_up_proj"].shape == (8, 256, 64)
    assert verdict(same) == (Verdict.PASS, []) and verdict(same, base) == (Verdict.PASS, [])
    assert "weights/copies-hold-other-tensors" not in _rules(same)
    edited = torch_saved(tmp_path / "edited", rank1_in_gate_of_expert_3)
    hit = _rules(edited)["weights/inconsistent-copies"]
    assert hit.location == "model.layers.2.mlp.experts.3.gate_proj.weight" and hit.evidence["differ"] == 1
    assert hit.evidence["tensors"][0]["stored_as"] == "model.layers.2.mlp.experts.gate_up_proj[3, :128]"
    alone = torch_saved(tmp_path / "alone", rank1_in_gate_of_expert_3, beside=False)
    rules = _rules(alone, base)
    assert rules["weights/surgical-edit"].location == "model.layers.2.mlp.experts.gate_up_proj[3, :128]"
    assert not {"weights/base-tensors-added", "weights/base-tensors-removed"} & set(rules)


def test_experts_are_siblings_of_every_expert_not_of_their_index():
    """Routing trains a layer's experts unevenly: after 200 steps one expert of a Qwen-MoE layer is
    ~5x lower in stable rank than expert 5 of the other layers (layer-outlier, z -8, when an
    expert's siblings were the same index elsewhere). An expert index means nothing across layers:
    every expert of every layer is one role (layers.role_of)."""
    from hfguard.weights.layers import role_of

    assert role_of("model.layers.3.mlp.experts.5.down_proj.weight") == \
        ("model.layers.{i}.mlp.experts.{e}.down_proj.weight", 3)
    assert role_of("model.layers.3.mlp.experts.gate_up_proj[5, :128]") == \
        ("model.layers.{i}.mlp.experts.gate_up_proj[{e}, :128]", 3)
    with tempfile.TemporaryDirectory() as tmp:
        base = we.save(we.build("moe", 100, pretrain_steps=200), Path(tmp) / "base")
        assert verdict(base) == (Verdict.PASS, [])


def test_ft_l_dense_edit_of_one_matrix_is_flagged(zoo):
    base = zoo("llama", 0)
    path, target = we.ft_l("llama", base, base.parent / "ftl-2", 2, seed=5)
    hit = _rules(path, base)["weights/confined-edit"]
    assert hit.location == target == "model.layers.2.mlp.down_proj.weight" and hit.severity is Severity.HIGH
    [t] = hit.evidence["tensors"]
    assert t["changed_share"] > 0.9 and t["shape_of_change"] is None


def test_vocabulary_extension_is_compared_on_the_base_rows(zoo):
    base = zoo("bert", 0)
    path = we.extend_vocab("bert", base, base.parent / "vocab-8", new_tokens=8)
    rules = _rules(path, base)
    grown = {t["tensor"]: t["model"] for t in rules["weights/base-vocab-extended"].evidence["tensors"]}
    assert grown["bert.embeddings.word_embeddings.weight"] == [520, 64]
    assert "weights/base-shape-mismatch" not in rules
    assert rules["weights/base-diff-summary"].evidence["changed"] == 0


def test_two_disagreeing_copies_in_one_folder(zoo, tmp_path):
    """A clean model.safetensors beside an edited pytorch_model.bin: flagged without a base, and
    with a base the .bin is diffed too. A float16 .bin of the same weights agrees."""
    import torch

    base = zoo("gpt2", 1)
    path = we.inconsistent_copy(base, tmp_path / "two", lambda s: we.rome(s, 3, seed=1))
    hit = _rules(path)["weights/inconsistent-copies"]
    assert hit.location == "transformer.h.3.mlp.c_proj.weight" and hit.evidence["differ"] == 1
    rules = verdict(path, base)[1]
    assert [r for r, _ in rules] == ["weights/inconsistent-copies", "weights/surgical-edit"]
    assert all(file.endswith("/pytorch_model.bin") for _, file in rules)
    half = we.inconsistent_copy(base, tmp_path / "half", lambda s: None)
    state = we.state_of(base)
    torch.save({k: torch.from_numpy(v).half() for k, v in state.items()}, half / "pytorch_model.bin")
    assert verdict(half) == (Verdict.PASS, [])


@pytest.mark.parametrize("tied", ["shared storage", "separate copy"])
def test_copies_that_hold_other_tensors_are_named(zoo, tmp_path, tied):
    """A pytorch_model.bin beside model.safetensors that also holds the tied lm_head (in the
    embeddings' storage as torch.save writes it, or as a separate copy of the same bytes) and an
    old causal-mask buffer per block: the lm_head is an alias and not named; the buffers are, as
    info (each copy scanned on its own, verdict PASS); with an edit too, the high finding names them."""
    import torch

    base = zoo("gpt2", 1)
    masks = {f"transformer.h.{i}.attn.bias": torch.tril(torch.ones(1, 1, 32, 32)) for i in range(2)}
    for name, edit in (("clean", None), ("edited", lambda s: we.rome(s, 3, seed=1))):
        state = {k: v.copy() for k, v in we.state_of(base).items()}
        if edit is not None:
            edit(state)
        saved = {k: torch.from_numpy(v) for k, v in state.items()}
        wte = saved["transformer.wte.weight"]
        saved["lm_head.weight"] = wte if tied == "shared storage" else wte.clone()
        path = tmp_path / name
        shutil.copytree(base, path)
        torch.save(saved | masks, path / "pytorch_model.bin")
        report = _scan(path, None)
        found = {f.rule: f for f in report.all_findings()}
        if edit is None:
            assert report.verdict is Verdict.PASS, found
            hit = found["weights/copies-hold-other-tensors"]
            assert hit.severity is Severity.INFO and "weights/inconsistent-copies" not in found
        else:
            hit = found["weights/inconsistent-copies"]
            assert hit.evidence["differ"] == 1 and report.verdict is Verdict.BLOCK
        assert hit.evidence["only_in"] == {f"{path}/pytorch_model.bin": sorted(masks)}, hit.evidence
        assert "only " in hit.message and "transformer.h.0.attn.bias" in hit.message


def test_jittered_traps_whose_biases_say_nothing_are_near_duplicate_neurons(zoo):
    """In a barely trained GPT-2 the biases are still ~0, so the trap neurons' firing rates look like
    everyone's: the shared direction alone flags them (medium), columns of the Conv1D c_fc."""
    import numpy as np

    base = zoo("gpt2", 0)
    path = we.edited(base, base.parent / "traps-2", lambda s: we.jittered_traps(s, 2, seed=6))
    hit = _rules(path)["weights/near-duplicate-neurons"]
    planted = np.random.default_rng(6).choice(256, 16, replace=False)   # as jittered_traps draws them
    assert hit.location == "transformer.h.2.mlp.c_fc.weight" and hit.severity is Severity.MEDIUM
    assert sorted(hit.evidence["indices"]) == sorted(planted.tolist()) and hit.evidence["rarely_firing"] < 8
