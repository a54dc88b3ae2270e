"""Statistics agree across backends and with their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from hfguard.weights.stats import backend_for, tensor_stats
from hfguard.weights.traps import equal_norm_groups

KEYS = ("mean", "std", "absmax", "kurtosis", "tail_share", "zero_share", "nan", "inf", "dup_rows",
        "mirrored_rows", "single_nonzero_rows", "zero_rows", "stable_rank")


def _compare(a, b):
    for k in KEYS:
        if k in a or k in b:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-7), k
    if "sigma" in a:
        np.testing.assert_allclose(a["sigma"], b["sigma"], rtol=1e-3)


def test_compiled_numpy_and_torch_cpu_agree_on_a_real_model(minilm_state):
    be_nb, be_np, be_t = backend_for("cpu"), backend_for("numpy"), backend_for("torch-cpu")
    assert (be_nb.name, be_np.name, be_t.name) == ("numba", "numpy", "torch-cpu")   # numba: a test dependency
    for name in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight",
                 "embeddings.LayerNorm.weight", "encoder.layer.5.intermediate.dense.bias"):
        a = minilm_state[name]
        st = tensor_stats(a, be_nb)
        _compare(st, tensor_stats(a, be_np))
        _compare(st, tensor_stats(a, be_t))


def test_compiled_blocks_hand_non_finite_ones_to_numpy():
    """A block whose sum is not finite is counted by the numpy path; the finite blocks around it
    keep the compiled sums, and the statistics are those of the finite values."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4000, 300)).astype(np.float32)   # several 2 MiB blocks
    a[2500, 7], a[2600, 1], a[10, 0] = np.nan, -np.inf, -0.0
    a[3999, 299] = 40.0
    for be in (backend_for("cpu"), backend_for("numpy")):
        st = tensor_stats(a, be)
        x = a[np.isfinite(a)].astype(np.float64)
        assert (st["nan"], st["inf"]) == (1, 1)
        assert st["std"] == pytest.approx(x.std(), rel=1e-6) and st["absmax"] == 40.0
        assert st["kurtosis"] == pytest.approx(((x - x.mean()) ** 4).mean() / x.var() ** 2, rel=1e-5)
        assert st["zero_share"] == pytest.approx(np.mean(x == 0))


@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_float32_block_sums_stay_precise_on_a_large_tensor(minilm_state, device):
    """11.7M entries summed in float32 blocks (compiled: segments of 1024): moments still match
    float64 to 1e-5. (torch-cpu's float32 sums over 4M-entry chunks drift 2e-4 in kurtosis here.)"""
    a = minilm_state["embeddings.word_embeddings.weight"]
    st = tensor_stats(a, backend_for(device))
    x = a.astype(np.float64)
    m, s = x.mean(), x.std()
    assert st["std"] == pytest.approx(s, rel=1e-6)
    assert st["kurtosis"] == pytest.approx(((x - m) ** 4).mean() / s ** 4, rel=1e-5)


@pytest.mark.gpu
def test_cuda_matches_numpy(minilm_state):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    a = minilm_state["encoder.layer.0.output.dense.weight"]
    _compare(tensor_stats(a, backend_for("cpu")), tensor_stats(a, backend_for("cuda")))


@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("shape", [(300, 70), (21000,), (1, 3000), (3000, 1), (1_100_000,)])
@pytest.mark.parametrize("offset", [0.0, 5.0])
def test_moments_match_their_definitions(shape, offset, device):
    rng = np.random.default_rng(0)
    a = (rng.standard_t(4, size=shape) * 0.3 + offset).astype(np.float32)   # heavy tails, offset mean
    a.reshape(-1)[:3] = 0
    st = tensor_stats(a, backend_for(device), tail_k=3.0)
    x = a.astype(np.float64)
    m, s = x.mean(), x.std()
    assert st["mean"] == pytest.approx(m, rel=1e-6, abs=1e-6 * s) and st["std"] == pytest.approx(s, rel=1e-5)
    assert st["kurtosis"] == pytest.approx(((x - m) ** 4).mean() / s ** 4, rel=1e-4)
    assert st["tail_share"] == pytest.approx((np.abs(x - m) > 3 * s).mean())
    assert st["zero_share"] == pytest.approx(3 / a.size)
    assert st["absmax"] == pytest.approx(np.abs(x).max())
    if a.ndim == 2 and min(a.shape) > 1 and offset:   # the mean's rank-1 part: 3 rounds find it
        assert st["sigma"][0] == pytest.approx(np.linalg.svd(x, compute_uv=False)[0], rel=1e-3)


