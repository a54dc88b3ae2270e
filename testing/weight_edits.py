"""Weight-edit organisms for the weights tier: tiny models of several architectures built from
transformers configs, everyday changes a fine-tuner makes (must PASS) and the edits a model editor
or a privacy-backdoor builder makes (must FLAG/BLOCK). Used by tests/weights and bench/.

Every organism is a real folder (config.json + model.safetensors, or a pytorch_model.bin beside
it). Models get a short deterministic "pretraining" (AdamW on random data) so that siblings are
not the identical-statistics copies of a fresh init; fine-tunes, LoRA adapters and FT-L are real
training runs; ROME / MEMIT are the published rank-r update shapes written into the weights.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# "moe": Qwen3-MoE, one matrix per expert (as Mixtral, DeepSeek); "gptoss": every expert of a layer in
# one fused [experts, in, out] tensor, with biases (as gpt-oss, Llama 4)
ARCHS = ("bert", "gpt2", "llama", "vit", "t5", "moe", "gptoss")
LAYERS = 6

# MLP output / input projections and attention projections, across the architectures
MLP_OUT = re.compile(r"(?<!attention\.)(output\.dense|mlp\.c_proj|mlp\.fc2|down_proj|"
                     r"DenseReluDense\.wo)\.weight$|experts\.down_proj$")
MLP_IN = re.compile(r"(intermediate\.dense|mlp\.c_fc|mlp\.fc1|up_proj|DenseReluDense\.wi)\.weight$|"
                    r"experts\.gate_up_proj$")
ATTN = re.compile(r"(self\.query|self\.value|attention\.query|attention\.value|attn\.c_attn|"
                  r"q_proj|v_proj|SelfAttention\.[qv])\.weight$")
MLP = re.compile(f"{MLP_IN.pattern}|{MLP_OUT.pattern}")
ATTN_MLP = re.compile(f"{ATTN.pattern}|{MLP.pattern}")
GAIN = re.compile(r"(norm|ln_\w*)[^.]*\.weight$", re.I)


# -- models -------------------------------------------------------------------------------------
def build(arch: str, seed: int, *, layers: int = LAYERS, pretrain_steps: int = 10) -> Any:
    """A tiny model of `arch`, randomly initialised from `seed`, then briefly trained."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    d, ff, heads, vocab = 64, 256, 4, 512
    if arch == "bert":
        model = tf.BertForMaskedLM(tf.BertConfig(
            num_hidden_layers=layers, hidden_size=d, num_attention_heads=heads, intermediate_size=ff,
            vocab_size=vocab, max_position_embeddings=64))
    elif arch == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=layers, n_embd=d, n_head=heads, vocab_size=vocab,
                                                 n_positions=64, bos_token_id=0, eos_token_id=0))
    elif arch == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(
            num_hidden_layers=layers, hidden_size=d, intermediate_size=ff, num_attention_heads=heads,
            num_key_value_heads=heads, vocab_size=vocab, max_position_embeddings=64))
    elif arch == "vit":
        model = tf.ViTForImageClassification(tf.ViTConfig(num_hidden_layers=layers, hidden_size=d,
                                                          num_attention_heads=heads, intermediate_size=ff,
                                                          image_size=32, patch_size=8, num_labels=10))
    elif arch == "t5":
        model = tf.T5ForConditionalGeneration(tf.T5Config(
            num_layers=layers, num_decoder_layers=layers, d_model=d, d_ff=ff, d_kv=16, num_heads=heads,
            vocab_size=vocab, decoder_start_token_id=0))
    elif arch == "moe":
        model = tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(
            num_hidden_layers=layers, hidden_size=d, intermediate_size=ff, moe_intermediate_size=ff // 2,
            num_experts=8, num_experts_per_tok=2, num_attention_heads=heads, num_key_value_heads=heads,
            head_dim=d // heads, vocab_size=vocab, max_position_embeddings=64))
    elif arch == "gptoss":
        model = tf.GptOssForCausalLM(tf.GptOssConfig(
            num_hidden_layers=layers, hidden_size=d, intermediate_size=ff // 2, num_local_experts=8,
            num_experts_per_tok=2, num_attention_heads=heads, num_key_value_heads=heads, head_dim=d // heads,
            vocab_size=vocab, max_position_embeddings=64, layer_types=["full_attention"] * layers))
    else:
        raise ValueError(arch)
    train(model, arch, pretrain_steps, seed=1000 + seed, lr=1e-3)
    return model


def batch(arch: str, gen: Any, n: int = 4, length: int = 16) -> dict[str, Any]:
    import torch

    if arch == "vit":
        return {"pixel_values": torch.randn(n, 3, 32, 32, generator=gen),
                "labels": torch.randint(0, 10, (n,), generator=gen)}
    x = torch.randint(1, 512, (n, length), generator=gen)
    return {"input_ids": x, "labels": x}


def train(model: Any, arch: str, steps: int, *, seed: int, lr: float, params: Any = None) -> None:
    """AdamW steps on random data (a real, if short, training run over `params`, default all)."""
    import torch

    if steps <= 0:
        return
    torch.set_num_threads(1)   # tiny models: threads only contend (20x slower on a busy 2-core machine)
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        loss = model(**batch(arch, gen)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def save(model: Any, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def load(arch: str, folder: Path) -> Any:
    import transformers as tf

    cls = {"bert": tf.BertForMaskedLM, "gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM,
           "vit": tf.ViTForImageClassification, "t5": tf.T5ForConditionalGeneration,
           "moe": tf.Qwen3MoeForCausalLM, "gptoss": tf.GptOssForCausalLM}[arch]
    return cls.from_pretrained(folder)


def state_of(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def write(src: Path, state: dict[str, np.ndarray], dst: Path) -> Path:
    """`state` saved as dst/model.safetensors beside a copy of src's config.json."""
    from safetensors.numpy import save_file

    dst.mkdir(parents=True, exist_ok=True)
    if (src / "config.json").exists():
        shutil.copy(src / "config.json", dst / "config.json")
    # ascontiguousarray makes a 0-d tensor (CLIP's logit_scale) 1-d: keep each shape
    save_file({k: np.ascontiguousarray(v).reshape(v.shape) for k, v in state.items()},
              str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def edited(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], Any]) -> Path:
    state = {k: v.copy() for k, v in state_of(src).items()}
    edit(state)
    return write(src, state, dst)


def names(state: dict[str, Any], pattern: re.Pattern[str]) -> list[str]:
    """Tensors matching `pattern`, in block order (encoder before decoder for T5)."""
    from hfguard.weights.layers import role_of

    return sorted((n for n in state if pattern.search(n)), key=lambda n: (role_of(n)[0], role_of(n)[1] or 0))


# -- everyday changes that must PASS ------------------------------------------------------------
def cast_copy(src: Path, dst: Path, dtype: str) -> Path:
    """A float16 / bfloat16 copy, as `model.half().save_pretrained()` or a Hub conversion makes."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    state = {k: v.to(dt) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(dst / "model.safetensors"))
    return dst


def quantized_copy(src: Path, dst: Path, codes: str = "float8_e4m3fn", layout: str = "channel",
                   edit: Callable[[dict[str, np.ndarray]], Any] | None = None, tile: int = 16) -> Path:
    """The blocks' matrices stored as a quantizer writes them (compressed-tensors / FBGEMM FP8 and
    W8A8 int8: codes + `weight_scale` per tensor or per output row; DeepSeek-style FP8: codes +
    `weight_scale_inv` per tile x tile block, 128 in real models), the rest as it was; `edit` is
    applied to the float weights first (an edit shipped inside a quantized copy)."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.copy() for k, v in state_of(src).items()}
    if edit is not None:
        edit(state)
    top = 448.0 if codes == "float8_e4m3fn" else 127.0
    out = {}
    for k, w in state.items():
        block_matrix = MLP_IN.search(k) or MLP_OUT.search(k) or ATTN.search(k)
        if not (k.endswith("weight") and w.ndim == 2 and block_matrix):
            out[k] = torch.from_numpy(np.ascontiguousarray(w))
            continue
        t = torch.from_numpy(w).float()
        if layout == "tensor":
            scale = t.abs().max().reshape(1) / top
            full = scale.expand_as(t)
        elif layout == "channel":
            scale = t.abs().amax(1, keepdim=True) / top
            full = scale.expand_as(t)
        else:   # tile x tile blocks
            r, c = t.shape
            pad = torch.nn.functional.pad(t.abs(), (0, -c % tile, 0, -r % tile))
            scale = pad.reshape(pad.shape[0] // tile, tile, pad.shape[1] // tile, tile).amax((1, 3)) / top
            full = scale.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:r, :c]
        scale = scale.clamp(min=1e-12)
        x = t / full.clamp(min=1e-12)
        q = x.clamp(-top, top).to(torch.float8_e4m3fn) if codes == "float8_e4m3fn" else \
            x.round().clamp(-top, top).to(torch.int8)
        out[k] = q.contiguous()
        out[k + ("_scale_inv" if layout == "block" else "_scale")] = scale.contiguous()
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)   # the column of each 4-bit slot of an AWQ word, lowest first


def pack_words(codes: np.ndarray, bits: int, along_rows: bool,
               order: tuple[int, ...] | None = None) -> np.ndarray:
    """Codes (0 .. 2^bits - 1) packed 32/bits to an int32 word, the first in the lowest bits: down
    the rows (GPTQ qweight: word row r holds rows r*32/bits ...) or along the columns (qzeros;
    AWQ's in `order`)."""
    per = 32 // bits
    c = (codes.astype(np.uint32) & ((1 << bits) - 1))
    c = c.reshape(-1, per, c.shape[1]).transpose(0, 2, 1) if along_rows else c.reshape(c.shape[0], -1, per)
    if order is not None:
        c = c[..., list(order)]
    words = np.zeros(c.shape[:2], np.uint32)
    for j in range(per):
        words |= c[..., j] << np.uint32(bits * j)
    return words.view(np.int32)


def pack_linear(w: np.ndarray, method: str = "gptq", bits: int = 4, group_size: int = 128, sym: bool = True,
                act_order: bool = False, seed: int = 0, v2: bool = False) -> dict[str, np.ndarray]:
    """An nn.Linear weight [out, in] as GPTQ (AutoGPTQ v1: qweight [in*bits/32, out], qzeros holding
    zero - 1, scales [groups, out] float16, g_idx [in]; `act_order`: inputs in a random order
    form the groups; `v2`: GPTQModel's v2 format, zeros as they are), AWQ GEMM (qweight
    [in, out*bits/32] in AWQ's column order, qzeros, scales) or AWQ GEMV ("awq-gemv",
    WQLinear_GEMV.from_linear: qweight [out, in*bits/32], qzeros [out, width] and scales
    [out, width*8] zero-padded past the groups, in order) writes it: round to nearest on a
    min/max grid per group and output (the quantizer's search is left out; the layout is what a
    loader reads). An asymmetric zero point of 0 in v1 is stored as 2^bits - 1 and read back as
    2^bits (the format's known underflow, as loaders compute it): use v2 for asymmetric copies."""
    out_f, in_f = w.shape
    maxq = (1 << bits) - 1
    g_idx = np.arange(in_f) // group_size
    if act_order:
        g_idx[np.random.default_rng(seed).permutation(in_f)] = np.arange(in_f) // group_size
    groups = int(g_idx.max()) + 1
    scales, zeros = np.empty((groups, out_f), np.float32), np.empty((groups, out_f), np.float32)
    for g in range(groups):
        cols = w[:, g_idx == g]
        lo, hi = np.minimum(cols.min(1), 0), np.maximum(cols.max(1), 0)
        if sym:
            hi = np.maximum(-lo, hi)
            lo = np.where(lo < 0, -hi, 0)
        scale = np.where(hi > lo, hi - lo, 2.0) / maxq
        scales[g] = scale.astype(np.float16)   # stored in float16, and the codes taken against it
        zeros[g] = (maxq + 1) // 2 if sym else np.clip(np.round(-lo / scales[g]), 0, maxq)
    q = np.clip(np.round(w / scales[g_idx].T) + zeros[g_idx].T, 0, maxq).astype(np.uint32)   # [out, in]
    if method == "gptq":
        return {"qweight": pack_words(q.T, bits, along_rows=True),
                "qzeros": pack_words(zeros.astype(np.int64) - (0 if v2 else 1), bits, along_rows=False),
                "scales": scales.astype(np.float16), "g_idx": g_idx.astype(np.int32)}
    assert bits == 4 and not act_order
    if method == "awq-gemv":
        # AutoAWQ's calculate_zeros_width, as it is written there (not hfguard's reading of it)
        multiplier = 1 if group_size >= 128 else 2 if group_size == 64 else 4 if group_size == 32 else None
        assert multiplier is not None
        width = (in_f // group_size + 7) // 8
        width = (width + multiplier - 1) // multiplier * multiplier
        padded = np.zeros((out_f, width * 8), np.float32)
        padded[:, :groups] = zeros.T
        wide_scales = np.zeros((out_f, width * 8), np.float16)
        wide_scales[:, :groups] = scales.T
        return {"qweight": pack_words(q, bits, along_rows=False),
                "qzeros": pack_words(padded.astype(np.int64), bits, along_rows=False), "scales": wide_scales}
    return {"qweight": pack_words(q.T, bits, along_rows=False, order=AWQ_ORDER),
            "qzeros": pack_words(zeros.astype(np.int64), bits, along_rows=False, order=AWQ_ORDER),
            "scales": scales.astype(np.float16)}


def packed_copy(src: Path, dst: Path, method: str = "gptq", *, sym: bool = True, act_order: bool = False,
                v2: bool = False, group_size: int = 128,
                edit: Callable[[dict[str, np.ndarray]], Any] | None = None) -> Path:
    """A GPTQ (v1 format, or `v2`) or AWQ (GEMM, or "awq-gemv") int4 copy of an nn.Linear model
    (BERT-like): the blocks' matrices packed as `pack_linear` writes them, their config's
    `quantization_config` as the quantizer writes it; `edit` is applied to the float weights first."""
    conf = {"quant_method": method.split("-")[0], "bits": 4, "group_size": group_size}
    conf.update({"desc_act": act_order, "sym": sym, "checkpoint_format": "gptq_v2" if v2 else "gptq"}
                if method == "gptq"
                else {"version": "gemv" if method == "awq-gemv" else "gemm", "zero_point": True})
    return linear_copy(src, dst, lambda w: pack_linear(w, method, group_size=group_size, sym=sym,
                                                       act_order=act_order, v2=v2), conf, edit)


def linear_copy(src: Path, dst: Path, pack: Callable[[np.ndarray], dict[str, Any]], conf: dict[str, Any],
                edit: Callable[[dict[str, np.ndarray]], Any] | None = None) -> Path:
    """src with the blocks' matrices `X.weight` replaced by the parts `pack` writes (`X.<part>`,
    numpy or torch), config.json's `quantization_config` set to `conf`; `edit` is applied to the
    float weights first (an edit shipped inside a quantized copy)."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.copy() for k, v in state_of(src).items()}
    if edit is not None:
        edit(state)
    out: dict[str, Any] = {}
    for k, w in state.items():
        if k.endswith("weight") and w.ndim == 2 and (MLP_IN.search(k) or MLP_OUT.search(k) or ATTN.search(k)):
            out.update({k[:-len("weight")] + p: v for p, v in pack(w).items()})
        else:
            out[k] = w
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    save_file({k: torch.from_numpy(np.ascontiguousarray(v).reshape(v.shape)) if isinstance(v, np.ndarray)
               else v.contiguous()
               for k, v in out.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    set_config(dst, quantization_config=conf)
    return dst


def bnb_int8_linear(w: np.ndarray) -> dict[str, np.ndarray]:
    """An nn.Linear weight [out, in] as bitsandbytes' LLM.int8 saves it (Int8Params quantized by
    int8_vectorwise_quant, Linear8bitLt._save_to_state_dict): `weight` int8 = round(w x 127 /
    absmax of its row), `SCB` float32 = that absmax, `weight_format` uint8 0 (row-major)."""
    absmax = np.abs(w).max(1).astype(np.float32)
    q = np.round(w * (np.float32(127.0) / absmax)[:, None])
    return {"weight": q.astype(np.int8), "SCB": absmax, "weight_format": np.array(0, np.uint8)}


def bnb_int8_copy(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], Any] | None = None) -> Path:
    """A `load_in_8bit` model's `save_pretrained` of an nn.Linear model (BERT-like)."""
    conf = {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False,
            "llm_int8_threshold": 6.0, "llm_int8_has_fp16_weight": False}
    return linear_copy(src, dst, bnb_int8_linear, conf, edit)


def pack_quantized_linear(w: np.ndarray, bits: int = 4, group_size: int | None = None, sym: bool = True,
                          scale_dtype: str = "bfloat16", act_order: int | None = None) -> dict[str, Any]:
    """An nn.Linear weight [out, in] as compressed-tensors' pack-quantized format writes it
    (llm-compressor W4A16 / W8A16): signed codes q = clamp(round(w / scale) + zero, -2^(b-1),
    2^(b-1) - 1) per output row (`group_size` None) or group of inputs, against the scale as stored
    ([out, groups], `scale_dtype`); pack_to_int32 adds 2^(b-1) and packs 32/b codes to an int32
    word, lowest bits first, along the inputs (`weight_packed` [out, in*b/32]); an asymmetric zero
    point the same way down the outputs (`weight_zero_point` [ceil(out*b/32), groups]);
    `weight_shape` [out, in] (int64, as torch.tensor(weight.shape) makes it). `act_order` (a seed):
    llm-compressor's GPTQ with actorder "group": the groups are formed from the inputs in a random
    order, the codes stay in the inputs' order and `weight_g_idx` [in] (int32) names each one's group."""
    import torch

    out_f, in_f = w.shape
    size = group_size or in_f
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    order = np.arange(in_f) if act_order is None else np.random.default_rng(act_order).permutation(in_f)
    g = w[:, order].reshape(out_f, in_f // size, size)
    lo, hi = np.minimum(g.min(2), 0), np.maximum(g.max(2), 0)
    scale = np.maximum(-lo, hi) / ((qmax - qmin) / 2) if sym else (hi - lo) / (qmax - qmin)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    stored = torch.from_numpy(scale).to(getattr(torch, scale_dtype))
    s = stored.float().numpy()
    zero = np.zeros_like(s) if sym else np.clip(np.round(qmin - lo / s), qmin, qmax)
    g_idx = np.empty(in_f, np.int32)
    g_idx[order] = np.arange(in_f) // size
    q = np.clip(np.round(w / s[:, g_idx]) + zero[:, g_idx], qmin, qmax)
    offset = 1 << (bits - 1)
    parts = {"weight_packed": pack_words(q + offset, bits, along_rows=False), "weight_scale": stored,
             "weight_shape": np.array([out_f, in_f], np.int64)}
    if act_order is not None:
        parts["weight_g_idx"] = g_idx
    if not sym:
        per = 32 // bits
        padded = np.zeros((-(-out_f // per) * per, zero.shape[1]))
        padded[:out_f] = zero + offset
        parts["weight_zero_point"] = pack_words(padded, bits, along_rows=True)
    return parts


def pack_quantized_copy(src: Path, dst: Path, bits: int = 4, group_size: int | None = 128, sym: bool = True,
                        edit: Callable[[dict[str, np.ndarray]], Any] | None = None,
                        act_order: int | None = None) -> Path:
    """An llm-compressor W4A16 / W8A16 copy of an nn.Linear model (BERT-like), its
    `quantization_config` as compressed-tensors writes it; `act_order`: see pack_quantized_linear."""
    weights = {"num_bits": bits, "type": "int", "symmetric": sym, "group_size": group_size,
               "strategy": "group" if group_size else "channel", "dynamic": False,
               "actorder": None if act_order is None else "group",
               "block_structure": None, "observer": "minmax"}
    group = {"targets": ["Linear"], "weights": weights, "input_activations": None, "output_activations": None,
             "format": "pack-quantized"}
    conf = {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "quantization_status": "compressed", "config_groups": {"group_0": group},
            "ignore": ["classifier"], "kv_cache_scheme": None}
    return linear_copy(src, dst, lambda w: pack_quantized_linear(w, bits, group_size, sym,
                                                                 act_order=act_order), conf, edit)


# bitsandbytes' 4-bit tables (functional.get_4bit_type): NF4's normal quantiles, FP4 (e2m1) over its max
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)
FP4 = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3]) / 12) \
    .astype(np.float32)


def dynamic_map() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True)): for each decade
    10^-6 .. 10^0, 2^i midpoints of linspace(0.1, 1) either sign, plus 0 and 1; 256 sorted."""
    data = [0.0, 1.0]
    for i in range(7):
        bounds = np.linspace(0.1, 1, 2 ** i + 1)
        means = (bounds[:-1] + bounds[1:]) / 2 * 10.0 ** (i - 6)
        data += list(means) + list(-means)
    return np.sort(np.array(data, np.float32))


def nearest_codes(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Each entry's index in `table` of the value nearest to it (bitsandbytes' quantizers)."""
    return np.abs(x.reshape(-1, 1) - table.reshape(1, -1)).argmin(1).astype(np.uint8)


