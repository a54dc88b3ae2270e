"""Sharded-model diff: speed, memory and progress of `--base` on a model of many shards.

    python bench/bench_weights_shards.py [--gb 2] [--shards 8] [--base-shards 1] [--cold]
                                         [--budget-demo 3] [--stats] [--trace] [--dir DIR] [--keep]

Builds, in a temp dir, a LLaMA-shaped bfloat16 model of about --gb GB twice: a base (one file, or
--base-shards files) and a candidate split in --shards shards with one rank-one (ROME-shaped)
edit in a tensor of its last shard; then runs weights.base_diff on it with the progress line on
stderr. `--gb 100 --shards 40` is the 100 GB case (needs ~2x that on disk; checked against df).

Figures:
  write       seconds and GB/s to write both models (streamed, one tensor in memory)
  diff        seconds, GB/s over the bytes of both sides, peak RSS of the process (file pages
              touched through the per-tensor mappings count while mapped)
  trace       --trace: a second diff under tracemalloc, its peak of numpy buffers
  cold        --cold: the files are evicted from the page cache first (posix_fadvise DONTNEED on
              our own files only), so the diff waits on the storage; compared with an O_DIRECT
              read of both models (bench_weights.raw_read_direct), the device's own speed
  budget      --budget-demo S: the same diff under a budget of S seconds, to show the message
              that names the --budget the model needs
  stats       --stats: the weights.anomalies pass too (progress with ETA per shard), and both
              checks in one scan, as `hfguard scan --tier weights --base` runs them: the
              statistics pass diffs on its way (one read of each shard), against the two passes
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import itertools
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hfguard.checks import ScanContext  # noqa: E402
from hfguard.commands.common import progress_printer  # noqa: E402
from hfguard.policy import Policy  # noqa: E402
from hfguard.target import local_target  # noqa: E402
from hfguard.weights.check import WeightsAnomalies, WeightsBaseDiff  # noqa: E402

POOL = 1 << 20   # distinct start offsets into the random pool: tensors differ from each other


def layout(gb: float, d: int) -> list[tuple[str, tuple[int, int]]]:
    """LLaMA block tensors (bfloat16) until about `gb` GB."""
    ff = d * 11008 // 4096
    block = [(f"self_attn.{n}.weight", (d, d)) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    block += [("mlp.gate_proj.weight", (ff, d)), ("mlp.up_proj.weight", (ff, d)),
              ("mlp.down_proj.weight", (d, ff))]
    per = sum(a * b for _, (a, b) in block) * 2
    return [(f"model.layers.{i}.{n}", s) for i in range(max(1, round(gb * 1e9 / per))) for n, s in block]


def split(items: list, parts: int) -> list[list]:
    """`parts` runs of consecutive items (fewer when there are fewer items)."""
    per = -(-len(items) // parts)
    return [items[i:i + per] for i in range(0, len(items), per)]


def write_safetensors(path: Path, tensors: list[tuple[str, tuple[int, int]]], data) -> int:
    """A safetensors file written tensor by tensor: `data(name, shape)` gives each one's uint16 bits."""
    header, pos = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = shape[0] * shape[1] * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in tensors:
            fh.write(memoryview(data(name, shape)))
    return path.stat().st_size