@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_rows_nan_and_inf(device):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 16)).astype(np.float32)
    a[3] = a[9]
    a[4] = -a[9]
    a[5] = 0
    a[6] = 0
    a[6, 2] = 7
    st = tensor_stats(a, backend_for(device))
    assert (st["dup_rows"], st["mirrored_rows"], st["zero_rows"], st["single_nonzero_rows"]) == (1, 1, 1, 1)
    a[1, 1], a[2, 2], a[2, 3] = np.nan, np.inf, -np.inf
    st = tensor_stats(a, backend_for(device))
    assert (st["nan"], st["inf"]) == (1, 2) and np.isfinite(st["std"])
    assert "dup_rows" not in st   # row and spectral passes skip non-finite matrices


def test_equal_norm_groups():
    rng = np.random.default_rng(0)
    norms = np.concatenate([1 + 0.2 * rng.random(500), [1.5, 1.5 + 1e-9, 1.5 - 1e-9], [0.0, 0.0]])
    [(group, chance)] = equal_norm_groups(norms, 3, 1e-6)
    assert sorted(group) == [500, 501, 502] and chance < 1e-6   # zero rows are not a group
    assert equal_norm_groups(norms, 4, 1e-6) == []


@pytest.mark.parametrize("name,role,index", [
    ("encoder.layer.3.attention.self.query.weight", "encoder.layer.{i}.attention.self.query.weight", 3),
    ("transformer.h.11.mlp.c_fc.weight", "transformer.h.{i}.mlp.c_fc.weight", 11),
    ("model.layers.0.mlp.up_proj.weight", "model.layers.{i}.mlp.up_proj.weight", 0),
    ("text_model.encoder.layers.7.mlp.fc1.bias", "text_model.encoder.layers.{i}.mlp.fc1.bias", 7),
    ("blocks.2.mlp.0.weight", "blocks.{i}.mlp.0.weight", 2),
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", None),
])
def test_roles_strip_the_block_index(name, role, index):
    from hfguard.weights.layers import role_of

    assert role_of(name) == (role, index)


