"""Structural fingerprints of hand-built privacy backdoors ("data traps", Feng & Tramèr 2024,
arXiv:2404.00473): trap neurons in an MLP up-projection (many neurons with one shared weight norm
and a large negative bias so they fire once and latch), exactly-zero LayerNorm gains and enormous
constants in biases / position embeddings (the constructions silence or route the residual stream
with them), and an activation swapped in config.json (the constructions want ReLU's hard zero).
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

import numpy as np

from hfguard import robust
from hfguard.findings import Observation, Severity

NORM_GAIN = re.compile(r"(norm|(^|\.)ln_?\w*|layernorm)[^.]*\.(weight|gamma|scale)$", re.I)
# the MLP's input projections: `fc1` stands alone in OPT / BART / Whisper / M2M blocks
# (`model.decoder.layers.3.fc1`), under `mlp.` in CLIP / Phi; wav2vec2 says `intermediate_dense`,
# Megatron `linear_fc1`; fused experts are read one expert (gate, up half) at a time (tensors.split_experts)
UP_PROJ = re.compile(r"(intermediate[._]dense|mlp\.c_fc|(^|\.)(linear_)?fc1|up_proj|gate_proj|mlp\.w1|w1|"
                     r"fc_in|dense_h_to_4h|mlp\.lin1|mlp\.0|ffn\.lin1|DenseReluDense\.wi(_[01])?)\.weight$|"
                     r"experts\.gate_up_proj\[\d+(, [\d:]+)?\]$")
# GPT-2's Conv1D and gpt-oss's experts store (in, out): neurons are columns (gpt-oss interleaves each
# neuron's gate and linear columns; both are neurons here, the gates the ones that threshold)
CONV1D_UP = re.compile(r"mlp\.c_fc\.weight$|experts\.gate_up_proj\[\d+\]$")
_EXPERT = re.compile(r"\[\d+\]$")


def bias_name(weight: str) -> str:
    """The bias beside a weight: `X.weight` -> `X.bias`; expert e of fused experts `X[e]` -> `X_bias[e]`."""
    if m := _EXPERT.search(weight):
        return f"{weight[:m.start()]}_bias{m.group()}"
    return re.sub(r"weight$", "bias", weight)
POSITIONAL = re.compile(r"(position|wpe|pos_emb|pos_embed|positional)", re.I)

# architecture -> activations its reference implementations use
EXPECTED_ACT: dict[str, set[str]] = {
    **dict.fromkeys(["bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "vit",
                     "deberta", "deberta-v2", "camembert", "albert", "deit", "beit", "dinov2"],
                    {"gelu", "gelu_new", "gelu_python", "gelu_pytorch_tanh"}),
    **dict.fromkeys(["gpt2", "gptj", "gpt_neo", "phi", "codegen"],
                    {"gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast"}),
    "gpt_neox": {"gelu", "gelu_fast", "gelu_new"},
    **dict.fromkeys(["llama", "mistral", "mixtral", "qwen2", "qwen3", "olmo", "smollm", "qwen2_moe",
                     "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss", "llama4_text"],
                    {"silu", "swish"}),
    **dict.fromkeys(["gemma", "gemma2", "gemma3"], {"gelu_pytorch_tanh", "gelu"}),
    **dict.fromkeys(["clip", "clip_text_model", "clip_vision_model", "siglip"],
                    {"quick_gelu", "gelu", "gelu_pytorch_tanh"}),
}
ACT_KEYS = ("hidden_act", "activation_function", "hidden_activation")


def robust_scale(a: np.ndarray) -> tuple[float, float]:
    """Median and a robust scale (MAD, or the std where more than half the entries are equal)."""
    return robust.robust_scale(a, std_fallback=True)


def silenced(arr: np.ndarray, rel: float) -> np.ndarray:
    """Mask of gains that silence their feature: |g| at most `rel` x the tensor's typical |g| (its
    90th percentile: silencing most of a layer must not drag the reference down with it).
    Exact zeros and 1e-30 do the same harm, and a float16 copy turns float32's 1e-33 into 0, so
    the test is relative to the layer's own gains, never "== 0" (docs/weights-calibration.md)."""
    a = np.abs(arr.astype(np.float64))
    return a <= rel * float(np.quantile(a, 0.9))