def write_model(folder: Path, tensors: list, shards: int, data) -> int:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    parts = split(tensors, shards)
    if len(parts) == 1:
        return write_safetensors(folder / "model.safetensors", tensors, data)
    total, weight_map = 0, {}
    for k, part in enumerate(parts, 1):
        shard = f"model-{k:05d}-of-{len(parts):05d}.safetensors"
        total += write_safetensors(folder / shard, part, data)
        weight_map.update(dict.fromkeys((n for n, _ in part), shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    return total


def to_bf16(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)   # round to nearest even


def evict(folder: Path) -> None:
    for p in folder.rglob("*.safetensors"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run(check, model: Path, base: Path, budget: float) -> tuple[float, list]:
    """One check on the model, the progress line on stderr as `hfguard scan` prints it."""
    from hfguard.engine import run_checks

    target = local_target([str(model)])
    ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options={"base": str(base)},
                      progress=progress_printer(False), budget_seconds=budget)
    t0 = time.perf_counter()
    found = run_checks(check, str(model), lambda: check.check_target(target, ctx))
    return time.perf_counter() - t0, found


def run_both(model: Path, base: Path, budget: float) -> tuple[float, list]:
    """Both weights checks sharing one scan (engine.scan's context): one pass reads each shard."""
    from hfguard.engine import run_checks

    target = local_target([str(model)])
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options={"base": str(base)},
                      progress=progress_printer(False), budget_seconds=budget,
                      checks=tuple(c.id for c in checks))
    t0 = time.perf_counter()
    with ctx.resources:
        found = [f for c in checks
                 for f in run_checks(c, str(model), lambda c=c: c.check_target(target, ctx))]
    return time.perf_counter() - t0, found


def _tensors(folder: Path) -> list:
    from hfguard.weights.tensors import checkpoints_of

    [ckpt], _ = checkpoints_of(local_target([str(folder)]))
    return list(ckpt.tensors.values())


def peak_rss() -> int:
    """This process's peak RSS in bytes. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from
    the parent across fork+exec, so a child would report the writer's peak."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(root: Path, args: argparse.Namespace) -> None:
    metas = _tensors(root / "model")
    size, biggest = sum(m.nbytes for m in metas), max(m.numel for m in metas)
    device = None
    if args.cold:   # the yardstick: both models read straight from the device, 16 MiB at a time
        from bench_weights import raw_read_direct

        secs = raw_read_direct(sorted(root.rglob("*.safetensors")))
        device = 2 * size / 1e9 / secs if secs else None
        print(f"device read (O_DIRECT) of both models: {f'{device:.2f} GB/s' if device else 'refused'}")
    secs, found = run(WeightsBaseDiff(), root / "model", root / "base", 3600)
    rss = peak_rss()
    print(f"\ndiff{' (cold)' if args.cold else ' (page cache)'}: {secs:.2f}s, "
          f"{2 * size / 1e9 / secs:.2f} GB/s over both sides ({size / 1e9 / secs:.2f} GB/s per side); "
          f"peak RSS {rss / 1e6:.0f} MB; largest tensor {biggest * 4 / 1e6:.0f} MB as float32")
    if device:
        print(f"diff / device read: {2 * size / 1e9 / secs / device:.2f}x")
    print(f"findings: {sorted({f.rule for f in found})}")
    if args.trace:   # a second pass: tracemalloc's own bookkeeping inflates the RSS of the first
        tracemalloc.start()
        run(WeightsBaseDiff(), root / "model", root / "base", 3600)
        print(f"tracemalloc peak of the diff: {tracemalloc.get_traced_memory()[1] / 1e6:.0f} MB")
        tracemalloc.stop()
    if args.budget_demo:
        if args.cold:
            evict(root)
        secs, found = run(WeightsBaseDiff(), root / "model", root / "base", args.budget_demo)
        stop = [f.message for f in found if f.rule == "check/timeout"]
        what = f"stopped after {secs:.1f}s: {stop[0]}" if stop else \
            f"finished in {secs:.1f}s (the budget is checked between tensors)"
        print(f"\nunder --budget {args.budget_demo:g}: {what}")
    if args.stats:
        diff_secs = secs
        secs, found = run(WeightsAnomalies(), root / "model", root / "base", 3600)
        print(f"\nstats pass: {secs:.2f}s, {size / 1e9 / secs:.2f} GB/s")
        both, found = run_both(root / "model", root / "base", 3600)
        print(f"\nboth checks in one scan (the statistics pass diffs on its way): {both:.2f}s, "
              f"{size / 1e9 / both:.2f} GB/s of model; two passes: {secs + diff_secs:.2f}s; "
              f"findings: {sorted({f.rule for f in found})}")


def sources(tensors: list[tuple[str, tuple[int, int]]]) -> tuple[Callable, Callable, str]:
    """(clean, candidate, edited): each tensor's uint16 bits in the base and in the candidate (a
    ROME-shaped rank-one edit of the last down-projection, made once), and the edited tensor's name.
    Tensors are windows into one random pool at different offsets: they differ from each other."""
    rng = np.random.default_rng(0)
    biggest = max(a * b for _, (a, b) in tensors)
    pool = to_bf16(rng.standard_normal(biggest + POOL, np.float32) * 0.02)
    offsets = {name: (i * 7919) % POOL for i, (name, _) in enumerate(tensors)}
    edited = [n for n, _ in tensors if n.endswith("down_proj.weight")][-1]

    def clean(name: str, shape: tuple[int, int]) -> np.ndarray:
        return pool[offsets[name]: offsets[name] + shape[0] * shape[1]]

    @functools.lru_cache(maxsize=1)
    def edit(shape: tuple[int, int]) -> np.ndarray:
        w = (clean(edited, shape).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        u, v = rng.standard_normal(shape[0]), rng.standard_normal(shape[1])
        step = 0.2 * np.linalg.norm(w) * np.outer(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
        return to_bf16(w + step.astype(np.float32)).reshape(-1)

    def candidate(name: str, shape: tuple[int, int]) -> np.ndarray:
        return edit(shape) if name == edited else clean(name, shape)

    return clean, candidate, edited


def build(root: Path, args: argparse.Namespace) -> None:
    free = shutil.disk_usage(root).free
    tensors = layout(args.gb, args.d)
    size = sum(a * b * 2 for _, (a, b) in tensors)
    if 2 * size + (1 << 30) > free:
        sys.exit(f"needs {2 * size / 1e9:.1f} GB free in {root}, {free / 1e9:.1f} GB there (df; use --dir)")
    clean, candidate, edited = sources(tensors)
    t0 = time.perf_counter()
    write_model(root / "base", tensors, args.base_shards, clean)
    write_model(root / "model", tensors, args.shards, candidate)
    wrote = time.perf_counter() - t0
    files = len(split(tensors, args.base_shards)), len(split(tensors, args.shards))
    print(f"model: {len(tensors)} bf16 tensors, {size / 1e9:.2f} GB per side; base in {files[0]} file(s), "
          f"model in {files[1]} shards; edit in {edited} (last shard)")
    print(f"write: {2 * size / 1e9:.2f} GB in {wrote:.1f}s ({2 * size / 1e9 / wrote:.2f} GB/s)")


# -- --hub: the same models served by the local fake Hub, made on demand ----------------------------
def shard_blob(tensors: list[tuple[str, tuple[int, int]]], data: Callable) -> Any:
    """A safetensors shard as a fake-Hub blob whose bytes are made as they are requested (header,
    then each tensor's `data(name, shape)` bits): a 100 GB model needs no 100 GB on disk."""
    from testing.fakehub.server import Blob

    header, spans, pos = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape in tensors:
        n = shape[0] * shape[1] * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        spans.append((name, shape, n))
        pos += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    head = struct.pack("<Q", len(raw)) + raw
    starts = list(itertools.accumulate((n for _, _, n in spans[:-1]), initial=len(head)))

    def reader(start: int, length: int) -> bytes:
        end, out = start + length, []
        if start < len(head):
            out.append(head[start:min(end, len(head))])
        i = max(0, bisect.bisect_right(starts, start) - 1)
        while i < len(spans) and starts[i] < end:
            lo, hi = max(start, starts[i]), min(end, starts[i] + spans[i][2])
            if lo < hi:
                bits = data(spans[i][0], spans[i][1]).view(np.uint8)
                out.append(bits[lo - starts[i]:hi - starts[i]].tobytes())
            i += 1
        return b"".join(out)

    return Blob(reader=reader, length=len(head) + pos, lfs=True)


def hub_repos(tensors: list, shards: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The base's and the candidate's files (same sharding; the shards without the edit are the
    same blobs, hashed once) and the edited tensor's name."""
    clean, candidate, edited = sources(tensors)
    parts = split(tensors, shards)
    base, model, weight_map, total = {}, {}, {}, 0
    for k, part in enumerate(parts, 1):
        name = f"model-{k:05d}-of-{len(parts):05d}.safetensors"
        base[name] = shard_blob(part, clean)
        model[name] = shard_blob(part, candidate) if edited in dict(part) else base[name]
        weight_map.update(dict.fromkeys((n for n, _ in part), name))
        total += base[name].size
    index = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}).encode()
    for files in (base, model):
        files["config.json"] = json.dumps({"model_type": "llama"}).encode()
        files["model.safetensors.index.json"] = index
    return base, model, edited