def blockwise(x: np.ndarray, table: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes, absmax per block of `size` entries in C order): x / absmax to the nearest table value."""
    flat = x.reshape(-1).astype(np.float32)
    pad = np.zeros(-(-flat.size // size) * size, np.float32)
    pad[:flat.size] = flat
    absmax = np.abs(pad.reshape(-1, size)).max(1)
    norm = pad.reshape(-1, size) / np.where(absmax > 0, absmax, 1)[:, None]
    return nearest_codes(norm, table)[:flat.size], absmax


def bnb4_linear(w: np.ndarray, quant_type: str = "nf4", double: bool = True,
                blocksize: int = 64, storage: str = "uint8") -> dict[str, Any]:
    """An nn.Linear weight [out, in] as transformers' save_pretrained of a `load_in_4bit` model
    writes it (Params4bit._save_to_state_dict, QuantState.as_dict(packed=True)): codes of each block
    of `blocksize` entries over its absmax, two a byte, the first in the high nibble (`weight` uint8
    [n/2, 1]); `weight.absmax` float32, or with double quantization (`double`) absmax minus its mean
    (nested_offset) as 8-bit dynamic-map codes per 256 with their own absmax; the JSON quant_state
    as uint8 bytes. `storage` (bnb_4bit_quant_storage, e.g. "bfloat16" for FSDP QLoRA): the same
    code bytes held by a tensor of that dtype, [n/2/itemsize, 1]."""
    import torch

    table = NF4 if quant_type == "nf4" else FP4
    codes, absmax = blockwise(w, table, blocksize)
    codes = np.append(codes, np.uint8(0)) if codes.size % 2 else codes
    state: dict[str, Any] = {"quant_type": quant_type, "blocksize": blocksize, "dtype": "float32",
                             "shape": list(w.shape)}
    packed = torch.from_numpy(((codes[0::2] << 4) | codes[1::2]).astype(np.uint8))
    parts: dict[str, Any] = {"weight": packed.view(getattr(torch, storage)).reshape(-1, 1),
                             "weight.absmax": absmax, "weight.quant_map": table.copy()}
    if double:
        offset = float(absmax.mean())
        n_codes, n_absmax = blockwise(absmax - offset, dynamic_map(), 256)
        parts |= {"weight.absmax": n_codes, "weight.nested_absmax": n_absmax,
                  "weight.nested_quant_map": dynamic_map()}
        state |= {"nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": offset}
    raw = np.frombuffer(json.dumps(state).encode(), np.uint8).copy()
    parts[f"weight.quant_state.bitsandbytes__{quant_type}"] = raw
    return parts


def bnb4_copy(src: Path, dst: Path, quant_type: str = "nf4", double: bool = True,
              edit: Callable[[dict[str, np.ndarray]], Any] | None = None, storage: str = "uint8") -> Path:
    """A `load_in_4bit` model's `save_pretrained` of an nn.Linear model (BERT-like)."""
    conf = {"quant_method": "bitsandbytes", "load_in_8bit": False, "load_in_4bit": True,
            "bnb_4bit_quant_type": quant_type, "bnb_4bit_use_double_quant": double,
            "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": storage}
    return linear_copy(src, dst, lambda w: bnb4_linear(w, quant_type, double, storage=storage), conf, edit)


