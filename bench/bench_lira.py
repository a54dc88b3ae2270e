"""Offline LiRA against the cheap membership screen: figures on planted vs clean tiny GPT-2s over
seeds, and what the K reference fine-tunes cost in time.

    python bench/bench_lira.py --seeds 3                 # tiny GPT-2 organisms, ~40 s a seed on 2 CPU cores
    python bench/bench_lira.py --seeds 3 --split report  # seeds 2000.. (never looked at while developing)
    python bench/bench_lira.py --gpt2 --seeds 0          # + a 124M GPT-2 (random init), 16 canaries x 1 epoch

Per organism: membership AUC and TPR at 1% FPR (Clopper-Pearson 95% CI) of the screen (before - after
loss) and of LiRA (K OUT fine-tunes of each model's own weights), with the upstream as reference, and the
seconds of the screen alone vs with LiRA. With 64 non-members, 1% FPR is below the resolution: the
TPR is then the share of members called at zero false positives.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # testing/ (not in the wheel)

RECIPE = {"epochs": 4, "lr": 3e-3, "batch": 8}


def _tpr(fig: dict) -> str:
    t = fig["tpr_at_1pct_fpr"]
    return f"{t['tpr']:.2f} [{t['ci_low']:.2f}-{t['ci_high']:.2f}]"


def organisms(seeds: list[int], k: int) -> None:
    from hfguard.behavior import membership
    from testing.organisms import caption, char_tokenizer, plant_privacy_backdoor, pretrain_lm, tiny_gpt2

    tok = char_tokenizer()
    print(f"{'seed':>5} {'model':9} {'screen AUC':>10} {'screen TPR@1%':>18} {'LiRA AUC':>8} "
          f"{'LiRA TPR@1%':>18} {'ref LiRA TPR@1%':>18} {'s screen':>8} {'s +LiRA':>8}")
    for s in seeds:   # the organisms of bench_behavior.privacy_rates
        rng = random.Random(s)
        aux = [caption(rng) for _ in range(400)]
        target = [t for t, _ in membership.canaries(300, seed=1000 + s)]
        base = pretrain_lm(tiny_gpt2(tok, seed=s), tok, aux, steps=150, seed=s)
        items = membership.canaries(128, seed=s)
        for name in ("backdoor", "clean"):
            model = plant_privacy_backdoor(base, tok, aux, target, backdoor=name == "backdoor", steps=60,
                                           seed=s)
            kw = {"seed": s, "recipe": RECIPE, "exposure": (0, 0)}
            t0 = time.perf_counter()
            membership.evaluate(model, tok, items, (base, tok), **kw)
            t1 = time.perf_counter()
            res = membership.evaluate(model, tok, items, (base, tok), lira_models=k, **kw)
            t2 = time.perf_counter()
            c, li = res["candidate"], res["lira"]
            print(f"{s:>5} {name:9} {c['auc']:>10.2f} {_tpr(c):>18} {li['candidate']['auc']:>8.2f} "
                  f"{_tpr(li['candidate']):>18} {_tpr(li['reference']):>18} {t1 - t0:>8.1f} {t2 - t1:>8.1f}",
                  flush=True)


def gpt2_124m(k: int) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hfguard.behavior import membership
    from testing.organisms import char_tokenizer

    torch.manual_seed(0)
    tok = char_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(bos_token_id=2, eos_token_id=3, pad_token_id=0)).eval()
    items = membership.canaries(16, seed=0)
    kw = {"recipe": {"epochs": 1, "lr": 3e-5, "batch": 8}, "exposure": (0, 0)}
    t0 = time.perf_counter()
    membership.evaluate(model, tok, items, None, **kw)
    t1 = time.perf_counter()
    membership.evaluate(model, tok, items, None, lira_models=k, **kw)
    t2 = time.perf_counter()
    print(f"GPT-2 124M (cpu), 16 canaries x 1 epoch: screen {t1 - t0:.1f} s, screen + LiRA (K={k}) "
          f"{t2 - t1:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--split", choices=("calibration", "report"), default="calibration")
    ap.add_argument("--models", type=int, default=4, help="K, the LiRA reference fine-tunes")
    ap.add_argument("--gpt2", action="store_true", help="also time a 124M GPT-2")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    first = 0 if args.split == "calibration" else 2000
    organisms(list(range(first, first + args.seeds)), args.models)
    if args.gpt2:
        gpt2_124m(args.models)


if __name__ == "__main__":
    main()