def zero_gains(name: str, arr: np.ndarray, *, rel: float = 1e-3, min_count: int = 8) -> Observation | None:
    if arr.ndim != 1 or not NORM_GAIN.search(name) or arr.size < 8:
        return None
    mask = silenced(arr, rel)
    count = int(mask.sum())
    if count < min_count:   # trained models carry a few dead features (MiniLM: 3 of 384 in one layer)
        return None
    share = count / arr.size
    idx = np.flatnonzero(mask)
    return Observation(
        "weights/zero-norm-gain", Severity.HIGH if share >= 0.01 else Severity.MEDIUM,
        f"{count} LayerNorm gains of {name} are zero or negligible (<= {rel:g} x the layer's typical gain): "
        "those features are silenced; privacy-backdoor constructions use this to route the residual stream",
        name, {"zeros": count, "exact_zeros": int(np.count_nonzero(arr[idx] == 0)), "size": int(arr.size),
               "typical_abs_gain": float(np.quantile(np.abs(arr), 0.9)), "indices": idx[:32].tolist()})


def huge_constants(name: str, arr: np.ndarray, z_min: float, abs_min: float,
                   absmax: float | None = None) -> Observation | None:
    if not (name.endswith(("bias", "beta")) or POSITIONAL.search(name)) or arr.size < 8:
        return None
    if absmax is not None and absmax < abs_min:   # known from the statistics pass: nothing to find
        return None
    med, scale = robust_scale(arr)
    if scale <= 0:
        return None
    dev = np.abs(arr.astype(np.float64) - med)
    big = np.flatnonzero((dev >= z_min * scale) & (np.abs(arr) >= abs_min))
    if not big.size:
        return None
    worst = int(big[np.argmax(dev.ravel()[big])])
    return Observation(
        "weights/huge-constant", Severity.HIGH,
        f"{big.size} entries of {name} are enormous next to the rest "
        f"(max {float(arr.ravel()[worst]):.4g}, "
        f"{float(dev.ravel()[worst] / scale):.0f} robust sigmas)",
        name, {"count": int(big.size), "flat_indices": big[:32].tolist(),
               "max_value": float(arr.ravel()[worst]), "median": med, "robust_scale": scale,
               "robust_z": float(dev.ravel()[worst] / scale)})


def neuron_rows(name: str, arr: np.ndarray) -> np.ndarray | None:
    """The hidden neurons' weight vectors of an MLP up-projection, one per row."""
    if arr.ndim != 2 or not UP_PROJ.search(name):
        return None
    return arr.T if CONV1D_UP.search(name) else arr


def row_norms(w: np.ndarray, block: int = 64) -> np.ndarray:
    """Norms of the rows of w, accumulated in float64 (equal-norm groups are judged at 1e-6).
    Rows are widened a block at a time into a buffer that stays in cache, squared there and summed
    by a product with a ones vector (BLAS): 210 vs 325 us per 256x2048 block with an einsum, and
    both well below one float64 einsum over the matrix."""
    n, d = int(w.shape[0]), int(w.shape[1])
    out = np.empty(n, np.float64)
    buf = np.empty((min(block, n), d), np.float64)
    ones = np.ones(d, np.float64)
    for i in range(0, n, block):
        b = buf[:min(block, n - i)]
        np.copyto(b, w[i:i + block])
        np.multiply(b, b, out=b)
        np.matmul(b, ones, out=out[i:i + block])
    return np.sqrt(out, out=out)


def neuron_norms(name: str, arr: np.ndarray) -> np.ndarray | None:
    """Weight-vector norms of each hidden neuron of an MLP up-projection (float64)."""
    w = neuron_rows(name, arr)
    return None if w is None else row_norms(w)


class NeuronRows:
    """Norms (`row_norms`) and, where the search will want it, the sign sketch (`sketch`) of
    an up-projection's neuron rows, taken block by block while the statistics pass has each row
    block in cache (its `each_rows`) instead of in two more passes over the matrix."""

    def __init__(self, n: int, d: int, exact_max: int = 1 << 28, proj_dim: int = 64) -> None:
        self.n, self.seen = n, 0
        self.norms = np.empty(n, np.float64)
        wanted = n * n * d > exact_max and d > proj_dim   # as near_duplicate_counts decides (all live)
        self.sketched = np.empty((n, proj_dim), np.float32) if wanted else None

    def __call__(self, block: np.ndarray, first: int, row_sq: np.ndarray | None = None) -> None:
        """`row_sq`: the rows' float64 sums of squares where the pass already took them."""
        end = first + int(block.shape[0])
        self.norms[first:end] = row_norms(block) if row_sq is None else np.sqrt(row_sq)
        if self.sketched is not None:
            self.sketched[first:end] = sketch(block, int(self.sketched.shape[1]))
        self.seen += end - first

    @property
    def complete(self) -> bool:
        return self.seen == self.n