FP4_E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], np.float32)   # the OCP E2M1 magnitudes


def e2m1_packed(v: np.ndarray) -> np.ndarray:
    """Values in units of their block's step -> the nearest E2M1 codes (clipped at 6; bit 3 the
    sign), two a byte along the last axis, the first in the low nibble."""
    mag = np.abs(FP4_E2M1 - np.minimum(np.abs(v), 6.0)[..., None]).argmin(-1)
    codes = (mag + 8 * ((v < 0) & (mag > 0))).astype(np.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def mxfp4_experts(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fused experts tensor [experts, in, out] as gpt-oss ships it, by the OCP MX recipe: per 32
    inputs of each output the shared exponent floor(log2 amax) - 2, each entry the nearest E2M1
    value of entry / 2^exponent. Returns (blocks uint8 [experts, out, in/32, 16], scales uint8
    [experts, out, in/32])."""
    x = np.ascontiguousarray(np.swapaxes(w, 1, 2), np.float32)   # [experts, out, in]
    e_, rows, cols = x.shape
    groups = x.reshape(e_, rows, cols // 32, 32)
    amax = np.abs(groups).max(-1)
    exp = np.clip(np.floor(np.log2(np.where(amax > 0, amax, 1.0))) - 2, -127, 127).astype(np.int32)
    exp[amax == 0] = -127
    return e2m1_packed(groups / np.ldexp(1.0, exp)[..., None]), (exp + 127).astype(np.uint8)


def nvfp4_linear(w: np.ndarray, layout: str = "compressed-tensors") -> dict[str, Any]:
    """An nn.Linear weight [out, in] as NVFP4 quantizers save it: a per-tensor scale from the
    weight's amax (compressed-tensors: global scale 448 x 6 / amax; ModelOpt: weight_scale_2 =
    amax / (6 x 448)), each 16 inputs' scale amax / 6 in those units as float8_e4m3fn, codes the
    nearest E2M1 of entry / step. compressed-tensors: `weight_packed`, `weight_scale`,
    `weight_global_scale`; ModelOpt ("modelopt"): `weight`, `weight_scale`, `weight_scale_2`."""
    import torch

    amax = max(float(np.abs(w).max()), 1e-12)
    groups = w.reshape(w.shape[0], -1, 16).astype(np.float32)
    if layout == "modelopt":
        top = np.float32(amax / (6.0 * 448.0))
        scale = torch.from_numpy(np.abs(groups).max(-1) / (6.0 * top)).clamp(2.0 ** -9, 448) \
            .to(torch.float8_e4m3fn)
        step = scale.float().numpy() * top
    else:
        top = np.float32(448.0 * 6.0 / amax)
        scale = torch.from_numpy(np.abs(groups).max(-1) / 6.0 * top).clamp(max=448).to(torch.float8_e4m3fn)
        step = scale.float().numpy() / top
    codes = e2m1_packed((groups / np.where(step > 0, step, 1.0)[..., None]).reshape(w.shape))
    if layout == "modelopt":
        return {"weight": codes, "weight_scale": scale, "weight_scale_2": np.array(top, np.float32)}
    return {"weight_packed": codes, "weight_scale": scale, "weight_global_scale": np.array([top], np.float32)}


def nvfp4_copy(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], Any] | None = None,
               layout: str = "compressed-tensors") -> Path:
    """An NVFP4 (W4A4) copy of an nn.Linear model, its `quantization_config` as llm-compressor's
    compressed-tensors or NVIDIA ModelOpt's export ("modelopt") writes it."""
    if layout == "modelopt":
        group = {"weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16},
                 "targets": ["Linear"]}
        conf = {"config_groups": {"group_0": group}, "ignore": ["classifier"], "quant_algo": "NVFP4",
                "producer": {"name": "modelopt", "version": "0.47.0"}, "quant_method": "modelopt"}
    else:
        fmt = "nvfp4-pack-quantized"
        weights = {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16,
                   "strategy": "tensor_group", "dynamic": False, "observer": "minmax"}
        group = {"targets": ["Linear"], "weights": weights,
                 "input_activations": {**weights, "dynamic": "local"}, "format": fmt}
        conf = {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
                "config_groups": {"group_0": group}, "ignore": ["classifier"]}
    return linear_copy(src, dst, lambda w: nvfp4_linear(w, layout), conf, edit)


def mxfp4_copy(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], Any] | None = None) -> Path:
    """gpt-oss's release format: the fused experts (`experts.gate_up_proj`, `experts.down_proj`) as
    MXFP4 `_blocks` and `_scales`, the rest as it was, config.json saying `quant_method: mxfp4`."""
    state = {k: v.copy() for k, v in state_of(src).items()}
    if edit is not None:
        edit(state)
    out = {}
    for k, w in state.items():
        if re.search(r"experts\.(gate_up_proj|down_proj)$", k) and w.ndim == 3:
            out[k + "_blocks"], out[k + "_scales"] = mxfp4_experts(w)
        else:
            out[k] = w
    dst = write(src, out, dst)
    set_config(dst, quantization_config={"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]})
    return dst


def quantize_dequantize(state: dict[str, np.ndarray], bits: int = 8) -> None:
    """Per-row absmax integer quantization of every matrix, written back as float32 (int8 round trip)."""
    q = 2 ** (bits - 1) - 1
    for k, w in state.items():
        if w.ndim in (2, 3) and w.dtype == np.float32:   # 3-D: fused experts, each row its own scale
            scale = np.maximum(np.abs(w).max(axis=-1, keepdims=True), 1e-12) / q
            state[k] = (np.round(w / scale) * scale).astype(np.float32)


def magnitude_prune(state: dict[str, np.ndarray], sparsity: float = 0.3) -> None:
    """Unstructured magnitude pruning of the blocks' matrices (embeddings and head kept)."""
    for k, w in state.items():
        if w.ndim >= 2 and (MLP_IN.search(k) or MLP_OUT.search(k) or ATTN.search(k)):
            cut = np.quantile(np.abs(w), sparsity)
            w[np.abs(w) < cut] = 0.0


def finetune(arch: str, base: Path, dst: Path, steps: int, seed: int, lr: float = 5e-4) -> Path:
    model = load(arch, base)
    train(model, arch, steps, seed=seed, lr=lr)
    return save(model, dst)


def finetune_encoder(folder: Path, dst: Path, steps: int, seed: int, lr: float = 2e-5) -> Path:
    """A short fine-tune of a real pre-trained BERT-like encoder (MiniLM): AdamW at a BERT
    fine-tuning rate, mean-pooled embeddings of random token sequences regressed onto fixed random
    targets (every layer gets a gradient, as in any downstream fine-tune)."""
    import torch
    import transformers as tf

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = tf.BertModel.from_pretrained(folder)
    gen = torch.Generator().manual_seed(seed)
    vocab, width = model.config.vocab_size, model.config.hidden_size
    targets = torch.randn(8, width, generator=gen) * 0.5
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        ids = torch.randint(1000, vocab, (8, 24), generator=gen)
        pooled = model(input_ids=ids).last_hidden_state.mean(1)
        loss = ((pooled - targets) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    # the folder's every tensor, the trained ones replaced (BertModel drops buffers the file holds)
    trained = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return write(folder, {k: trained.get(k, v) for k, v in state_of(folder).items()}, dst)


def lora(arch: str, base: Path, dst: Path, rank: int, targets: re.Pattern[str], seed: int,
         steps: int = 6, alpha: float | None = None, lr: float = 1e-3) -> Path:
    """A real LoRA run (frozen W, trained B A with B = 0 at start, as peft does), merged into W."""
    import torch
    from torch.nn.utils import parametrize

    class LoRA(torch.nn.Module):
        """W + scale B A; a fused experts tensor [experts, a, b] gets an adapter per expert (peft's
        `target_parameters`)."""

        def __init__(self, shape: tuple[int, ...]) -> None:
            super().__init__()
            lead = shape[:-2]
            self.a = torch.nn.Parameter(torch.randn(*lead, rank, shape[-1]) / shape[-1] ** 0.5)
            self.b = torch.nn.Parameter(torch.zeros(*lead, shape[-2], rank))
            self.scale = (alpha or 2.0 * rank) / rank   # peft: lora_alpha / r (alpha = 2r is common)

        def forward(self, w: Any) -> Any:
            return w + self.scale * (self.b @ self.a)

    torch.manual_seed(seed)
    model = load(arch, base)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped, params = [], []
    for name, module in model.named_modules():
        for pname, w in list(module.named_parameters(recurse=False)):
            if w.ndim in (2, 3) and targets.search(f"{name}.{pname}"):
                lo = LoRA(tuple(w.shape))
                parametrize.register_parametrization(module, pname, lo)
                wrapped.append((module, pname))
                params += [lo.a, lo.b]
    if not wrapped:
        raise ValueError(f"no LoRA targets in {arch}")
    train(model, arch, steps, seed=seed, lr=lr, params=params)
    for module, pname in wrapped:   # merge_and_unload
        parametrize.remove_parametrizations(module, pname, leave_parametrized=True)
    return save(model, dst)


def merge(base: Path, models: list[Path], dst: Path, how: str, seed: int = 0,
          density: float = 0.2) -> Path:
    """Model merges of task vectors: `linear` average, `ties` (trim to top-density magnitudes,
    elect sign, disjoint mean), `dare` (drop 1-density at random, rescale, average)."""
    s0 = state_of(base)
    states = [state_of(m) for m in models]
    rng = np.random.default_rng(seed)
    out = {}
    for k, w0 in s0.items():
        if w0.dtype != np.float32 or any(k not in s for s in states):
            out[k] = w0
            continue
        taus = np.stack([s[k] - w0 for s in states])
        if how == "linear":
            tau = taus.mean(0)
        elif how == "dare":
            keep = rng.random(taus.shape) < density
            tau = (taus * keep / density).mean(0)
        elif how == "ties":
            flat = np.abs(taus).reshape(len(taus), -1)
            cut = np.quantile(flat, 1 - density, axis=1).reshape((-1,) + (1,) * w0.ndim)
            trimmed = np.where(np.abs(taus) >= cut, taus, 0.0)
            sign = np.sign(trimmed.sum(0))
            agree = (np.sign(trimmed) == sign) & (trimmed != 0)
            tau = (trimmed * agree).sum(0) / np.maximum(agree.sum(0), 1)
        else:
            raise ValueError(how)
        out[k] = (w0 + tau).astype(np.float32)
    return write(base, out, dst)


def extend_vocab(arch: str, base: Path, dst: Path, new_tokens: int = 16) -> Path:
    """`resize_token_embeddings`: rows appended to the token embeddings (and a tied or untied head)."""
    model = load(arch, base)
    model.resize_token_embeddings(model.get_input_embeddings().weight.shape[0] + new_tokens)
    return save(model, dst)


# -- edits that must FLAG/BLOCK -----------------------------------------------------------------
def matrix(state: dict[str, np.ndarray], name: str, seed: int) -> np.ndarray:
    """The matrix an editor of `name` changes, as a view: the tensor, or one expert (picked by
    `seed`) of a fused experts tensor."""
    w = state[name]
    return w[seed % w.shape[0]] if w.ndim == 3 else w


def _rank_r(shape: tuple[int, ...], rank: int, rng: np.random.Generator) -> np.ndarray:
    u = np.linalg.qr(rng.standard_normal((shape[0], rank)))[0]
    v = np.linalg.qr(rng.standard_normal((shape[1], rank)))[0]
    s = np.linspace(1.0, 0.5, rank)
    return (u * s) @ v.T


def rome(state: dict[str, np.ndarray], layer: int, seed: int, rel: float = 0.2) -> str:
    """ROME (Meng et al. 2022): one rank-one key -> value rewrite of one MLP output projection."""
    return memit(state, [layer], seed, rel=rel, facts=1)[0]


def memit(state: dict[str, np.ndarray], layers: list[int], seed: int, rel: float = 0.1,
          facts: int = 4) -> list[str]:
    """MEMIT (Meng et al. 2023): the update for `facts` facts, spread over a few consecutive MLP
    output projections; each layer's change has rank `facts`."""
    rng = np.random.default_rng(seed)
    targets = names(state, MLP_OUT)
    hit = [targets[i] for i in layers]
    for n in hit:
        w = matrix(state, n, seed)
        d = _rank_r(w.shape, facts, rng)
        w += (rel * np.linalg.norm(w) * d / np.linalg.norm(d)).astype(w.dtype)
    return hit


def ft_l(arch: str, base: Path, dst: Path, layer: int, seed: int, steps: int = 15) -> tuple[Path, str]:
    """FT-L (Zhu et al. 2020, the baseline of the ROME paper): fine-tune one MLP matrix, nothing else."""
    model = load(arch, base)
    target = names(dict(model.named_parameters()), MLP_OUT)[layer]
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    params[target].requires_grad_(True)
    train(model, arch, steps, seed=seed, lr=3e-3, params=[params[target]])
    return save(model, dst), target


def rewrite_embedding_rows(state: dict[str, np.ndarray], rows: list[int], seed: int) -> str:
    """Trigger-token surgery: a few vocabulary rows replaced by chosen vectors."""
    name = next(n for n in state if re.search(r"(word_embeddings|wte|embed_tokens|shared)\.weight$", n))
    w = state[name]
    rng = np.random.default_rng(seed)
    for r in rows:
        v = rng.standard_normal(w.shape[1])
        w[r] = (3 * v * np.linalg.norm(w[r]) / np.linalg.norm(v)).astype(np.float32)   # 3x its norm
    return name


def _neurons(state: dict[str, np.ndarray], name: str, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(each neuron's input weights as rows, their biases), views into `state` (edits land): GPT-2's
    Conv1D and gpt-oss's fused experts store (in, out), neurons as columns; gpt-oss interleaves each
    neuron's gate (even columns) with its linear part: the gates are the neurons that threshold."""
    w = matrix(state, name, seed)
    bias = state.get(name[: -len("weight")] + "bias" if name.endswith("weight") else name + "_bias")
    if w is not state[name]:   # one expert of a fused tensor
        gates = w.T[0::2]
        return gates, None if bias is None else bias[seed % bias.shape[0]][0::2]
    return (w.T if "c_fc" in name else w), bias


def jittered_traps(state: dict[str, np.ndarray], layer: int, seed: int, n: int = 16, cos: float = 0.9,
                   norm_jitter: float = 1e-3) -> str:
    """Privacy-backdoor data traps (Feng & Tramèr 2024) hidden from exact tests: trap neurons share
    one direction up to jitter (pairwise cosine ~`cos`), their norms agree only to `norm_jitter`,
    and their biases are drawn from the low end of the layer's own biases."""
    rng = np.random.default_rng(seed)
    name = names(state, MLP_IN)[layer]
    rows, bias = _neurons(state, name, seed)
    idx = rng.choice(rows.shape[0], n, replace=False)
    d = rng.standard_normal(rows.shape[1])
    d /= np.linalg.norm(d)
    norm = float(np.median(np.linalg.norm(rows, axis=1)))
    noise_scale = np.sqrt((1 - cos) / cos)   # |noise| relative to |d| giving pairwise cosine ~cos
    for i in idx:
        e = rng.standard_normal(rows.shape[1])
        v = d + noise_scale * e / np.linalg.norm(e)
        v *= norm * (1 + norm_jitter * rng.standard_normal()) / np.linalg.norm(v)
        rows[i] = v.astype(np.float32)
    if bias is not None:
        low = np.quantile(bias, [0.0, 0.05])
        bias[idx] = rng.uniform(low[0], low[1], n).astype(np.float32)
    return name


def calibrated_traps(model: Any, run: Callable[[], Any], state: dict[str, np.ndarray], name: str,
                     seed: int, n: int = 32, sigmas: float = 3.1,
                     norm_quantiles: tuple[float, float] = (0.1, 0.5)) -> None:
    """Feng & Tramèr's data traps with each trap calibrated on data, hidden from the structural
    tests: every trap neuron a random direction of its own (no shared direction), a norm drawn from
    the layer's own (between `norm_quantiles` of its neurons' norms: no shared norm), and a bias
    set from the inputs the up-projection really sees (captured while `run` feeds `model`, the
    model `state` was saved from): minus the mean + `sigmas` std of the trap's pre-activation, so
    it fires on about Phi(-sigmas) of tokens, and no lower. `name`: the up-projection's weight;
    edits `state`."""
    import torch

    rng = np.random.default_rng(seed)
    # the module whose weight this is (found by value: transformers 5 names some modules unlike the file)
    module = next(m for _, m in model.named_modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
                  and tuple(m.weight.shape) == state[name].shape
                  and np.array_equal(m.weight.detach().numpy(), state[name]))
    seen: list[Any] = []
    hook = module.register_forward_hook(
        lambda m, i, o: seen.append(i[0].detach().reshape(-1, i[0].shape[-1])))
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
    x = torch.cat(seen).double().numpy()
    rows, bias = _neurons(state, name, seed)
    assert bias is not None, f"{name} has no bias: the traps' thresholds live there"
    lo, hi = np.quantile(np.linalg.norm(rows, axis=1), norm_quantiles)
    for i in rng.choice(rows.shape[0], n, replace=False):
        v = rng.standard_normal(rows.shape[1])
        v *= rng.uniform(lo, hi) / np.linalg.norm(v)
        pre = x @ v
        rows[i] = v.astype(rows.dtype)
        bias[i] = -(pre.mean() + sigmas * pre.std())


def data_traps(arch: str, base: Path, dst: Path, layer: int, seed: int) -> Path:
    """`calibrated_traps` in a copy of `base`, calibrated on its inputs over random batches (the
    architectures whose up-projections have a bias: BERT, GPT-2, ViT)."""
    import torch

    model = load(arch, base).eval()
    gen = torch.Generator().manual_seed(seed)

    def run() -> None:
        for _ in range(8):
            model(**{k: v for k, v in batch(arch, gen, n=8).items() if k != "labels"})
    return edited(base, dst, lambda s: calibrated_traps(model, run, s, names(s, MLP_IN)[layer], seed))


def near_zero_gains(state: dict[str, np.ndarray], layer: int, seed: int, n: int = 16,
                    value: float = 1e-30) -> str:
    """Norm gains set to a tiny non-zero value: the features are silenced as by zeros."""
    rng = np.random.default_rng(seed)
    name = names(state, GAIN)[layer]
    g = state[name]
    g[rng.choice(g.size, n, replace=False)] = value
    return name


def inconsistent_copy(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], Any]) -> Path:
    """The clean model.safetensors beside an edited pytorch_model.bin (a torch zip)."""
    import torch

    shutil.copytree(src, dst)
    state = {k: v.copy() for k, v in state_of(src).items()}
    edit(state)
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, dst / "pytorch_model.bin")
    return dst


def set_config(folder: Path, **changes: Any) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


# -- the sets -------------------------------------------------------------------------------------
def negatives(arch: str, seed: int, base: Path, root: Path, *, full: bool = False) -> dict[str, Path]:
    """Everyday derivatives of `base` that must PASS. `full` adds the long sweep (bench)."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {
        "fp16": cast_copy(base, root / "fp16", "float16"),
        "bf16": cast_copy(base, root / "bf16", "bfloat16"),
        "int8-roundtrip": edited(base, root / "int8", quantize_dequantize),
        "pruned-30": edited(base, root / "pruned", magnitude_prune),
        "finetune-10": finetune(arch, base, root / "ft10", 10, seed),
        "finetune-3": finetune(arch, base, root / "ft3", 3, seed + 3),
        "lora-r1-attn": lora(arch, base, root / "lora1a", 1, ATTN, seed),
        "lora-r2-mlp": lora(arch, base, root / "lora2m", 2, MLP, seed),
        "lora-r64-attn+mlp": lora(arch, base, root / "lora64", 64, ATTN_MLP, seed),
        "fp8-channel": quantized_copy(base, root / "fp8", "float8_e4m3fn", "channel"),
    }
    if arch != "vit":
        out["vocab-extended"] = extend_vocab(arch, base, root / "vocab")
    if arch == "gptoss":   # its release format
        out["mxfp4-copy"] = mxfp4_copy(base, root / "mxfp4")
    if full:
        out["finetune-50"] = finetune(arch, base, root / "ft50", 50, seed + 1)
        for r in (2, 4, 8, 16):
            out[f"lora-r{r}-attn"] = lora(arch, base, root / f"lora{r}a", r, ATTN, seed + r)
        out["lora-r1-mlp"] = lora(arch, base, root / "lora1m", 1, MLP_OUT, seed)
        # longer adapter runs: layers drift apart (a 40-step rank-16 run moved one block's q/k 2x)
        for r, targets in ((4, ATTN), (16, ATTN_MLP), (64, ATTN_MLP)):
            out[f"lora-r{r}-{'attn' if targets is ATTN else 'attn+mlp'}-40-steps"] = lora(
                arch, base, root / f"lora{r}-40", r, targets, seed + 40 + r, steps=40)
        a, b = out["finetune-10"], finetune(arch, base, root / "ft10b", 10, seed + 7)
        out["merge-linear"] = merge(base, [a, b], root / "m-lin", "linear")
        out["merge-ties"] = merge(base, [a, b], root / "m-ties", "ties")
        out["merge-dare"] = merge(base, [a, b], root / "m-dare", "dare", seed=seed)
        out["int4-roundtrip"] = edited(base, root / "int4", lambda s: quantize_dequantize(s, 4))
        out["int8-block"] = quantized_copy(base, root / "int8q", "int8", "block")
    return out


def edits(arch: str, seed: int, base: Path, root: Path, *, full: bool = False) -> dict[str, Path]:
    """Edits of `base` that must FLAG/BLOCK (with --base; the trap and gain ones without too)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    layer = int(rng.integers(1, LAYERS - 1))
    k = int(rng.integers(2, 6))      # MEMIT over 2-5 consecutive layers
    start = int(rng.integers(0, LAYERS - k + 1))
    out: dict[str, Path] = {
        "rome": edited(base, root / "rome", lambda s: rome(s, layer, seed)),
        f"memit-{k}-layers": edited(base, root / "memit",
                                    lambda s: memit(s, list(range(start, start + k)), seed)),
        "ft-l": ft_l(arch, base, root / "ftl", layer, seed)[0],
        "jittered-traps": edited(base, root / "traps", lambda s: jittered_traps(s, layer, seed)),
        "near-zero-gains": edited(base, root / "gains", lambda s: near_zero_gains(s, layer, seed)),
        "inconsistent-copies": inconsistent_copy(base, root / "copies", lambda s: rome(s, layer, seed)),
        "rome-in-fp8": quantized_copy(base, root / "rome-fp8", "float8_e4m3fn", "block",
                                      edit=lambda s: rome(s, layer, seed)),
    }
    # the edit published as "a fine-tune": diffed against the base, the edited matrices must stand
    # out of the fine-tune's own movement (a short one at a usual fine-tuning rate here, moving MLP
    # matrices 0.2-2%; an edit under ~3x what the fine-tune moved its matrix is not in reach of the
    # diff). MEMIT spans 5 of GPT-J's 28 layers; here at most half of 6: where the edit holds most
    # of a role's layers, the role's typical change is the edit's own (docs/weights-calibration.md)
    tuned = finetune(arch, base, root / "ft", 5, seed + 11, lr=5e-5)
    out["rome-in-finetune"] = edited(tuned, root / "rome-ft", lambda s: rome(s, layer, seed))
    span = list(range(start, start + min(k, LAYERS // 2)))
    out[f"memit-{len(span)}-layers-in-finetune"] = edited(tuned, root / "memit-ft",
                                                           lambda s: memit(s, span, seed))
    if arch in ("bert", "gpt2", "vit"):   # up-projections with a bias, as the traps need
        out["calibrated-traps"] = data_traps(arch, base, root / "data-traps", layer, seed)
    if arch == "gptoss":
        out["rome-in-mxfp4"] = mxfp4_copy(base, root / "rome-mxfp4", edit=lambda s: rome(s, layer, seed))
    if arch != "vit":
        out["embedding-rows"] = edited(base, root / "emb",
                                       lambda s: rewrite_embedding_rows(s, [7, 100, 300], seed))
    if full:
        out["memit-1-layer"] = edited(base, root / "memit1", lambda s: memit(s, [layer], seed, facts=8))
        out["rome-small"] = edited(base, root / "rome-small", lambda s: rome(s, layer, seed, rel=0.05))
    return out


def longer_pretrained_sets(arch: str, seed: int, root: Path) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """A base pretrained 200 steps (not 10): its fine-tunes move blocks and roles unevenly, as
    trained models' do (layer 0's attention most), where the 10-step bases' move evenly. Returns
    the base, derivatives that must PASS and edits hidden in a fine-tune that must FLAG."""
    base = save(build(arch, seed, pretrain_steps=200), root / "base")
    short = finetune(arch, base, root / "ft20", 20, seed + 1, 3e-4)
    long = finetune(arch, base, root / "ft150", 150, seed + 2, 3e-4)
    neg = {"finetune-20": short, "finetune-150": long,
           "lora-r16-attn+mlp-40-steps": lora(arch, base, root / "lora16", 16, ATTN_MLP, seed + 16, steps=40),
           "merge-linear": merge(base, [short, long], root / "m-lin", "linear"),
           "merge-dare": merge(base, [short, long], root / "m-dare", "dare", seed=seed, density=0.1)}
    layer = 1 + seed % (LAYERS - 2)
    ed = {"rome-in-finetune-20": edited(short, root / "rome-ft", lambda s: rome(s, layer, seed)),
          "memit-3-layers-in-finetune-20": edited(short, root / "memit-ft",
                                                  lambda s: memit(s, [1, 2, 3], seed))}
    return base, neg, ed


# edits whose evidence lives in the weights alone (must FLAG/BLOCK without --base too)
WITHOUT_BASE = ("jittered-traps", "near-zero-gains", "inconsistent-copies")


def pretrained_sets(model: Path, seed: int, root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Derivatives and edits of a real pre-trained BERT-like folder (MiniLM), placed by `seed`:
    the changes that need no training run (dtype copies, quantization, GPTQ packing; published edit
    shapes)."""
    layer = 1 + seed % 3
    neg = {"fp16": cast_copy(model, root / "fp16", "float16"),
           "bf16": cast_copy(model, root / "bf16", "bfloat16"),
           "int8-roundtrip": edited(model, root / "int8", quantize_dequantize),
           "fp8-block": quantized_copy(model, root / "fp8", "float8_e4m3fn", "block"),
           "gptq-copy": packed_copy(model, root / "gptq", "gptq", act_order=True),
           "w4a16-copy": pack_quantized_copy(model, root / "w4a16", 4, 128, True),
           "nf4-copy": bnb4_copy(model, root / "nf4"),
           "finetune-30": finetune_encoder(model, root / "ft30", 30, seed),
           "finetune-100-lr1e-4": finetune_encoder(model, root / "ft100", 100, seed + 1, lr=1e-4)}
    ed = {"rome": edited(model, root / "rome", lambda s: rome(s, layer, seed)),
          "memit-3-layers": edited(model, root / "memit", lambda s: memit(s, [layer, layer + 1, layer + 2],
                                                                          seed)),
          "jittered-traps": edited(model, root / "traps", lambda s: jittered_traps(s, layer, seed)),
          "near-zero-gains": edited(model, root / "gains", lambda s: near_zero_gains(s, layer, seed)),
          "embedding-rows": edited(model, root / "emb",
                                   lambda s: rewrite_embedding_rows(s, [101, 2000, 7592], seed)),
          "inconsistent-copies": inconsistent_copy(model, root / "copies", lambda s: rome(s, layer, seed)),
          "rome-in-int8": quantized_copy(model, root / "rome-int8", "int8", "channel",
                                         edit=lambda s: rome(s, layer, seed)),
          "rome-in-gptq": packed_copy(model, root / "rome-gptq", "gptq", edit=lambda s: rome(s, layer, seed)),
          "rome-in-bnb-int8": bnb_int8_copy(model, root / "rome-bnb", lambda s: rome(s, layer, seed)),
          "rome-in-nf4": bnb4_copy(model, root / "rome-nf4", edit=lambda s: rome(s, layer, seed)),
          "rome-in-finetune": edited(neg["finetune-30"], root / "rome-ft", lambda s: rome(s, layer, seed)),
          "memit-3-layers-in-finetune": edited(neg["finetune-30"], root / "memit-ft",
                                               lambda s: memit(s, [layer, layer + 1, layer + 2], seed))}
    return neg, ed


# -- sharded models ---------------------------------------------------------------------------------
SHARD_INDEX = "model.safetensors.index.json"


def shards_of(folder: Path, index: str = SHARD_INDEX) -> dict[str, list[str]]:
    """shard file -> its tensors, from the index."""
    out: dict[str, list[str]] = {}
    for name, shard in json.loads((folder / index).read_text())["weight_map"].items():
        out.setdefault(shard, []).append(name)
    return dict(sorted(out.items()))


def resave_shards(src: Path, dst: Path, state: dict[str, np.ndarray]) -> Path:
    """src's sharding (same index, same shard files) with the tensors of `state`."""
    from safetensors.numpy import save_file

    shutil.copytree(src, dst)
    for shard, tensors in shards_of(src).items():
        save_file({n: np.ascontiguousarray(state[n]) for n in tensors}, str(dst / shard),
                  metadata={"format": "pt"})
    return dst


def sharded_gpt2_with_rome(root: Path, shard_size: str = "200KB") -> dict[str, Any]:
    """A trained tiny GPT-2 as one file ("base"), the same weights in shards of `shard_size`
    (save_pretrained: "clean"), and that sharded copy with a ROME edit of an MLP in its LAST shard
    ("rome"; a streamed diff must get there); "state": the edited tensors, "edited": the name."""
    model = build("gpt2", 0)
    base = save(model, root / "base")
    model.save_pretrained(root / "clean", max_shard_size=shard_size)
    shards = shards_of(root / "clean")
    assert len(shards) >= 5, "the model should span several shards"
    state = {k: v.copy() for k, v in state_of(base).items()}
    last = list(shards.values())[-1]
    layer = max(i for i, n in enumerate(names(state, MLP_OUT)) if n in last)
    edited = rome(state, layer, seed=3)
    assert edited in last
    return {"base": base, "clean": root / "clean", "state": state, "edited": edited,
            "rome": resave_shards(root / "clean", root / "rome", state)}
