"""Quantized checkpoints (float8 / int8 codes with their scales, as compressed-tensors, FBGEMM and
DeepSeek-style quantizers write them; packed GPTQ, AWQ and compressed-tensors pack-quantized and
NVFP4 layers; bitsandbytes LLM.int8 and 4-bit; gpt-oss's MXFP4 experts) are measured and diffed
dequantized, and a dtype round trip is no change: an everyday quantized or half-precision copy of
MiniLM passes, and a ROME edit shipped inside one is the surgical edit it is (it passed before:
every stored matrix differed from the base by ~1/scale, so the edit was one change among all)."""

from __future__ import annotations

from typing import Any

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


def clean_passes_and_edit_blocks(make, minilm_dir, tmp_path, quantized=24):
    """`make(src, dst, edit)` writes a quantized copy: the clean one PASSes with and without the
    base, diffing as storage rounding only for its `quantized` weights; one with a ROME edit
    applied before quantizing BLOCKs on the edited matrix (high: surgical, or confined where the
    codes' rounding spreads the rank-1 change below the low-rank cut). Returns the edit finding."""
    clean = make(minilm_dir, tmp_path / "clean", None)
    for base in (None, minilm_dir):
        verdict, found = scanned(clean, base)
        assert verdict is Verdict.PASS, {r: f.message for r, f in found.items() if f.severity > Severity.INFO}
    summary = found["weights/base-diff-summary"].evidence
    assert summary["changed"] == 0 and summary["storage_rounding_only"] == quantized
    assert f"{quantized} quantized weights measured dequantized" in found["weights/summary"].message
    verdict, found = scanned(make(minilm_dir, tmp_path / "rome", lambda s: we.rome(s, 2, 1)), minilm_dir)
    assert verdict is Verdict.BLOCK
    edit = found.get("weights/surgical-edit") or found["weights/confined-edit"]
    assert edit.severity is Severity.HIGH and edit.location == EDITED
    assert found["weights/base-diff-summary"].evidence["changed"] == 1
    return edit


@pytest.mark.parametrize(("codes", "layout"), LAYOUTS)
def test_a_quantized_copy_passes_and_an_edit_inside_one_is_surgical(codes, layout, minilm_dir, tmp_path):
    edit = clean_passes_and_edit_blocks(
        lambda src, dst, e: we.quantized_copy(src, dst, codes, layout, edit=e), minilm_dir, tmp_path)
    assert edit.rule == "weights/surgical-edit"


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


# -- packed int4 (GPTQ, AWQ) ------------------------------------------------------------------------
# method, symmetric, act-order, GPTQ v2 (asymmetric v1 stores a zero point of 0 as -1: see pack_linear)
PACKED = [("gptq", True, False, False), ("gptq", False, True, True), ("awq", False, False, False),
          ("awq-gemv", False, False, False)]


def reference_dequant(parts, method, bits, zero_offset, group_size=64):
    """nn.Linear weight [out, in] from the packed parts, as the reference kernels compute it
    (AutoGPTQ's qlinear_cuda_old / AutoAWQ's unpack_awq + reverse order / its GEMV layer): unpack
    32/bits codes per int32, lowest bits first, then (code - zero) x scale of each input's group."""
    qweight, qzeros = torch.from_numpy(parts["qweight"]), torch.from_numpy(parts["qzeros"])
    scales = torch.from_numpy(parts["scales"]).float()
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    mask = (1 << bits) - 1
    zeros = ((qzeros.unsqueeze(2) >> shifts) & mask).reshape(qzeros.shape[0], -1)
    if method == "gptq":
        weight = ((qweight.unsqueeze(1) >> shifts[None, :, None]) & mask).reshape(-1, qweight.shape[1])
        g_idx = torch.from_numpy(parts["g_idx"]).long()
    elif method == "awq-gemv":   # [out, in]: inputs along the words, groups along qzeros' words
        weight = ((qweight.unsqueeze(2) >> shifts) & mask).reshape(qweight.shape[0], -1).T
        g_idx = torch.arange(weight.shape[0]) // group_size
        scales, zeros = scales.T, zeros.T
    else:
        reverse = [0, 4, 1, 5, 2, 6, 3, 7]
        weight = ((qweight.unsqueeze(2) >> shifts) & mask)[:, :, reverse].reshape(qweight.shape[0], -1)
        zeros = zeros.reshape(zeros.shape[0], -1, 8)[:, :, reverse].reshape(zeros.shape[0], -1)
        g_idx = torch.arange(weight.shape[0]) // (weight.shape[0] // scales.shape[0])
    w = scales[g_idx] * (weight.float() - (zeros[g_idx].float() + zero_offset))   # [in, out]
    return w.T.numpy()


def packed_folder(folder, parts, conf):
    import json

    from safetensors.numpy import save_file

    folder.mkdir()
    save_file({f"l.{k}": v for k, v in parts.items()} | {"l.bias": np.zeros(48, np.float32)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"quantization_config": conf}))
    [ckpt], _ = checkpoints_of(local_target([str(folder)]))
    return ckpt


