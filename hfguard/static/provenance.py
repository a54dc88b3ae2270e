"""static.provenance: where a model comes from and whether its files are what they claim to be.

Per file (any target): the extension's claim against the bytes (a `.safetensors` that is a pickle,
a `.bin` zip that is no PyTorch archive, a binary `.json`), known-bad file hashes.
Per target (Hub): look-alike names of popular repos, known-bad repos, the Hub's own scan status
(an "unsafe" is a finding; a "safe" is never a pass), pickle-only weights, custom code, and
unpinned references in pre-commit hooks. Rules live in signatures/popular_repos.yaml and
signatures/known_bad.yaml.
"""

from __future__ import annotations

import functools
import json
import re
import struct
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

from hfguard import sniff as fmts
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Severity
from hfguard.policy import Policy
from hfguard.static.pickle.zipdir import ZipEntry, ZipError, file_zip_directory, torch_data_pickles
from hfguard.target import Target, TargetFile

_SHA_RE = re.compile(r"[0-9a-f]{40}")
_PICKLE_FORMATS = {fmts.PICKLE, fmts.TORCH_LEGACY}

_PICKLE_EXTS = (".pkl", ".pickle", ".joblib")
# what torch.load reads: zip checkpoints (and TorchScript), legacy stacked pickles, old tar checkpoints
_TORCH_FORMATS = {fmts.ZIP, fmts.TORCH_LEGACY, fmts.PICKLE, fmts.TAR}
_TEXT_FORMATS = {fmts.TEXT, fmts.JSON, fmts.PYTHON}
_PICKLE_WEIGHT_RE = re.compile(r"(^|/)(pytorch_model|model|diffusion_pytorch_model|adapter_model)"
                               r"[-\w.]*\.(bin|pt|pth|ckpt)$", re.I)
_HASH_LIMIT = 256 << 20   # local files hashed for known-bad lookups up to this size
_CONFIG_LIMIT = 1 << 20
_HUB_LEVELS = {"unsafe": Severity.HIGH, "suspicious": Severity.MEDIUM, "caution": Severity.LOW}


# -- name rules -----------------------------------------------------------------------------------
def damerau_levenshtein(a: str, b: str) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap two neighbours)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


@functools.cache
def _popular() -> tuple[tuple[str, ...], dict[str, str], int, int]:
    from hfguard.signatures import load

    doc = load("popular_repos")
    return (tuple(doc.get("repos", ())), dict(doc.get("confusables", {})),
            int(doc.get("max_distance", 2)), int(doc.get("short_name", 5)))


def skeleton(text: str, confusables: dict[str, str] | None = None) -> str:
    """Fold look-alike characters so that ids that render alike compare equal."""
    table = confusables if confusables is not None else _popular()[1]
    s = unicodedata.normalize("NFKC", text).lower()
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    for src in sorted(table, key=len, reverse=True):   # "rn" before "r"
        s = s.replace(src, table[src])
    return s


def lookalikes(repo_id: str) -> list[tuple[str, str, Severity, dict[str, Any]]]:
    """Popular repos (or publishers) that `repo_id` imitates, closest first: (real, how, severity, evidence).

    A whole id that folds to a popular id's skeleton, or is within a small edit distance of it on
    both org and name, is HIGH; an org alone that imitates a popular publisher is MEDIUM.
    """
    popular, confusables, max_d, short = _popular()
    cand = repo_id.lower()
    c_org, _, c_name = cand.rpartition("/")
    if not c_org or cand in {p.lower() for p in popular}:
        return []
    c_skel = skeleton(repo_id, confusables)
    orgs = {p.lower().rpartition("/")[0] for p in popular} - {""}
    hits: list[tuple[int, str, str, Severity, dict[str, Any]]] = []
    for real in popular:
        r_org, _, r_name = real.lower().rpartition("/")
        if not r_org or c_org == r_org:
            continue  # same publisher: its own repos are not squatting on it
        if c_skel == skeleton(real, confusables):
            hits.append((0, real, "confusable characters", Severity.HIGH, {"skeleton": c_skel}))
            continue
        d_org, d_name = damerau_levenshtein(c_org, r_org), damerau_levenshtein(c_name, r_name)
        if d_org <= _limit(r_org, max_d, short) and d_name <= _limit(r_name, max_d, short):
            hits.append((d_org + d_name, real, "near-identical name", Severity.HIGH,
                         {"org_distance": d_org, "name_distance": d_name}))
    if not hits and c_org not in orgs and len(c_org) >= 4:
        c_org_skel = skeleton(c_org, confusables)
        for org in sorted(orgs):
            d = damerau_levenshtein(c_org, org)
            if c_org_skel == skeleton(org, confusables) or d <= _limit(org, max_d, short):
                hits.append((d, org, "publisher name imitates a popular publisher", Severity.MEDIUM,
                             {"org_distance": d}))
    hits.sort(key=lambda h: (h[0], h[1]))
    return [(real, how, sev, ev) for _, real, how, sev, ev in hits]


