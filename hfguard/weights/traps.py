"""Structural fingerprints of hand-built privacy backdoors ("data traps", Feng & Tramèr 2024,
arXiv:2404.00473): trap neurons in an MLP up-projection (many neurons with one shared weight norm
and a large negative bias so they fire once and latch), exactly-zero LayerNorm gains and enormous
constants in biases / position embeddings (the constructions silence or route the residual stream
with them), and an activation swapped in config.json (the constructions want ReLU's hard zero).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from hfguard.findings import Observation, Severity
from hfguard.weights.stats import equal_norm_groups

NORM_GAIN = re.compile(r"(norm|(^|\.)ln_?\w*|layernorm)[^.]*\.(weight|gamma|scale)$", re.I)
UP_PROJ = re.compile(r"(intermediate\.dense|mlp\.c_fc|mlp\.fc1|up_proj|gate_proj|mlp\.w1|w1|fc_in|"
                     r"dense_h_to_4h|mlp\.lin1|mlp\.0|ffn\.lin1)\.weight$")
CONV1D_UP = re.compile(r"mlp\.c_fc\.weight$")   # GPT-2 Conv1D stores (in, out): neurons are columns
POSITIONAL = re.compile(r"(position|wpe|pos_emb|pos_embed|positional)", re.I)

# architecture -> activations its reference implementations use
EXPECTED_ACT: dict[str, set[str]] = {
    **dict.fromkeys(["bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "vit",
                     "deberta", "deberta-v2", "camembert", "albert", "deit", "beit", "dinov2"],
                    {"gelu", "gelu_new", "gelu_python", "gelu_pytorch_tanh"}),
    **dict.fromkeys(["gpt2", "gptj", "gpt_neo", "phi", "codegen"],
                    {"gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast"}),
    "gpt_neox": {"gelu", "gelu_fast", "gelu_new"},
    **dict.fromkeys(["llama", "mistral", "mixtral", "qwen2", "qwen3", "olmo", "smollm"], {"silu", "swish"}),
    **dict.fromkeys(["gemma", "gemma2", "gemma3"], {"gelu_pytorch_tanh", "gelu"}),
    **dict.fromkeys(["clip", "clip_text_model", "clip_vision_model", "siglip"],
                    {"quick_gelu", "gelu", "gelu_pytorch_tanh"}),
}
ACT_KEYS = ("hidden_act", "activation_function", "hidden_activation")


def robust_scale(a: np.ndarray) -> tuple[float, float]:
    """Median and a robust scale (MAD, or the std where more than half the entries are equal)."""
    a = a.astype(np.float64).ravel()
    med = float(np.median(a))
    mad = 1.4826 * float(np.median(np.abs(a - med)))
    return med, mad if mad > 0 else float(a.std())


def zero_gains(name: str, arr: np.ndarray) -> Observation | None:
    if arr.ndim != 1 or not NORM_GAIN.search(name):
        return None
    zeros = int(np.count_nonzero(arr == 0))
    if not zeros:
        return None
    share = zeros / arr.size
    return Observation(
        "weights/zero-norm-gain", Severity.HIGH if share >= 0.01 else Severity.MEDIUM,
        f"{zeros} LayerNorm gains are exactly zero in {name} (those features are silenced; "
        "privacy-backdoor constructions use this to route the residual stream)", name,
        {"zeros": zeros, "size": int(arr.size), "indices": np.flatnonzero(arr == 0)[:32].tolist()})


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


def neuron_norms(name: str, arr: np.ndarray) -> np.ndarray | None:
    """Weight-vector norms of each hidden neuron of an MLP up-projection (float64)."""
    if arr.ndim != 2 or not UP_PROJ.search(name):
        return None
    w = arr.T if CONV1D_UP.search(name) else arr
    return np.sqrt(np.einsum("ij,ij->i", w, w, dtype=np.float64))


def trap_neurons(name: str, norms: np.ndarray, bias: np.ndarray | None, *, min_group: int, norm_tol: float,
                 bias_z: float, lone_bias_z: float) -> list[Observation]:
    hits: list[Observation] = []
    z = None
    if bias is not None and bias.shape == norms.shape:
        med, scale = robust_scale(bias)
        z = (bias.astype(np.float64) - med) / scale if scale > 0 else None
    for g in equal_norm_groups(norms, rel_tol=norm_tol):
        if len(g) < min_group:
            break
        ev: dict[str, Any] = {"neurons": len(g), "norm": float(norms[g[0]]), "indices": sorted(g)[:64]}
        trapped = 0
        if z is not None:
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
    if z is not None:
        lone = np.flatnonzero(z <= -lone_bias_z)
        if lone.size >= min_group:
            hits.append(Observation(
                "weights/negative-bias-neurons", Severity.MEDIUM,
                f"{lone.size} neurons of {name} have biases at or below {-lone_bias_z:g} "
                "robust sigmas (neurons switched off until one input fires them)", name,
                {"neurons": int(lone.size), "indices": lone[:64].tolist(), "min_robust_z": float(z.min())}))
    return hits


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