def _bytes_under(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _hwm(pid: int) -> int:
    """VmHWM of a running process (its own peak RSS: reset at exec), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def hub(args: argparse.Namespace) -> None:
    """`hfguard check` of the candidate against the base, both on the local fake Hub: the whole
    command in a child process (HF_ENDPOINT set), its progress lines, peak RSS and peak scratch disk
    watched from here, and every shard's downloads counted by the Hub."""
    from concurrent.futures import ThreadPoolExecutor

    from testing.fakehub.server import FakeHub

    tensors = layout(args.gb, args.d)
    size = sum(a * b * 2 for _, (a, b) in tensors)
    work = Path(tempfile.mkdtemp(prefix="hfguard-hub-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        base, model, edited = hub_repos(tensors, args.shards)
        blobs = {id(b): b for files in (base, model) for b in files.values() if not isinstance(b, bytes)}
        with ThreadPoolExecutor(os.cpu_count()) as pool:   # the Hub's sha256 of each shard, once
            list(pool.map(lambda b: b.sha256(), blobs.values()))
        shards = [n for n in model if n.endswith(".safetensors")]
        print(f"model: {len(tensors)} bf16 tensors, {size / 1e9:.2f} GB per side, {len(shards)} shards of "
              f"~{size / len(shards) / 1e9:.2f} GB on each side; edit in {edited} (last shard)")
        print(f"fake Hub ready in {time.perf_counter() - t0:.0f}s "
              "(shards made on demand; their sha256 taken once)")
        with FakeHub() as server:
            server.add_repo("acme/big-base", base)
            server.add_repo("acme/big", model)
            scratch, report = work / "tmp", work / "report.json"
            scratch.mkdir()
            env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HOME": str(work / "hf"),
                   "TMPDIR": str(scratch), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
            cmd = [sys.executable, "-m", "hfguard", "check", "acme/big", "--tier", "weights", "--base",
                   "acme/big-base", "--deadline", "0", "--budget", str(args.budget), "--no-cache",
                   "--format", "json", "-o", str(report)]
            print("$ HF_ENDPOINT=<fake Hub> " + " ".join(cmd[2:]))
            lines: list[tuple[float, str]] = []
            t0 = time.perf_counter()
            child = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
            reader = threading.Thread(target=lambda: lines.extend(
                (time.perf_counter() - t0, ln.rstrip()) for ln in child.stderr), daemon=True)  # type: ignore[union-attr]
            reader.start()
            disk = rss = 0
            while child.poll() is None:
                disk, rss = max(disk, _bytes_under(scratch)), max(rss, _hwm(child.pid))
                time.sleep(0.5)
            secs = time.perf_counter() - t0
            reader.join()
            gets = {n: sum(1 for r in server.requests(f"GET /acme/{repo}/resolve/.*/{n}$")
                           if r["sent"] == files[n].size)
                    for repo, files in (("big", model), ("big-base", base)) for n in shards}
        doc = json.loads(report.read_text()) if report.exists() else {}
        found = doc.get("findings", []) + [f for fr in doc.get("files", []) for f in fr.get("findings", [])]
        print(f"exit {child.returncode}, verdict {doc.get('verdict')}: "
              f"{sorted({f['rule'] for f in found if f['severity'] != 'info'})}")
        print(f"check: {secs:.0f}s, {2 * size / 1e9 / secs:.2f} GB/s over both sides "
              f"({size / 1e9 / secs:.2f} GB/s per side), peak RSS {rss / 1e6:.0f} MB, "
              f"peak scratch disk {disk / 1e9:.2f} GB "
              f"(largest shard {max(b.size for b in blobs.values()) / 1e9:.2f} GB), "
              f"whole-shard downloads per shard {sorted(set(gets.values()))}")
        progress = [(t, ln) for t, ln in lines if "GB of" in ln or "GB in" in ln]
        print(f"progress lines (of {len(progress)}), first, every ~10%, last:")
        step = max(1, len(progress) // 10)
        for t, ln in progress[:1] + progress[step::step] + progress[-1:]:
            print(f"  [{t:6.0f}s] {ln}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="size of each model (default 2)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--base-shards", type=int, default=1)
    ap.add_argument("--d", type=int, default=4096, help="hidden size (tensor sizes)")
    ap.add_argument("--dir", help="where to build (default: a temp dir)")
    ap.add_argument("--cold", action="store_true", help="evict our files from the page cache first")
    ap.add_argument("--budget-demo", type=float, default=0, help="also run under a budget this short")
    ap.add_argument("--stats", action="store_true", help="also time the weights.anomalies pass")
    ap.add_argument("--trace", action="store_true", help="also a pass under tracemalloc (numpy buffers)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--hub", action="store_true",
                    help="serve both models from the local fake Hub (made on demand, no disk) and time "
                         "`hfguard check --tier weights --base` on them; --base-shards is --shards")
    ap.add_argument("--budget", type=float, default=7200, help="--hub: the check's --budget")
    ap.add_argument("--measure", help=argparse.SUPPRESS)   # the measuring child process
    args = ap.parse_args()
    if args.measure:
        return measure(Path(args.measure), args)
    if args.hub:
        return hub(args)
    root = Path(tempfile.mkdtemp(prefix="hfguard-shards-", dir=args.dir))
    try:
        build(root, args)
        if args.cold:
            evict(root)
        # measured in a fresh process: its peak RSS is the diff's, not the writer's
        cmd = [sys.executable, __file__, "--measure", str(root), "--budget-demo", str(args.budget_demo)]
        flags = ["--stats"] * args.stats + ["--cold"] * args.cold + ["--trace"] * args.trace
        subprocess.run(cmd + flags, check=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