def _limit(part: str, max_d: int, short: int) -> int:
    return 1 if len(part) <= short else max_d


def name_findings(repo_id: str, policy: Policy, *, deny: bool = True) -> list[Finding]:
    """Known-bad repo, policy deny list and look-alike name: what the name alone says.

    Needs no network, so `check`, `hook refs` and `lock` run it first and report it even when the
    Hub cannot be reached. `deny=False` leaves the deny list to a caller that reports it its way.
    """
    found: list[Finding] = []
    bad = known_bad_repo(repo_id)
    if bad:
        found.append(_finding("provenance/known-bad-repo", Severity.CRITICAL,
                              f"{repo_id} is a known-bad repo: {bad.get('reason', '')}",
                              evidence={"repo": repo_id}, remediation="Do not use this model."))
    if deny and policy.repo_listed(repo_id, policy.deny):
        found.append(_finding("provenance/denied-repo", Severity.HIGH,
                              f"{repo_id} is on the policy deny list", evidence={"repo": repo_id}))
    if policy.repo_listed(repo_id, policy.allow):
        return found  # explicitly trusted: not a look-alike of anything
    hits = lookalikes(repo_id)
    if hits:
        real, how, sev, evidence = hits[0]
        also = [h[0] for h in hits[1:6]]
        found.append(_finding("provenance/lookalike-name", sev,
                              f"{repo_id} looks like the popular {real} ({how})",
                              evidence={"imitates": real, **evidence, "also_like": also},
                              remediation=f"Did you mean {real}? Check the publisher before using it."))
    return found


def _finding(rule: str, severity: Severity, message: str, **kw: Any) -> Finding:
    return Finding(check=ProvenanceCheck.id, rule=rule, severity=severity, message=message, **kw)


# -- hashes ---------------------------------------------------------------------------------------
def _known_bad() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    from hfguard.signatures import signatures_version

    return _known_bad_at(signatures_version())   # a feed update changes the version: reloaded


