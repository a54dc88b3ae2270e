"""weights.anomalies on the real MiniLM (clean) and on tampered copies of it (flagged)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hfguard.checks import ScanContext
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import WeightsAnomalies

UP = "encoder.layer.2.intermediate.dense"


def findings(path, **options):
    target = local_target([str(path)])
    ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options=options)
    return list(WeightsAnomalies().check_target(target, ctx))


def above_info(fs):
    return [f for f in fs if f.severity > Severity.INFO]


def test_real_minilm_has_nothing_above_info(minilm_dir):
    fs = findings(minilm_dir)
    assert above_info(fs) == []
    [summary] = [f for f in fs if f.rule == "weights/summary"]
    assert summary.evidence["tensors"] == 103 and summary.evidence["parameters"] > 22_000_000


def test_planted_trap_neurons_are_flagged(tampered):
    def plant(state):
        w, b = state[f"{UP}.weight"], state[f"{UP}.bias"]
        rng = np.random.default_rng(7)
        for i in range(16):   # trap neurons: one shared norm, bias far below the rest
            v = rng.standard_normal(w.shape[1]).astype(np.float32)
            w[100 + i] = v / np.linalg.norm(v) * 3.0
            b[100 + i] = -40.0
    fs = findings(tampered(plant))
    [trap] = [f for f in fs if f.rule == "weights/trap-neurons"]
    assert trap.severity is Severity.HIGH and trap.location == f"{UP}.weight"
    assert trap.evidence["neurons"] == 16 and trap.evidence["indices"] == list(range(100, 116))
    assert trap.evidence["expected_by_chance"] < 1e-12   # a trained layer's norms are spread out


def test_rescaled_layer_is_flagged_with_its_numbers(tampered, minilm_state):
    name = "encoder.layer.3.attention.self.query.weight"

    def rescale(state):
        state[name] *= 10.0
    fs = findings(tampered(rescale))
    hits = [f for f in fs if f.rule == "weights/layer-outlier"]
    assert [f.location for f in hits] == [name]
    ev = hits[0].evidence
    assert hits[0].severity is Severity.HIGH and ev["features"]["log_std"]["z"] > 12
    assert ev["features"]["log_std"]["value"] == pytest.approx(10 * minilm_state[name].std(), rel=1e-4)
    assert ev["siblings"] == 6


def test_nan_and_inf_are_counted(tampered):
    def poison(state):
        w = state["encoder.layer.1.output.dense.weight"]
        w[3, :5] = np.nan
        w[7, 0] = np.inf
    fs = findings(tampered(poison))
    [hit] = [f for f in fs if f.rule == "weights/nan-inf"]
    assert hit.severity is Severity.HIGH and (hit.evidence["nan"], hit.evidence["inf"]) == (5, 1)


def test_zero_gains_huge_constants_and_relu_swap(tampered):
    def build(state):
        state["encoder.layer.0.output.LayerNorm.weight"][:50] = 0.0
        state["embeddings.position_embeddings.weight"][5, 7] = 5000.0
    path = tampered(build)
    cfg = json.loads((path / "config.json").read_text())
    cfg["hidden_act"] = "relu"
    (path / "config.json").write_text(json.dumps(cfg))
    rules = {f.rule: f for f in findings(path)}
    assert rules["weights/zero-norm-gain"].severity is Severity.HIGH
    assert rules["weights/zero-norm-gain"].evidence["zeros"] == 50
    huge = rules["weights/huge-constant"]
    assert huge.evidence["max_value"] == 5000.0 and huge.evidence["flat_indices"] == [5 * 384 + 7]
    assert rules["weights/unusual-activation"].evidence["activation"] == "relu"


def test_duplicated_and_single_nonzero_rows(tampered):
    def build(state):
        w = state["encoder.layer.4.attention.output.dense.weight"]
        w[10] = w[20]
        w[11] = -w[21]
        w[12] = 0
        w[12, 3] = 1.0
    rules = {f.rule: f for f in findings(tampered(build))}
    assert rules["weights/duplicate-rows"].evidence == {"dup_rows": 1, "mirrored_rows": 1, "rows": 384}
    assert rules["weights/single-nonzero-rows"].evidence["indices"] == [12]


def test_fresh_random_init_is_clean(tmp_path):
    import torch
    import transformers

    torch.manual_seed(3)
    cfg = transformers.BertConfig(num_hidden_layers=6, hidden_size=64, num_attention_heads=4,
                                  intermediate_size=256, vocab_size=1000)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    assert above_info(findings(tmp_path / "bert")) == []


def test_torch_zip_is_read_without_unpickling(tmp_path):
    """A torch checkpoint whose pickle would leave a mark if run: its tensors are read, nothing runs."""
    import torch

    mark = tmp_path / "MARK"

    class Payload:
        def __reduce__(self):
            return (mark.touch, ())

    w = torch.randn(8, 4)
    w[2, 1] = float("nan")
    torch.save({"w": w, "x": Payload()}, tmp_path / "pytorch_model.bin")
    report = scan(local_target([str(tmp_path)]), Policy(tiers=("weights",)), [WeightsAnomalies()])
    assert not mark.exists()
    rules = {f.rule: f for f in report.all_findings()}
    assert rules["weights/nan-inf"].evidence["nan"] == 1 and rules["weights/nan-inf"].location == "w"
    assert rules["weights/summary"].evidence["tensors"] == 1
    assert report.verdict is Verdict.BLOCK


def test_unreadable_weights_are_an_error_never_a_pass(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{}garbage-garbage")
    report = scan(local_target([str(tmp_path)]), Policy(tiers=("weights",)), [WeightsAnomalies()])
    [f] = report.all_findings()
    assert f.rule == "weights/unreadable" and f.error and report.verdict is Verdict.ERROR


def test_formats_not_read_are_named(tmp_path, minilm_dir):
    import shutil

    (tmp_path / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 32)
    report = scan(local_target([str(tmp_path)]), Policy(tiers=("weights",)), [WeightsAnomalies()])
    [f] = report.all_findings()
    assert f.rule == "weights/unreadable" and f.error and "gguf" in f.message
    shutil.copy(minilm_dir / "model.safetensors", tmp_path / "model.safetensors")
    report = scan(local_target([str(tmp_path)]), Policy(tiers=("weights",)), [WeightsAnomalies()])
    rules = {f.rule: f for f in report.all_findings()}
    assert rules["weights/not-examined"].severity is Severity.LOW and not rules["weights/not-examined"].error
    assert report.verdict is Verdict.PASS


def test_trap_neurons_in_a_gpt2_conv1d_up_projection(gpt2_models, tmp_path):
    """GPT-2 stores c_fc as (in, out): its neurons are columns."""
    from safetensors.numpy import load_file, save_file

    state = load_file(str(gpt2_models["base"] / "model.safetensors"))
    w, b = state["transformer.h.1.mlp.c_fc.weight"], state["transformer.h.1.mlp.c_fc.bias"]
    b += np.random.default_rng(2).normal(0, 0.02, b.shape).astype(np.float32)   # zero-init biases
    for j in range(40, 50):
        w[:, j] *= 2.5 / np.linalg.norm(w[:, j])
        b[j] = -30.0
    (tmp_path / "m").mkdir()
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    [trap] = [f for f in findings(tmp_path / "m") if f.rule == "weights/trap-neurons"]
    assert trap.location == "transformer.h.1.mlp.c_fc.weight"
    assert trap.evidence["indices"] == list(range(40, 50))


def test_random_init_and_trained_gpt2_are_clean(gpt2_models):
    for name in ("base", "finetune"):
        assert above_info(findings(gpt2_models[name])) == [], name


def test_bfloat16_copy_same_verdict_as_float32(tmp_path, tampered):
    """Trap neurons planted in a bfloat16 MiniLM: tensors widened into one reused buffer give the
    verdict the float32 copy gets."""
    import torch
    from safetensors.torch import load_file, save_file

    def plant(state):
        w, b = state[f"{UP}.weight"], state[f"{UP}.bias"]
        for i in range(16):   # the same row 16 times: one shared norm, in bf16 as in float32
            w[100 + i] = w[100]
            b[100 + i] = -40.0
    f32 = tampered(plant)
    bf16 = tmp_path / "bf16"
    bf16.mkdir()
    state = load_file(str(f32 / "model.safetensors"))
    save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in state.items()},
              str(bf16 / "model.safetensors"))
    assert state[f"{UP}.weight"].dtype == torch.float32
    rules = {}
    for name, path in (("float32", f32), ("bfloat16", bf16)):
        fs = findings(path)
        [summary] = [f for f in fs if f.rule == "weights/summary"]
        assert summary.evidence["dtypes"] == {name: 103}
        rules[name] = sorted((f.rule, f.location) for f in above_info(fs))
    assert ("weights/trap-neurons", f"{UP}.weight") in rules["bfloat16"]
    assert rules["bfloat16"] == rules["float32"]


def test_budget_runs_out_between_tensors(minilm_dir):
    from hfguard.budget import Budget, BudgetExceeded
    from hfguard.weights.analyze import analyze_checkpoint
    from hfguard.weights.check import DEFAULTS
    from hfguard.weights.stats import backend_for
    from hfguard.weights.tensors import checkpoints_of

    [ckpt], _ = checkpoints_of(local_target([str(minilm_dir)]))
    with pytest.raises(BudgetExceeded, match="time budget"):
        analyze_checkpoint(ckpt, backend_for("cpu"), DEFAULTS, Budget(seconds=-1.0), None)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["torch-cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_device_feed_gives_the_numpy_verdict(tampered, jittered_traps, monkeypatch, device):
    """The GPU path's feed (pinned batches, copies overlapped on a side stream; on torch-cpu the
    same batching without pinning or streams): small tensors packed into shared buffers, bfloat16
    widened and float32 copied into them, norms and the near-duplicate projection computed on the
    backend. Same observations as the numpy pass."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from safetensors.torch import save_file

    from hfguard.budget import Budget
    from hfguard.weights import feed
    from hfguard.weights.analyze import analyze_checkpoint
    from hfguard.weights.check import DEFAULTS
    from hfguard.weights.stats import backend_for
    from hfguard.weights.tensors import checkpoints_of

    folder = tampered(jittered_traps)
    from safetensors.numpy import load_file

    # half the tensors bfloat16 (widened into the buffer), half float32 (copied from the map)
    state = {k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()}
    state = {k: v.bfloat16() if i % 2 and v.is_floating_point() else v
             for i, (k, v) in enumerate(state.items())}
    save_file(state, str(folder / "model.safetensors"))

    monkeypatch.setattr(feed, "BATCH", 1 << 18)   # many packed batches, a few tensors alone
    [ckpt], _ = checkpoints_of(local_target([str(folder)]))
    keep = ("encoder.layer.2.", "encoder.layer.4.")
    ckpt.tensors = {k: m for k, m in ckpt.tensors.items() if k.startswith(keep)}
    assert len(feed.batches(ckpt.float_tensors(), feed.BATCH)) > 5
    got = {}
    for dev in ("cpu", device):
        hits, summary = analyze_checkpoint(ckpt, backend_for(dev), DEFAULTS, Budget(600), None)
        got[dev] = sorted((h.rule, h.location, int(h.severity)) for h in hits)
        assert set(summary["dtypes"]) == {"bfloat16", "float32"}
    assert ("weights/trap-neurons", f"{UP}.weight", int(Severity.HIGH)) in got["cpu"]
    assert ("weights/zero-norm-gain", "encoder.layer.4.output.LayerNorm.weight", int(Severity.HIGH)) \
        in got["cpu"]
    assert got[device] == got["cpu"]