@pytest.mark.parametrize(("method", "sym", "act_order", "bits", "fmt"), [
    ("gptq", True, False, 4, "gptq"), ("gptq", False, False, 4, "gptq"), ("gptq", True, True, 4, "gptq"),
    ("gptq", False, True, 4, "gptq"), ("gptq", False, True, 4, "gptq_v2"), ("gptq", False, False, 8, "gptq"),
    ("awq", False, False, 4, None), ("awq", True, False, 4, None), ("awq-gemv", False, False, 4, None)])
def test_packed_values_are_the_loaders_dequantization(method, sym, act_order, bits, fmt, tmp_path):
    """A packed layer reads as one float weight [out, in] with the values the reference kernels
    compute (GPTQ v1 stores each zero point minus one, v2 as is), within half a step of the
    weights it was packed from (plus the float16 scale's rounding over up to 2^bits steps); its parts
    leave the checkpoint's tensors."""
    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = we.pack_linear(w, method, bits, group_size=64, sym=sym, act_order=act_order, seed=2)
    conf = {"quant_method": method.split("-")[0], "bits": bits, "group_size": 64}
    conf |= {"checkpoint_format": fmt} if fmt else {"version": "gemv" if method == "awq-gemv" else "gemm"}
    ckpt = packed_folder(tmp_path / "m", parts, conf)
    assert sorted(ckpt.tensors) == ["l.bias", "l.weight"] and ckpt.dequantized == 1
    meta = ckpt.tensors["l.weight"]
    assert meta.shape == (48, 320) and meta.is_float
    got = load_tensor(meta)
    offset = 1 if fmt == "gptq" else 0
    np.testing.assert_allclose(got, reference_dequant(parts, method, bits, offset), rtol=1e-6, atol=1e-7)
    if fmt != "gptq_v2":   # the v1 file read as v2 would be a step off: not the weights packed
        groups = parts["g_idx"] if method == "gptq" else np.arange(320) // 64
        scales = parts["scales"].astype(np.float32)
        step = scales[:, groups] if method == "awq-gemv" else scales[groups].T
        assert np.all(np.abs(got - w) <= (0.5 + 2.0 ** (bits - 11)) * 1.001 * step)


def test_packed_parts_all_count(tmp_path):
    """The words are not the weights: a copy with the same qweight and another act-order group
    index differs (raw comparison), and a g_idx naming a group the scales lack is refused."""
    from hfguard.weights.shards import raw_digest, same_bytes
    from hfguard.weights.tensors import WeightsFormatError

    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = we.pack_linear(w, "gptq", group_size=64, act_order=True)
    conf = {"quant_method": "gptq", "bits": 4, "group_size": 64}
    a, b = (packed_folder(tmp_path / n, parts, conf).tensors["l.weight"] for n in "ab")
    assert same_bytes(a, b) and raw_digest(a) == raw_digest(b)
    for g_idx, n in ((np.sort(parts["g_idx"]), "c"), (parts["g_idx"] * 2, "d")):
        c = packed_folder(tmp_path / n, parts | {"g_idx": g_idx}, conf).tensors["l.weight"]
        assert not same_bytes(a, c) and raw_digest(a) != raw_digest(c)
    with pytest.raises(WeightsFormatError, match="names a group"):
        load_tensor(c)


@pytest.mark.parametrize("conf", [
    None, {"quant_method": "gptq", "bits": 4, "group_size": 64, "checkpoint_format": "marlin"},
    {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemv"},
    {"quant_method": "gptq", "bits": 8, "group_size": 64},     # the shapes say 4 bits
    {"quant_method": "awq", "bits": 4, "group_size": 64},      # the shapes say GPTQ
    {"quant_method": "gptq", "bits": 4, "group_size": 128}])   # 5 groups of 64, not 3 of 128
def test_a_packing_the_config_does_not_declare_stays_as_stored(conf, tmp_path):
    """Fail safe: without a config that names this layout the integer parts are not guessed at."""
    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    ckpt = packed_folder(tmp_path / "m", we.pack_linear(w, "gptq", group_size=64), conf or {})
    assert "l.weight" not in ckpt.tensors and "l.qweight" in ckpt.tensors and ckpt.dequantized == 0


@pytest.mark.parametrize(("method", "sym", "act_order", "v2"), PACKED)
def test_a_packed_copy_passes_and_an_edit_inside_one_blocks(method, sym, act_order, v2, minilm_dir, tmp_path):
    """A GPTQ / AWQ copy of MiniLM diffs against the base's weights (before: its linear layers
    read as removed from the base, and an edit inside was never compared). The edit stands alone;
    int4 rounding is 25-45% of its delta's energy, so the rank-1 update measures top-1 energy
    0.67-0.78, below the low-rank cut: a confined (FT-L-shaped) edit, BLOCK all the same."""
    clean_passes_and_edit_blocks(
        lambda src, dst, e: we.packed_copy(src, dst, method, sym=sym, act_order=act_order, v2=v2, edit=e),
        minilm_dir, tmp_path)


def test_packed_weights_not_read_are_said(tmp_path):
    """A GPTQ layer without a config that declares its layout is not read: the scan says so
    (low) instead of passing in silence, and names the tensor."""
    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    folder = tmp_path / "m"
    packed_folder(folder, we.pack_linear(w, "gptq", group_size=64), {})
    verdict, found = scanned(folder)
    hit = found["weights/quantized-not-read"]
    assert hit.severity is Severity.LOW and hit.evidence["tensors"] == ["l.qweight"]
    declared = tmp_path / "d"
    packed_folder(declared, we.pack_linear(w, "gptq", group_size=64),
                  {"quant_method": "gptq", "bits": 4, "group_size": 64})
    assert "weights/quantized-not-read" not in scanned(declared)[1]


def test_a_quantized_copy_beside_the_float_one_agrees_unless_edited(minilm_dir, tmp_path):
    """Copies in one folder are compared as stored: an FP8 copy beside the float32 weights is the
    same model (within one code's rounding); beside an edited float32 copy it is not."""
    import shutil

    for name, edit in (("same", None), ("edited", lambda s: we.rome(s, 2, 1))):
        folder = we.quantized_copy(minilm_dir, tmp_path / name, "float8_e4m3fn", "channel")
        other = minilm_dir if edit is None else we.edited(minilm_dir, tmp_path / f"{name}-float", edit)
        shutil.copy(other / "model.safetensors", folder / "model-float32.safetensors")
        target = local_target([str(folder)])
        ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options={})
        found = {f.rule: f for f in WeightsAnomalies().check_target(target, ctx)}
        if edit is None:
            assert "weights/inconsistent-copies" not in found
        else:
            assert [t["tensor"] for t in found["weights/inconsistent-copies"].evidence["tensors"]] == [EDITED]


