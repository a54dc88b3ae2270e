"""Sibling layers: the same role in every block (`encoder.layer.{i}.attention.self.query.weight`),
compared by robust z-scores (median / MAD) so that one rescaled or rebuilt block stands out.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hfguard.robust import MAD_TO_SIGMA, robust_scale, robust_z

# The first purely numeric path component is the block index in BERT (encoder.layer.3),
# GPT-2 (h.3), LLaMA (model.layers.3), CLIP (text_model.encoder.layers.3), ViT (blocks.3 /
# encoder.layer.3) and T5 (block.3); Sequential indices deeper in a block stay part of the role.
_INDEX = re.compile(r"(?:^|\.)(\d+)(?=\.|$)")

# feature -> floor on the MAD (in log units): siblings of trained models are not identical, and
# with a handful of blocks a tiny MAD would turn noise into huge z (see docs/weights-calibration.md)
FEATURES: dict[str, float] = {
    "log_std": 0.10,
    "log_absmax": 0.25,
    "log_kurtosis": 0.35,
    "log_stable_rank": 0.15,
}


# a mixture-of-experts layer's experts are exchangeable (expert 5 of one layer has nothing to do
# with expert 5 of the next, and routing leaves some experts of a layer far less trained than the
# rest): one role for every expert of every layer, `experts.{e}` (per-expert files) or `[{e}`
# (fused tensors read one expert at a time, tensors.split_experts)
_EXPERT_INDEX = re.compile(r"(?<=\.experts\.)\d+(?=\.)|(?<=\[)\d+(?=[],])")


def role_of(name: str) -> tuple[str, int | None]:
    """(the tensor's role, its block): `encoder.layer.{i}.attention.self.query.weight`, 3."""
    m = _INDEX.search(name)
    if not m:
        return name, None
    rest = _EXPERT_INDEX.sub("{e}", name[m.end(1):])
    return name[: m.start(1)] + "{i}" + rest, int(m.group(1))


# bfloat16 rounds a number to 2^-8 of itself: a bias smaller than that next to the pre-activation
# it is added to changes nothing a bfloat16 copy of the model does not change
RESOLUTION = 2.0 ** -8


def below_resolution(name: str, stats: dict[str, dict[str, Any]], shapes: dict[str, tuple[int, ...]]) -> bool:
    """A bias whose every entry is below RESOLUTION x the spread of its layer's pre-activations
    (the weight's neuron norm: what unit-variance inputs, as a LayerNorm hands them, give). Key
    biases get no gradient (softmax ignores a shift shared by all keys) and hold only optimiser
    noise, 1e-4-3e-3 of that scale (MiniLM; OPT, DistilBERT, RoBERTa trained here), which varies
    from layer to layer by 10x without meaning anything; every other bias measured is >= 0.02."""
    if not name.endswith(".bias"):
        return False
    weight = name[: -len("bias")] + "weight"
    st, wst, wshape = stats.get(name), stats.get(weight), shapes.get(weight)
    if st is None or wst is None or wshape is None or len(wshape) != 2 or not st.get("n"):
        return False
    fan_in = math.prod(wshape) / st["n"]   # Conv1D (in, out) and Linear (out, in) alike
    std, mean, absmax = wst.get("std"), wst.get("mean"), st.get("absmax")
    if std is None or mean is None or absmax is None or fan_in < 1:
        return False
    second = std * std + mean * mean
    return math.isfinite(second) and absmax < RESOLUTION * math.sqrt(fan_in * second)


def features_of(st: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, feat in (("std", "log_std"), ("absmax", "log_absmax"), ("kurtosis", "log_kurtosis"),
                      ("stable_rank", "log_stable_rank")):
        v = st.get(key)
        if v is not None and v > 0 and math.isfinite(v):
            out[feat] = math.log(v)
    return out


def sibling_outliers(stats: dict[str, dict[str, Any]], shapes: dict[str, tuple[int, ...]],
                     z_min: float, min_siblings: int = 4) -> list[dict[str, Any]]:
    """Tensors whose features sit z_min robust z-scores or more from their siblings' median."""
    return [s for s in sibling_scores(stats, shapes, min_siblings) if abs(s["z"]) >= z_min]


def layer_profile(scores: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """The largest |robust z| of any tensor feature in each block (for the report's figure)."""
    worst: dict[int, float] = {}
    for s in scores:
        worst[s["index"]] = max(worst.get(s["index"], 0.0), abs(s["z"]))
    blocks = sorted(worst)
    return blocks, [worst[b] for b in blocks]


def sibling_scores(stats: dict[str, dict[str, Any]], shapes: dict[str, tuple[int, ...]],
                   min_siblings: int = 4) -> list[dict[str, Any]]:
    """Every tensor feature's robust z-score against its siblings (same role and shape, other blocks)."""
    groups: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for name, st in stats.items():
        role, idx = role_of(name)
        if idx is not None and st.get("n", 0) >= 16:
            groups.setdefault((role, shapes[name]), []).append(name)
    below = {n for names in groups.values() for n in names if below_resolution(n, stats, shapes)}
    out: list[dict[str, Any]] = []
    for (role, _shape), names in sorted(groups.items()):
        if len(names) < min_siblings:
            continue
        feats = {n: features_of(stats[n]) for n in names}
        # a role most of whose members are below resolution is noise (key biases): its members
        # are references only. A bias shrunk below resolution among live siblings is still judged
        noise = {n for n in names if n in below} if 2 * sum(n in below for n in names) > len(names) else set()
        for feat, floor in FEATURES.items():
            have = [n for n in names if feat in feats[n]]
            if len(have) < min_siblings:
                continue
            values = [feats[n][feat] for n in have]
            med, scale = robust_scale(values, floor * MAD_TO_SIGMA)
            zs = robust_z(values, floor * MAD_TO_SIGMA).tolist()
            if feat == "log_std":   # a small tensor's own std is uncertain: judge it by both spreads
                zs = [z * scale / math.hypot(scale, _log_std_error(stats[n]))
                      for n, z in zip(have, zs, strict=True)]
            for n, z in zip(have, zs, strict=True):
                if n in noise:   # how much noise a gradient-free bias picked up says nothing
                    continue
                # a bias smaller than its siblings is silenced only once it is below resolution: a
                # zero-initialised bias grows with the gradient its layer gets (a 200-step OPT's
                # layer-0 out_proj.bias: 3.3x below its siblings' spread, z -7.2, still live)
                if z < 0 and n.endswith(".bias") and n not in below:
                    continue
                out.append({"tensor": n, "role": role, "index": role_of(n)[1], "feature": feat,
                            "z": round(z, 2), "value": round(math.exp(feats[n][feat]), 6),
                            "sibling_median": round(math.exp(med), 6), "siblings": len(have)})
    return out


def _log_std_error(st: dict[str, Any]) -> float:
    """Standard error of log(std) estimated from n entries, (kurtosis - 1) / 4n by the delta method:
    0.18 for a 32-entry bias (GQA value biases of small models), below 0.002 for any weight
    matrix. Siblings' MAD holds it too, but with six blocks the MAD is itself a guess and its
    floor (FEATURES) was measured on matrices: a DARE merge (10% of a fine-tune's delta kept,
    rescaled 10x) left one 32-entry bias at 3.6x its siblings' std, z 8.6 on the floor alone."""
    n, kurt = st.get("n") or 0, st.get("kurtosis")
    if n < 2:
        return 0.0
    k = kurt if kurt is not None and math.isfinite(kurt) else 3.0
    return math.sqrt(max(k - 1.0, 0.0) / (4.0 * n))


def _median(s: list[float]) -> float:
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
