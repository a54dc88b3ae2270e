"""Which tensor of one checkpoint is which tensor of another (a model and its base, or two copies of
one model in a folder): the base diff and the copy comparison pair them here, the same way.

By name first, or by name with the first dotted prefix dropped (`bert.encoder...` in an old .bin vs
`encoder...` in a newer export). Then the leftovers by shape, where a shape occurs once among each
side's leftovers: transformers 5 writes a GPT-NeoX head as `lm_head.weight` in a torch.save'd state
dict and as `embed_out.weight` through save_pretrained (and in the base). A pair by shape is a guess
until its values agree (`agree`); one whose values differ is two unrelated tensors as far as we know.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from hfguard.weights.tensors import TensorMeta, within_code_error


@dataclass
class Pairing:
    named: list[tuple[str, str]]      # (a's name, b's name): same name, or same without a prefix
    by_shape: list[tuple[str, str]]   # leftovers of one shape only, on each side: confirm by values
    only_a: list[str]                 # unpaired (the by-shape ones included)
    only_b: list[str]


# transformers 5 keeps a mixture-of-experts layer fused in memory (tensors.split_experts reads its
# experts as `experts.down_proj[e]`, `experts.gate_up_proj[e, :I]` and `[e, I:]`) and Mixtral's under
# `mlp.` with gate / up / down names: a torch.save'd state dict beside (or diffed against) the files
# save_pretrained writes (`block_sparse_moe.experts.5.w1.weight`, `mlp.experts.5.gate_proj.weight`)
_ALIASES = [(re.compile(r"\.block_sparse_moe\."), ".mlp.")] + [
    (re.compile(rf"(\.experts\.\d+\.){old}\."), rf"\1{new}.")
    for old, new in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj"))]
_FUSED = re.compile(r"\.experts\.(?:(down_proj)\[(\d+)\]|gate_up_proj\[(\d+), (:?)\d+:?\])$")


def expert_key(name: str) -> str:
    """The per-expert file name of an expert matrix, whichever layout holds it (see above)."""
    for pattern, to in _ALIASES:
        name = pattern.sub(to, name)
    if m := _FUSED.search(name):
        down, e_down, e_gate_up, gate = m.groups()
        e, proj = (e_down, "down_proj") if down else (e_gate_up, "gate_proj" if gate else "up_proj")
        name = f"{name[:m.start()]}.experts.{e}.{proj}.weight"
    return name


def _expert_keys(tensors: dict[str, TensorMeta]) -> dict[str, str]:
    """name -> expert_key, or name -> name where two of a checkpoint's names would share a key (a
    model that holds both a `mlp.` and a `block_sparse_moe.` module)."""
    keys = {n: expert_key(n) for n in tensors}
    return keys if len(set(keys.values())) == len(keys) else {n: n for n in tensors}


def _keyed(keys: dict[str, str], strip: bool) -> dict[str, str]:
    """key -> name, from name -> expert_key; `strip`: without the first dotted prefix (a prefix is a
    module path: `lm_head.weight` and `embed_out.weight` are not both `weight`)."""
    return {(k.split(".", 1)[1] if strip and k.count(".") >= 2 else k): n for n, k in keys.items()}


def pair_tensors(a: dict[str, TensorMeta], b: dict[str, TensorMeta]) -> Pairing:
    named: list[tuple[str, str]] = []
    keys_a, keys_b = _expert_keys(a), _expert_keys(b)
    for sa in (False, True):   # ties keep the plain names
        for sb in (False, True):
            ka, kb = _keyed(keys_a, sa), _keyed(keys_b, sb)
            common = [(ka[k], kb[k]) for k in sorted(set(ka) & set(kb))]
            if len(common) > len(named):
                named = common
    only_a = sorted(set(a) - {na for na, _ in named})
    only_b = sorted(set(b) - {nb for _, nb in named})
    shapes_a, shapes_b = Counter(a[n].shape for n in only_a), Counter(b[n].shape for n in only_b)
    lone_b = {b[n].shape: n for n in only_b if shapes_b[b[n].shape] == 1}
    by_shape = [(na, lone_b[a[na].shape]) for na in only_a
                if shapes_a[a[na].shape] == 1 and a[na].shape in lone_b
                and all(m.is_float and m.numel for m in (a[na], b[lone_b[a[na].shape]]))]
    return Pairing(named, by_shape, only_a, only_b)


def tolerance(d0: str, d1: str) -> tuple[float, float]:
    """(rtol, atol) of a round trip through the narrower of two dtypes: one rounding (its machine
    epsilon) and flushed subnormals (its smallest normal). Same dtype: exact."""
    if d0 == d1:
        return 0.0, 0.0
    eps, tiny = [], []
    for d in (d0, d1):
        if d == "bfloat16":   # float32's exponent range, 8 significant bits
            eps.append(2.0 ** -7)
            tiny.append(float(np.finfo(np.float32).tiny))
        elif d in ("float16", "float32", "float64"):
            fi = np.finfo(d)
            eps.append(float(fi.eps))
            tiny.append(float(fi.tiny))
        else:   # float8: two or three mantissa bits
            eps.append(0.25)
            tiny.append(2.0 ** -6)
    return max(eps), max(tiny)


def agree(wa: np.ndarray, wb: np.ndarray, da: str, db: str) -> bool:
    """The same values, stored as dtypes `da` and `db`: equal up to the round trip between them."""
    rtol, atol = tolerance(da, db)
    if rtol == 0.0:
        return bool(np.array_equal(wa, wb, equal_nan=True))
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.allclose(wa, wb, rtol=rtol, atol=atol, equal_nan=True))


def stored_alike(m0: TensorMeta, m1: TensorMeta, w0: np.ndarray, w1: np.ndarray) -> bool:
    """w1 is w0 as m1 stores it: cast to a narrower dtype (within that round trip, in row blocks:
    allclose's temporaries stay small), or quantized to codes and scales (within one code's
    rounding). A dtype round trip is no change, and counting it as one hid a ROME edit in an fp16
    or float8 copy among 'everything changed'."""
    if m1.scale is not None:
        return within_code_error(w0, w1, m1, m0.dtype)
    if m0.dtype == m1.dtype or w0.ndim == 0:
        return False
    step = max(1, (1 << 20) // max(1, w0.size // max(1, w0.shape[0])))   # rows per block of ~1M entries
    return all(agree(w0[i:i + step], w1[i:i + step], m0.dtype, m1.dtype) for i in range(0, w0.shape[0], step))