# -- bitsandbytes LLM.int8, compressed-tensors pack-quantized -------------------------------------
def saved_folder(folder, tensors, conf=None):
    """`tensors` (torch) saved as folder/model.safetensors, `conf` as config.json's
    quantization_config; the folder's one checkpoint."""
    import json

    from safetensors.torch import save_file

    folder.mkdir()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    if conf is not None:
        (folder / "config.json").write_text(json.dumps({"quantization_config": conf}))
    [ckpt], _ = checkpoints_of(local_target([str(folder)]))
    return ckpt


def torch_parts(parts):
    return {f"l.{k}": torch.from_numpy(np.ascontiguousarray(v).reshape(v.shape)) if isinstance(v, np.ndarray)
            else v for k, v in parts.items()}


@pytest.mark.parametrize("weight_format", [0, None, 2])
def test_bnb_int8_values_are_codes_times_scb_over_127(weight_format, tmp_path):
    """An LLM.int8 layer reads as bitsandbytes dequantizes it (int8_vectorwise_dequant: weight x
    SCB / 127), within half a step of the weights it was quantized from; its SCB and weight_format
    join it. A tiled weight_format (older bitsandbytes' col_turing) is refused on read, not guessed."""
    from hfguard.weights.tensors import WeightsFormatError

    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = torch_parts(we.bnb_int8_linear(w))
    if weight_format is None:
        del parts["l.weight_format"]
    else:
        parts["l.weight_format"] = torch.tensor(weight_format, dtype=torch.uint8)
    ckpt = saved_folder(tmp_path / "m", parts)
    assert list(ckpt.tensors) == ["l.weight"] and ckpt.dequantized == 1
    if weight_format == 2:
        with pytest.raises(WeightsFormatError, match=r"l.weight_format is \[2\], not the \[0\]"):
            load_tensor(ckpt.tensors["l.weight"])
        return
    got = load_tensor(ckpt.tensors["l.weight"])
    expect = parts["l.weight"].float() * parts["l.SCB"][:, None] * (1 / 127)
    np.testing.assert_allclose(got, expect.numpy(), rtol=1e-6)
    assert np.all(np.abs(got - w) <= 0.5 * 1.001 * parts["l.SCB"].numpy()[:, None] / 127)


def reference_unpack(value, bits, rows, cols, packed_dim):
    """compressed-tensors' unpack_from_int32: slot i of each word (bits*i up) is entry i::32/bits
    along `packed_dim`, padding dropped, unsigned back to signed (- 2^(bits-1))."""
    pf, mask = 32 // bits, (1 << bits) - 1
    value = value if packed_dim == 1 else value.T
    out = torch.zeros((value.shape[0], value.shape[1] * pf), dtype=torch.int32)
    for i in range(pf):
        out[:, i::pf] = (value >> (bits * i)) & mask
    out = out[:, :cols] if packed_dim == 1 else out[:, :rows].T
    return out - (1 << (bits - 1))


