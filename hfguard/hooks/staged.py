"""`hfguard hook staged`: what the plain git hook runs. Both hooks (references and model files) on
the content *staged in git's index*, not the working tree, so what is vetted is what is committed.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hfguard.engine import finalize
from hfguard.findings import Finding, Report, Severity
from hfguard.hooks.lockfile import Lockfile
from hfguard.hooks.precommit import escaping_link, vet_references
from hfguard.hooks.refs import MAX_TEXT, Extraction, file_references
from hfguard.hooks.refs import is_source as _is_source
from hfguard.hooks.vet import Vet
from hfguard.policy import Policy
from hfguard.sniff import HEAD_BYTES, MODEL_SUFFIXES, carries_model
from hfguard.static.problems import LFS_POINTER_PREFIX
from hfguard.target import open_regular

_LINK, _SUBMODULE = "120000", "160000"   # neither carries file content of its own


class GitError(RuntimeError):
    pass


def _git(root: Path, *args: str) -> bytes:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitError(f"git {args[0]}: {exc}") from None
    if out.returncode != 0:
        raise GitError(out.stderr.decode("utf-8", "replace").strip() or f"git {args[0]} failed")
    return out.stdout


def staged_blobs(root: Path) -> list[tuple[str, str, str]]:
    """(path, blob id, mode) of every file and symlink added, copied, modified or renamed in the index."""
    names = {n for n in _git(root, "diff", "--cached", "--name-only", "-z", "--diff-filter=ACMR")
             .decode("utf-8", "surrogateescape").split("\0") if n}
    if not names:
        return []
    out = []
    # the whole index, filtered here: names as pathspecs would glob (a[1].py) and could be many
    for line in _git(root, "ls-files", "-s", "-z").decode("utf-8", "surrogateescape").split("\0"):
        meta, _, path = line.partition("\t")
        if path in names:
            mode, oid, _stage = meta.split()
            if mode != _SUBMODULE:
                out.append((path, oid, mode))
    return sorted(out)


def link_findings(root: Path, links: list[tuple[str, str, str]]) -> list[Finding]:
    """Staged symlinks that leave the repository (their blob is the target path)."""
    found = []
    for path, oid, _ in links:
        target = _git(root, "cat-file", "blob", oid).decode("utf-8", "surrogateescape")
        if (odd := escaping_link(path, target)) is not None:
            found.append(odd)
    return found


@dataclass
class StagedContent:
    texts: dict[str, str] = field(default_factory=dict)           # sources to extract references from
    models: list[tuple[str, Path]] = field(default_factory=list)  # (path, local copy) to scan
    problems: list[tuple[str, int, str]] = field(default_factory=list)
    too_large: list[tuple[str, str]] = field(default_factory=list)   # sources not read
    unreadable: list[Finding] = field(default_factory=list)


def read_staged(root: Path, blobs: list[tuple[str, str]], tmp: Path) -> StagedContent:
    """One `git cat-file --batch` pass over every staged blob: sources (by extension, or a shebang
    naming python) kept as text, model files (by content: `sniff.carries_model`, whatever their
    name) copied to `tmp`, the rest read past after its first HEAD_BYTES. A git-lfs pointer stands
    for its object in the local LFS store, which is what the checkout will hold (`_lfs_object`)."""
    got = StagedContent()
    if not blobs:
        return got
    lfs_store = _lfs_store(root)
    try:
        proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=root, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError as exc:
        raise GitError(f"git cat-file: {exc}") from None
    assert proc.stdin is not None and proc.stdout is not None
    # written from a thread: git answers while it reads, and both pipes have bounded buffers
    feeder = threading.Thread(target=_feed, args=(proc.stdin, [oid for _, oid in blobs]), daemon=True)
    feeder.start()
    out = proc.stdout
    try:
        for i, (path, _oid) in enumerate(blobs):
            header = out.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                got.unreadable.append(_unreadable(path, b" ".join(header).decode("utf-8", "replace")))
                continue
            size = int(header[2])
            head = out.read(min(size, HEAD_BYTES))
            left = size - len(head)
            if size <= _LFS_POINTER_MAX and head.startswith(LFS_POINTER_PREFIX):
                _lfs_object(path, head + out.read(left), lfs_store, got)
                out.read(1)
                continue
            is_source = _is_source(path, head)   # by suffix, or a Python script by its shebang
            if is_source and size > MAX_TEXT:
                got.too_large.append((path, f"staged file of {size} bytes is too large to read"))
            if carries_model(head, path, size):
                dest = tmp / str(i)
                with open(dest, "wb") as fh:   # streamed: model files can be large
                    fh.write(head)
                    if is_source and size <= MAX_TEXT:
                        rest = out.read(left)
                        fh.write(rest)
                        got.texts[path] = (head + rest).decode("utf-8", "replace")
                    else:
                        _copy(out, fh, left)
                got.models.append((path, dest))
            elif is_source and size <= MAX_TEXT:
                got.texts[path] = (head + out.read(left)).decode("utf-8", "replace")
            else:
                _copy(out, None, left)
            out.read(1)   # the newline after each blob
    finally:
        out.close()
        proc.wait(timeout=60)
        feeder.join(timeout=60)
    return got


_LFS_POINTER_MAX = 1024
_LFS_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})\s*$", re.M)


def _lfs_store(root: Path) -> Path | None:
    try:
        common = _git(root, "rev-parse", "--git-common-dir").decode("utf-8", "surrogateescape").strip()
    except GitError:
        return None
    return (root / common / "lfs" / "objects") if common else None


def _lfs_object(path: str, pointer: bytes, store: Path | None, got: StagedContent) -> None:
    """A staged git-lfs pointer: git stores the pointer, git-lfs the content (in its local store
    since `git add`), and the checkout holds the content. Vet that: a model in it is scanned; an
    object missing from the store where a model file belongs is missing evidence (it was judged
    as a text file named .bin: a format-mismatch FLAG that vetted nothing)."""
    m = _LFS_OID.search(pointer)
    obj = store / m[1].decode()[:2] / m[1].decode()[2:4] / m[1].decode() if store and m else None
    try:
        if obj is None:
            raise OSError("no sha256 object id in the pointer" if store else "no git directory")
        with open_regular(obj) as fh:
            head, size = fh.read(HEAD_BYTES), os.fstat(fh.fileno()).st_size
    except OSError as exc:
        if path.lower().endswith(MODEL_SUFFIXES):
            got.unreadable.append(_unreadable(path, f"it is a git-lfs pointer whose object is not in the "
                                                    f"local LFS store ({exc}): not vetted"))
        return
    if carries_model(head, path, size):
        got.models.append((path, obj))


def _feed(stdin, oids: list[str]) -> None:
    try:
        for oid in oids:
            stdin.write(oid.encode() + b"\n")
        stdin.close()
    except OSError:   # git went away; the reader reports what it did not get
        pass


def _copy(src, dest, n: int, chunk: int = 1 << 20) -> None:
    while n > 0:
        block = src.read(min(chunk, n))
        if not block:
            raise GitError("git cat-file ended early")
        if dest is not None:
            dest.write(block)
        n -= len(block)


def _unreadable(path: str, why: str) -> Finding:
    return Finding(check="hook", rule="hook/unreadable-staged-file", severity=Severity.HIGH,
                   message=f"cannot read the staged {path}: {why[:200]}", file=path, error=True)


def staged_hook(policy: Policy, lock: Lockfile | None, *, root: Path | None = None,
                budget_seconds: float = 60.0, vet: Vet | None = None, offline: bool | None = None,
                options: dict | None = None,
                progress: Callable[[str], None] = lambda msg: None) -> Report:
    from hfguard.checks import checks_for_tiers
    from hfguard.engine import scan
    from hfguard.target import Target, local_file

    root = root or Path.cwd()
    staged = staged_blobs(root)
    blobs = [(path, oid) for path, oid, mode in staged if mode != _LINK]
    links = link_findings(root, [b for b in staged if b[2] == _LINK])
    with tempfile.TemporaryDirectory(prefix="hfguard-staged-") as tmp:
        content = read_staged(root, blobs, Path(tmp))
        got = Extraction(problems=list(content.problems), unread=list(content.too_large))
        for path, text in sorted(content.texts.items()):
            got.add(file_references(root / path, path, text=text))
        refs = vet_references(got.references, policy, lock, offline=offline, vet=vet,
                              options=options, progress=progress, problems=got.problems,
                              files=got.files, failures=got.failures, unread=got.unread).report
        report = Report(target="staged changes", source="hook",
                        findings=[*refs.findings, *content.unreadable, *links])
        files = [local_file(dest, path) for path, dest in content.models]
        if files:
            scanned = scan(Target(name="staged model files", source="local", files=files), policy,
                           checks_for_tiers(policy.tiers), progress=progress,
                           budget_seconds=budget_seconds, options=options)
            report.files, report.checks = scanned.files, scanned.checks
            report.findings += [f for f in scanned.findings if f.rule != "scan/no-files"]
    finalize(report, policy)
    report.stats = {"files": got.files + len(files), "references": refs.stats.get("references", 0),
                    "models": refs.stats.get("models", 0), "model_files": len(files)}
    return report