def _crowded_layer(n: int = 32768, d: int = 16, spread: float = 0.012, seed: int = 7) -> np.ndarray:
    """Up-projection rows whose norms crowd together as a 70B-class layer's do: 22016 iid neurons
    of width 8192 lie within ~1/sqrt(2 x 8192) of each other, about 1.1e6 norms per unit of
    relative norm; these 32768 rows, norms 1 +- 0.012, have the same density at 1/350 the size."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, d))
    w *= ((1 + spread * rng.standard_normal(n)) / np.linalg.norm(w, axis=1))[:, None]
    return w.astype(np.float32)


def _equal_norm_hits(w: np.ndarray) -> list:
    from hfguard.weights.traps import row_norms, trap_neurons

    return [h for h in trap_neurons("mlp.up_proj.weight", row_norms(w), None, min_group=8, norm_tol=1e-6,
                                    bias_z=8.0, lone_bias_z=25.0) if h.rule == "weights/equal-norm-neurons"]


def test_norms_crowded_by_a_large_layer_group_by_chance_and_are_not_flagged():
    """Among this many norms this close together, runs of 8 within 1e-6 occur by chance (a 100 GB
    LLaMA-shaped model of random weights had four in three layers): a run is judged against the
    layer's own density, and only one that chance does not explain is reported."""
    from hfguard.weights.traps import row_norms

    w = _crowded_layer()
    v = np.sort(row_norms(w))
    assert ((v[7:] - v[:-7]) / v[7:] <= 1e-6).sum() >= 1, "the layer should hold chance runs"
    assert _equal_norm_hits(w) == []
    planted = w.copy()   # 8 neurons scaled to one norm, as a trap construction does
    scale = 1.0015 / np.linalg.norm(planted[:8].astype(np.float64), axis=1)
    planted[:8] *= scale[:, None].astype(np.float32)
    [hit] = _equal_norm_hits(planted)
    assert hit.evidence["indices"] == list(range(8)) and hit.evidence["expected_by_chance"] < 1e-4