def near_duplicate_counts(w: np.ndarray, cos: float, min_group: int = 2, block: int = 256,
                          exact_max: int = 1 << 28, proj_dim: int = 64,
                          norms: np.ndarray | None = None,
                          projected: np.ndarray | None = None) -> np.ndarray:
    """For each row, how many other rows point the same way (cosine >= cos) once the directions
    the whole layer shares are set aside (`layer_wide_directions`); exact for every row of a group
    of `min_group` such rows (other rows may be left at 0).

    Trap neurons built from one direction plus jitter form a clique; trained layers hold at most
    pairs (MiniLM: at most 2 neighbours at 0.8). A merged adapter that dominates a layer (a rank-2
    MLP LoRA at a high learning rate moves the matrix by 1-2x its norm) gives every neuron a share
    of the same few directions and so cliques of hundreds; those directions are spread over most
    neurons, a trap group's over its few members, so cosines are measured again without them
    whenever the plain count finds a group, or the sketch nominates more rows than are cheap to
    measure (trained layers pay nothing: they nominate a few near-duplicate pairs).

    Small layers get exact Gram blocks. Above `exact_max` multiply-adds, rows are compared in a
    random projection to `proj_dim` dimensions (cosine error ~1/sqrt(proj_dim) = 0.125, so the cut
    is lowered by 2 of those: a true pair at 0.8 is missed with probability ~1e-3, an unrelated one
    passes with ~5e-6), and only within min_group - 1 random chunks of rows: a group of min_group
    rows has two members in one chunk (pigeonhole), which then nominate the whole group against
    all rows; nominated rows are measured exactly. Cost: one pass over w (the projection is a sign
    sketch, `sketch`) plus n^2*proj_dim/(min_group-1) instead of n^2*d.
    `norms`: the rows' norms (`row_norms`) when the caller has them: one pass over w fewer;
    `projected`: w @ projection(d, proj_dim), when the caller computed it (on a GPU)."""
    n, d = int(w.shape[0]), int(w.shape[1])
    norms = (row_norms(w) if norms is None else norms).astype(np.float32)
    live = np.flatnonzero(norms > 0)
    counts = np.zeros(n, np.int64)
    if live.size < 2:
        return counts
    sketched = live.size * live.size * d > exact_max and d > proj_dim
    if sketched and projected is None:
        projected = sketch(w, proj_dim)
    args = (w, norms, live, projected if sketched else None, cos, min_group, block)
    measured = True   # counts hold the plain exact measure of every nominated row
    if projected is not None and sketched:
        chosen = live[_nominate(_sketch_rows(w, norms, live, projected, None), _cut(cos, projected),
                                min_group, block)]
        if chosen.size < min_group:
            return counts
        # trained layers nominate a few rows, cheap to measure; hundreds come from a layer-wide
        # clique, whose exact measure would cost more than setting its directions aside
        measured = chosen.size * chosen.size * d <= exact_max
        if measured:
            counts = _counts(w, norms, chosen, None, cos, min_group, block, None)
    else:
        counts = _counts(*args, None)
    if measured and int((counts >= min_group - 1).sum()) < min_group:
        return counts
    shared = layer_wide_directions(w, norms, live, projected, proj_dim=proj_dim)
    if shared is None:
        return counts if measured else _counts(*args, None)
    return _counts(*args, shared)


def _cut(cos: float, projected: np.ndarray) -> float:
    """The cosine cut in the sketch: lowered by twice its error ~1/sqrt(proj_dim)."""
    return cos - 2.0 / np.sqrt(int(projected.shape[1]))


