"""Bytes transferred vs repo size for `hfguard check` (static tier) on a multi-GB repo, cold vs cached.

The fake Hub (testing/fakehub) serves a sparse 4 GiB safetensors file and a sparse 3 GiB ZIP64
PyTorch checkpoint with Range support; the real huggingface_hub client talks to it over HTTP.

    python bench/bench_hub.py [--gib-safetensors 4] [--gib-zip 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib-safetensors", type=float, default=4.0)
    ap.add_argument("--gib-zip", type=float, default=3.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hfguard-bench-"))
    os.environ.update({"HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hf" / "hub"),
                       "HFGUARD_CACHE_DIR": str(tmp / "verdicts"), "HF_HUB_DISABLE_TELEMETRY": "1"})
    from testing.fakehub.builders import write_sparse_safetensors, write_sparse_torch_zip
    from testing.fakehub.server import Blob, FakeHub

    t = time.perf_counter()
    st = write_sparse_safetensors(tmp / "model.safetensors", int(args.gib_safetensors * (1 << 30)))
    tz = write_sparse_torch_zip(tmp / "pytorch_model.bin", int(args.gib_zip * (1 << 30)), b"\x80\x02}q\x00.")
    print(f"fixture: {st.stat().st_size / 2**30:.2f} GiB safetensors + {tz.stat().st_size / 2**30:.2f} GiB "
          f"torch zip (sparse) built in {time.perf_counter() - t:.1f}s")
    with FakeHub() as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        from hfguard.checks import checks_for_tiers
        from hfguard.hub.check import check_repo
        from hfguard.policy import Policy

        # the LFS sha256 is only compared on full downloads; skip hashing GBs of zeros here
        sha = hub.add_repo("bench/big", {
            "model.safetensors": Blob(path=st, lfs=True, claimed_sha256="0" * 64),
            "pytorch_model.bin": Blob(path=tz, lfs=True, claimed_sha256="1" * 64),
            "config.json": b'{"model_type": "gpt2"}', "README.md": b"---\nlicense: mit\n---\n"})
        checks = [c.id for c in checks_for_tiers(("static",))]
        print(f"static checks registered: {', '.join(checks)}")
        for label, spec in (("cold  (branch)", "bench/big"), ("cached (pinned)", f"bench/big@{sha}"),
                            ("cached (branch)", "bench/big")):
            n = len(hub.log)
            t = time.perf_counter()
            report = check_repo(spec, Policy())
            dt = time.perf_counter() - t
            s = report.stats
            sent = sum(r["sent"] for r in hub.log[n:])
            total = s.get("repo_bytes") or sum(f.size or 0 for f in report.files)
            print(f"{label:16} {dt * 1000:8.1f} ms  verdict={report.verdict}  cached={s.get('cached')}  "
                  f"client bytes={s.get('bytes_transferred', 0):,}  server bytes={sent:,} "
                  f"({100 * sent / total:.5f}% of {total / 2**30:.2f} GiB) requests={len(hub.log) - n}")
        env = {**os.environ}
        for label, spec in (("CLI cold", "bench/big"), ("CLI cached", f"bench/big@{sha}")):
            args_ = ["--no-cache"] if label == "CLI cold" else []
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "hfguard", "check", spec, "-q", *args_],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            print(f"{label:16} {(time.perf_counter() - t) * 1000:8.1f} ms  exit={proc.returncode}")
    for p in (st, tz):
        p.unlink()


if __name__ == "__main__":
    main()
