"""Red-team organisms for the weights tier (issue #13), built with recipes the calibration
(testing/weight_edits.py) does not use: architectures it never saw (OPT, GPT-NeoX, Mistral and
Qwen2 with GQA, Phi, BLOOM, DistilBERT, RoBERTa, CLIP, Qwen2-MoE with its shared expert),
pretrained for a few hundred AdamW steps on a synthetic bigram language, and edits written the way
the papers' code writes them (ROME's closed form with a key covariance from activations, MEMIT's
spread least squares, FT-L under an L-inf constraint, peft-style LoRA merges, mergekit-style
merges). Used by bench/redteam_weights.py and tests/weights/test_redteam.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from testing import weight_edits as we

D, FF, HEADS, LAYERS, VOCAB, POS = 64, 256, 4, 6, 512, 64
ARCHS = ("opt", "gpt_neox", "mistral", "qwen2", "phi", "bloom", "distilbert", "roberta", "clip", "qwen2_moe")
CAUSAL = {"opt", "gpt_neox", "mistral", "qwen2", "phi", "bloom", "qwen2_moe"}
MLM = {"distilbert", "roberta"}

# the MLP's output (down) and input (up) projections, attention projections, per family
DOWN = re.compile(r"(?<!attention\.)(fc2|dense_4h_to_h|down_proj|ffn\.lin2|output\.dense)$")
UP = re.compile(r"(fc1|dense_h_to_4h|up_proj|ffn\.lin1|intermediate\.dense)$")
ATTN = re.compile(r"(q_proj|k_proj|v_proj|o_proj|out_proj|query_key_value|attention\.dense"
                  r"|self_attention\.dense|q_lin|k_lin|v_lin|out_lin|self\.query|self\.key|self\.value|attention\.output\.dense"
                  r"|self_attn\.dense)$")
QV = re.compile(r"(q_proj|v_proj|query_key_value|q_lin|v_lin|self\.query|self\.value)$")
MLP = re.compile(f"{UP.pattern}|{DOWN.pattern}|gate_proj$")
EMB = re.compile(r"(embed_tokens|word_embeddings|embed_in|token_embedding)\.weight$")
GAIN = re.compile(r"(layer_?norm\w*|norm\d?|ln_\w+)\.weight$", re.I)


# -- models ------------------------------------------------------------------------------------
def config(arch: str) -> Any:
    import transformers as tf

    common = dict(vocab_size=VOCAB)
    if arch == "opt":
        return tf.OPTConfig(hidden_size=D, ffn_dim=FF, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            max_position_embeddings=POS, word_embed_proj_dim=D, **common)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, max_position_embeddings=POS, **common)
    if arch in ("mistral", "qwen2"):
        cls = tf.MistralConfig if arch == "mistral" else tf.Qwen2Config
        return cls(hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                   num_key_value_heads=2, max_position_embeddings=POS, **common)
    if arch == "qwen2_moe":   # in memory its experts are fused tensors: the edits reach its shared expert
        return tf.Qwen2MoeConfig(hidden_size=D, intermediate_size=FF, moe_intermediate_size=FF // 2,
                                 shared_expert_intermediate_size=FF, num_experts=8, num_experts_per_tok=2,
                                 num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=2,
                                 max_position_embeddings=POS, **common)
    if arch == "phi":
        return tf.PhiConfig(hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, max_position_embeddings=POS, **common)
    if arch == "bloom":
        return tf.BloomConfig(hidden_size=D, n_layer=LAYERS, n_head=HEADS, **common)
    if arch == "distilbert":
        return tf.DistilBertConfig(dim=D, hidden_dim=FF, n_layers=LAYERS, n_heads=HEADS,
                                   max_position_embeddings=POS, **common)
    if arch == "roberta":
        return tf.RobertaConfig(hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, max_position_embeddings=POS + 2, **common)
    if arch == "clip":
        return tf.CLIPConfig(text_config=dict(hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS,
                                              num_attention_heads=HEADS, max_position_embeddings=POS,
                                              vocab_size=VOCAB, bos_token_id=1, eos_token_id=2,
                                              pad_token_id=0),
                             vision_config=dict(hidden_size=D, intermediate_size=FF, num_hidden_layers=LAYERS,
                                                num_attention_heads=HEADS, image_size=32, patch_size=8),
                             projection_dim=32)
    raise ValueError(arch)


def model_class(arch: str) -> Any:
    import transformers as tf

    if arch in CAUSAL:
        return tf.AutoModelForCausalLM
    if arch in MLM:
        return tf.AutoModelForMaskedLM
    return tf.CLIPModel


class Data:
    """A synthetic language: a sparse random bigram chain (each token has 4 likely successors),
    and for CLIP images that are a fixed random function of the caption's first token."""

    def __init__(self, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.next = torch.randint(4, VOCAB, (VOCAB, 4), generator=g)
        self.pix = torch.randn(VOCAB, 3, 32, 32, generator=g)
        self.g = torch.Generator().manual_seed(seed + 1)

    def tokens(self, n: int = 8, length: int = 32) -> Any:
        import torch

        x = torch.empty(n, length, dtype=torch.long)
        x[:, 0] = torch.randint(4, VOCAB, (n,), generator=self.g)
        for t in range(1, length):
            pick = torch.randint(0, 4, (n,), generator=self.g)
            x[:, t] = self.next[x[:, t - 1], pick]
        return x

    def batch(self, arch: str, n: int = 8) -> dict[str, Any]:
        import torch

        x = self.tokens(n, 32 if arch != "clip" else 16)
        if arch in CAUSAL:
            return {"input_ids": x, "labels": x}
        if arch in MLM:
            labels = x.clone()
            mask = torch.rand(x.shape, generator=self.g) < 0.15
            labels[~mask] = -100
            x = x.masked_fill(mask, 3)
            return {"input_ids": x, "labels": labels}
        pix = self.pix[x[:, 0]] + 0.1 * torch.randn(n, 3, 32, 32, generator=self.g)
        return {"input_ids": x, "pixel_values": pix, "return_loss": True}


def train(model: Any, arch: str, data: Data, steps: int, lr: float, params: Any = None,
          after_step: Callable[[], None] | None = None) -> None:
    import torch

    model.train()
    opt = torch.optim.AdamW([p for p in (params or model.parameters()) if p.requires_grad], lr=lr,
                            weight_decay=0.01)
    for _ in range(steps):
        loss = model(**data.batch(arch)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
    model.eval()


def build(arch: str, seed: int, root: Path, steps: int) -> Path:
    import torch

    torch.manual_seed(seed)
    cls = model_class(arch)
    model = cls.from_config(config(arch)) if hasattr(cls, "from_config") else cls(config(arch))
    train(model, arch, Data(seed), steps, lr=2e-3)
    model.save_pretrained(root / "base")
    return root / "base"


def load(arch: str, folder: Path, dtype: Any = None) -> Any:
    return model_class(arch).from_pretrained(folder, torch_dtype=dtype).eval()


def linear_modules(model: Any, pattern: re.Pattern[str]) -> list[tuple[str, Any]]:
    import torch

    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and pattern.search(n)
            and not n.startswith("vision_model")]   # CLIP: edit the text tower


# -- derivatives -------------------------------------------------------------------------------
# the project's own organism helpers, shared: load/save a state, task-vector merges
state_dict_np, write_state, merge = we.state_of, we.write, we.merge


def transformed(src: Path, dst: Path, fn: Callable[[dict[str, np.ndarray]], Any]) -> Path:
    state = {k: v.copy() for k, v in state_dict_np(src).items()}
    fn(state)
    return write_state(src, state, dst)


def cast_saved(arch: str, src: Path, dst: Path, dtype: str) -> Path:
    import torch

    load(arch, src, getattr(torch, dtype)).save_pretrained(dst)
    return dst


def qdq_rows(state: dict[str, np.ndarray], bits: int = 8) -> None:
    """bitsandbytes-style int8: per-output-row absmax."""
    q = 2 ** (bits - 1) - 1
    for k, w in state.items():
        if w.ndim == 2 and w.dtype == np.float32:
            s = np.maximum(np.abs(w).max(1, keepdims=True), 1e-12) / q
            state[k] = (np.clip(np.round(w / s), -q - 1, q) * s).astype(np.float32)


def qdq_groups(state: dict[str, np.ndarray], bits: int = 4, group: int = 32) -> None:
    """GPTQ/AWQ-style int4: asymmetric (zero point) per group of `group` inputs, linear layers only."""
    levels = 2 ** bits - 1
    for k, w in state.items():
        if w.ndim == 2 and w.dtype == np.float32 and not EMB.search(k) and w.shape[1] % group == 0:
            g = w.reshape(w.shape[0], -1, group)
            lo, hi = g.min(-1, keepdims=True), g.max(-1, keepdims=True)
            s = np.maximum(hi - lo, 1e-12) / levels
            zp = np.round(-lo / s)
            q = np.clip(np.round(g / s) + zp, 0, levels)
            state[k] = ((q - zp) * s).reshape(w.shape).astype(np.float32)


def prune(state: dict[str, np.ndarray], sparsity: float) -> None:
    """Unstructured magnitude pruning of every linear weight inside the blocks (torch.nn.utils.prune
    l1_unstructured per module)."""
    for k, w in state.items():
        if w.ndim == 2 and re.search(r"\.\d+\.", k) and k.endswith("weight"):
            cut = np.quantile(np.abs(w), sparsity)
            w[np.abs(w) <= cut] = 0.0


def finetune(arch: str, src: Path, dst: Path, steps: int, seed: int, lr: float = 3e-4) -> Path:
    import torch

    torch.manual_seed(seed)
    model = load(arch, src)
    train(model, arch, Data(seed), steps, lr=lr)
    model.save_pretrained(dst)
    return dst


def lora(arch: str, src: Path, dst: Path, rank: int, targets: re.Pattern[str], seed: int,
         steps: int = 40, alpha: float | None = None, lr: float = 1e-3) -> tuple[Path, float]:
    """peft's LoraLayer by hand: A kaiming-uniform(a=sqrt 5), B = 0, y = Wx + (alpha/r) B A x,
    dropout 0.05; then merge_and_unload: W += (alpha/r) B A. alpha defaults to 2r (scale 2).
    Returns the folder and the largest relative change of a merged matrix."""
    import torch

    torch.manual_seed(seed)
    model = load(arch, src)
    for p in model.parameters():
        p.requires_grad_(False)
    mods = linear_modules(model, targets)
    adapters = []
    for _, m in mods:
        a = torch.nn.Parameter(torch.empty(rank, m.in_features))
        torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        b = torch.nn.Parameter(torch.zeros(m.out_features, rank))
        scale = (alpha if alpha is not None else 2.0 * rank) / rank
        drop = torch.nn.Dropout(0.05)
        m.forward = (lambda mm, aa, bb, s, dr: lambda x: torch.nn.functional.linear(x, mm.weight, mm.bias)
                     + s * (dr(x) @ aa.T @ bb.T))(m, a, b, scale, drop)
        adapters.append((m, a, b, scale))
    train(model, arch, Data(seed), steps, lr=lr, params=[p for _, a, b, _ in adapters for p in (a, b)])
    rel = 0.0
    with torch.no_grad():
        for m, a, b, s in adapters:
            rel = max(rel, float((s * (b @ a)).norm() / m.weight.norm()))
            m.weight += s * (b @ a)
            del m.forward
    model.save_pretrained(dst)
    return dst, rel


def extend_vocab(arch: str, src: Path, dst: Path, new: int, train_steps: int = 0, seed: int = 0) -> Path:
    import torch

    model = load(arch, src)
    emb = model.get_input_embeddings().weight
    mean = emb.detach().mean(0)
    model.resize_token_embeddings(emb.shape[0] + new)
    with torch.no_grad():   # mean-initialised new rows (what transformers >= 4.46 does by default)
        model.get_input_embeddings().weight[-new:] = mean
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            out.weight[-new:] = out.weight[:-new].mean(0)
    if train_steps:
        train(model, arch, Data(seed), train_steps, lr=3e-4)
    model.save_pretrained(dst)
    return dst


# -- edits -------------------------------------------------------------------------------------
def _features(out: Any) -> Any:
    """CLIP's get_*_features: a tensor (transformers < 5) or an output whose pooler_output it is."""
    return out if hasattr(out, "shape") else out.pooler_output


def forward(arch: str, model: Any, ids: Any) -> Any:
    """The forward pass an edit reads activations from (CLIP: the text tower only)."""
    return _features(model.get_text_features(input_ids=ids)) if arch == "clip" else model(input_ids=ids)


def edit_objective(arch: str, model: Any, ids: Any, target: Any) -> Any:
    """What an editor optimises for one fact: the target token after the prompt (causal, MLM at a
    mask at the end), or the CLIP text embedding turned towards a chosen image's."""
    import torch

    if arch == "clip":
        emb = _features(model.get_text_features(input_ids=ids))
        return -torch.nn.functional.cosine_similarity(emb, target, dim=-1).mean()
    logits = model(input_ids=ids).logits[:, -1]
    return torch.nn.functional.cross_entropy(logits, target)


def facts(arch: str, model: Any, data: Data, n: int, seed: int) -> list[tuple[Any, Any]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = data.tokens(4, 12)
        ids[:, -3:-1] = torch.randint(4, VOCAB, (1, 2), generator=g)   # the subject: same 2 tokens
        if arch in MLM:
            ids[:, -1] = 3
        if arch == "clip":   # pooled at the largest id (eos_token_id 2: argmax): the last token
            ids[:, -1] = VOCAB - 1
            with torch.no_grad():
                tgt = _features(model.get_image_features(pixel_values=torch.randn(1, 3, 32, 32, generator=g)))
        else:
            tgt = torch.randint(4, VOCAB, (1,), generator=g).repeat(4)
        out.append((ids, tgt))
    return out


def _bsd(t: Any, ids: Any) -> Any:
    """(batch, seq, dim) view of a module's input/output (OPT flattens tokens in its MLP)."""
    return t.reshape(ids.shape[0], ids.shape[1], -1)


def _capture_inputs(module: Any, run: Callable[[], Any]) -> Any:
    got = []
    h = module.register_forward_hook(lambda m, i, o: got.append(i[0].detach()))
    try:
        run()
    finally:
        h.remove()
    return got[0]


def key_covariance(arch: str, model: Any, module: Any, data: Data, batches: int = 16) -> Any:
    """E[k k^T] of the module's inputs over text: ROME's C (Wikipedia there, the synthetic
    language here)."""
    import torch

    ks = []
    for _ in range(batches):
        b = data.batch(arch)
        b.pop("labels", None)
        b.pop("return_loss", None)
        with torch.no_grad():
            ks.append(_capture_inputs(module, lambda b=b: forward(arch, model, b["input_ids"]))
                      .reshape(-1, module.in_features))
    k = torch.cat(ks).double()
    return k.T @ k / k.shape[0]


def subject_key(arch: str, model: Any, module: Any, ids: Any) -> Any:
    import torch

    with torch.no_grad():
        x = _capture_inputs(module, lambda: forward(arch, model, ids))
    return _bsd(x, ids)[:, -2].double().mean(0)   # the subject's last token, averaged over contexts


def optimise_delta(arch: str, model: Any, module: Any, ids: Any, target: Any, steps: int = 25,
                   lr: float = 0.1) -> Any:
    """v* - v: the change of the module's output at the subject's last token that makes the
    model say the target (ROME's v* optimisation, with its norm clamp)."""
    import torch

    with torch.no_grad():
        out = []
        h = module.register_forward_hook(lambda m, i, o: out.append(o.detach()))
        forward(arch, model, ids)
        h.remove()
    base_norm = float(_bsd(out[0], ids)[:, -2].norm(dim=-1).mean())
    delta = torch.zeros(module.out_features, requires_grad=True)

    def add(m: Any, i: Any, o: Any) -> Any:
        o = _bsd(o, ids).clone()
        o[:, -2] = o[:, -2] + delta
        return o.reshape(i[0].shape[:-1] + (-1,))

    h = module.register_forward_hook(add)
    opt = torch.optim.Adam([delta], lr=lr)
    try:
        for _ in range(steps):
            loss = edit_objective(arch, model, ids, target) + 1e-3 * delta.norm() ** 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():   # ROME clamps ||delta|| to 4 x ||v||
                n = float(delta.norm())
                if n > 4 * base_norm:
                    delta *= 4 * base_norm / n
    finally:
        h.remove()
    return delta.detach().double()


def rome(arch: str, src: Path, dst: Path, layer: int, seed: int) -> tuple[Path, float]:
    """ROME's closed form: W += (v* - W k*) (C^-1 k*)^T / (k*^T C^-1 k*) (HF layout W: out x in)."""
    import torch

    torch.manual_seed(seed)
    model = load(arch, src)
    for p in model.parameters():
        p.requires_grad_(False)
    data = Data(seed)
    name, mod = linear_modules(model, DOWN)[layer]
    c = key_covariance(arch, model, mod, data) + 1e-4 * torch.eye(mod.in_features, dtype=torch.float64)
    (ids, tgt), = facts(arch, model, data, 1, seed)
    k = subject_key(arch, model, mod, ids)
    resid = optimise_delta(arch, model, mod, ids, tgt)
    cinv_k = torch.linalg.solve(c, k)
    upd = torch.outer(resid, cinv_k) / float(k @ cinv_k)
    rel = float(upd.norm() / mod.weight.double().norm())
    with torch.no_grad():
        mod.weight += upd.float()
    model.save_pretrained(dst)
    return dst, rel


def memit(arch: str, src: Path, dst: Path, layers: list[int], n_facts: int, seed: int,
          lam: float = 1.0) -> tuple[Path, float]:
    """MEMIT: target residuals z_i found at the last edited layer; for each layer l in turn the
    remaining residual is spread over the layers left, and
    Delta_l = R K^T (lam C n + K K^T)^-1 (keys K of the facts at layer l, current weights)."""
    import torch

    torch.manual_seed(seed)
    model = load(arch, src)
    for p in model.parameters():
        p.requires_grad_(False)
    data = Data(seed)
    mods = linear_modules(model, DOWN)
    fs = facts(arch, model, data, n_facts, seed)
    last = mods[layers[-1]][1]

    def outputs(module: Any) -> Any:
        got = []
        for ids, _ in fs:
            o: list[Any] = []
            h = module.register_forward_hook(lambda m, i, out, o=o: o.append(out.detach()))
            with torch.no_grad():
                forward(arch, model, ids)
            h.remove()
            got.append(_bsd(o[0], ids)[:, -2].double().mean(0))
        return torch.stack(got)

    z = outputs(last) + torch.stack([optimise_delta(arch, model, last, ids, t) for ids, t in fs])
    rels = []
    for j, li in enumerate(layers):
        _, mod = mods[li]
        c = key_covariance(arch, model, mod, data, batches=8)
        keys = torch.stack([subject_key(arch, model, mod, ids) for ids, _ in fs])   # n x in
        r = (z - outputs(last)) / (len(layers) - j)                                  # n x out
        a = lam * c * 100 + keys.T @ keys + 1e-4 * torch.eye(mod.in_features, dtype=torch.float64)
        upd = torch.linalg.solve(a, keys.T @ r).T                                    # out x in
        rels.append(float(upd.norm() / mod.weight.double().norm()))
        with torch.no_grad():
            mod.weight += upd.float()
    model.save_pretrained(dst)
    return dst, max(rels)


def ft_l(arch: str, src: Path, dst: Path, layer: int, seed: int, which: re.Pattern[str],
         eps: float = 5e-3, steps: int = 30) -> tuple[Path, float]:
    """FT-L: fine-tune one layer's MLP matrix (or two) on the facts, with ||W - W0||_inf <= eps."""
    import torch

    torch.manual_seed(seed)
    model = load(arch, src)
    data = Data(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = sorted({int(re.search(r"\.(\d+)\.", n).group(1)) for n, _ in linear_modules(model, DOWN)})
    mods = [m for n, m in linear_modules(model, which) if f".{blocks[layer]}." in n]
    ws = [m.weight for m in mods]
    w0 = [w.detach().clone() for w in ws]
    for w in ws:
        w.requires_grad_(True)
    fs = facts(arch, model, data, 2, seed)
    opt = torch.optim.Adam(ws, lr=1e-3)
    for _ in range(steps):
        loss = sum(edit_objective(arch, model, ids, t) for ids, t in fs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w, w_0 in zip(ws, w0, strict=False):
                w.copy_(torch.max(torch.min(w, w_0 + eps), w_0 - eps))
    rel = max(float((w.detach() - w_0).norm() / w_0.norm()) for w, w_0 in zip(ws, w0, strict=False))
    model.save_pretrained(dst)
    return dst, rel


def embedding_rows(state: dict[str, np.ndarray], seed: int, how: str) -> None:
    name = next(n for n in state if EMB.search(n) and "vision" not in n)
    w = state[name]
    rng = np.random.default_rng(seed)
    rows = rng.choice(np.arange(10, w.shape[0]), 4, replace=False)
    for r in rows:
        if how == "swap":    # a homoglyph/trigger token made to mean another token
            w[r] = w[int(rng.integers(10, w.shape[0]))]
        else:                # a trigger row pushed along a chosen direction
            v = rng.standard_normal(w.shape[1])
            w[r] = w[r] + (0.8 * np.linalg.norm(w[r]) / np.linalg.norm(v)) * v


def trap_layer(state: dict[str, np.ndarray]) -> str:
    """The up-projection the trap recipes plant in: the third block's (text tower for CLIP)."""
    ups = [k for k in state if k.endswith(".weight") and UP.search(k[:-7]) and "vision" not in k]
    return sorted(ups, key=lambda k: int(re.search(r"\.(\d+)\.", k).group(1)))[2]


def traps(state: dict[str, np.ndarray], seed: int, jitter: float, cos: float = 0.92, n: int = 12) -> str:
    """Feng & Tramer data traps hidden from exact tests: n up-projection neurons along one shared
    direction (pairwise cosine ~cos), norms jittered by `jitter` (relative), biases drawn inside the
    layer's own range (its 2nd-25th percentile)."""
    rng = np.random.default_rng(seed)
    name = trap_layer(state)
    w = state[name]
    idx = rng.choice(w.shape[0], n, replace=False)
    d = rng.standard_normal(w.shape[1])
    d /= np.linalg.norm(d)
    norm = float(np.median(np.linalg.norm(w, axis=1)))
    ns = math.sqrt((1 - cos) / cos)
    for i in idx:
        e = rng.standard_normal(w.shape[1])
        v = d + ns * e / np.linalg.norm(e)
        w[i] = (v * norm * (1 + jitter * rng.standard_normal()) / np.linalg.norm(v)).astype(w.dtype)
    bias = state.get(name[:-6] + "bias")
    if bias is not None:
        lo, hi = np.quantile(bias, [0.02, 0.25])
        bias[idx] = rng.uniform(lo, hi, n).astype(bias.dtype)
    return name


def data_traps(arch: str, src: Path, dst: Path, seed: int) -> Path | None:
    """weight_edits.calibrated_traps in `trap_layer`'s up-projection, each trap's bias set from the
    inputs that layer sees on the synthetic language; None where it has no bias (Mistral, Qwen2)."""
    from testing.weight_edits import calibrated_traps

    state = {k: v.copy() for k, v in state_dict_np(src).items()}
    name = trap_layer(state)
    if name[:-6] + "bias" not in state:
        return None
    model, data = load(arch, src), Data(seed)

    def run() -> None:
        for _ in range(4):
            forward(arch, model, data.tokens(8, 32 if arch != "clip" else 16))
    calibrated_traps(model, run, state, name, seed)   # runs `run` without gradients
    return write_state(src, state, dst)


def gains(state: dict[str, np.ndarray], seed: int, value: float, n: int = 16) -> str:
    rng = np.random.default_rng(seed)
    name = sorted(k for k in state if GAIN.search(k) and re.search(r"\.\d+\.", k) and "vision" not in k)[3]
    g = state[name]
    g[rng.choice(g.size, n, replace=False)] = np.asarray(value, g.dtype)
    return name


def fp16_with(src: Path, dst: Path, fn: Callable[[dict[str, np.ndarray]], Any]) -> Path:
    state = {k: (v.astype(np.float16) if v.dtype == np.float32 else v.copy())
             for k, v in state_dict_np(src).items()}
    fn(state)
    return write_state(src, state, dst)


# -- two files in one folder ---------------------------------------------------------------------
def save_model_state(arch: str, cfg_src: Path, state: dict[str, np.ndarray], dst: Path, *,
                     safe: bool, shard: int | None = None, dtype: Any = None) -> None:
    """`state` loaded into the architecture and saved as users save it: save_pretrained's
    safetensors (sharded at `shard` bytes, or one file), or a PyTorch .bin written the way
    transformers < 5 wrote it (torch.save of the state dict, tied tensors included; sharded with a
    pytorch_model.bin.index.json)."""
    import torch

    model = load(arch, cfg_src)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False)
    if dtype is not None:
        model = model.to(dtype)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(cfg_src / "config.json", dst / "config.json")
    if safe:
        tmp = dst.parent / (dst.name + ".tmp")
        model.save_pretrained(tmp, **({"max_shard_size": shard} if shard else {}))
        for f in tmp.iterdir():
            if f.name.startswith("model"):
                shutil.move(str(f), dst / f.name)
        shutil.rmtree(tmp)
        return
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if not shard:
        torch.save(sd, dst / "pytorch_model.bin")
        return
    parts: list[dict[str, Any]] = [{}]
    size = 0
    for k, v in sd.items():
        if size and size + v.numel() * v.element_size() > shard:
            parts.append({})
            size = 0
        parts[-1][k] = v
        size += v.numel() * v.element_size()
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": {}}
    for i, part in enumerate(parts, 1):
        fname = f"pytorch_model-{i:05d}-of-{len(parts):05d}.bin"
        torch.save(part, dst / fname)
        index["weight_map"].update(dict.fromkeys(part, fname))
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps(index))


def copies(arch: str, base: Path, root: Path, seed: int, edit: Callable[[dict[str, np.ndarray]], Any]
           ) -> dict[str, tuple[Path, bool]]:
    """Folders with two weight files: (path, must_flag)."""
    import torch

    clean = state_dict_np(base)
    bad = {k: v.copy() for k, v in clean.items()}
    edit(bad)
    out: dict[str, tuple[Path, bool]] = {}

    def case(name: str, parts: list[tuple[dict[str, np.ndarray], dict[str, Any]]], flag: bool) -> None:
        for state, kw in parts:
            save_model_state(arch, base, state, root / name, **kw)
        out[name] = (root / name, flag)

    case("copies-st-clean+bin-edited", [(clean, {"safe": True}), (bad, {"safe": False})], True)
    case("copies-st-edited+bin-clean", [(bad, {"safe": True}), (clean, {"safe": False})], True)
    case("copies-sharded-st-clean+bin-edited",
         [(clean, {"safe": True, "shard": 60_000}), (bad, {"safe": False})], True)
    case("copies-st-clean+sharded-bin-edited",
         [(clean, {"safe": True}), (bad, {"safe": False, "shard": 60_000})], True)
    case("copies-st-clean+fp16-bin-edited",
         [(clean, {"safe": True}), (bad, {"safe": False, "dtype": torch.float16})], True)
    case("copies-st-clean+fp16-bin-clean (benign)",
         [(clean, {"safe": True}), (clean, {"safe": False, "dtype": torch.float16})], False)
    case("copies-sharded-st-edited+bin-clean",
         [(bad, {"safe": True, "shard": 60_000}), (clean, {"safe": False})], True)
    case("copies-sharded-st+sharded-bin-clean (benign)",
         [(clean, {"safe": True, "shard": 60_000}), (clean, {"safe": False, "shard": 90_000})], False)
    return out


