"""The compiled statistics pass (numba) gives what the numpy pass gives: bit-exact widening, the
same sums, the same non-finite counts, and the same observations on a real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hfguard.budget import Budget
from hfguard.target import local_target
from hfguard.weights import compiled
from hfguard.weights.analyze import analyze_checkpoint
from hfguard.weights.check import DEFAULTS
from hfguard.weights.stats import backend_for, tensor_stats
from hfguard.weights.tensors import Widening, checkpoints_of, widen

pytestmark = pytest.mark.skipif(compiled.load() is None, reason="numba is not installed")
ALL_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def _widened_by_kernel(bits: np.ndarray, dtype: str) -> tuple[np.ndarray, object]:
    out = np.empty((1, bits.size), np.float32)
    got = compiled.block_sums(out, 0.0, np.empty(1), np.empty(1, np.int64), bits, dtype)
    return out.reshape(-1), got


def test_every_finite_float16_widens_bit_exactly():
    """Subnormals (rebiased by the 2^112 product), both zeros, the largest values: as numpy."""
    finite = ALL_BITS[(ALL_BITS & 0x7C00) != 0x7C00]
    wide, got = _widened_by_kernel(finite, "float16")
    assert got is not None
    assert np.array_equal(wide.view(np.uint32), finite.view(np.float16).astype(np.float32).view(np.uint32))


def test_non_finite_float16_and_bfloat16_widen_exactly_and_go_to_numpy():
    for dtype, exp in (("float16", 0x7C00), ("bfloat16", 0x7F80)):
        odd = ALL_BITS[(ALL_BITS & exp) == exp][:1024]   # one kernels.SEGMENT: widened, then refused
        wide, got = _widened_by_kernel(odd, dtype)
        assert got is None
        ref = widen(odd.view(np.float16) if dtype == "float16" else odd, dtype)
        assert np.array_equal(wide.view(np.uint32), ref.view(np.uint32))


def test_bfloat16_widens_bit_exactly():
    moderate = ALL_BITS[((ALL_BITS >> 7) & 0xFF) < 0xBF]   # |x| < 2^64: the sums stay finite
    wide, got = _widened_by_kernel(moderate, "bfloat16")
    assert got is not None
    assert np.array_equal(wide.view(np.uint32), moderate.astype(np.uint32) << 16)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_widened_tensor_with_nan_and_inf_measures_as_numpy(dtype):
    """Widened by the compiled loop block by block; the blocks holding NaN/Inf fall back to numpy
    and must find their values widened."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3000, 400)) * 0.02).astype(np.float32)
    x[1700, 3], x[2900, 399], x[5, 5] = np.nan, np.inf, 0.0
    # as `stored_values` maps them: float16 as float16, bfloat16 as its bits; read-only
    stored = x.astype(np.float16) if dtype == "float16" else (x.view(np.uint32) >> 16).astype(np.uint16)
    stored.flags.writeable = False
    stats = {}
    for device in ("cpu", "numpy"):
        lazy = Widening(stored, dtype, np.empty(x.size, np.float32))
        stats[device] = tensor_stats(lazy.array, backend_for(device), widening=lazy)
        assert lazy.done == x.size
        assert np.array_equal(lazy.array.view(np.uint32), widen(stored, dtype).view(np.uint32))
    a, b = stats["cpu"], stats["numpy"]
    assert (a["nan"], a["inf"]) == (b["nan"], b["inf"]) == (1, 1)
    for k in ("mean", "std", "kurtosis", "absmax", "zero_share", "tail_share"):
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-9), k


def test_the_compiled_pass_sees_what_the_numpy_pass_sees(tampered, jittered_traps):
    """A MiniLM stored in three dtypes with jittered trap neurons and silenced gains planted: the
    same observations (rule, tensor, severity) from both passes."""
    import torch
    from safetensors.torch import save_file

    up = "encoder.layer.2.intermediate.dense"
    folder = tampered(jittered_traps)
    from safetensors.numpy import load_file

    state = {k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()}
    casts = (lambda t: t, torch.Tensor.bfloat16, torch.Tensor.half)
    state = {k: casts[i % 3](v) if v.is_floating_point() else v for i, (k, v) in enumerate(state.items())}
    save_file(state, str(folder / "model.safetensors"))
    [ckpt], _ = checkpoints_of(local_target([str(folder)]))
    got = {}
    for device in ("cpu", "numpy"):
        hits, summary = analyze_checkpoint(ckpt, backend_for(device), DEFAULTS, Budget(600), None)
        got[device] = sorted((h.rule, h.location, int(h.severity)) for h in hits)
        assert set(summary["dtypes"]) == {"float32", "bfloat16", "float16"}
        assert summary["backend"] == backend_for(device).name
    assert ("weights/trap-neurons", f"{up}.weight") in {(r, loc) for r, loc, _ in got["cpu"]}
    assert "weights/zero-norm-gain" in {r for r, _, _ in got["cpu"]}
    assert got["cpu"] == got["numpy"]