def _sketch_rows(w: np.ndarray, norms: np.ndarray, live: np.ndarray, projected: np.ndarray,
                 shared: np.ndarray | None) -> np.ndarray:
    """The live rows' sketches, scaled to unit rows, with the directions `shared` taken out."""
    inv = (1.0 / norms[live]).astype(np.float32)
    p = projected[live] * inv[:, None]   # projected first: no copy of w
    if shared is not None:
        p -= _coefficients(w, live, inv, shared) @ (shared.T @ projection(int(w.shape[1]), int(p.shape[1])))
    return p


def _counts(w: np.ndarray, norms: np.ndarray, live: np.ndarray, projected: np.ndarray | None,
            cos: float, min_group: int, block: int, shared: np.ndarray | None) -> np.ndarray:
    """near_duplicate_counts for the rows `live`, in the sketch when `projected` is given, with the
    directions `shared` (orthonormal columns) taken out of every row first."""
    counts = np.zeros(int(w.shape[0]), np.int64)
    if projected is not None:
        live = live[_nominate(_sketch_rows(w, norms, live, projected, shared), _cut(cos, projected),
                              min_group, block)]
        if live.size < 2:
            return counts
    u = w[live] * (1.0 / norms[live]).astype(np.float32)[:, None]
    if shared is not None:
        u -= (u @ shared) @ shared.T
        left = np.linalg.norm(u, axis=1)
        ok = left > 1e-6     # a row made of the shared directions only has no direction of its own
        u, live = u[ok] / left[ok, None], live[ok]
    counts[live] = _neighbours(u, cos, block)
    return counts


