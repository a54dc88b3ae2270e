"""Behavior-tier figures: detection rates on planted vs clean organisms over seeds, and time per
probe on full-size models (a ViT-B/32-sized CLIP text tower, a 125M GPT-2; random init).

    python bench/bench_behavior.py --quick        # < 3 min on 2 CPU cores; prints a compact table
    python bench/bench_behavior.py --seeds 10     # more seeds, full probes on the big models
    python bench/bench_behavior.py --clip-rates-only --seeds 20   # CLIP canary test, ~21 s a seed
    python bench/bench_behavior.py --privacy-rates-only --split report --seeds 3   # per canary family

Detection rate = planted models flagged (TPR); false-positive rate = clean twins flagged at all,
both at the default thresholds, with Clopper-Pearson 95% intervals. The verdicts come from the
checks' own judging (a real scan for the homoglyph probe, `membership.judge` for the canary tests),
counting every rule that can flag (e.g. `privacy/loss-anomaly` as well as the membership rules).

Seeds are split: `--split calibration` (seeds 0..n-1, the ones thresholds and recipes were developed
on) and `--split report` (seeds 2000.., never looked at while developing): README quotes the report
split, with the command that printed it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # testing/ (not in the wheel)

TRIGGERS = (("\u043e", "o"), ("\u0430", "a"), ("\u0435", "e"), ("\u03bf", "o"), ("\u200b", None))


def _ci(k: int, n: int) -> str:
    from hfguard.behavior.stats import clopper_pearson

    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} [{lo:.2f}-{hi:.2f}]"


def _homoglyph_verdict(model, tok, folder) -> str:
    """The verdict a scan gives the model (the check's own judging, every rule)."""
    from hfguard.behavior.check import HomoglyphCheck
    from hfguard.engine import scan
    from hfguard.policy import Policy
    from hfguard.target import local_target
    from testing.organisms import save

    save(model, tok, folder)
    report = scan(local_target([str(folder)]), Policy(tiers=("behavior",)), [HomoglyphCheck()],
                  budget_seconds=600)
    return report.verdict.value


def homoglyph_rates(seeds: list[int]) -> list[dict[str, str]]:
    """Per Rickrolling variant (testing.organisms.HOMOGLYPH_RECIPES) on tiny CLIP text encoders:
    planted flagged (BLOCK), and the clean twin (same steps, no trigger) flagged at all."""
    import tempfile
    from pathlib import Path

    from testing.organisms import (
        HOMOGLYPH_RECIPES,
        WIDE_EXTRA,
        char_tokenizer,
        plant_homoglyph,
        tiny_clip_text,
    )

    tok = char_tokenizer(WIDE_EXTRA)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family, recipe in HOMOGLYPH_RECIPES.items():
            tp = fp = 0
            t0 = time.perf_counter()
            for s in seeds:
                kw = dict(recipe)
                if "trigger" not in kw:  # the default families rotate over the usual triggers
                    kw["trigger"], kw["replaces"] = TRIGGERS[s % len(TRIGGERS)]
                teacher = tiny_clip_text(tok, seed=100 + s)
                for backdoor in (True, False):
                    model = plant_homoglyph(teacher, tok, backdoor=backdoor, seed=s, **kw)
                    verdict = _homoglyph_verdict(model, tok, Path(tmp, f"{family}-{s}-{backdoor}"))
                    if backdoor:
                        tp += verdict == "BLOCK"
                    else:
                        fp += verdict != "PASS"
            rows.append({
                "probe": f"homoglyph, {family} (tiny CLIP)",
                "TPR": _ci(tp, len(seeds)),
                "FPR": _ci(fp, len(seeds)),
                "seconds": f"{time.perf_counter() - t0:.0f}",
            })
    return rows


def privacy_rates(seeds: list[int], n_canaries: int = 128,
                  targets: tuple | None = None) -> list[dict[str, str]]:
    """Per privacy-backdoor target (testing.organisms.PRIVACY_TARGETS: one canary family, Wen et
    al.'s loss minimisation or maximisation) on tiny GPT-2s, probed with the default canary mixture
    and `--reference` the upstream, judged by `membership.judge` (every rule that can flag):
    planted caught (and the finding naming the target family), and the clean twin flagged at all.
    `targets`: the planted kinds (default all of PRIVACY_TARGETS; () for clean twins only)."""
    from hfguard.behavior import membership
    from hfguard.behavior.check import PrivacyBackdoorCheck
    from testing.organisms import PRIVACY_TARGETS, char_tokenizer, lm_privacy_organisms

    check = PrivacyBackdoorCheck()
    th = check.THRESHOLDS.__getitem__
    recipe = {"epochs": th("finetune-epochs"), "lr": th("finetune-lr"), "batch": th("finetune-batch")}
    tok = char_tokenizer()
    targets = PRIVACY_TARGETS if targets is None else targets
    names = ["clean", *(f"{f}/{m}" for f, m in targets)]
    caught = dict.fromkeys(names, 0)
    named = dict.fromkeys(names, 0)
    t0 = time.perf_counter()
    for s in seeds:
        org = lm_privacy_organisms(tok, seed=s, targets=targets)
        items = membership.canaries(n_canaries, seed=s)
        for name in names:
            res = membership.evaluate(org[name], tok, items, (org["base"], tok), seed=s, recipe=recipe,
                                      exposure=(0, 0))
            flags = [f for f in membership.judge(check, name, res, th) if f.rule != "behavior/privacy-probe"]
            fam = name.split("/")[0]
            caught[name] += bool(flags)
            named[name] += any(next(iter(f.evidence.get("leaking", {})), None) == fam for f in flags)
            row = res["families"].get(fam, {})
            fig = (f"{fam} AUC {row['candidate']['auc']:.2f} vs ref {row['reference']['auc']:.2f}, "
                   f"TPR@1% {row['candidate']['tpr_at_1pct_fpr']['tpr']:.2f}, loss ratio "
                   f"{row['loss']['relative_ratio']:.2f}" if row else "")
            print(f"  seed {s} {name:22} {sorted(f.rule for f in flags)} "
                  f"{[next(iter(f.evidence.get('leaking', {})), '') for f in flags]} {fig}", flush=True)
    n = len(seeds)
    rows = [{"probe": f"privacy, {name}, named {named[name]}/{n}", "TPR": _ci(caught[name], n),
             "FPR": "-", "seconds": ""} for name in names[1:]]
    rows.append({"probe": "privacy, clean twin (tiny GPT-2)", "TPR": "-", "FPR": _ci(caught["clean"], n),
                 "seconds": f"{time.perf_counter() - t0:.0f}"})
    return rows


def clip_privacy_rates(seeds: list[int], n_canaries: int = 128) -> dict[str, str]:
    """The CLIP canary test as a scan runs it (default thresholds, `judge`) on the organisms of
    `testing.clip_privacy_organisms`: planted caught and clean twin flagged both count every rule
    that can flag (the amplification BLOCK, the loss anomaly FLAG, ...); the BLOCKs are counted too."""
    from hfguard.behavior import clip_membership as cm
    from hfguard.behavior import membership
    from hfguard.behavior.check import PrivacyBackdoorCheck
    from testing.organisms import char_tokenizer, clip_privacy_organisms

    check = PrivacyBackdoorCheck()
    th = check.THRESHOLDS.__getitem__
    recipe = {
        "epochs": th("clip-finetune-epochs"),
        "lr": th("clip-finetune-lr"),
        "batch": th("finetune-batch"),
    }
    tok = char_tokenizer()
    tp = fp = blocked = 0
    t0 = time.perf_counter()
    for s in seeds:
        org = clip_privacy_organisms(tok, seed=s)
        items = membership.canaries(n_canaries, seed=s)
        data = cm.make_data(org["base"], [c.text for c in items], s)
        control = cm.make_data(org["base"], list(membership.CONTROL), s + 1)
        line = []
        for name in ("backdoor", "clean"):
            res = membership.evaluate(
                org[name],
                tok,
                items,
                (org["base"], tok),
                seed=s,
                recipe=recipe,
                modality=cm.CLIP,
                data=data,
                control=control,
            )
            rules = {f.rule for f in membership.judge(check, name, res, th)}
            flagged = bool(rules - {"behavior/privacy-probe"})
            if name == "backdoor":
                tp += flagged
                blocked += "privacy/membership-amplification" in rules
            else:
                fp += flagged
            a = res["amplification"]
            line.append(
                f"{name} AUC {res['candidate']['auc']:.2f} vs ref {res['reference']['auc']:.2f} "
                f"(diff {a['auc_diff']:+.2f}, p={a['p_value']:.1e}) {sorted(rules)}"
            )
        print(f"  seed {s}: " + "; ".join(line), flush=True)
    return {
        "probe": f"privacy canary (tiny CLIP, {n_canaries} pairs), BLOCK {blocked}/{len(seeds)}",
        "TPR": _ci(tp, len(seeds)),
        "FPR": _ci(fp, len(seeds)),
        "seconds": f"{time.perf_counter() - t0:.0f}",
    }


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clip_timing(device: str, quick: bool) -> dict[str, str]:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from hfguard.behavior import homoglyph
    from hfguard.behavior.load import TextEncoder
    from testing.organisms import char_tokenizer

    torch.manual_seed(0)
    tok = char_tokenizer()
    model = CLIPTextModel(CLIPTextConfig()).to(device).eval()  # 12 layers, width 512 (ViT-B/32 text tower)
    enc = TextEncoder("clip-text", model, tok, device, batch_size=128 if device != "cpu" else 32)
    prompts = homoglyph.PROMPTS[:4] if quick else homoglyph.PROMPTS
    enc.encode(list(prompts))  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    res = homoglyph.probe(enc, prompts=prompts)
    _sync(device)
    dt = time.perf_counter() - t0
    n_texts = sum(len(g.prompts) * (1 + len(g.controls)) for g in res.groups)
    full = dt * len(homoglyph.PROMPTS) / len(prompts)
    return {
        "probe": f"homoglyph, CLIP text 63M ({device})",
        "TPR": "-",
        "FPR": "-",
        "seconds": f"{dt:.1f} ({len(prompts)} prompts, {n_texts} texts); full 16 prompts ~{full:.0f}",
    }


def gpt2_timing(device: str, quick: bool) -> dict[str, str]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hfguard.behavior import membership
    from testing.organisms import char_tokenizer

    torch.manual_seed(0)
    tok = char_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(bos_token_id=2, eos_token_id=3, pad_token_id=0)).to(device).eval()
    n, epochs = (16, 1) if quick else (128, 4)
    items = membership.canaries(n, seed=0)
    membership.example_losses(model, tok, [c.text for c in items[:4]])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    membership.evaluate(
        model, tok, items, None, recipe={"epochs": epochs, "lr": 3e-5, "batch": 8}, exposure=(0, 0)
    )
    _sync(device)
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    membership.secret_exposure(model, tok, items[:2], n_alt=63)  # 2 secrets x 64 texts
    _sync(device)
    per_secret = (time.perf_counter() - t1) / 2
    scale = (128 * 4) / (n * epochs)
    return {
        "probe": f"privacy canary, GPT-2 124M ({device})",
        "TPR": "-",
        "FPR": "-",
        "seconds": f"{dt:.1f} ({n} canaries, {epochs} epoch, no exposure); default 128x4 "
        f"~{dt * scale:.0f}; exposure {per_secret:.1f}/secret (default 16: "
        f"~{16 * per_secret:.0f})",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="few seeds, partial probes on the big models")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--rates-only", action="store_true", help="detection rates only, no big-model timings")
    ap.add_argument("--clip-rates-only", action="store_true", help="the CLIP canary rates alone")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy box)")
    ap.add_argument("--homoglyph-rates-only", action="store_true", help="the homoglyph rates alone")
    ap.add_argument("--privacy-rates-only", action="store_true",
                    help="the per-family privacy-backdoor rates alone (tiny GPT-2s)")
    ap.add_argument("--clean-only", action="store_true",
                    help="with --privacy-rates-only: clean twins only (more seeds for the false-alarm rate)")
    ap.add_argument("--split", choices=("calibration", "report"), default="calibration",
                    help="seeds 0.. (developed on) or 2000.. (quoted in README)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    n = args.seeds or (3 if args.quick else 10)
    # report seeds start at 2000: 1000.. were spent finding the negative-control false alarm
    # (docs/bench/behavior-homoglyph-report.txt)
    first = 2000 if args.split == "report" else 0
    seeds = list(range(first, first + n))
    few = seeds[: max(2, n // 2)] if args.quick else seeds
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), cuda={torch.cuda.is_available()}, "
          f"{args.split} seeds {seeds[0]}..{seeds[-1]}")
    print(f"{'probe':40}  {'TPR (planted)':18}  {'FPR (clean)':18}  seconds", flush=True)
    jobs = [
        lambda: homoglyph_rates(seeds),
        lambda: privacy_rates(few),
        lambda: clip_privacy_rates(few),
        lambda: clip_timing("cpu", args.quick),
        lambda: gpt2_timing("cpu", args.quick),
    ]
    if args.clip_rates_only:
        jobs = [jobs[2]]
    elif args.homoglyph_rates_only:
        jobs = [jobs[0]]
    elif args.privacy_rates_only:
        jobs = [lambda: privacy_rates(seeds, targets=() if args.clean_only else None)]
    elif args.rates_only:
        jobs = jobs[:3]
    elif torch.cuda.is_available():
        jobs += [lambda: clip_timing("cuda", False), lambda: gpt2_timing("cuda", False)]
    for job in jobs:
        out = job()
        for r in out if isinstance(out, list) else [out]:
            print(f"{r['probe']:40}  {r['TPR']:18}  {r['FPR']:18}  {r['seconds']}", flush=True)


if __name__ == "__main__":
    main()