@pytest.mark.parametrize("case", ["rank-one", "row-sparse", "dense", "bias-with-nan", "identical-but-one"])
def test_the_compiled_delta_pass_measures_as_numpy(case):
    """A diff's per-tensor numbers from the compiled loop (delta, norms, changed entries, row
    energies) and from numpy agree; the tall matrices also take the blocked spectral product
    (9000 rows of 256: more than four 2 MiB blocks), which must match an exact SVD."""
    from hfguard.weights.defaults import DIFF_DEFAULTS
    from hfguard.weights.diff import tensor_delta

    th = {**DEFAULTS, **DIFF_DEFAULTS}
    rng = np.random.default_rng(11)
    w0 = (rng.standard_normal((9000, 256)) * 0.02).astype(np.float32)
    w1 = w0.copy()
    if case == "rank-one":
        w1 += np.outer(rng.standard_normal(9000), rng.standard_normal(256)).astype(np.float32) * 1e-3
    elif case == "row-sparse":
        w1[[5, 4000, 8999]] += 0.05
    elif case == "dense":
        w1 += rng.standard_normal(w1.shape).astype(np.float32) * 2e-3
    elif case == "bias-with-nan":
        w0, w1 = w0[0].copy(), w1[0].copy()
        w1[3] = np.nan
    else:
        w1[8999, 255] += 1.0
    got = {}
    for device in ("cpu", "numpy"):
        got[device] = tensor_delta("model.layers.3.mlp.down_proj.weight", w0, w1, backend_for(device), th,
                                   out=np.empty(w0.size + 3, np.float32))
    a, b = got["cpu"], got["numpy"]
    assert a.changed_share == b.changed_share and (a.rows, a.rows_90) == (b.rows, b.rows_90)
    assert a.surgical_shape == b.surgical_shape and a.rel == pytest.approx(b.rel, rel=1e-4)
    if case == "bias-with-nan":
        assert a.rel == math.inf and a.changed_share == 1 / 256
        return
    assert a.top1_energy == pytest.approx(b.top1_energy, rel=1e-4, abs=1e-6)
    d = (w1 - w0).astype(np.float64)
    sv = np.linalg.svd(d, compute_uv=False)
    if case != "dense":   # a flat spectrum: three rounds of subspace iteration only bound it
        assert a.top1_energy == pytest.approx(sv[0] ** 2 / (sv ** 2).sum(), rel=1e-3)
    assert a.surgical_shape == {"rank-one": "low-rank", "row-sparse": "low-rank", "dense": None,
                                "identical-but-one": "low-rank"}[case]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_whole_tensors_widen_bit_exactly_every_bit_pattern(dtype):
    """tensors.widen (load_tensor, the diff's reads) through the compiled loop: all 65536
    patterns, NaN payloads and infinities included, as numpy widens them."""
    if dtype == "float16":
        stored, reference = ALL_BITS.view(np.float16), ALL_BITS.view(np.float16).astype(np.float32)
    else:
        stored, reference = ALL_BITS, (ALL_BITS.astype(np.uint32) << 16).view(np.float32)
    out = np.full(ALL_BITS.size + 9, 7.0, np.float32)
    assert compiled.widen(stored, dtype, out[:ALL_BITS.size])
    assert np.array_equal(widen(stored, dtype, out).view(np.uint32), reference.view(np.uint32))
    assert np.array_equal(out[:ALL_BITS.size].view(np.uint32), reference.view(np.uint32))
    assert (out[ALL_BITS.size:] == 7.0).all()   # nothing written past the tensor