def _coefficients(w: np.ndarray, live: np.ndarray, inv: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(w[live] / norms) @ basis, a block of rows at a time (no copy of w)."""
    out = np.empty((int(live.size), int(basis.shape[1])), np.float32)
    for i in range(0, int(live.size), 4096):
        part = live[i:i + 4096]
        out[i:i + 4096] = (w[part] @ basis) * inv[i:i + 4096, None]
    return out


def layer_wide_directions(w: np.ndarray, norms: np.ndarray, live: np.ndarray,
                          projected: np.ndarray | None = None, *, share_min: float = 0.05,
                          spread_min: float = 0.25, most: int = 8, proj_dim: int = 64) -> np.ndarray | None:
    """Orthonormal (d, c) basis of the directions the layer's neurons share: principal directions
    of the unit rows that hold at least `share_min` of their energy and are spread over at least
    `spread_min` of the neurons (participation ratio of the component's neuron loadings: ~n/3
    for a component every neuron carries at random, ~g for a group of g neurons). A merged
    adapter's directions are carried by every neuron; a trap group's by its members, so it stays.
    Narrow layers (either side <= 2 x proj_dim): an exact SVD; others: the randomized range finder
    on the row sketch (one more pass over w), accurate for components well above the spectrum's
    proj_dim-th (an exact SVD of a MiniLM up-projection took 70 ms, this 10)."""
    inv = (1.0 / norms[live]).astype(np.float64)
    m, d = int(live.size), int(w.shape[1])
    if min(m, d) <= 2 * proj_dim:
        left, s, right = np.linalg.svd(w[live] * inv[:, None], full_matrices=False)
    else:
        y = (projected if projected is not None else sketch(w, proj_dim))[live] * inv[:, None]
        q, _ = np.linalg.qr(y.astype(np.float64))
        qs = (q * inv[:, None]).astype(np.float32)
        b = np.zeros((int(q.shape[1]), d), np.float64)   # q^T u, a block of rows at a time: no copy of w
        for i in range(0, m, 4096):
            b += qs[i:i + 4096].T @ w[live[i:i + 4096]]
        small, s, right = np.linalg.svd(b, full_matrices=False)
        left = q @ small
    share = s * s / m                    # unit rows: the energy is m
    spread = 1.0 / np.maximum((left ** 4).sum(0), 1e-30) / m
    take = [i for i in range(min(most, int(s.size))) if share[i] >= share_min and spread[i] >= spread_min]
    if not take:
        return None
    return np.ascontiguousarray(right[take].T, dtype=np.float32)


def _nominate(p: np.ndarray, cut: float, min_group: int, block: int) -> np.ndarray:
    """Indices (into p's rows) of the rows a sketch search puts in a group of min_group."""
    p /= np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-30)
    order = np.random.default_rng(0).permutation(int(p.shape[0]))
    seeds = [part[_neighbours(p[part], cut, block) > 0]
             for part in np.array_split(order, max(1, min_group - 1))]
    seed = np.concatenate(seeds)
    chosen = np.zeros(int(p.shape[0]), bool)
    for i in range(0, int(seed.size), block):
        hit = (p[seed[i:i + block]] @ p.T) >= cut
        many = hit.sum(1) - 1 >= min_group - 1
        if many.any():
            chosen |= hit[many].any(0)   # the seed and all its neighbours
    return np.flatnonzero(chosen)


@functools.lru_cache(maxsize=16)
def _signs(d: int, k: int) -> np.ndarray:
    """Random signs of the d coordinates, laid out (d // k + 1, k): coordinate j lies at [j // k, j % k]."""
    t = -(-d // k)
    s = np.zeros(t * k, np.float32)
    s[:d] = np.where(np.random.default_rng(0).random(d) < 0.5, -1.0, 1.0)
    out = s.reshape(t, k)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=16)
def projection(d: int, k: int = 64) -> np.ndarray:
    """The sign sketch as a dense (d, k) matrix: coordinate j adds +-1 x w_j to bucket j % k
    (CountSketch with a fixed bucket and random signs). Inner products survive it as they do a
    Gaussian projection (unbiased; variance <= that of a Gaussian one of k dimensions, colliding
    coordinates having independent signs), and `sketch` computes w @ projection(d, k) in one pass
    over w instead of d*k multiply-adds per row (19 -> 2 ms for a 5632x2048 matrix). The
    device path multiplies by this matrix."""
    r = np.zeros((d, k), np.float32)
    j = np.arange(d)
    r[j, j % k] = _signs(d, k).reshape(-1)[:d]
    r.flags.writeable = False
    return r


def sketch(w: np.ndarray, k: int = 64, block: int = 256) -> np.ndarray:
    """w @ projection(d, k) (float32), summing each row's signed coordinates bucket by bucket a
    block of rows at a time."""
    n, d = int(w.shape[0]), int(w.shape[1])
    t, rem = divmod(d, k)
    signs = _signs(d, k)
    out = np.zeros((n, k), np.float32)
    for i in range(0, n, block):
        b = w[i:i + block]
        if t:
            np.einsum("rtk,tk->rk", b[:, :t * k].reshape(-1, t, k), signs[:t], out=out[i:i + block])
        if rem:
            out[i:i + block, :rem] += b[:, t * k:] * signs[t, :rem]
    return out


def _neighbours(a: np.ndarray, cos: float, block: int) -> np.ndarray:
    """Rows of `a` (unit rows) with cosine >= cos to each row, itself excluded. The Gram matrix
    is walked one upper-triangle block row at a time (half the products), each block of hits
    counted for its rows and, mirrored, for the rows after it."""
    n = int(a.shape[0])
    out = np.zeros(n, np.int64)
    for i in range(0, n, block):
        hit = (a[i:i + block] @ a[i:].T) >= cos
        out[i:i + block] += hit.sum(1) - 1     # itself
        out[i + block:] += hit[:, block:].sum(0)
    return out


def firing_z(norms: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Pre-activation mean / std of each neuron under unit-Gaussian probe inputs (what a LayerNorm
    hands the up-projection before its gain): the neuron fires with probability Phi(z)."""
    return bias.astype(np.float64) / np.maximum(norms, 1e-30)


# the norm whose output an MLP's up-projection reads, by its name under the block (or under the
# up-projection's parent, T5's `layer.1`), in the order tried: BERT / RoBERTa / ELECTRA, ViT,
# GPT-2, LLaMA-likes / GPT-NeoX / BLOOM, OPT / BART / Whisper, CLIP / SigLIP, DistilBERT, T5,
# Gemma 2/3, Megatron, timm, and last the parallel blocks' one norm (GPT-J, Phi)
PRE_MLP_NORMS = ("attention.output.LayerNorm", "layernorm_after", "ln_2", "post_attention_layernorm",
                 "final_layer_norm", "layer_norm2", "sa_layer_norm", "layer_norm",
                 "pre_feedforward_layernorm", "ffn_norm", "norm2", "input_layernorm", "ln_1")


def pre_mlp_norm(name: str, names: Any) -> tuple[str, str | None] | None:
    """(gain, bias or None) of the norm feeding the up-projection `name`, among `names`; None where
    none is found. Searched under each parent of the up-projection down to its block (the first
    numbered component), never in another block."""
    parts = name.split(".")
    block = next((i for i, p in enumerate(parts) if p.isdigit()), None)
    if block is None:
        return None
    for end in range(len(parts) - 2, block, -1):
        parent = ".".join(parts[:end])
        for norm in PRE_MLP_NORMS:
            for gain, bias in (("weight", "bias"), ("gamma", "beta"), ("scale", "bias")):
                if f"{parent}.{norm}.{gain}" in names:
                    b = f"{parent}.{norm}.{bias}"
                    return f"{parent}.{norm}.{gain}", b if b in names else None
    return None


def firing_estimate(name: str, w: np.ndarray, bias: np.ndarray, gain: np.ndarray, shift: np.ndarray | None,
                    block: int = 256) -> np.ndarray:
    """Each neuron's pre-activation mean / std when its input is the norm's output gain x z + shift,
    z unit Gaussian: (w . shift + b) / ||w * gain||. The norm's affine is where a trained model's
    inputs stop looking Gaussian (BERT's outlier features live in its gains and shifts): on MiniLM
    the layers' natural spread of this estimate is 3-5x tighter than bias / ||w||'s, whose tails
    reach 10 robust sigmas. `w`: the up-projection as stored (float32), a block of its rows at a
    time; float32 products (float64 ones cost 4.7x, 0.14 s per 16384x4096 matrix, for digits a
    robust z at 12 does not need)."""
    g2 = gain.astype(np.float32) ** 2
    s = None if shift is None else shift.astype(np.float32)
    mean = bias.astype(np.float64)
    if CONV1D_UP.search(name):   # GPT-2's Conv1D stores [in, out]: its rows are the inputs
        var = np.zeros(w.shape[1], np.float64)
        for i in range(0, w.shape[0], block):
            b = w[i:i + block]
            if s is not None:
                mean = mean + s[i:i + block] @ b
            var += g2[i:i + block] @ (b * b)
    else:
        var = np.empty(w.shape[0], np.float64)
        mean = mean + (w @ s if s is not None else 0.0)
        for i in range(0, w.shape[0], block):
            b = w[i:i + block]
            var[i:i + block] = (b * b) @ g2
    return mean / np.sqrt(np.maximum(var, 1e-60))


def trap_neurons(name: str, norms: np.ndarray, bias: np.ndarray | None, *, min_group: int, norm_tol: float,
                 bias_z: float, lone_bias_z: float, dup_counts: np.ndarray | None = None,
                 cos: float = 0.8, fire_z: float = 3.0, firing: np.ndarray | None = None,
                 rare_fire_z: float = math.inf) -> list[Observation]:
    """`firing`: each neuron's estimated firing z through its input norm (`firing_estimate`), which
    judges lone rarely-firing neurons; without it, and always for near-duplicate groups (calibrated
    so), bias / ||w|| (`firing_z`)."""
    hits: list[Observation] = []
    z = fz = None
    if bias is not None and bias.shape == norms.shape:
        med, scale = robust_scale(bias)
        z = (bias.astype(np.float64) - med) / scale if scale > 0 else None
        fz = firing_z(norms, bias)
    for g, chance in equal_norm_groups(norms, min_group, norm_tol):
        ev: dict[str, Any] = {"neurons": len(g), "norm": float(norms[g[0]]), "indices": sorted(g)[:64],
                              "expected_by_chance": float(f"{chance:.3g}")}
        trapped = 0
        if z is not None and bias is not None:  # z is only computed from a bias
            trapped = int((z[g] <= -bias_z).sum())
            ev.update(bias_median=float(np.median(bias[g])), bias_robust_z_median=float(np.median(z[g])))
        if trapped * 2 >= len(g):
            hits.append(Observation(
                "weights/trap-neurons", Severity.HIGH,
                f"{len(g)} neurons of {name} share one weight norm ({ev['norm']:.6g}) and "
                f"{trapped} of them carry a large negative bias: the signature of "
                "privacy-backdoor data traps", name, ev))
        else:
            hits.append(Observation(
                "weights/equal-norm-neurons", Severity.MEDIUM,
                f"{len(g)} neurons of {name} share one weight norm ({ev['norm']:.6g}); "
                "trained or random weights do not do that", name, ev))
    if not hits and dup_counts is not None:
        hits += _clustered(name, fz, dup_counts, min_group=min_group, cos=cos, fire_z=fire_z)
    if fz is not None and not any(h.rule == "weights/trap-neurons" for h in hits):
        est = firing if firing is not None and firing.shape == norms.shape else fz
        hits += _rarely_firing(name, est, min_group=min_group, rare_fire_z=rare_fire_z,
                               through_norm=est is firing)
    if z is not None:
        lone = np.flatnonzero(z <= -lone_bias_z)
        if lone.size >= min_group:
            hits.append(Observation(
                "weights/negative-bias-neurons", Severity.MEDIUM,
                f"{lone.size} neurons of {name} have biases at or below {-lone_bias_z:g} "
                "robust sigmas (neurons switched off until one input fires them)", name,
                {"neurons": int(lone.size), "indices": lone[:64].tolist(), "min_robust_z": float(z.min())}))
    return hits


# an equal-norm group is reported when fewer than this many as tight turn up by chance in the layer
CHANCE = 1e-4


def equal_norm_groups(norms: np.ndarray, min_size: int, rel_tol: float,
                      neighbours: int = 256) -> list[tuple[list[int], float]]:
    """Groups of at least `min_size` neurons whose weight norms agree more tightly than chance
    explains, largest first, each with how many windows as tight chance would give the layer.

    Every run of `min_size` consecutive sorted norms spanning at most rel_tol is judged against the
    norms' local density (its `neighbours` nearest): with mu neurons expected within its span after
    any one neuron, chance gives n * P(Poisson(mu) >= min_size - 1) such runs. Runs below CHANCE
    are joined where they overlap. A layer's norms crowd together as it grows (iid rows of width d
    lie within ~1/sqrt(2d) of each other: the 22016 up-projection neurons of a 70B-class layer sit
    ~4e-7 apart, and runs of 8 within 1e-6 turn up in most such layers), while trap neurons scaled
    to one norm agree to float rounding (~1e-7), which chance does not match in a trained or
    small layer; in a random layer that large, their near-duplicate directions tell them apart."""
    live = np.flatnonzero(norms > 0)
    order = live[np.argsort(norms[live], kind="stable")]
    v = norms[order].astype(np.float64)
    n, m = int(v.size), min_size
    if n < max(m, 2):
        return []
    span = (v[m - 1:] - v[:n - m + 1]) / v[m - 1:]
    cand = np.flatnonzero(span <= rel_tol)
    if not cand.size:
        return []
    lo = np.maximum(cand - neighbours // 2, 0)
    hi = np.minimum(cand + m - 1 + neighbours // 2, n - 1)
    width = (v[hi] - v[lo]) / v[cand]
    # norms packed into one value across the whole neighbourhood: no density to judge against
    mu = np.where(width > 0, (hi - lo) / np.maximum(width, 1e-300) * np.maximum(span[cand], 1e-12), 0.0)
    expected = n * _poisson_tail(mu, m - 1)
    groups: list[list[Any]] = []   # [first, last, expected] in sorted positions
    for i, e in zip(cand[expected < CHANCE].tolist(), expected[expected < CHANCE].tolist(), strict=True):
        if groups and i <= groups[-1][1]:
            groups[-1][1], groups[-1][2] = i + m - 1, min(groups[-1][2], e)
        else:
            groups.append([i, i + m - 1, e])
    out = [(order[a:b + 1].tolist(), float(e)) for a, b, e in groups]
    return sorted(out, key=lambda g: len(g[0]), reverse=True)


def _poisson_tail(mu: np.ndarray, k: int) -> np.ndarray:
    """P(X >= k) for X ~ Poisson(mu), elementwise, summed from k up (no cancellation for small mu)."""
    if k <= 0:
        return np.ones_like(mu)
    j = np.arange(k, k + 200, dtype=np.float64)
    lgam = np.array([math.lgamma(x + 1) for x in j])
    with np.errstate(divide="ignore"):
        terms = np.exp(-mu[:, None] + j[None, :] * np.log(mu)[:, None] - lgam[None, :])
    return np.minimum(np.where(mu > 0, terms.sum(1), 0.0), 1.0)


def _rarely_firing(name: str, fz: np.ndarray, *, min_group: int, rare_fire_z: float,
                   through_norm: bool) -> list[Observation]:
    """min_group or more neurons whose estimated firing rate lies far below the layer's own: traps
    that point in unrelated directions (no near-duplicates) and carry biases the layer's range
    hides, yet are placed to fire once. The rate is judged, not the bias or the direction."""
    med, scale = robust_scale(fz)
    if scale <= 0:
        return []
    rz = (fz - med) / scale
    rare = np.flatnonzero(rz <= -rare_fire_z)
    if rare.size < min_group:
        return []
    rate = _phi(float(np.median(fz[rare])))
    return [Observation(
        "weights/rarely-firing-neurons", Severity.MEDIUM,
        f"{rare.size} neurons of {name} would fire far more rarely than the layer's others (estimated "
        f"rate {rate:.2g} vs the layer's median {_phi(med):.2g}, down to {-float(rz.min()):.0f} robust "
        "sigmas below it): switched off until one input fires them, as privacy-backdoor data traps are",
        name, {"neurons": int(rare.size), "indices": rare[:64].tolist(), "firing_rate_median": rate,
               "layer_firing_rate_median": _phi(med), "min_robust_z": float(rz.min()),
               "estimate": "through the input norm's gain and shift" if through_norm
               else "bias / weight norm"})]


def _clustered(name: str, fz: np.ndarray | None, dup_counts: np.ndarray, *,
               min_group: int, cos: float, fire_z: float) -> list[Observation]:
    """Neurons that point (nearly) the same way, min_group or more of them: jittered trap neurons.
    Judged with their estimated firing rates against the layer's own: rarely-firing -> high."""
    members = np.flatnonzero(dup_counts >= min_group - 1)
    if members.size < min_group:
        return []
    ev: dict[str, Any] = {"neurons": int(members.size), "cosine": cos, "indices": members[:64].tolist(),
                          "max_neighbours": int(dup_counts.max())}
    rare = 0
    if fz is not None:
        med, scale = robust_scale(fz)
        rz = (fz[members] - med) / scale if scale > 0 else np.zeros(members.size)
        rare = int((rz <= -fire_z).sum())
        ev.update(firing_rate_median=float(_phi(float(np.median(fz[members])))),
                  layer_firing_rate_median=float(_phi(med)), rarely_firing=rare)
    if rare * 2 >= members.size:
        return [Observation(
            "weights/trap-neurons", Severity.HIGH,
            f"{members.size} neurons of {name} point the same way (cosine >= {cos:g}) and {rare} of them "
            f"fire far more rarely than the layer's others (median estimated rate "
            f"{ev['firing_rate_median']:.2g} vs {ev['layer_firing_rate_median']:.2g}): the signature of "
            "privacy-backdoor data traps", name, ev)]
    return [Observation(
        "weights/near-duplicate-neurons", Severity.MEDIUM,
        f"{members.size} neurons of {name} point the same way (cosine >= {cos:g} with at least "
        f"{min_group - 1} others); trained layers hold at most near-duplicate pairs", name, ev)]


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def activation_hits(config: dict[str, Any], where: str) -> list[Observation]:
    """Activations unusual for the declared architecture (nested text/vision configs too)."""
    hits: list[Observation] = []
    stack: list[tuple[str, dict[str, Any]]] = [("", config)]
    while stack:
        prefix, cfg = stack.pop()
        mtype = str(cfg.get("model_type", "")).lower()
        for sub in ("text_config", "vision_config"):
            if isinstance(cfg.get(sub), dict):
                child = dict(cfg[sub])
                child.setdefault("model_type", mtype)
                stack.append((f"{prefix}{sub}.", child))
        expected = EXPECTED_ACT.get(mtype)
        for key in ACT_KEYS:
            act = cfg.get(key)
            if expected and isinstance(act, str) and act.lower() not in expected:
                hits.append(Observation(
                    "weights/unusual-activation", Severity.MEDIUM,
                    f"{where}: {prefix}{key} is {act!r}, unusual for model_type {mtype!r} "
                    f"(expected {sorted(expected)}); privacy-backdoor constructions swap in ReLU",
                    f"{prefix}{key}", {"activation": act, "model_type": mtype, "expected": sorted(expected)}))
    return hits


def read_config(path: Any, limit: int = 4 << 20) -> dict[str, Any] | None:
    try:
        if path.stat().st_size > limit:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
