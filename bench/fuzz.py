"""The long fuzzing profile: many mutated files per seed, through the engine (static tier).

    python bench/fuzz.py [--examples 300] [--seed-filter torch] [--real-keras]

Same mutations and properties as tests/test_fuzz.py (testing/fuzz.py), but every problem is
recorded instead of stopping the run. Prints per seed: examples run, crashes (`check/crashed`),
other broken properties, slowest example, peak traced memory; writes each failing input to
bench/out/fuzz/ as a reproducer (`hfguard scan <file>`). Asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from testing.fuzz import deep_cases, mutated, run_one  # noqa: E402
from testing.fuzz_seeds import Seed, build_seeds, real_keras_seed  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "fuzz"


def fuzz_seed(seed: Seed, folder: Path, examples: int) -> tuple[collections.Counter, float, int,
                                                                  dict[str, bytes]]:
    """Run `examples` mutations of one seed; (counts, slowest seconds, peak bytes, problems)."""
    stats: collections.Counter = collections.Counter()
    worst = {"seconds": 0.0, "peak": 0}
    problems: dict[str, bytes] = {}

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=mutated(seed))
    def one(case: tuple[bytes, str]) -> None:
        data, name = case
        try:
            outcome = run_one(seed, data, name, folder)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            problems.setdefault(f"exception {type(exc).__name__}: {exc}"[:300], data)
            stats["exception"] += 1
            return
        stats["examples"] += 1
        stats[outcome.verdict] += 1
        worst["seconds"] = max(worst["seconds"], outcome.seconds)
        worst["peak"] = max(worst["peak"], outcome.peak_bytes)
        for p in outcome.problems:
            stats["crash" if p.startswith("check/") else "other"] += 1
            problems.setdefault(p.splitlines()[0][:300], data)

    one()
    return stats, worst["seconds"], int(worst["peak"]), problems


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=300, help="mutated files per seed")
    ap.add_argument("--seed-filter", default="", help="only seeds whose name contains this")
    ap.add_argument("--real-keras", action="store_true", help="add a .keras saved by keras itself")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mark = folder / "payload-ran"
        seeds = build_seeds(mark) + ([real_keras_seed(mark)] if args.real_keras else [])
        seeds = [s for s in seeds if args.seed_filter in s.name]
        totals: collections.Counter = collections.Counter()
        started = time.monotonic()
        print(f"{'seed':22} {'examples':>8} {'crashes':>7} {'other':>5} {'known':>5} {'slowest':>8} "
              f"{'+RSS MiB':>8}  verdicts")
        for seed in seeds:
            stats, slowest, peak, problems = fuzz_seed(seed, folder, args.examples)
            totals.update(stats)
            verdicts = " ".join(f"{v}={stats[v]}" for v in ("PASS", "FLAG", "ERROR", "BLOCK") if stats[v])
            print(f"{seed.name:22} {stats['examples']:8} {stats['crash']:7} "
                  f"{stats['other'] + stats['exception']:5} {stats['known']:5} {slowest:7.3f}s "
                  f"{peak / 2**20:8.1f}  {verdicts}")
            for problem, data in problems.items():
                OUT.mkdir(parents=True, exist_ok=True)
                path = OUT / f"{seed.name}-{hashlib.sha256(data).hexdigest()[:12]}{seed.suffix}"
                path.write_bytes(data)
                print(f"    {problem}\n      reproducer: {path}")
        by_name = {s.name: s for s in build_seeds(mark)}
        evil = by_name["pickle-p4-evil"]
        for case, (data, suffix) in deep_cases(evil.data, by_name["pickle-p0-evil"].data).items():
            outcome = run_one(evil, data, "deep" + suffix, folder)
            totals["examples"] += 1
            totals["crash"] += sum(p.startswith("check/") for p in outcome.problems)
            print(f"deep {case:17} {outcome.verdict:5} {outcome.seconds:6.3f}s "
                  f"{outcome.peak_bytes / 2**20:6.1f} MiB  {len(data)} bytes")
            for problem in outcome.problems:
                OUT.mkdir(parents=True, exist_ok=True)
                path = OUT / f"deep-{case}{suffix}"
                path.write_bytes(data)
                print(f"    {problem.splitlines()[0][:300]}\n      reproducer: {path}")
        print(f"total: {totals['examples']} examples, {totals['crash']} crashes, "
              f"{totals['other'] + totals['exception']} other problems, {totals['known']} known issues, "
              f"{time.monotonic() - started:.1f}s; payload ran: {mark.exists()}")


if __name__ == "__main__":
    main()