def test_cuda_without_a_device_is_an_error_finding(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from safetensors.numpy import save_file

    from hfguard.checks import ScanContext
    from hfguard.policy import Policy
    from hfguard.target import local_target
    from hfguard.weights.check import WeightsAnomalies

    save_file({"w": np.ones((4, 4), np.float32)}, str(tmp_path / "model.safetensors"))
    target = local_target([str(tmp_path)])
    ctx = ScanContext(policy=Policy(), target=target, options={"device": "cuda"})
    [f] = list(WeightsAnomalies().check_target(target, ctx))
    assert f.rule == "weights/device-unavailable" and f.error


def test_near_duplicate_neurons_exact_and_projected_agree():
    """A clique of 12 jittered rows among 3000 random ones: the projected search (3000^2 x 256 is
    above the exact budget) finds the same rows with the same counts as the exact Gram."""
    from hfguard.weights.traps import near_duplicate_counts

    rng = np.random.default_rng(3)
    w = rng.standard_normal((3000, 256)).astype(np.float32)
    d = rng.standard_normal(256)
    for i in range(500, 512):
        e = rng.standard_normal(256)
        w[i] = d / np.linalg.norm(d) + 0.3 * e / np.linalg.norm(e)
    w[7] = 0.0   # a dead neuron is nobody's neighbour
    exact = near_duplicate_counts(w, 0.8, min_group=8, exact_max=1 << 40)
    projected = near_duplicate_counts(w, 0.8, min_group=8)
    assert np.flatnonzero(exact).tolist() == list(range(500, 512)) and set(exact[500:512]) == {11}
    assert np.array_equal(exact, projected)


def _merged_adapter(rng: np.random.Generator, w: np.ndarray) -> np.ndarray:
    """A rank-2 update twice w's norm: merged, every neuron carries the same two directions (a
    rank-2 MLP LoRA at a high learning rate moved real layers by 0.8-2.3x)."""
    delta = rng.standard_normal((w.shape[0], 2), dtype=np.float32) @ rng.standard_normal(
        (2, w.shape[1]), dtype=np.float32)
    return delta * np.float32(2.0 * np.linalg.norm(w) / np.linalg.norm(delta))


def _plant_clique(w: np.ndarray, rng: np.random.Generator, rows: range) -> None:
    t = rng.standard_normal(w.shape[1])
    t /= np.linalg.norm(t)
    for i in rows:
        e = rng.standard_normal(w.shape[1])
        w[i] = (t + 0.3 * e / np.linalg.norm(e)) * np.linalg.norm(w[i])


@pytest.mark.parametrize("exact_max", [1 << 40, 1 << 28], ids=["exact", "sketched"])
@pytest.mark.parametrize("order", ["no traps", "traps, then the merge", "the merge, then traps"])
def test_near_duplicates_set_aside_the_directions_every_neuron_shares(exact_max, order):
    """Plain cosines put most neurons of an adapter-dominated layer in one clique; set aside the
    layer-wide directions and none is left, while a trap clique planted before or after the merge
    is found with its 12 members exactly."""
    from hfguard.weights.traps import near_duplicate_counts

    rng = np.random.default_rng(5)
    w = rng.standard_normal((3000, 256), dtype=np.float32)
    if order == "traps, then the merge":
        _plant_clique(w, rng, range(500, 512))
    w += _merged_adapter(rng, w)
    if order == "the merge, then traps":
        _plant_clique(w, rng, range(500, 512))
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    plain = ((u @ u.T) >= 0.8).sum(1) - 1
    assert int((plain >= 7).sum()) > 1000          # the premise: plain cosines see a huge clique
    found = np.flatnonzero(near_duplicate_counts(w, 0.8, min_group=8, exact_max=exact_max) >= 7)
    assert found.tolist() == ([] if order == "no traps" else list(range(500, 512)))


def test_huge_finite_entry_keeps_the_spectral_pass_finite():
    """A 3e19 entry is finite, but W^T W q overflows float32 (the SVD then failed to converge and
    the scan ended in an error instead of the huge-constant finding)."""
    a = np.random.default_rng(2).standard_normal((300, 70)).astype(np.float32)
    a[4, 5] = 3e19
    st = tensor_stats(a, backend_for("cpu"))
    assert st["absmax"] == pytest.approx(3e19) and st["sigma"][0] == pytest.approx(3e19, rel=1e-6)


@pytest.mark.parametrize("shape", [(300, 100), (50, 64), (20, 30), (129, 384)])
def test_sign_sketch_is_the_product_the_device_path_computes(shape):
    """`sketch` (one pass over the rows, the CPU path) equals w @ projection(d), the dense matrix
    the device path multiplies by, for widths with and without a partial last bucket and for a
    transposed view (GPT-2's Conv1D neurons)."""
    from hfguard.weights.traps import projection, sketch

    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(sketch(w), w @ projection(shape[1]), rtol=1e-5, atol=1e-5)
    wt = np.ascontiguousarray(w.T).T
    np.testing.assert_array_equal(sketch(wt), sketch(w))


def test_sign_sketch_keeps_cosines_as_the_search_assumes():
    """The nomination cut is the cosine lowered by 2/sqrt(64) = 0.25, designed for a miss rate of
    ~1e-3 per pair at 0.8 (a group of 8 has 28 such pairs: one found suffices): in the sketch, at
    most 4 of 4000 pairs at cosine 0.8 fall below the cut, and no unrelated pair passes it, at the
    widths of MiniLM and TinyLlama."""
    from hfguard.weights.traps import sketch

    rng = np.random.default_rng(2)
    for d in (384, 2048):
        x = rng.standard_normal((4000, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        e = rng.standard_normal((4000, d))
        e -= (e * x).sum(1, keepdims=True) * x
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        z = rng.standard_normal((4000, d))

        def cosine(a, b):
            pa, pb = sketch(a.astype(np.float32)), sketch(b.astype(np.float32))
            return (pa * pb).sum(1) / np.linalg.norm(pa, axis=1) / np.linalg.norm(pb, axis=1)

        assert np.count_nonzero(cosine(x, 0.8 * x + 0.6 * e) < 0.55) <= 4
        assert cosine(x, z).max() < 0.55


@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_block_by_block_widening_gives_the_whole_tensors_numbers(tmp_path, dtype, device):
    """A tensor widened block by block while the pass walks it (and its neuron norms and sketch
    taken from the pass's row blocks) gives the statistics, norms and sketch of the tensor
    widened whole."""
    import torch
    from safetensors.torch import save_file

    from hfguard.weights.tensors import load_tensor, read_safetensors_header, widening
    from hfguard.weights.traps import NeuronRows, row_norms, sketch

    w = torch.randn(3000, 384, generator=torch.Generator().manual_seed(0)) * 0.05
    w[7] = 0.0
    save_file({"mlp.up_proj.weight": w.to(getattr(torch, dtype))}, str(tmp_path / "m.safetensors"))
    meta = read_safetensors_header(tmp_path / "m.safetensors", "m")["mlp.up_proj.weight"]
    whole = load_tensor(meta)
    lazy = widening(meta, np.full(meta.numel + 5, np.nan, np.float32))
    assert lazy is not None and lazy.done == 0
    seen = NeuronRows(*meta.shape)
    st = tensor_stats(lazy.array, backend_for(device), widening=lazy, each_rows=seen)
    assert lazy.done == meta.numel and seen.complete and seen.sketched is not None
    np.testing.assert_array_equal(lazy.array, whole)
    ref = tensor_stats(whole, backend_for(device))
    assert {k: st[k] for k in KEYS} == {k: ref[k] for k in KEYS}
    # the compiled pass sums the squares in its own order (float64 both ways)
    np.testing.assert_allclose(seen.norms, row_norms(whole), rtol=1e-13)
    np.testing.assert_array_equal(seen.sketched, sketch(whole))


@pytest.mark.parametrize(("shape", "ratio", "flagged"), [
    ((32,), 3.0, False),        # a 32-entry bias: its own std is uncertain by 10-18%
    ((32,), 12.0, True),        # ... but not by 12x
    ((256, 64), 3.0, True),     # the same 3x on a weight matrix is a rescaled layer
])
def test_a_sibling_is_judged_by_its_own_uncertainty_too(shape, ratio, flagged):
    """Six blocks whose tensors agree closely (MAD at its floor): the odd one out is an outlier
    when its std differs by more than both the siblings' spread and its own estimate's error."""
    from hfguard.weights.check import WeightsAnomalies
    from hfguard.weights.layers import sibling_outliers

    rng = np.random.default_rng(4)
    be = backend_for("cpu")
    stats, shapes = {}, {}
    for i in range(6):
        a = (0.0125 * rng.standard_normal(shape)).astype(np.float32)
        a *= np.float32(0.0125 / a.std())               # siblings as alike as can be
        if i == 0:
            a *= np.float32(ratio)
        name = f"model.layers.{i}.self_attn.v_proj.{'bias' if len(shape) == 1 else 'weight'}"
        stats[name], shapes[name] = tensor_stats(a, be), shape
    hits = sibling_outliers(stats, shapes, WeightsAnomalies.THRESHOLDS["robust-z"])
    assert any(h["feature"] == "log_std" and h["index"] == 0 for h in hits) is flagged, hits


def test_trained_layers_pay_nothing_for_the_layer_wide_directions(minilm_state, monkeypatch):
    """MiniLM's up-projections nominate a few rows in the sketch (its near-duplicate pairs); they
    are measured exactly, hold no group, and the layer-wide directions are never computed (they
    took a third of MiniLM's whole pass when every nomination asked for them)."""
    from hfguard.weights import traps

    calls = []
    real = traps.layer_wide_directions
    monkeypatch.setattr(traps, "layer_wide_directions", lambda *a, **k: calls.append(1) or real(*a, **k))
    ups = {k: v for k, v in minilm_state.items() if traps.neuron_rows(k, v) is not None}
    assert len(ups) == 6
    for name, w in ups.items():
        assert int((traps.near_duplicate_counts(w, 0.8, 8) >= 7).sum()) == 0, name
    assert calls == []
