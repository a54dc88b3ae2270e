"""Quantized checkpoints (float8 / int8 codes with their scales, as compressed-tensors, FBGEMM and
DeepSeek-style quantizers write them) are measured and diffed dequantized, and a dtype round trip
is no change: an everyday quantized or half-precision copy of MiniLM passes, and a ROME edit shipped
inside one is the surgical edit it is (it passed before: every stored matrix differed from the
base by ~1/scale, so the edit was one change among all)."""

from __future__ import annotations

import numpy as np
import pytest

from hfguard.checks import ScanContext
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff
from hfguard.weights.tensors import checkpoints_of, load_tensor, scale_blocks
from testing import weight_edits as we

torch = pytest.importorskip("torch")

EDITED = "encoder.layer.2.output.dense.weight"   # where we.rome(layer=2) writes
LAYOUTS = [("float8_e4m3fn", "tensor"), ("float8_e4m3fn", "channel"), ("float8_e4m3fn", "block"),
           ("int8", "channel"), ("int8", "block")]


def scanned(path, base=None):
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    report = scan(local_target([str(path)]), Policy(tiers=("weights",)), checks,
                  options={"base": str(base)} if base else {}, budget_seconds=120)
    return report.verdict, {f.rule: f for f in report.all_findings()}


@pytest.mark.parametrize(("codes", "layout"), LAYOUTS)
def test_a_quantized_copy_passes_and_an_edit_inside_one_is_surgical(codes, layout, minilm_dir, tmp_path):
    clean = we.quantized_copy(minilm_dir, tmp_path / "clean", codes, layout)
    for base in (None, minilm_dir):
        verdict, found = scanned(clean, base)
        assert verdict is Verdict.PASS, {r: f.message for r, f in found.items() if f.severity > Severity.INFO}
    from safetensors.torch import load_file

    stored = load_file(str(clean / "model.safetensors"))
    quantized = sum(1 for k in stored if k.endswith(("_scale", "_scale_inv")))
    summary = found["weights/base-diff-summary"].evidence
    assert summary["changed"] == 0 and summary["storage_rounding_only"] == quantized > 20
    assert f"{quantized} quantized weights measured dequantized" in found["weights/summary"].message

    edited = we.quantized_copy(minilm_dir, tmp_path / "rome", codes, layout, edit=lambda s: we.rome(s, 2, 1))
    verdict, found = scanned(edited, minilm_dir)
    assert verdict is Verdict.BLOCK
    assert found["weights/surgical-edit"].location == EDITED


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_an_edit_in_a_half_precision_copy_is_surgical(dtype, minilm_dir, tmp_path):
    """A cast is no change (every tensor within its round trip), so the edit stands alone."""
    rome = we.edited(minilm_dir, tmp_path / "rome", lambda s: we.rome(s, 2, 1))
    verdict, found = scanned(we.cast_copy(rome, tmp_path / "half", dtype), minilm_dir)
    assert verdict is Verdict.BLOCK and found["weights/surgical-edit"].location == EDITED
    assert found["weights/base-diff-summary"].evidence["changed"] == 1


@pytest.mark.parametrize(("shape", "scale", "blocks"), [
    ((64, 48), (), (64, 48)), ((64, 48), (1,), (64, 48)), ((64, 48), (64, 1), (1, 48)),
    ((64, 48), (64,), (1, 48)), ((64, 48), (64, 3), (1, 16)), ((130, 48), (2, 1), (128, 48)),
    ((1000, 300), (8, 3), (128, 128)), ((7168, 2048), (56, 16), (128, 128)), ((40, 70), (3, 5), (16, 16)),
    ((64, 48), (65, 1), None), ((64, 48), (3, 5, 1), None)])
def test_scale_blocks(shape, scale, blocks):
    """Rows and columns each scale covers; blocks of a power of two where the grid allows several
    (1000 rows in 8 blocks of 128, the last one short, not 8 of 125)."""
    assert scale_blocks(shape, scale) == blocks


@pytest.mark.parametrize("zero_point", [False, True])
def test_dequantized_values_are_codes_minus_zero_point_times_scale(zero_point, tmp_path):
    """Values read as torch computes them from the stored int8 codes, 2-D blocks of 16 with an
    uneven last block, and an asymmetric zero point per block."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    q = torch.randint(-128, 128, (40, 70), generator=g, dtype=torch.int8)
    scale = torch.rand((3, 5), generator=g) + 0.1
    tensors = {"l.weight": q, "l.weight_scale": scale}
    zp = torch.randint(-5, 5, (3, 5), generator=g, dtype=torch.int8)
    if zero_point:
        tensors["l.weight_zero_point"] = zp
    save_file(tensors, str(tmp_path / "model.safetensors"))
    [ckpt], _ = checkpoints_of(local_target([str(tmp_path)]))
    assert list(ckpt.tensors) == ["l.weight"] and ckpt.dequantized == 1   # the scales joined their weight
    full = lambda t: t.repeat_interleave(16, 0).repeat_interleave(16, 1)[:40, :70].float()  # noqa: E731
    expect = (q.float() - (full(zp) if zero_point else 0)) * full(scale)
    np.testing.assert_allclose(load_tensor(ckpt.tensors["l.weight"]), expect.numpy(), rtol=1e-6)


def test_copies_with_the_same_codes_and_another_scale_disagree(minilm_dir, tmp_path):
    """The codes alone are not the weights: a copy that keeps them and changes a scale is another
    model (decided from the raw bytes of codes and scales, not only the codes)."""
    from safetensors.torch import load_file, save_file

    folder = we.quantized_copy(minilm_dir, tmp_path / "two", "float8_e4m3fn", "channel")
    state = load_file(str(folder / "model.safetensors"))
    state[EDITED + "_scale"] = state[EDITED + "_scale"] * 3.0
    save_file(state, str(folder / "model-2.safetensors"))   # a second copy beside the clean one
    target = local_target([str(folder)])
    ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options={})
    found = {f.rule: f for f in WeightsAnomalies().check_target(target, ctx)}
    assert found["weights/inconsistent-copies"].evidence["tensors"][0]["tensor"] == EDITED
