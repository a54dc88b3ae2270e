"""static.keras: Keras model configs in `.keras` v3 archives and legacy HDF5 `.h5` files.

A Keras config can carry code: Lambda layers hold marshalled Python bytecode (base64) that runs on
load (CVE-2024-3660; HDF5 loading ignores safe_mode, CVE-2025-9905), `module` keys that older Keras
imported as given (CVE-2025-1550), and references to Keras' own functions that turn safe_mode off or
fetch files from inside the load (CVE-2025-8747, CVE-2025-9906). The bytecode is decoded and its
names scanned at byte level; it is never unmarshalled. Layers that reach outside the file: TFSMLayer
loads a SavedModel from a path the config names (CVE-2026-1462), StringLookup & co. read a vocabulary
file or URL (CVE-2025-12058); TorchModuleWrapper torch.loads a
pickle held in the config (CVE-2025-49655), which is judged by the pickle scanner. HDF5 weights
(`.h5`, `model.weights.h5`) are walked for external storage and links (hdf5.py, CVE-2026-1669).

HDF5 needs no h5py: Keras stores `model_config` as a JSON string attribute of the root group, read
from the root's object header by the HDF5 walk (hdf5.py); where the walk cannot tell (attributes in
dense storage, an odd datatype, a broken file) a bounded byte scan looks for it. h5py, when
importable, reads the attribute as well, in a child process under a timeout.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import importlib.util
import io
import json
import re
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from hfguard import signatures
from hfguard import sniff as fmts
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.hdf5 import scan_hdf5
from hfguard.static.pickle.streams import StreamLimit
from hfguard.static.pickle.zipdir import ZipEntry, ZipError, file_zip_directory
from hfguard.static.pickle.zipmembers import MEMBER_ERRORS, check_member_size, open_member, read_member
from hfguard.static.problems import lfs_pointer_problem
from hfguard.target import TargetFile

MAX_CONFIG_BYTES = 64 * 1024 * 1024
MAX_CODE_BYTES = 4 * 1024 * 1024
MAX_NODES = 2_000_000
MAX_DEPTH = 200
SCAN_CHUNK = 8 * 1024 * 1024
H5_SCAN_BYTES = 256 * 1024 * 1024   # how far into an HDF5 file the byte scan looks for the config
# over Hub Range reads: Keras writes model_config into the root group's header, near the start
H5_REMOTE_SCAN_BYTES = 1024 * 1024
CONFIG_WINDOW = 256 * 1024          # first read of a config found by the scan; grown as it needs
MAX_CONFIGS = 16
H5PY_TIMEOUT = 20.0
MAX_INFLATED_WEIGHTS = 8 << 30       # a compressed model.weights.h5 is inflated to disk up to this
REMOTE_INFLATED_WEIGHTS = 64 << 20   # ... and fetched over Range reads up to this (compressed bytes)
_MARKERS = (b'{"class_name"', b'{"module"')
_KERAS_MEMBERS = {"config.json", "metadata.json", "model.weights.h5", "model.weights.npz"}
_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{1,63}")
_B64 = re.compile(r"[A-Za-z0-9+/=\s]{16,}")


@functools.cache
def _rules() -> dict[str, Any]:
    return signatures.load("keras")


def _r(key: str) -> dict[str, Any]:
    return _rules()["rules"][key]


def _problem(key: str, message: str, location: str, severity: Severity | None = None,
             **evidence: Any) -> Observation:
    rule = _r(key)
    ev = {**evidence}
    if rule.get("advisories"):
        ev["advisories"] = list(rule["advisories"])  # a copy: the HDF5 path appends to it
    return Observation(rule["rule"], severity or Severity.parse(rule["severity"]), message, location, ev)


# -- bytecode ----------------------------------------------------------------------------------

def bytecode_names(b64: str) -> set[str] | None:
    """Identifiers inside base64-encoded marshalled code, or None when it is not marshalled code.
    Byte-level only: the data is never unmarshalled."""
    if len(b64) > MAX_CODE_BYTES * 4 // 3 + 1024:
        b64 = b64[: MAX_CODE_BYTES * 4 // 3]
    try:
        raw = base64.b64decode("".join(b64.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or raw[0] & 0x7F != ord("c"):  # TYPE_CODE, with or without FLAG_REF
        return None
    names: set[str] = set()
    for m in _IDENT.finditer(raw):
        tok = m.group().decode("ascii")
        names.add(tok)
        names.add(tok[1:])  # a length or type byte that happens to be a letter glues onto the name
    return names


# -- the config walk ---------------------------------------------------------------------------

@dataclass
class Analysis:
    problems: list[Observation] = field(default_factory=list)
    lambdas: list[str] = field(default_factory=list)
    layers: int = 0


def analyse_config(config: Any, raw_text: str | None = None, budget: Budget | None = None,
                   where: str = "config") -> Analysis:
    """Walk a Keras model config (any nesting: Functional, Sequential, TimeDistributed,
    Bidirectional, nested models) and report code it carries."""
    out = Analysis()
    text = raw_text if raw_text is not None else json.dumps(config, default=str)
    for needle in _r("unsafe-deserialization")["needles"]:
        if needle in text:
            out.problems.append(_problem("unsafe-deserialization",
                                         f"config mentions {needle}: it can switch safe_mode off "
                                         "while loading",
                                         where, needle=needle))
    allowed = set(_rules()["allowed_module_roots"])
    gadgets = set(_r("dangerous-function")["names"])
    stack: list[tuple[Any, str, int]] = [(config, where, 0)]
    nodes = 0
    while stack:
        node, path, depth = stack.pop()
        nodes += 1
        if budget is not None and nodes % 4096 == 0:
            budget.tick("walking a Keras config")
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            out.problems.append(Observation("keras/too-complex", Severity.HIGH,
                                            "config too large or deep to analyse", path,
                                            {"nodes": nodes, "depth": depth}))
            return out
        if isinstance(node, list):
            stack += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
            continue
        if not isinstance(node, dict):
            continue
        name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
        here = f"{path}/{name}" if isinstance(name, str) else path
        _inspect(node, here, out, allowed, gadgets)
        stack += [(v, f"{here}.{k}", depth + 1) for k, v in node.items()]
    return out


def _inspect(node: dict[str, Any], here: str, out: Analysis, allowed: set[str], gadgets: set[str]) -> None:
    cls = node.get("class_name")
    cfg = node.get("config")
    if isinstance(cls, str) and isinstance(cfg, dict):
        out.layers += 1
    module = node.get("module")
    if isinstance(module, str) and module.split(".")[0] not in allowed:
        rule = _r("module-outside-keras")
        sev = rule["high_severity"] if module.split(".")[0] in rule["high_roots"] else rule["severity"]
        out.problems.append(_problem("module-outside-keras",
                                     f"config names module {module!r}, outside Keras: older Keras imports it",
                                     here, Severity.parse(sev), module=module))
    if cls == "function" and isinstance(cfg, str) and cfg.split(".")[-1] in gadgets:
        out.problems.append(_problem("dangerous-function",
                                     f"config calls {module or '?'}.{cfg} while loading", here,
                                     function=f"{module}.{cfg}"))
    registered = node.get("registered_name")
    if isinstance(registered, str) and ">" in registered:
        out.problems.append(_problem("custom-object", f"custom object {registered!r} needs code from outside "
                                     "the model file", here, registered_name=registered))
    if cls == "Lambda" and isinstance(cfg, dict):
        out.lambdas.append(here)
        _inspect_lambda(cfg, here, out, gadgets)
    if cls == "__lambda__":
        _inspect_code(node, here, out)
    if cls == "TFSMLayer" and isinstance(cfg, dict):
        path = cfg.get("filepath")
        out.problems.append(_problem("tfsmlayer-external",
                                     f"TFSMLayer loads the SavedModel at {str(path)[:200]!r}, outside this "
                                     "file; its graph runs with the model", here, filepath=str(path)[:1000]))
    if cls == "TorchModuleWrapper" and isinstance(cfg, dict):
        _inspect_torch_module(cfg.get("module"), here, out)
    vocab = cfg.get("vocabulary") if isinstance(cfg, dict) else None
    if cls in _r("vocabulary-file")["classes"] and isinstance(vocab, str):
        out.problems.append(_problem("vocabulary-file",
                                     f"{cls} reads its vocabulary from {vocab[:200]!r} while loading (a file "
                                     "or URL outside the model)", here, vocabulary=vocab[:1000]))
    if cls in ("TFOpLambda", "SlicingOpLambda") and isinstance(cfg, dict):
        fn = cfg.get("function")
        if isinstance(fn, str) and any(fnmatch.fnmatchcase(fn, p) for p in _r("tfoplambda")["patterns"]):
            out.problems.append(_problem("tfoplambda", f"{cls} calls tf.{fn}", here, function=fn))
        elif not isinstance(fn, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", fn):
            out.problems.append(_problem("tfoplambda", f"{cls} with an odd function {str(fn)[:80]!r}", here,
                                         Severity.MEDIUM, function=str(fn)[:200]))
    for key, val in node.items():
        if key == "safe_mode" and val is False:
            out.problems.append(_problem("safe-mode-off", "config passes safe_mode=False", here))


def _inspect_lambda(cfg: dict[str, Any], here: str, out: Analysis, gadgets: set[str]) -> None:
    fn = cfg.get("function")
    before = len(out.problems)
    # Keras 2 / legacy HDF5: "function": [base64, defaults, closure], "function_type": "lambda"
    if isinstance(fn, list) and fn and isinstance(fn[0], str):
        _inspect_code({"config": {"value": fn}}, here, out)
    elif isinstance(fn, str) and cfg.get("function_type") == "function" and fn.split(".")[-1] in gadgets:
        out.problems.append(_problem("dangerous-function", f"Lambda calls {cfg.get('module')}.{fn}", here,
                                     function=f"{cfg.get('module')}.{fn}"))
    if len(out.problems) == before and not _has_lambda_code(fn):
        out.problems.append(_problem("lambda-layer", "Lambda layer: runs a Python function named in the "
                                     "config", here, function=str(fn)[:200]))


def _inspect_torch_module(module: Any, here: str, out: Analysis) -> None:
    """TorchModuleWrapper keeps a torch.save'd module (a pickle) as base64; Keras 3.11.0-3.11.2
    torch.loaded it even in safe mode. The bytes go through the pickle scanner, never unpickled."""
    from hfguard.static.pickle.check import SerializationCheck, scan_stream_findings

    rule = _r("torch-module-pickle")
    if isinstance(module, dict):  # {"class_name": "__bytes__", "config": {"value": ...}}
        module = (module.get("config") or {}).get("value") if isinstance(module.get("config"), dict) else None
    raw = None
    if isinstance(module, str) and len(module) <= MAX_CONFIG_BYTES:
        try:
            raw = base64.b64decode("".join(module.split()), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if not raw:
        out.problems.append(_problem("torch-module-pickle", "TorchModuleWrapper payload that is not "
                                     "readable base64 (cannot be vetted)", here))
        return
    found = scan_stream_findings(SerializationCheck(), io.BytesIO(raw), len(raw),
                                 fmts.sniff(raw[:512], "module.pt", len(raw)), here)
    worst = max((f.severity for f in found), default=Severity.INFO)
    sev = max(worst, Severity.parse(rule["severity"]))
    msg = "TorchModuleWrapper holds a pickled torch module that loading unpickles (safe_mode off)"
    if worst >= Severity.HIGH:
        bad = dict.fromkeys(f.message for f in found if f.severity >= Severity.HIGH)
        msg += "; the pickle " + "; ".join(bad)
    out.problems.append(_problem("torch-module-pickle", msg[:600], here, sev, pickle_bytes=len(raw),
                                 pickle_findings=[{"rule": f.rule, "severity": f.severity.name.lower(),
                                                   "message": f.message[:300]} for f in found[:20]]))


def _has_lambda_code(fn: Any) -> bool:
    return (isinstance(fn, dict) and fn.get("class_name") == "__lambda__") or isinstance(fn, list)


def _inspect_code(node: dict[str, Any], here: str, out: Analysis) -> None:
    rule = _r("lambda-bytecode")
    found = False
    for s in _strings(node.get("config")):
        if not _B64.fullmatch(s):
            continue
        names = bytecode_names(s)
        if names is None:
            continue
        found = True
        bad = sorted(names & set(rule["dangerous_names"]))
        sev = Severity.parse(rule["dangerous_severity"] if bad else rule["severity"])
        msg = "Lambda holds marshalled Python bytecode that runs on load"
        if bad:
            msg += f"; it names {', '.join(bad[:8])}"
        out.problems.append(_problem("lambda-bytecode", msg, here, sev, dangerous_names=bad,
                                     code_bytes=len(s) * 3 // 4))
    if not found:
        out.problems.append(_problem("lambda-bytecode", "Lambda function payload that is not readable "
                                     "bytecode (cannot be vetted)", here))


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if depth > 8:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v, depth + 1)


# -- containers --------------------------------------------------------------------------------

def find_json_configs(fh: BinaryIO, limit: int = H5_SCAN_BYTES, budget: Budget | None = None
                      ) -> list[tuple[int, str]]:
    """JSON objects that look like Keras configs anywhere in the first `limit` bytes of a binary
    file: (offset, text). Bounded: chunked search, each object at most MAX_CONFIG_BYTES."""
    found: list[tuple[int, str]] = []
    decoder = json.JSONDecoder()
    pos = 0
    keep = max(len(m) for m in _MARKERS)
    while pos < limit and len(found) < MAX_CONFIGS:
        if budget is not None:
            budget.tick("scanning HDF5 for a Keras config")
        fh.seek(pos)
        chunk = fh.read(min(SCAN_CHUNK, limit - pos))
        if not chunk:
            break
        hits = [i for i in (chunk.find(m) for m in _MARKERS) if i >= 0]
        if not hits:
            pos += max(len(chunk) - keep, 1)
            continue
        start = pos + min(hits)
        decoded = _json_at(fh, start, decoder)
        if decoded is None:
            pos = start + 1
            continue
        obj, text = decoded
        if isinstance(obj, dict):
            found.append((start, text))
        pos = start + len(text.encode("utf-8", "surrogateescape"))
    return found


def _json_at(fh: BinaryIO, start: int, decoder: json.JSONDecoder) -> tuple[Any, str] | None:
    """The JSON value at `start` and its text, read in growing windows (a remote file is read
    only as far as the value goes), or None when there is none."""
    size = CONFIG_WINDOW
    while True:
        fh.seek(start)
        raw = fh.read(size)
        window = raw.decode("utf-8", "surrogateescape")
        try:
            obj, end = decoder.raw_decode(window)
            return obj, window[:end]
        except json.JSONDecodeError as exc:
            cut = exc.pos >= len(window) - 1 or exc.msg.startswith("Unterminated string")
            if not cut or len(raw) < size or size >= MAX_CONFIG_BYTES:
                return None
            size = min(size * 8, MAX_CONFIG_BYTES)
        except (ValueError, RecursionError):
            return None


# Run in a child process: libhdf5 hangs or crashes on some hostile files (found by fuzzing), and
# neither can be bounded in-process.
_H5PY_CHILD = """
import json, sys
import h5py
out = []
with h5py.File(sys.argv[1], "r") as f:
    for key in ("model_config", "training_config"):
        if key in f.attrs:
            val = f.attrs[key]
            val = val.decode("utf-8", "replace") if isinstance(val, bytes) else str(val)
            out.append(val[: int(sys.argv[2])])