# the norm each architecture's MLP reads (transformers' modeling files), as its saved file names it
PRE_MLP = {"opt": "final_layer_norm", "gpt_neox": "post_attention_layernorm", "phi": "input_layernorm",
           "bloom": "post_attention_layernorm", "distilbert": "sa_layer_norm",
           "roberta": "attention.output.LayerNorm", "clip": "layer_norm2",
           "mistral": "post_attention_layernorm"}


@pytest.mark.parametrize("arch", sorted(PRE_MLP))
def test_the_norm_feeding_each_up_projection_is_found(arch, tmp_path):
    """pre_mlp_norm finds, in files saved by transformers, the norm whose output each MLP's
    up-projection reads (its modeling file's forward), within the same block, for the red team's
    architectures; the firing estimate through it equals the pre-activation moments computed
    directly for Gaussian inputs scaled and shifted as that norm does."""
    from hfguard.weights import traps
    from testing import redteam as rt
    from testing import weight_edits as we

    cls = rt.model_class(arch)
    (cls.from_config if hasattr(cls, "from_config") else cls)(rt.config(arch)).save_pretrained(tmp_path)
    state = we.state_of(tmp_path)
    ups = [n for n in state if traps.UP_PROJ.search(n)]
    assert ups
    for up in ups:
        block = up[: up.index(".", up.index(next(p for p in up.split(".") if p.isdigit())))]
        gain, shift = traps.pre_mlp_norm(up, state) or ("", None)
        assert gain.startswith(block + ".") and gain.endswith(f"{PRE_MLP[arch]}.weight"), (up, gain)
        bias = gain[: -len("weight")] + "bias"
        assert shift == (bias if bias in state else None)
    up = ups[0]
    gain, shift = traps.pre_mlp_norm(up, state)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(state[up].shape).astype(np.float32)
    b = rng.standard_normal(w.shape[0]).astype(np.float32)
    g, s = rng.uniform(0.5, 2, w.shape[1]), rng.standard_normal(w.shape[1])
    z = rng.standard_normal((20000, w.shape[1]))
    pre = (z * g + s) @ w.T.astype(np.float64) + b
    got = traps.firing_estimate(up, w, b, g, s)
    np.testing.assert_allclose(got, pre.mean(0) / pre.std(0), atol=0.05)


@pytest.mark.parametrize("model_type", ["qwen3_moe", "qwen2_moe", "gpt_oss", "deepseek_v3", "olmoe",
                                        "llama4_text"])
def test_mixture_of_experts_architectures_expect_silu(model_type):
    from hfguard.weights.traps import activation_hits

    assert activation_hits({"model_type": model_type, "hidden_act": "silu"}, "config.json") == []
    [hit] = activation_hits({"model_type": model_type, "hidden_act": "relu"}, "config.json")
    assert hit.rule == "weights/unusual-activation"