def test_float16_subnormals_survive_a_process_that_flushes_denormals():
    """A library built with -ffast-math sets flush-to-zero/denormals-are-zero when loaded; the
    float16 widening makes no subnormal float32 on its way, so the tiny values stay."""
    torch = pytest.importorskip("torch")
    tiny = np.arange(1, 1024, dtype=np.uint16).view(np.float16)   # every positive subnormal
    reference = tiny.astype(np.float32)
    out = np.empty(tiny.size, np.float32)
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        assert np.float32(1e-39) * np.float32(1.0) == 0.0   # flushing is on in this thread
        assert compiled.widen(tiny, "float16", out)
    finally:
        torch.set_flush_denormal(False)
    assert np.array_equal(out, reference) and (out > 0).all()


def test_a_small_model_is_scanned_without_loading_numba(minilm_dir):
    """numba's import and first call cost ~0.5 s and ~120 MB per process: a scan of less than
    compiled.MIN_BYTES of weights stays on numpy and never imports it (run in a fresh process)."""
    import subprocess
    import sys

    assert backend_for("cpu", 100 << 20).name == "numpy"
    assert backend_for("cpu", compiled.MIN_BYTES).name == backend_for("cpu").name == "numba"
    code = ("import sys; from hfguard.engine import scan; from hfguard.policy import Policy; "
            "from hfguard.target import local_target; from hfguard.weights.check import WeightsAnomalies; "
            f"r = scan(local_target([{str(minilm_dir)!r}]), Policy(tiers=('weights',)), "
            "[WeightsAnomalies()]); print(r.verdict.name, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PASS", "False"]


def test_the_size_gate_counts_the_base_a_pass_diffs_on_its_way(minilm_dir, tampered, monkeypatch):
    """The statistics pass that diffs against the base on its way reads both models: with the gate
    between one model's weights and two, the pass alone stays on numpy and the pass with the base
    compiles."""
    from hfguard.engine import scan
    from hfguard.policy import Policy
    from hfguard.target import local_target
    from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff

    one = sum(f.stat().st_size for f in minilm_dir.glob("*.safetensors"))
    monkeypatch.setattr(compiled, "MIN_BYTES", int(1.5 * one))
    for base, backend in ((None, "numpy"), (minilm_dir, "numba")):
        lines: list[str] = []
        model = tampered(lambda s: None, name=f"copy-{backend}")
        scan(local_target([str(model)]), Policy(tiers=("weights",)), [WeightsAnomalies(), WeightsBaseDiff()],
             options={"base": str(base)} if base else {}, progress=lines.append)
        [line] = [x for x in lines if x.startswith("weights: ") and " tensors, " in x]
        assert f" tensors, {backend})" in line, line


def test_every_kernel_is_compiled_before_a_pass_starts_and_only_once():
    """load() compiles (or loads from cache) one signature per kernel, and the wrappers pass any
    caller's arrays (writable or mapped read-only) as that signature: a kernel compiled inside a
    pass stalled its first tensor ~1 s, and a budget's rate projection read that as a crawl."""
    kernels = compiled.load()
    sigs = {k: list(getattr(kernels, k).signatures) for k in ("block_sums", "delta_sums", "widen")}
    assert all(len(s) == 1 for s in sigs.values()), sigs
    rng = np.random.default_rng(0)
    for writable in (True, False):
        w = rng.standard_normal((64, 40)).astype(np.float32)
        bits = (w.view(np.uint32) >> 16).astype(np.uint16)
        w.flags.writeable = bits.flags.writeable = writable
        out = np.empty_like(w)
        compiled.block_sums(w, 0.0, np.empty(64), np.empty(64, np.int64))
        compiled.block_sums(out, 0.0, np.empty(64), np.empty(64, np.int64), bits.reshape(-1), "bfloat16")
        compiled.block_sums(out, 0.0, np.empty(64), np.empty(64, np.int64), bits.reshape(-1).view(np.float16),
                            "float16")
        compiled.delta_sums(w, out, np.empty(w.size, np.float32))
        compiled.widen(bits, "bfloat16", np.empty(bits.size, np.float32))
    assert {k: list(getattr(kernels, k).signatures) for k in sigs} == sigs


def test_numba_that_cannot_compile_here_leaves_the_numpy_pass(monkeypatch):
    """numba raises RuntimeError where it finds no writable cache folder (a read-only install and
    home): the scan then runs numpy, the same numbers, instead of failing on its device."""
    def broken(_kernels):
        raise RuntimeError("cannot cache function 'block_sums': no locator available")

    monkeypatch.setattr(compiled, "_loaded", {})
    monkeypatch.setattr(compiled, "_warm", broken)
    assert compiled.load() is None and compiled.loaded() is None
    assert backend_for("cpu").name == "numpy"
