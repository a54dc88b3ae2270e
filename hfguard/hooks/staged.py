"""`hfguard hook staged`: what the plain git hook runs. Both hooks (references and model files) on
the content *staged in git's index*, not the working tree, so what is vetted is what is committed.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from hfguard.engine import finalize
from hfguard.findings import Finding, Report, Severity
from hfguard.hooks.lockfile import Lockfile
from hfguard.hooks.precommit import MODEL_SUFFIXES, vet_references
from hfguard.hooks.refs import MAX_TEXT, SUPPORTED_SUFFIXES, Extraction, file_references
from hfguard.hooks.vet import Vet
from hfguard.policy import Policy

_SKIP_MODES = {"120000", "160000"}   # symlinks and submodules carry no file content of their own


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


def staged_blobs(root: Path) -> list[tuple[str, str]]:
    """(path, blob id) of every file added, copied, modified or renamed in the index."""
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
            if mode not in _SKIP_MODES:
                out.append((path, oid))
    return sorted(out)


def staged_hook(policy: Policy, lock: Lockfile | None, *, root: Path | None = None,
                budget_seconds: float = 60.0, vet: Vet | None = None, offline: bool | None = None,
                options: dict | None = None,
                progress: Callable[[str], None] = lambda msg: None) -> Report:
    from hfguard.checks import checks_for_tiers
    from hfguard.engine import scan
    from hfguard.target import Target, local_file

    root = root or Path.cwd()
    blobs = staged_blobs(root)
    got = Extraction()
    for path, oid in blobs:
        if not path.lower().endswith(SUPPORTED_SUFFIXES):
            continue
        size = int(_git(root, "cat-file", "-s", oid))
        if size > MAX_TEXT:
            got.problems.append((path, 1, f"staged file of {size} bytes is too large to read"))
            continue
        text = _git(root, "cat-file", "blob", oid).decode("utf-8", "replace")
        one = file_references(root / path, path, text=text)
        got.files += 1
        got.references += one.references
        got.problems += one.problems
    refs = vet_references(got.references, policy, lock, offline=offline, vet=vet, options=options,
                          progress=progress, problems=got.problems, files=got.files).report
    report = Report(target="staged changes", source="hook", findings=refs.findings)
    models = [(p, oid) for p, oid in blobs if p.lower().endswith(MODEL_SUFFIXES)]
    if models:
        with tempfile.TemporaryDirectory(prefix="hfguard-staged-") as tmp:
            files = []
            for i, (path, oid) in enumerate(models):
                dest = Path(tmp) / f"{i}-{Path(path).name}"
                with open(dest, "wb") as fh:   # streamed: model files can be large
                    proc = subprocess.run(["git", "cat-file", "blob", oid], cwd=root, stdout=fh,
                                          stderr=subprocess.PIPE, timeout=600)
                if proc.returncode != 0:
                    report.findings.append(Finding(
                        check="hook", rule="hook/unreadable-staged-file", severity=Severity.HIGH,
                        message=f"cannot read the staged {path}: {proc.stderr.decode()[:200]}",
                        file=path, error=True))
                    continue
                files.append(local_file(dest, path))
            scanned = scan(Target(name="staged model files", source="local", files=files), policy,
                           checks_for_tiers(policy.tiers), progress=progress,
                           budget_seconds=budget_seconds, options=options)
        report.files, report.checks = scanned.files, scanned.checks
        report.findings += [f for f in scanned.findings if f.rule != "scan/no-files" or files]
    finalize(report, policy)
    report.stats = {"files": got.files + len(models), "references": refs.stats.get("references", 0),
                    "models": refs.stats.get("models", 0), "model_files": len(models)}
    return report