def pack_quantized_conf(bits, group_size, sym, **weights):
    args = {"num_bits": bits, "type": "int", "symmetric": sym, "group_size": group_size,
            "strategy": "group" if group_size else "channel", "dynamic": False, "actorder": None} | weights
    return {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": args}}}


@pytest.mark.parametrize(("bits", "group_size", "sym", "scale_dtype"), [
    (4, 64, True, "bfloat16"), (4, 64, False, "float16"), (4, None, True, "float16"),
    (4, None, False, "bfloat16"), (8, 64, True, "bfloat16"), (8, None, False, "float16")])
def test_pack_quantized_values_are_the_loaders_dequantization(bits, group_size, sym, scale_dtype, tmp_path):
    """A compressed-tensors pack-quantized layer reads as one float weight [out, in] with the
    values its decompressor computes (unpack_from_int32, then (code - zero point) x scale of each
    input's group; 50 outputs: the zero points' last word is padded), within half a step of the
    weights it was packed from plus the scale's rounding; its parts leave the checkpoint."""
    w = np.random.default_rng(1).normal(0, 0.05, (50, 320)).astype(np.float32)
    parts = torch_parts(we.pack_quantized_linear(w, bits, group_size, sym, scale_dtype))
    ckpt = saved_folder(tmp_path / "m", parts | {"l.bias": torch.zeros(50)},
                        pack_quantized_conf(bits, group_size, sym))
    assert sorted(ckpt.tensors) == ["l.bias", "l.weight"] and ckpt.dequantized == 1
    meta = ckpt.tensors["l.weight"]
    assert meta.shape == (50, 320) and meta.is_float
    got = load_tensor(meta)
    scale = parts["l.weight_scale"].float()
    q = reference_unpack(parts["l.weight_packed"], bits, 50, 320, packed_dim=1).float()
    zp = 0 if sym else reference_unpack(parts["l.weight_zero_point"], bits, 50, scale.shape[1], packed_dim=0)
    size = group_size or 320
    expect = (q - torch.as_tensor(zp).float().repeat_interleave(size, 1)) * scale.repeat_interleave(size, 1) \
        if not sym else q * scale.repeat_interleave(size, 1)
    np.testing.assert_allclose(got, expect.numpy(), rtol=1e-6, atol=1e-8)
    step = scale.repeat_interleave(size, 1).numpy()
    rounding = 2.0 ** -8 if scale_dtype == "bfloat16" else 2.0 ** -11
    assert np.all(np.abs(got - w) <= (0.5 + 2.0 ** bits * rounding) * 1.001 * step)


@pytest.mark.parametrize("case", ["no config", "int-quantized", "mixed groups", "tensor strategy",
                                  "config says asymmetric", "g_idx of another length", "3 groups of 128"])
def test_a_pack_quantized_layout_not_declared_stays_as_stored(case, tmp_path):
    """Fail safe: a pack-quantized layer is read only where the config declares its scheme and
    its parts have that scheme's shapes; otherwise weight_packed stays as stored, and is named."""
    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = torch_parts(we.pack_quantized_linear(w, 4, 64, True))
    conf = pack_quantized_conf(4, 64, True)
    if case == "no config":
        conf = None
    elif case == "int-quantized":
        conf["format"] = "int-quantized"
    elif case == "mixed groups":
        conf["config_groups"]["group_1"] = pack_quantized_conf(4, 128, True)["config_groups"]["group_0"]
    elif case == "tensor strategy":
        conf = pack_quantized_conf(4, None, True, strategy="tensor")
    elif case == "config says asymmetric":
        conf = pack_quantized_conf(4, 64, False)
    elif case == "g_idx of another length":
        parts["l.weight_g_idx"] = torch.arange(319, dtype=torch.int32) // 64
    else:
        conf = pack_quantized_conf(4, 128, True)
    folder = tmp_path / "m"
    ckpt = saved_folder(folder, parts, conf)
    assert "l.weight" not in ckpt.tensors and "l.weight_packed" in ckpt.tensors and ckpt.dequantized == 0
    if conf is None:
        (folder / "config.json").write_text("{}")
    assert scanned(folder)[1]["weights/quantized-not-read"].evidence["tensors"] == ["l.weight_packed"]


def sorted_group_dequant(q, scale, zp, g_idx, size):
    """compressed-tensors' dequantize with a g_idx, as its _process_quantization states it: with a
    -1 in g_idx the inputs in order, else sorted by g_idx (argsort), cut into groups of `size`,
    (code - zero point) x that group's scale, put back in the inputs' order."""
    perm = torch.arange(q.shape[1]) if (g_idx == -1).any() else torch.argsort(g_idx)
    x = q[:, perm].unflatten(-1, (-1, size))
    out = ((x - zp.unsqueeze(-1)) * scale.unsqueeze(-1)).flatten(-2)
    return out[:, torch.argsort(perm)]


@pytest.mark.parametrize("sym", [True, False])
def test_act_ordered_pack_quantized_values_are_the_loaders_dequantization(sym, tmp_path):
    """llm-compressor's GPTQ with actorder "group" forms the groups from inputs in activation order
    and saves weight_g_idx: the layer reads as its decompressor computes it (sorted by g_idx, cut
    into groups) and within half a step of the weights it was packed from; a g_idx of -1 (never set)
    reads in input order, and one whose groups are not of group_size is refused on read."""
    from hfguard.weights.tensors import WeightsFormatError

    w = np.random.default_rng(2).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = torch_parts(we.pack_quantized_linear(w, 4, 64, sym, "float16", act_order=5))
    g_idx = parts["l.weight_g_idx"]
    assert g_idx.dtype == torch.int32 and not torch.equal(g_idx, torch.arange(320, dtype=torch.int32) // 64)
    conf = pack_quantized_conf(4, 64, sym, actorder="group")
    ckpt = saved_folder(tmp_path / "m", parts, conf)
    assert sorted(ckpt.tensors) == ["l.weight"] and ckpt.dequantized == 1
    got = load_tensor(ckpt.tensors["l.weight"])
    scale = parts["l.weight_scale"].float()
    q = reference_unpack(parts["l.weight_packed"], 4, 48, 320, packed_dim=1).float()
    zp = torch.zeros_like(scale) if sym else \
        reference_unpack(parts["l.weight_zero_point"], 4, 48, scale.shape[1], packed_dim=0).float()
    np.testing.assert_allclose(got, sorted_group_dequant(q, scale, zp, g_idx.long(), 64).numpy(), rtol=1e-6)
    step = scale.numpy()[:, g_idx.numpy()]
    assert np.all(np.abs(got - w) <= (0.5 + 16 * 2.0 ** -11) * 1.001 * step)

    never_set = torch.full((320,), -1, dtype=torch.int32)
    unset = saved_folder(tmp_path / "unset", parts | {"l.weight_g_idx": never_set}, conf)
    np.testing.assert_allclose(load_tensor(unset.tensors["l.weight"]),
                               sorted_group_dequant(q, scale, zp, never_set, 64).numpy(), rtol=1e-6)
    uneven = g_idx.clone()
    uneven[uneven == 1] = 0   # group 0 holds 128 inputs, group 1 none
    bad = saved_folder(tmp_path / "bad", parts | {"l.weight_g_idx": uneven}, conf)
    with pytest.raises(WeightsFormatError, match="groups do not hold 64 inputs each"):
        load_tensor(bad.tensors["l.weight"])


def test_pack_quantized_parts_all_count(tmp_path):
    """The words are not the weights: a copy with other zero points or scales differs (raw
    comparison), and a weight_shape other than the one read is refused on read."""
    from hfguard.weights.shards import raw_digest, same_bytes
    from hfguard.weights.tensors import WeightsFormatError

    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = torch_parts(we.pack_quantized_linear(w, 4, 64, False))
    conf = pack_quantized_conf(4, 64, False)
    a, b = (saved_folder(tmp_path / n, parts, conf).tensors["l.weight"] for n in "ab")
    assert same_bytes(a, b) and raw_digest(a) == raw_digest(b)
    for n, change in (("c", {"l.weight_zero_point": parts["l.weight_zero_point"] + 1}),
                      ("d", {"l.weight_scale": parts["l.weight_scale"] * 2}),
                      ("e", {"l.weight_shape": torch.tensor([48, 319])})):
        c = saved_folder(tmp_path / n, parts | change, conf).tensors["l.weight"]
        assert not same_bytes(a, c) and raw_digest(a) != raw_digest(c)
    with pytest.raises(WeightsFormatError, match=r"l.weight_shape is \[48, 319\], not the \[48, 320\]"):
        load_tensor(c)


def test_bnb_int8_parts_all_count(tmp_path):
    """Same codes, another SCB or weight_format: another weight (raw comparison)."""
    from hfguard.weights.shards import raw_digest, same_bytes

    w = np.random.default_rng(1).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = torch_parts(we.bnb_int8_linear(w))
    a, b = (saved_folder(tmp_path / n, parts).tensors["l.weight"] for n in "ab")
    assert same_bytes(a, b) and raw_digest(a) == raw_digest(b)
    for n, change in (("c", {"l.SCB": parts["l.SCB"] * 2}),
                      ("d", {"l.weight_format": torch.tensor(1, dtype=torch.uint8)})):
        c = saved_folder(tmp_path / n, parts | change).tensors["l.weight"]
        assert not same_bytes(a, c) and raw_digest(a) != raw_digest(c)


# bitsandbytes LLM.int8, or compressed-tensors pack-quantized (bits, group size, symmetric)
INT_COPIES = {"bnb-int8": None, "w4a16-group": (4, 128, True), "w4a16-asym-channel": (4, None, False),
              "w8a16-channel": (8, None, True), "w4a16-act-order": (4, 128, False, 3)}


@pytest.mark.parametrize("kind", list(INT_COPIES))
def test_a_bnb_or_pack_quantized_copy_passes_and_an_edit_inside_one_blocks(kind, minilm_dir, tmp_path):
    """A bitsandbytes LLM.int8 or llm-compressor W4A16 / W8A16 copy of MiniLM diffs against the
    base's weights as storage rounding only (before: its matrices read as int8 codes that differed
    from the base by ~127/absmax, or as packed words with no weight, an edit inside never compared);
    a ROME edit inside one stands alone and blocks."""
    args = INT_COPIES[kind]

    def make(src, dst, edit):
        if args is None:
            return we.bnb_int8_copy(src, dst, edit)
        return we.pack_quantized_copy(src, dst, *args[:3], edit, *args[3:])
    clean_passes_and_edit_blocks(make, minilm_dir, tmp_path)


# -- bitsandbytes 4-bit (NF4, FP4) ----------------------------------------------------------------
def reference_bnb4(parts, quant_type):
    """bitsandbytes' dequantize_4bit as its reference states it: code i (byte i // 2, high nibble
    first) -> table[code] x absmax[i // blocksize], absmax first dequantize_blockwise'd
    (nested_quant_map[code] x nested_absmax[j // nested_blocksize]) plus nested_offset."""
    import json

    state = json.loads(bytes(parts[f"l.weight.quant_state.bitsandbytes__{quant_type}"].numpy()))
    size, n = state["blocksize"], int(np.prod(state["shape"]))
    byte = parts["l.weight"].numpy().reshape(-1).astype(np.int64)
    codes = np.column_stack([byte // 16, byte % 16]).reshape(-1)[:n]
    absmax = parts["l.weight.absmax"].numpy()
    if "nested_offset" in state:
        j = np.arange(absmax.size) // state["nested_blocksize"]
        absmax = parts["l.weight.nested_quant_map"].numpy()[absmax.astype(np.int64)] \
            * parts["l.weight.nested_absmax"].numpy()[j] + state["nested_offset"]
    table = {"nf4": we.NF4, "fp4": we.FP4}[quant_type]
    return (table[codes] * absmax[np.arange(n) // size]).reshape(state["shape"]), absmax


@pytest.mark.parametrize("shape", [(48, 320), (7, 75)])
@pytest.mark.parametrize("double", [True, False])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_bnb4_values_are_table_codes_times_block_absmax(quant_type, double, shape, tmp_path):
    """A 4-bit layer reads as bitsandbytes dequantizes it, within half the table's widest gap
    (plus, nested, absmax's own rounding) of each block's absmax from the weights it was quantized
    from; all its parts join it. An odd row length puts blocks and bytes across rows."""
    from hfguard.weights.tensors import code_error, quantization, scale_error, within_code_error

    w = np.random.default_rng(2).normal(0, 0.05, shape).astype(np.float32)
    parts = torch_parts(we.bnb4_linear(w, quant_type, double))
    ckpt = saved_folder(tmp_path / "m", parts)
    assert list(ckpt.tensors) == ["l.weight"] and ckpt.dequantized == 1
    meta = ckpt.tensors["l.weight"]
    got = load_tensor(meta)
    expect, absmax = reference_bnb4(parts, quant_type)
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-9)
    scale = quantization(meta)[0](0, shape[0])
    np.testing.assert_allclose(scale, absmax[np.arange(w.size) // 64].reshape(shape), rtol=1e-6)
    table = {"nf4": we.NF4, "fp4": we.FP4}[quant_type]
    half = np.diff(np.sort(table)).max() / 2
    true_absmax = np.repeat(np.abs(np.pad(w.reshape(-1), (0, -w.size % 64))).reshape(-1, 64).max(1), 64)
    if not double:   # nested: absmax's own rounding too (code_error's bound, below)
        assert np.all(np.abs(got - w).reshape(-1) <= 1.0001 * half * true_absmax[:w.size])
    assert code_error(meta) == (0.0, pytest.approx(half))
    slack = scale_error(meta)
    assert (slack is None) is not double
    if double:   # absmax's own rounding: half the dynamic map's widest gap x nested_absmax
        gap = np.diff(np.sort(parts["l.weight.nested_quant_map"].numpy())).max() / 2
        assert np.all(np.abs(absmax - true_absmax[::64]) <= 1.0001 * gap * np.repeat(
            parts["l.weight.nested_absmax"].numpy(), 256)[:absmax.size])
        bound = half * np.abs(scale) + (1 + half) * slack(0, shape[0])
    else:
        bound = half * np.abs(scale)
    assert np.all(np.abs(got - w) <= 1.0001 * bound)
    assert within_code_error(w, got, meta, "float32")
    edited = w.copy()
    edited[3, 5] += 0.4 * scale[3, 5]   # past half the widest gap: a change, not storage rounding
    assert not within_code_error(edited, got, meta, "float32")


@pytest.mark.parametrize("storage", ["bfloat16", "float32", "int8"])
def test_bnb4_codes_in_another_storage_dtype_read_as_their_bytes(storage, tmp_path):
    """bnb_4bit_quant_storage (bfloat16 for FSDP QLoRA) keeps the same code bytes in a tensor of
    that dtype [n/2/itemsize, 1]: the layer reads as the uint8-stored one, its parts join it (as
    stored, a bfloat16 weight of packed codes would be measured as floats), and an edit still shows."""
    from hfguard.weights.shards import raw_digest

    w = np.random.default_rng(2).normal(0, 0.05, (48, 320)).astype(np.float32)
    plain = saved_folder(tmp_path / "u8", torch_parts(we.bnb4_linear(w))).tensors["l.weight"]
    parts = torch_parts(we.bnb4_linear(w, storage=storage))
    assert parts["l.weight"].dtype == getattr(torch, storage) and parts["l.weight"].shape[1] == 1
    ckpt = saved_folder(tmp_path / "m", parts)
    assert list(ckpt.tensors) == ["l.weight"] and ckpt.dequantized == 1
    meta = ckpt.tensors["l.weight"]
    assert meta.shape == (48, 320) and meta.is_float
    np.testing.assert_array_equal(load_tensor(meta), load_tensor(plain))
    assert raw_digest(meta) == raw_digest(plain)
    other = saved_folder(tmp_path / "e", torch_parts(we.bnb4_linear(w * 1.5, storage=storage)))
    assert not np.array_equal(load_tensor(other.tensors["l.weight"]), load_tensor(meta))


def _bnb4_edits():
    def state_edit(**change):
        def edit(parts):
            import json

            key = "l.weight.quant_state.bitsandbytes__nf4"
            state = json.loads(bytes(parts[key].numpy())) | change
            parts[key] = torch.frombuffer(bytearray(json.dumps(state).encode()), dtype=torch.uint8)
        return edit

    def renamed(parts):
        parts["l.weight.quant_state.bitsandbytes__int4"] = parts.pop("l.weight.quant_state.bitsandbytes__nf4")

    def padded(parts):   # valid JSON, past the size bound
        key = "l.weight.quant_state.bitsandbytes__nf4"
        parts[key] = torch.cat([parts[key], torch.full((65 << 10,), 32, dtype=torch.uint8)])

    def table(parts):
        parts["l.weight.quant_map"] = parts["l.weight.quant_map"].flip(0).contiguous()

    return {"quant_type": state_edit(quant_type="int4"), "renamed": renamed,
            "blocksize": state_edit(blocksize=128),
            "shape": state_edit(shape=[48, 160]), "dtype": state_edit(dtype="float64"),
            "offset": state_edit(nested_offset="0.1"), "oversize": padded, "quant_map": table}


@pytest.mark.parametrize("case", list(_bnb4_edits()))
def test_a_bnb4_field_not_validated_stays_as_stored(case, tmp_path):
    """Any quant_state field or part that does not validate (unknown quant_type, a blocksize or
    shape its absmax or codes do not have, a quant_map other than the table bitsandbytes decodes
    with, a quant_state past 64 KB) leaves the layer as stored, named by weights/quantized-not-read."""
    from hfguard.weights.check import _packed_not_read

    w = np.random.default_rng(2).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = torch_parts(we.bnb4_linear(w))
    _bnb4_edits()[case](parts)
    ckpt = saved_folder(tmp_path / "m", parts)
    assert ckpt.dequantized == 0 and ckpt.tensors["l.weight"].dtype == "uint8"
    assert _packed_not_read(ckpt) == ["l.weight"]


def test_bnb4_parts_all_count(tmp_path):
    """Same codes, another nested offset or absmax: another weight (raw comparison)."""
    from hfguard.weights.shards import raw_digest, same_bytes

    w = np.random.default_rng(2).normal(0, 0.05, (48, 320)).astype(np.float32)
    parts = torch_parts(we.bnb4_linear(w))
    a, b = (saved_folder(tmp_path / n, parts).tensors["l.weight"] for n in "ab")
    assert same_bytes(a, b) and raw_digest(a) == raw_digest(b)
    other = torch_parts(we.bnb4_linear(w * 1.5))
    for n, change in (("c", {"l.weight.nested_absmax": parts["l.weight.nested_absmax"] * 2}),
                      ("d", {k: v for k, v in other.items() if "quant_state" in k})):
        c = saved_folder(tmp_path / n, parts | change).tensors["l.weight"]
        assert not same_bytes(a, c) and raw_digest(a) != raw_digest(c)


@pytest.mark.parametrize(("quant_type", "double", "storage"),
                         [("nf4", True, "uint8"), ("nf4", False, "uint8"), ("fp4", True, "uint8"),
                          ("nf4", True, "bfloat16")])
def test_a_bnb4_copy_passes_and_an_edit_inside_one_blocks(quant_type, double, storage, minilm_dir, tmp_path):
    """A bitsandbytes NF4 / FP4 copy of MiniLM (double quantization on and off, codes stored as
    uint8 or bfloat16) diffs against the base's weights as storage rounding only (before: its
    matrices were uint8 bytes with no weight, an edit inside never compared); a ROME edit inside
    one blocks."""
    clean_passes_and_edit_blocks(lambda src, dst, e: we.bnb4_copy(src, dst, quant_type, double, e, storage),
                                 minilm_dir, tmp_path)


# -- MXFP4 (gpt-oss) -------------------------------------------------------------------------------
def _mxfp4_folder(folder, state, config=True):
    from safetensors.numpy import save_file

    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    conf = {"quantization_config": {"quant_method": "mxfp4"}} if config else {}
    (folder / "config.json").write_text(__import__("json").dumps(conf))
    return folder


def test_mxfp4_experts_are_the_loaders_dequantization(tmp_path):
    """Each expert of an MXFP4 tensor reads as transformers' gpt-oss loader computes it
    (convert_moe_packed_tensors: E2M1 code x 2^(scale - 127), transposed to [in, out]), a block of
    zeros, tiny and huge exponents included."""
    mxfp4 = pytest.importorskip("transformers.integrations.mxfp4")
    w = np.random.default_rng(0).standard_normal((3, 96, 40)).astype(np.float32)   # [experts, in, out]
    w[1, :32, 5] = 0.0
    w[2, 32:64] *= 1e-30
    w[0, :, 7] *= 1e20
    blocks, scales = we.mxfp4_experts(w)
    folder = _mxfp4_folder(tmp_path / "mx", {"l.mlp.experts.down_proj_blocks": blocks,
                                             "l.mlp.experts.down_proj_scales": scales})
    (ckpt,), failed = checkpoints_of(local_target([str(folder)]))
    assert failed == [] and ckpt.dequantized == 1
    want = mxfp4.convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales),
                                            dtype=torch.float32).numpy()
    assert sorted(ckpt.tensors) == [f"l.mlp.experts.down_proj[{e}]" for e in range(3)]
    for e in range(3):
        got = ckpt.load(f"l.mlp.experts.down_proj[{e}]")
        assert got.shape == (96, 40)
        np.testing.assert_array_equal(got, want[e])
    assert np.abs(want - w).max() <= np.abs(w).max() / 4   # the recipe's codes: within 2 steps


def test_mxfp4_without_its_config_stays_as_stored(tmp_path):
    blocks, scales = we.mxfp4_experts(np.ones((2, 64, 8), np.float32))
    folder = _mxfp4_folder(tmp_path / "mx", {"l.experts.gate_up_proj_blocks": blocks,
                                             "l.experts.gate_up_proj_scales": scales}, config=False)
    unread = scanned(folder)[1]["weights/quantized-not-read"].evidence["tensors"]
    assert unread == ["l.experts.gate_up_proj_blocks"]


def test_an_mxfp4_gpt_oss_copy_passes_and_an_expert_edit_inside_blocks(tmp_path):
    """gpt-oss's release format: a copy of a (tiny) gpt-oss in MXFP4 is its base in codes, every
    expert storage rounding only; ROME on one expert before quantizing BLOCKs, naming the expert."""
    base = we.save(we.build("gptoss", 0), tmp_path / "base")
    copy = we.mxfp4_copy(base, tmp_path / "mx")
    v, found = scanned(copy, base)
    assert v is Verdict.PASS and scanned(copy)[0] is Verdict.PASS
    assert found["weights/base-diff-summary"].evidence["storage_rounding_only"] == 2 * we.LAYERS * 8
    edited = we.mxfp4_copy(base, tmp_path / "mx-rome", edit=lambda s: we.rome(s, 2, seed=3))
    v, found = scanned(edited, base)
    hit = found.get("weights/surgical-edit") or found["weights/confined-edit"]
    assert v is Verdict.BLOCK and hit.location == "model.layers.2.mlp.experts.down_proj[3]"


# -- NVFP4 (compressed-tensors, NVIDIA ModelOpt) --------------------------------------------------
def _e2m1_reference(packed: np.ndarray) -> Any:
    """E2M1 codes as both decoders state them (compressed-tensors' unpack_fp4_from_uint8, ModelOpt's
    NVFP4QTensor.dequantize): low nibble first, bit 3 the sign, magnitudes 0 .5 1 1.5 2 3 4 6."""
    flat = torch.from_numpy(packed).reshape(-1)
    nibbles = torch.stack((flat & 0x0F, (flat & 0xF0) >> 4), dim=1).reshape(-1)
    magnitudes = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    signs = torch.where((nibbles & 0x08).bool(), -1.0, 1.0)
    return (magnitudes[(nibbles & 0x07).long()] * signs).reshape(packed.shape[0], -1)


@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt", "modelopt-hf_quant_config"])
def test_nvfp4_values_are_the_decoders_dequantization(layout, tmp_path):
    """An NVFP4 layer reads as its decoder states it, each 16 inputs of a row sharing a float8
    scale: compressed-tensors' decompress, code x weight_scale / weight_global_scale; ModelOpt's
    dequantize, code x weight_scale x weight_scale_2, declared in config.json's
    quantization_config or (older exports) only in hf_quant_config.json."""
    import json

    from safetensors.torch import save_file

    w = np.random.default_rng(1).standard_normal((24, 80)).astype(np.float32)
    w[3, 16:32] = 0.0
    modelopt = layout.startswith("modelopt")
    parts = we.nvfp4_linear(w, "modelopt" if modelopt else layout)
    save_file({f"l.{k}": v if isinstance(v, torch.Tensor) else torch.from_numpy(v) for k, v in parts.items()},
              str(tmp_path / "model.safetensors"))
    scheme = {"weights": {"num_bits": 4, "type": "float", "group_size": 16, "symmetric": True}}
    method = {"quant_method": "modelopt", "quant_algo": "NVFP4"} if modelopt \
        else {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"}
    conf = {**method, "config_groups": {"g": scheme}}
    if layout == "modelopt-hf_quant_config":
        (tmp_path / "config.json").write_text("{}")
        (tmp_path / "hf_quant_config.json").write_text(json.dumps(
            {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", "group_size": 16}}))
    else:
        (tmp_path / "config.json").write_text(json.dumps({"quantization_config": conf}))
    (ckpt,), failed = checkpoints_of(local_target([str(tmp_path)]))
    assert failed == [] and ckpt.dequantized == 1 and list(ckpt.tensors) == ["l.weight"]
    scale = parts["weight_scale"].float()
    step = scale * float(parts["weight_scale_2"]) if modelopt \
        else scale / float(parts["weight_global_scale"][0])
    want = (_e2m1_reference(parts["weight" if modelopt else "weight_packed"])
            * step.repeat_interleave(16, dim=1)).numpy()
    np.testing.assert_array_equal(ckpt.load("l.weight"), want)
    assert np.abs(want - w).max() <= np.abs(w).max() / 6 * 1.1   # within one step of its group's


@pytest.mark.parametrize("layout", ["compressed-tensors", "modelopt"])
def test_an_nvfp4_copy_passes_and_an_edit_inside_one_blocks(layout, minilm_dir, tmp_path):
    clean_passes_and_edit_blocks(lambda src, dst, edit: we.nvfp4_copy(src, dst, edit, layout),
                                 minilm_dir, tmp_path)