sys.stdout.write(json.dumps(out))
"""


def h5py_available() -> bool:
    try:
        return importlib.util.find_spec("h5py") is not None
    except (ImportError, ValueError):
        return False


def h5py_configs(file: TargetFile, timeout: float) -> tuple[list[str] | None, Observation | None]:
    """The model_config / training_config attributes as h5py (like Keras) reads them, from a child
    process under a timeout. (None, None) when h5py cannot be used; an Observation when it hangs or dies."""
    if file.local_path is None or not h5py_available():
        return None, None
    import subprocess  # (here: a scan without an HDF5 attribute to read never imports it)

    cmd = [sys.executable, "-I", "-c", _H5PY_CHILD, str(file.local_path), str(MAX_CONFIG_BYTES)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=max(timeout, 1.0), check=False)
    except subprocess.TimeoutExpired:
        return None, Observation(
            "keras/h5-unreadable", Severity.HIGH,
            f"h5py did not finish reading the attributes in {timeout:.0f}s: a hostile or "
            "corrupt HDF5 file hangs the library Keras loads it with", None, {"timeout_s": round(timeout, 1)})
    if done.returncode < 0:
        return None, Observation("keras/h5-unreadable", Severity.HIGH,
                                 f"h5py crashed reading the attributes (signal {-done.returncode})", None,
                                 {"signal": -done.returncode})
    if done.returncode != 0:
        return None, None  # h5py refuses the file (so would Keras); the byte scan still ran
    try:
        configs = json.loads(done.stdout)
    except ValueError:
        return None, None
    return [c for c in configs if isinstance(c, str)], None


class KerasCheck(Check):
    id = "static.keras"
    THRESHOLDS = {"use-h5py": True, "h5-scan-bytes": H5_SCAN_BYTES,
                  "h5-remote-scan-bytes": H5_REMOTE_SCAN_BYTES}
    tier = "static"
    version = "1"
    description = "Keras .keras archives and .h5 models: Lambda bytecode, foreign modules, safe_mode bypasses"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return fmt in (fmts.ZIP, fmts.HDF5) or file.name.lower().endswith(".keras")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        if fmt == fmts.HDF5:
            problems = self._hdf5(file, ctx)
        elif fmt == fmts.ZIP:
            problems = self._archive(file, ctx)
        elif (pointer := lfs_pointer_problem(file, "keras")) is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        else:
            problems = [Observation("keras/bad-archive", Severity.HIGH,
                                    f"named .keras but the content is {fmt}, not a zip archive")]
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Do not load this model; if you must, use Keras >= 3.11 "
                                                  "with safe_mode=True and only the .keras format.")

    def _archive(self, file: TargetFile, ctx: ScanContext) -> list[Observation]:
        is_keras_name = file.name.lower().endswith(".keras")
        budget = ctx.budget()
        with file.open() as fh:
            try:  # our bounded directory reader, never zipfile on hostile input
                listed = [e for e in file_zip_directory(file, ctx) if e.index >= 0]
            except (ZipError, OSError, ValueError, struct.error) as exc:
                if is_keras_name:
                    return [Observation("keras/bad-archive", Severity.HIGH,
                                        f"unreadable .keras archive: {exc}")]
                return []  # not ours to judge; the archive scanner reports broken zips
            names = {e.name: e for e in listed}  # the last of duplicates, as zipfile (and Keras) reads
            keras_like = is_keras_name or bool(names.keys() & (_KERAS_MEMBERS - {"config.json"}))
            if "config.json" not in names or not keras_like:
                if is_keras_name:
                    return [Observation("keras/bad-archive", Severity.HIGH,
                                        ".keras archive without config.json")]
                return []
            problems: list[Observation] = []
            for n in names:
                if n.startswith(("/", "\\")) or ".." in n.replace("\\", "/").split("/"):
                    problems.append(Observation("keras/archive-path", Severity.HIGH,
                                                f"archive member escapes the archive: {n!r}", n))
                elif n not in _KERAS_MEMBERS and not n.startswith("assets/") and not n.endswith("/"):
                    problems.append(Observation("keras/unexpected-member", Severity.LOW,
                                                f"unexpected member {n!r} in a .keras archive", n))
            if "model.weights.h5" in names:
                problems += self._weights_h5(fh, names["model.weights.h5"], budget, file.local_path is None)
            if "model.weights.npz" in names:
                problems.append(Observation(
                    "keras/npz-weights", Severity.LOW,
                    "weights stored as .npz, which Keras loads with allow_pickle=True", "model.weights.npz"))
            entry = names["config.json"]
            if entry.usize > MAX_CONFIG_BYTES:
                problems.append(Observation("keras/config-too-large", Severity.HIGH,
                                            f"config.json is {entry.usize} bytes; not analysed",
                                            "config.json"))
                return problems
            try:
                raw = read_member(fh, entry, MAX_CONFIG_BYTES, budget)
            except StreamLimit:
                problems.append(Observation(
                    "keras/config-too-large", Severity.HIGH,
                    "config.json inflates past the limit; not analysed", "config.json"))
                return problems
            except MEMBER_ERRORS as exc:
                problems.append(Observation(
                    "keras/bad-archive", Severity.HIGH,
                    f"config.json cannot be read from the archive: {exc}", "config.json"))
                return problems
            problems += self._config_text(raw, "config.json", ctx)
            return problems

    def _weights_h5(self, fh: BinaryIO, entry: ZipEntry, budget: Budget, remote: bool) -> list[Observation]:
        """model.weights.h5 inside a .keras archive: h5py follows its external storage and links too.
        A stored member (what Keras writes) is walked in place, headers only."""
        name = entry.name
        try:
            if entry.method == 0:
                member = open_member(fh, entry, entry.usize, budget)
                return scan_hdf5(member, min(entry.usize, entry.csize), budget, name).problems
            if remote and entry.csize > REMOTE_INFLATED_WEIGHTS:
                return [Observation("keras/h5-not-fully-scanned", Severity.MEDIUM,
                                    f"{name} is compressed: walking it would fetch all {entry.csize} bytes "
                                    "over Range reads, so it was not walked (scan a local copy)", name,
                                    {"size": entry.csize, "scanned_bytes": 0, "remote": True})]
            # a compressed member re-inflates from its start on every backward seek: inflate it
            # once into a spooled file (memory up to a few MiB, then disk) and walk that
            if entry.usize > MAX_INFLATED_WEIGHTS or (
                    entry.usize > 64 << 20 and entry.usize > 100 * max(entry.csize, 1)):
                return [Observation("keras/bad-archive", Severity.HIGH,
                                    f"{name} inflates to {entry.usize} bytes from {entry.csize}: not walked",
                                    name)]
            import tempfile

            with tempfile.SpooledTemporaryFile(max_size=16 << 20) as spool:
                member = open_member(fh, entry, min(entry.usize, MAX_INFLATED_WEIGHTS), budget)
                while block := member.read(1 << 20):
                    budget.tick("inflating model.weights.h5")
                    spool.write(block)
                check_member_size(entry, spool.tell())
                return scan_hdf5(spool, spool.tell(), budget, name).problems
        except StreamLimit as exc:
            return [Observation("keras/bad-archive", Severity.HIGH,
                                f"{name} inflates past its bounds ({exc.message}): not walked", name)]
        except MEMBER_ERRORS as exc:
            return [Observation("keras/bad-archive", Severity.HIGH,
                                f"{name} cannot be read from the archive: {exc}", name)]

    def _config_text(self, raw: bytes, where: str, ctx: ScanContext) -> list[Observation]:
        try:
            text = raw.decode("utf-8")
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return [Observation("keras/bad-config", Severity.HIGH,
                                f"model config is not JSON: {str(exc)[:200]}", where)]
        return analyse_config(doc, text, ctx.budget(), where).problems

    def _hdf5(self, file: TargetFile, ctx: ScanContext) -> list[Observation]:
        budget = ctx.budget()
        via_h5py, failure = None, None
        if ctx.threshold(self.id, "use-h5py", True):
            via_h5py, failure = h5py_configs(file, min(budget.remaining() / 2, H5PY_TIMEOUT))
        problems: list[Observation] = [failure] if failure else []
        with file.open() as fh:
            walk = scan_hdf5(fh, file.size, budget)
        problems += walk.problems
        # the root group's header holds the attributes Keras reads: when the walk read them all,
        # no byte scan is needed (and a remote file is read by its headers only)
        from_header = [v.decode("utf-8", "surrogateescape") for _, v in walk.root_attributes]
        # h5py reads the attributes the way Keras does; without it the byte scan goes further
        limit = SCAN_CHUNK if via_h5py is not None else int(
            ctx.threshold(self.id, "h5-scan-bytes", H5_SCAN_BYTES))
        remote = file.local_path is None  # read over Range requests: every byte scanned is fetched
        if remote:
            limit = min(limit, int(ctx.threshold(self.id, "h5-remote-scan-bytes", H5_REMOTE_SCAN_BYTES)))
        scanned: list[str] = []
        if not walk.root_attributes_known:
            with file.open() as fh:
                scanned = [text for _, text in find_json_configs(fh, limit, budget)]
        texts = list(dict.fromkeys([*from_header, *scanned, *(via_h5py or [])]))
        for i, text in enumerate(texts):
            problems += self._config_text(text.encode("utf-8", "surrogateescape"), f"model_config[{i}]", ctx)
        if not walk.root_attributes_known and not texts and file.size > limit and via_h5py is None:
            why = ("the bound on bytes read from a remote file" if remote
                   else "h5py is not available to read the attributes")
            problems.append(Observation("keras/h5-not-fully-scanned", Severity.LOW,
                                        f"no Keras config in the first {limit} bytes ({why})", None,
                                        {"size": file.size, "scanned_bytes": limit, "remote": remote}))
        # legacy HDF5 loading ignores safe_mode altogether (CVE-2025-9905): say so where it matters
        for p in problems:
            if p.rule == "keras/lambda-bytecode":
                p.evidence.setdefault("advisories", [])
                if "CVE-2025-9905" not in p.evidence["advisories"]:
                    p.evidence["advisories"].append("CVE-2025-9905")
        return problems
