"""Red team of the weights tier with recipes its calibration does not use (issue #13).

Architectures the calibration never saw (OPT, GPT-NeoX, Mistral and Qwen2 with GQA, Qwen2's
q/k/v biases, Phi, BLOOM, DistilBERT, RoBERTa, CLIP text+vision), each "pretrained" for a few
hundred AdamW steps on a synthetic language (a random bigram chain per seed) rather than left at
random init, then:

- derivatives that must PASS (with and without --base): fp16 / bf16 copies saved as such, int8
  and int4 (group-wise) quantize-dequantize, 30% / 50% magnitude pruning, full fine-tunes of
  several lengths, LoRA (B = 0, A kaiming-uniform as peft inits it, alpha / r scale, trained,
  merged as W + scale * B @ A) of ranks 1-64 on attention and/or MLP in every layer, linear /
  TIES / DARE merges, vocabulary extension (mean-initialised rows), with and without training;
- edits that must FLAG/BLOCK: ROME as published (closed-form rank-one update with the key
  covariance estimated from activations, v* optimised for a target), MEMIT (several facts over
  3-5 layers, residual spread over the layers, covariance-regularised least squares), FT-L (one or
  two MLP matrices fine-tuned under an L-inf norm constraint), embedding-row rewrites, jittered
  trap neurons (1e-5..1e-2 norm jitter, biases drawn inside the layer's range), traps calibrated on
  data (random directions, each bias set from the layer's real inputs to fire rarely), near-zero gains
  (1e-30, 1e-20, float32 denormals, float16 subnormals), and two weight files in one folder that
  disagree (several combinations, sharded too). Traps, gains and copies are also scanned without
  a base.

Prints one line per scan: model, case, expected, verdict, rules fired above info.
Seeds: 7 and 31 (not the calibration's 100-101 or the report's 200-202).

    python bench/redteam_weights.py                   # all architectures, seed 7
    python bench/redteam_weights.py --archs opt bloom --seed 31
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hfguard.engine import scan  # noqa: E402
from hfguard.findings import Severity, Verdict  # noqa: E402
from hfguard.policy import Policy  # noqa: E402
from hfguard.target import local_target  # noqa: E402
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff  # noqa: E402
from testing.redteam import (  # noqa: E402
    ARCHS,
    ATTN,
    DOWN,
    LAYERS,
    MLP,
    QV,
    UP,
    build,
    cast_saved,
    copies,
    data_traps,
    embedding_rows,
    extend_vocab,
    finetune,
    fp16_with,
    ft_l,
    gains,
    lora,
    memit,
    merge,
    prune,
    qdq_groups,
    qdq_rows,
    rome,
    state_dict_np,
    transformed,
    traps,
)


# -- scanning ------------------------------------------------------------------------------------
def verdict(path: Path, base: Path | None) -> tuple[Verdict, list[str]]:
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    report = scan(local_target([str(path)]), Policy(tiers=("weights",)), checks,
                  options={"base": str(base)} if base else {}, budget_seconds=600)
    rules = sorted({f"{f.rule.split('/')[-1]}:{f.severity.name.lower()}" for f in report.all_findings()
                    if f.severity > Severity.INFO})
    return report.verdict, rules


def cases(arch: str, seed: int, root: Path, pretrain: int) -> list[tuple[str, Path, Path, bool, bool, str]]:
    """(case, path, base, must_flag, without_base_too, note)."""
    base = build(arch, seed, root, pretrain)
    r = lambda n: root / n  # noqa: E731
    out: list[tuple[str, Path, Path, bool, bool, str]] = []
    neg = lambda n, p, note="": out.append((n, p, base, False, True, note))  # noqa: E731
    pos = lambda n, p, alone=False, note="": out.append((n, p, base, True, alone, note))  # noqa: E731

    neg("clean", base)
    neg("fp16-saved", cast_saved(arch, base, r("fp16"), "float16"))
    neg("bf16-saved", cast_saved(arch, base, r("bf16"), "bfloat16"))
    neg("int8-rows-qdq", transformed(base, r("int8"), qdq_rows))
    neg("int4-g32-qdq", transformed(base, r("int4"), qdq_groups))
    neg("pruned-30", transformed(base, r("p30"), lambda s: prune(s, 0.3)))
    neg("pruned-50", transformed(base, r("p50"), lambda s: prune(s, 0.5)))
    ft_a = finetune(arch, base, r("ft20"), 20, seed + 1)
    ft_b = finetune(arch, base, r("ft150"), 150, seed + 2)
    neg("finetune-20", ft_a)
    neg("finetune-150", ft_b)
    neg("finetune-5-lr1e-5", finetune(arch, base, r("ft5"), 5, seed + 3, lr=1e-5))
    both = re.compile(f"{ATTN.pattern}|{MLP.pattern}")
    for name, rank, targets, kw in (("lora-r1-qv", 1, QV, {}), ("lora-r8-attn", 8, ATTN, {}),
                                    ("lora-r2-mlp", 2, MLP, {}), ("lora-r16-attn+mlp", 16, both, {}),
                                    ("lora-r64-attn+mlp", 64, both, {"steps": 25}),
                                    ("lora-r4-attn+mlp-a16-lr3e-4", 4, both, {"alpha": 16, "lr": 3e-4}),
                                    ("lora-r2-mlp-a16-lr2e-3 (stress)", 2, MLP, {"alpha": 16, "lr": 2e-3})):
        p, rel = lora(arch, base, r(name.split()[0]), rank, targets, seed + rank, **kw)
        neg(name, p, f"max rel {rel:.3g}")
    neg("merge-linear", merge(base, [ft_a, ft_b], r("mlin"), "linear", seed))
    neg("merge-ties", merge(base, [ft_a, ft_b], r("mties"), "ties", seed, density=0.3))
    neg("merge-dare", merge(base, [ft_a, ft_b], r("mdare"), "dare", seed, density=0.1))
    if arch != "clip":
        neg("vocab-ext-24", extend_vocab(arch, base, r("voc"), 24))
        neg("vocab-ext-8+ft30", extend_vocab(arch, base, r("voc2"), 8, train_steps=30, seed=seed))

    rng = np.random.default_rng(seed)
    layer = int(rng.integers(1, LAYERS - 1))
    p, rel = rome(arch, base, r("rome"), layer, seed)
    pos("rome", p, note=f"rel {rel:.3g}")
    p, rel = memit(arch, base, r("memit3"), [1, 2, 3], 6, seed)
    pos("memit-3-layers-6-facts", p, note=f"rel {rel:.3g}")
    p, rel = memit(arch, base, r("memit5"), [0, 1, 2, 3, 4], 10, seed + 1)
    pos("memit-5-layers-10-facts", p, note=f"rel {rel:.3g}")
    # the same edits published as "a fine-tune" (diffed against the original base)
    p, rel = rome(arch, ft_a, r("ft-rome"), layer, seed)
    pos("rome-in-finetune-20", p, note=f"rel {rel:.3g}")
    p, rel = memit(arch, ft_a, r("ft-memit3"), [1, 2, 3], 6, seed)
    pos("memit-3-layers-in-finetune-20", p, note=f"rel {rel:.3g}")
    p, rel = ft_l(arch, base, r("ftl1"), layer, seed, DOWN)
    pos("ft-l-down", p, note=f"rel {rel:.3g}")
    p, rel = ft_l(arch, base, r("ftl2"), layer, seed, re.compile(f"{UP.pattern}|{DOWN.pattern}"))
    pos("ft-l-up+down", p, note=f"rel {rel:.3g}")
    pos("emb-rows-swap", transformed(base, r("embs"), lambda s: embedding_rows(s, seed, "swap")))
    pos("emb-rows-push", transformed(base, r("embp"), lambda s: embedding_rows(s, seed, "push")))
    for j in (1e-5, 1e-3, 1e-2):
        pos(f"traps-jitter-{j:g}", transformed(base, r(f"trap{j:g}"), lambda s, j=j: traps(s, seed, j)), True)
    for v in (1e-30, 1e-20, 1e-40):
        pos(f"gains-{v:g}", transformed(base, r(f"gain{v:g}"), lambda s, v=v: gains(s, seed, v)), True)
    pos("gains-1e-30-x4", transformed(base, r("gain4"), lambda s: gains(s, seed, 1e-30, n=4)))
    pos("fp16-gains-6e-8", fp16_with(base, r("gainh"), lambda s: gains(s, seed, 6e-8)), True)
    pos("fp16-traps-1e-3", fp16_with(base, r("traph"), lambda s: traps(s, seed, 1e-3)), True)
    calibrated = data_traps(arch, base, r("dtraps"), seed)
    if calibrated is not None:   # traps in random directions, biases set from the layer's inputs
        pos("traps-calibrated-on-data", calibrated, True)
    rome_state = state_dict_np(r("rome"))
    for name, (path, flag) in copies(arch, base, root / "cp", seed,
                                     lambda s: s.update({k: v for k, v in rome_state.items()})).items():
        out.append((name, path, base, flag, True, ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=list(ARCHS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pretrain", type=int, default=200, help="AdamW steps of the base models")
    ap.add_argument("--keep", type=Path, help="build the organisms here and keep them")
    args = ap.parse_args()
    started = time.time()
    import torch

    torch.set_num_threads(1)
    wrong = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        print(f"{'model':11s} {'case':42s} {'base':5s} {'expect':6s} {'got':5s} ok  rules (note)")
        for arch in args.archs:
            t0 = time.time()
            built = cases(arch, args.seed, root / f"{arch}-{args.seed}", args.pretrain)
            for name, path, base, flag, alone, note in built:
                for b in ([base, None] if alone else [base]):
                    v, rules = verdict(path, b)
                    ok = (v in (Verdict.FLAG, Verdict.BLOCK)) if flag else v is Verdict.PASS
                    total += 1
                    wrong += not ok
                    print(f"{arch:11s} {name:42s} {'yes' if b else 'no':5s} {'FLAG' if flag else 'PASS':6s} "
                          f"{v.name:5s} {'ok' if ok else 'XX'}  {','.join(rules) or '-'}"
                          + (f"  ({note})" if note else ""), flush=True)
            print(f"# {arch}: {time.time() - t0:.0f}s", flush=True)
    print(f"\n{total - wrong}/{total} scans as expected, {wrong} wrong; {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
