"""Repos per minute: `hfguard fleet` on local Ray vs a loop of `hfguard check` processes, on the
same fake Hub, and how the fleet scales with Ray workers (num_cpus). Static tier, cold verdict
cache for every run; the fleet figure includes Ray's start-up, printed apart too.

    python bench/bench_fleet.py [--repos 60] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def populate(hub, n: int) -> list[str]:
    from testing.fakehub.builders import os_system_pickle, safetensors_bytes, torch_zip_bytes

    specs = []
    for i in range(n):
        if i % 10 == 9:
            hub.add_repo(f"evil/m{i}", {"pytorch_model.bin": torch_zip_bytes(os_system_pickle("true"))})
            specs.append(f"evil/m{i}")
        else:
            hub.add_repo(f"acme/m{i}", {"model.safetensors": safetensors_bytes(4096),
                                        "config.json": b'{"model_type": "bert"}', "README.md": b"# m\n"})
            specs.append(f"acme/m{i}")
    return specs


def fresh_env(tmp: Path, tag: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HOME": str(tmp / tag / "hf"), "HF_HUB_CACHE": str(tmp / tag / "hf" / "hub"),
                "HFGUARD_CACHE_DIR": str(tmp / tag / "verdicts"), "HF_HUB_DISABLE_TELEMETRY": "1",
                "PYTHONPATH": str(ROOT)})
    return env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=60)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hfguard-fleet-bench-"))
    from testing.fakehub.server import FakeHub

    with FakeHub() as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        specs = populate(hub, args.repos)
        (tmp / "repos.txt").write_text("\n".join(specs) + "\n")
        rows = []
        env = fresh_env(tmp, "loop")
        t = time.perf_counter()
        for spec in specs:
            subprocess.run([sys.executable, "-m", "hfguard", "check", spec, "-q", "--format", "json"],
                           env=env, capture_output=True, cwd=ROOT)
        loop_s = time.perf_counter() - t
        rows.append(("loop of check processes", 1, loop_s, None))
        for workers in args.workers:
            env = fresh_env(tmp, f"fleet{workers}")
            out = tmp / f"out{workers}"
            t = time.perf_counter()
            cmd = ["fleet", str(tmp / "repos.txt"), "-o", str(out), "--num-cpus", str(workers), "-q",
                   "--format", "json"]
            proc = subprocess.run([sys.executable, "-m", "hfguard", *cmd], env=env, capture_output=True,
                                  text=True, cwd=ROOT)
            wall = time.perf_counter() - t
            summary = json.loads(proc.stdout)
            rows.append(("fleet, local Ray", workers, wall, summary["seconds"]))
    print(f"{args.repos} repos, static tier, fake Hub at {hub.url}, {os.cpu_count()} CPUs on this machine")
    print(f"{'how':28} {'workers':>7} {'wall s':>8} {'repos/min':>10} {'vs loop':>8}  in-run s")
    for how, workers, wall, inner in rows:
        rate = args.repos / wall * 60
        print(f"{how:28} {workers:7d} {wall:8.1f} {rate:10.0f} {loop_s / wall:7.2f}x"
              + (f"  {inner:.1f}" if inner is not None else ""))


if __name__ == "__main__":
    main()