@functools.cache
def _known_bad_at(version: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    from hfguard.feeds import load_feed
    from hfguard.signatures import load

    repos: dict[str, dict[str, Any]] = {}
    files: dict[str, dict[str, Any]] = {}
    for doc in (load("known_bad"), load_feed()):   # shipped, then the user's signed updates
        repos |= {e["id"].lower(): e for e in doc.get("repos", []) or []}
        files |= {e["sha256"].lower(): e for e in doc.get("files", []) or []}
    return repos, files


def _known_bad_sizes(files: dict[str, dict[str, Any]]) -> frozenset[int] | None:
    """The sizes of the known-bad files when every entry gives one, else None (hash every file)."""
    sizes = [e.get("size") for e in files.values()]
    whole = [n for n in sizes if isinstance(n, int) and not isinstance(n, bool)]
    return frozenset(whole) if len(whole) == len(sizes) else None


def known_bad_repo(repo: str) -> dict[str, Any] | None:
    """The known_bad.yaml entry of a repo id (case-insensitive), or None."""
    return _known_bad()[0].get(repo.lower())


def _file_sha256(file: TargetFile, ctx: ScanContext) -> str | None:
    """The Hub's LFS sha256, else our own hash of a local file (bounded)."""
    if file.expected_sha256:
        return file.expected_sha256.lower()
    if file.local_path is None or file.size > _HASH_LIMIT:
        return None
    return file.content_sha256(ctx.budget().tick)


# -- format claims --------------------------------------------------------------------------------
def _claim_mismatch(file: TargetFile, fmt: str, ctx: ScanContext) -> tuple[Severity, str] | None:
    name = file.name.lower()
    if name.endswith(".safetensors") and fmt != fmts.SAFETENSORS:
        sev = Severity.HIGH if fmt in _PICKLE_FORMATS | {fmts.ZIP} else Severity.MEDIUM
        return sev, f"named .safetensors but the content is {fmt}"
    if name.endswith(".json") and fmt not in (fmts.JSON, fmts.TEXT) and file.size > 0:
        return Severity.MEDIUM, f"named .json but the content is binary ({fmt})"
    if name.endswith(".gguf") and fmt != fmts.GGUF:
        return Severity.MEDIUM, f"named .gguf but the content is {fmt}"
    if name.endswith(".npy") and fmt != fmts.NUMPY:
        return Severity.MEDIUM, f"named .npy but the content is {fmt}"
    if name.endswith((".h5", ".hdf5")) and fmt != fmts.HDF5:
        return Severity.MEDIUM, f"named {name.rsplit('.', 1)[1]} but the content is {fmt}"
    if name.endswith(fmts.TORCH_SUFFIXES + _PICKLE_EXTS) and fmt not in _TORCH_FORMATS:
        # .bin is generic (ONNX external data, OpenVINO, GGML ...): only text is out of place there
        generic = name.endswith((".bin", *_PICKLE_EXTS))
        if (fmt in _TEXT_FORMATS or not generic) and not _text_pickle(file, fmt, ctx):
            ext = name.rsplit(".", 1)[1]
            return Severity.MEDIUM, f"named .{ext} (a pickle-based model format) but the content is {fmt}"
    if name.endswith(fmts.TORCH_SUFFIXES) and fmt == fmts.ZIP:
        members = _zip_names(file, ctx)
        if members is not None and not torch_data_pickles(members):
            return Severity.MEDIUM, ("a zip archive that is not a PyTorch checkpoint (no data.pkl): "
                                     + ", ".join(m.name for m in members[:5]))
    return None


def _text_pickle(file: TargetFile, fmt: str, ctx: ScanContext) -> bool:
    """A protocol 0 pickle is printable text: it is one if it decodes to STOP (bounded)."""
    if fmt not in _TEXT_FORMATS:
        return False
    from hfguard.static.pickle.check import WHOLE_PICKLE

    known = ctx.file_facts(file).get(WHOLE_PICKLE)
    if known is not None:   # the serialization check decoded it already
        return known
    from hfguard.static.pickle.vm import Limits, PickleVM, Reader

    try:
        with file.open() as fh:
            vm = PickleVM(Limits(max_opcodes=200_000, max_bytes=64 << 20))
            res = vm.run_one(Reader(fh, size=file.size))
    except (OSError, ValueError):
        return False
    return res.complete and not res.anomalies


def _zip_names(file: TargetFile, ctx: ScanContext) -> list[ZipEntry] | None:
    """Member entries from the central directory only (a range read on Hub files)."""
    try:
        return file_zip_directory(file, ctx, local_headers=False)
    except (ZipError, OSError, ValueError, struct.error):
        return None  # the serialization checks report unreadable archives


class ProvenanceCheck(Check):
    id = "static.provenance"
    tier = "static"
    version = "1"
    description = "look-alike and known-bad repos/files, format claims, Hub scan status, pinning"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return True

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        mismatch = _claim_mismatch(file, fmt, ctx)
        if mismatch:
            sev, what = mismatch
            yield self.finding("provenance/format-mismatch", sev, f"{file.path}: {what}", file=file.path,
                               evidence={"format": fmt, "extension": file.name.rsplit(".", 1)[-1]},
                               remediation="Treat the file as what its bytes are, not what its name says.")
        known = ctx.memo.get("known_bad_files")
        if known is None:  # the rule set is fixed at the start of a scan: looked up once, not per file
            files = _known_bad()[1]
            known = ctx.memo["known_bad_files"] = (files, _known_bad_sizes(files))
        hashes, sizes = known
        # a file whose size no entry has cannot be one of them: not hashed (a quarter of a scan of
        # many small pickles); a Hub file's listed sha256 costs nothing and is always looked up
        if sizes is not None and file.size not in sizes and not file.expected_sha256:
            return
        sha = _file_sha256(file, ctx)
        bad = hashes.get(sha or "")
        if bad:
            yield self.finding("provenance/known-bad-file", Severity.CRITICAL,
                               f"{file.path} is a known-bad file: {bad.get('reason', '')}", file=file.path,
                               evidence={"sha256": sha, "name": bad.get("name")},
                               remediation="Do not load it; report the repo to the Hub.")

    def check_target(self, target: Target, ctx: ScanContext) -> Iterable[Finding]:
        if target.source != "hub" or not target.repo_id:
            return
        yield from self._name_rules(target, ctx)
        yield from self._hub_status(target)
        yield from self._contents(target, ctx)
        if target.meta.get("offline"):
            yield self.finding("provenance/offline-snapshot", Severity.INFO,
                               "offline: only the files present in the local cache snapshot were checked",
                               evidence={"snapshot": target.meta.get("snapshot")})
        requested = target.meta.get("requested_revision")
        if ctx.options.get("context") == "hook" and not (requested and _SHA_RE.fullmatch(requested)):
            yield self.finding("provenance/unpinned-revision", Severity.LOW,
                               f"{target.repo_id} is referenced by {requested or 'the default branch'}, "
                               f"not a commit sha: what loads can change after this check",
                               evidence={"requested": requested, "resolved": target.revision},
                               remediation=f"Pin it: revision=\"{target.revision}\".")

    def _name_rules(self, target: Target, ctx: ScanContext) -> Iterator[Finding]:
        yield from name_findings(target.repo_id or "", ctx.policy)

    def _hub_status(self, target: Target) -> Iterator[Finding]:
        seen: set[str] = set()
        for path, sec in sorted((target.meta.get("file_security") or {}).items()):
            sec = sec or {}
            av = sec.get("av_scan") or {}
            if av.get("virusFound"):
                seen.add(path)
                yield self.finding("provenance/hub-virus", Severity.CRITICAL,
                                   f"the Hub's antivirus flags {path}: {av.get('virusNames')}", file=path,
                                   evidence={"av_scan": av})
            pis = sec.get("pickle_import_scan") or {}
            level = str(sec.get("status") or "").lower()
            if pis.get("highestSafetyLevel") == "dangerous" or level in _HUB_LEVELS:
                seen.add(path)
                sev = _HUB_LEVELS.get(level, Severity.HIGH)
                yield self.finding("provenance/hub-security-status", sev,
                                   f"the Hub's scanners mark {path} as {level or 'dangerous'}", file=path,
                                   evidence={"status": level, "pickle_import_scan": pis})
        repo_status = target.meta.get("security_repo_status") or {}
        for issue in repo_status.get("filesWithIssues") or []:
            path, level = issue.get("path"), str(issue.get("level", "")).lower()
            if path in seen or level not in _HUB_LEVELS:
                continue
            yield self.finding("provenance/hub-security-status", _HUB_LEVELS[level],
                               f"the Hub's scanners mark {path} as {level}", file=path,
                               evidence={"status": level})

    def _contents(self, target: Target, ctx: ScanContext) -> Iterator[Finding]:
        names = [f.path for f in target.files]
        pickles = [n for n in names if _PICKLE_WEIGHT_RE.search(n)]
        if pickles and not any(n.lower().endswith(".safetensors") for n in names):
            lib = str(target.card.get("library_name") or target.meta.get("library_name") or "").lower()
            sev = Severity.MEDIUM if lib in ("transformers", "diffusers", "sentence-transformers",
                                             "timm", "peft") else Severity.LOW
            yield self.finding("provenance/pickle-only-weights", sev,
                               f"weights only in pickle form ({', '.join(pickles[:3])}); no safetensors twin",
                               evidence={"pickle_files": pickles, "library_name": lib or None},
                               remediation="Prefer a safetensors revision (or convert it in a sandbox).")
        auto_map = _auto_map(target, ctx)
        code = [n for n in names if n.lower().endswith(".py")]
        if auto_map or code:
            yield self.finding("provenance/custom-code", Severity.LOW,
                               "loading needs trust_remote_code: the repo ships its own Python code",
                               evidence={"auto_map": auto_map, "python_files": code},
                               remediation="Review the code (see static.custom_code findings) and pin it.")


def _auto_map(target: Target, ctx: ScanContext) -> dict[str, Any] | None:
    config = next((f for f in target.files if f.path == "config.json"), None)
    if config is None or config.size > _CONFIG_LIMIT:
        return None
    try:
        with config.open() as fh:
            doc = json.loads(fh.read(_CONFIG_LIMIT))
    except (OSError, ValueError):
        return None  # an unreadable config is the format checks' business
    auto_map = doc.get("auto_map") if isinstance(doc, dict) else None
    return auto_map if isinstance(auto_map, dict) and auto_map else None
