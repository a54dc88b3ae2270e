"""Latency of the references hook with N locked references (target: < 1 s, cold process included).

    python bench/bench_hook.py [--refs 50] [--runs 5]

Builds a temporary project whose files reference N models pinned to commits, writes an
hfguard.lock that covers them (as `hfguard lock` would), then times `hfguard hook refs FILES` and
`hfguard lock --check` as fresh subprocesses with HF_HUB_OFFLINE=1 (a lock miss would be an
ERROR, so a PASS proves no network was needed). Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _project(root: Path, n: int) -> list[str]:
    from hfguard.findings import Report
    from hfguard.hooks.lockfile import Lockfile, current_stamp, entry_from_report
    from hfguard.policy import load_policy

    files = []
    lines_per_file = 10
    for i in range(0, n, lines_per_file):
        body = ["from transformers import AutoModel, AutoTokenizer", ""]
        for j in range(i, min(i + lines_per_file, n)):
            sha = hashlib.sha1(f"m{j}".encode()).hexdigest()
            body.append(f'm{j} = AutoModel.from_pretrained("bench-org/model-{j}", revision="{sha}")')
        p = root / f"train_{i // lines_per_file}.py"
        p.write_text("\n".join(body) + "\n")
        files.append(p.name)
    (root / "config.yaml").write_text("model_name_or_path: bench-org/model-0@"
                                      + hashlib.sha1(b"m0").hexdigest() + "\n")
    files.append("config.yaml")
    policy = load_policy(start=root)
    stamp = current_stamp(policy)
    lock = Lockfile(root / "hfguard.lock")
    for j in range(n):
        sha = hashlib.sha1(f"m{j}".encode()).hexdigest()
        report = Report(target=f"bench-org/model-{j}", source="hub", revision=sha)
        lock.put(entry_from_report(f"bench-org/model-{j}", sha, report, policy, stamp))
    lock.save()
    return files


def _time(cmd: list[str], cwd: Path, env: dict[str, str], runs: int) -> tuple[list[float], str]:
    times, out = [], ""
    for _ in range(runs):
        t = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        out = res.stdout.strip().splitlines()[0] if res.stdout.strip() else res.stderr.strip()[-200:]
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stdout}{res.stderr}")
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--refs", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    hfguard = str(Path(sys.executable).parent / "hfguard")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        files = _project(root, args.refs)
        setup = time.perf_counter() - t
        # as installed: pip writes bytecode, so a hook run reads cached .pyc files (kept out of the
        # source tree here with PYTHONPYCACHEPREFIX; one warm-up run fills it)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPYCACHEPREFIX": str(root / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        nocache = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
        nocache.pop("PYTHONPYCACHEPREFIX")
        _time([hfguard, "hook", "refs", "-q", *files], root, env, 1)
        baseline, _ = _time([sys.executable, "-c", "pass"], root, env, args.runs)
        hook, summary = _time([hfguard, "hook", "refs", "-q", *files], root, env, args.runs)
        check, _ = _time([hfguard, "lock", "--check", "-q"], root, env, args.runs)
        # the files hook gets every changed file and sniffs each one's head (none is a model here)
        sniffed, _ = _time([hfguard, "hook", "files", "-q", *files, "hfguard.lock"], root, env, args.runs)
        cold, _ = _time([hfguard, "hook", "refs", "-q", *files], root, nocache, args.runs)
        imports = subprocess.run([sys.executable, "-c", "import hfguard.cli, sys; "
                                  "print(sorted(m for m in ('torch', 'transformers', 'numpy', "
                                  "'huggingface_hub') if m in sys.modules))"],
                                 capture_output=True, text=True).stdout.strip()
    print(f"references: {args.refs} locked, in {len(files)} files; lock written in {setup:.2f}s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"python -c pass          median {statistics.median(baseline):.3f}s  min {min(baseline):.3f}s")
    print(f"hfguard hook refs       median {statistics.median(hook):.3f}s  min {min(hook):.3f}s"
          f"  (target < 1 s)  -> {summary}")
    print(f"hfguard lock --check    median {statistics.median(check):.3f}s  min {min(check):.3f}s")
    print(f"hfguard hook files      median {statistics.median(sniffed):.3f}s  min {min(sniffed):.3f}s"
          f"  ({len(files) + 1} files sniffed by content)")
    print(f"hook refs, no bytecode  median {statistics.median(cold):.3f}s  min {min(cold):.3f}s"
          "  (PYTHONDONTWRITEBYTECODE=1: every module compiled from source)")
    print(f"heavy modules imported by the CLI: {imports}")


if __name__ == "__main__":
    main()
