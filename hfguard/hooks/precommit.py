"""Hook entry points: vet the models that changed files reference, and scan added model files.

The references hook turns every model's verdict into findings *at the source line* that named
the model, so text and SARIF point at `train.py:12`, not at a file on the Hub. Per reference:

1. `# hfguard: ignore` on the line: skipped (an info finding records it). A legacy name without
   an owner (`gpt2`) cannot be vetted: a medium finding asks for the full id.
2. a repo on the policy's deny list: BLOCK, no network.
3. a current entry in hfguard.lock (same repo and revision as written, same stamp): its
   recorded findings, no network.
4. otherwise the model is vetted on the Hub; with HF_HUB_OFFLINE=1 that is an ERROR instead, next
   to what the name alone shows (look-alike of a popular repo, known-bad repo). The Hub check
   reports those too when the Hub cannot be reached (hfguard.hub.check).

A repo on the allow list is still vetted: findings below the policy's block level are lowered to
info (FLAG becomes PASS), but a BLOCK or an ERROR stands — a trusted org's account can be
compromised too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path

from hfguard.engine import finalize
from hfguard.findings import Finding, Report, Severity, Verdict
from hfguard.hooks.lockfile import LockEntry, Lockfile, Stamp, current_stamp, entry_from_report
from hfguard.hooks.refs import Extraction, Reference, extract
from hfguard.hooks.vet import Vet, denied_finding, vet_reference
from hfguard.policy import Policy
from hfguard.sniff import HEAD_BYTES, MODEL_SUFFIXES, carries_model
from hfguard.static.provenance import name_findings
from hfguard.target import offline_by_env


def _hook_finding(rule: str, severity: Severity, message: str, ref: Reference | None = None, *,
                  file: str | None = None, location: str | None = None, error: bool = False,
                  remediation: str | None = None, **evidence: object) -> Finding:
    return Finding(check="hook", rule=rule, severity=severity, message=message,
                   file=ref.file if ref else file, location=ref.location if ref else location,
                   evidence={k: v for k, v in evidence.items() if v is not None},
                   remediation=remediation, error=error, anchor=ref.anchor if ref else None)


def carry_over(ref: Reference, model_findings: Iterable[Finding], revision: str | None,
               policy: Policy) -> list[Finding]:
    """A vetted model's findings, moved to the reference's source line (rule and severity kept)."""
    allowed = policy.repo_listed(ref.repo_id, policy.allow)
    out = []
    for f in model_findings:
        if policy.is_suppressed(f) or (ref.suppresses(f.rule) and not f.error):
            continue
        severity = f.severity
        note = ""
        if allowed and not f.error and policy.effective_severity(f) < policy.block_at:
            severity, note = Severity.INFO, " (allowed by policy)"
        where = f" in {f.file}" if f.file else ""
        out.append(Finding(
            check=f.check, rule=f.rule, severity=severity,
            message=f"{ref.repo_id}@{(revision or '?')[:12]}{where}: {f.message}{note}",
            file=ref.file, location=ref.location, remediation=f.remediation, error=f.error,
            evidence={**f.evidence, "model": ref.repo_id, "revision": revision,
                      "model_file": f.file, "model_location": f.location},
            anchor=f"{ref.anchor} {f.file or ''} {f.location or ''}"))
    return out


@dataclasses.dataclass
class RefsResult:
    report: Report
    vetted: list[LockEntry]          # entries for models vetted on the Hub during this run
    stale: list[Reference]           # references without a current lock entry


def vet_references(refs: list[Reference], policy: Policy, lock: Lockfile | None, *,
                   stamp: Stamp | None = None, offline: bool | None = None, vet: Vet | None = None,
                   options: dict | None = None, progress: Callable[[str], None] = lambda msg: None,
                   problems: Iterable[tuple[str, int, str]] = (), files: int | None = None,
                   failures: Iterable[tuple[str, str]] = (),
                   unread: Iterable[tuple[str, str]] = ()) -> RefsResult:
    """Findings for every reference (see the module docstring for the order of decisions).
    `options`: the deeper-tier settings models are vetted with (part of the lock stamp);
    `failures`: source files whose reading crashed, `unread`: files not read at all (too large,
    unreadable); the references in either are missing evidence (ERROR)."""
    offline = offline_by_env() if offline is None else offline
    vet = vet or functools.partial(vet_reference, options=options)
    findings: list[Finding] = [
        _hook_finding("hook/unparsable-source", Severity.LOW, f"could not fully read {file}: {why}; "
                      "references in it may be missed", file=file, location=f"line {line}")
        for file, line, why in problems]
    findings += [_hook_finding("check/crashed", Severity.HIGH, f"could not read {file} for model references: "
                               f"{why}", file=file, error=True) for file, why in failures]
    findings += [_hook_finding("hook/unreadable-source", Severity.HIGH, f"{file} was not read for model "
                               f"references ({why}): the models it names are not vetted", file=file,
                               location="line 1", error=True, remediation="Split the file, or exclude a "
                               "data file that names no model from the hook.") for file, why in unread]
    # one verdict per (repo, revision as written), however many lines name it
    groups: dict[tuple[str, str], list[Reference]] = {}
    for ref in refs:
        if ref.suppresses("*"):
            findings.append(_hook_finding(
                "hook/suppressed-reference", Severity.INFO,
                f"{ref.repo_id} not vetted: suppressed by an inline hfguard: ignore", ref))
            continue
        if "/" not in ref.repo_id:
            if not ref.suppresses("hook/unqualified-reference"):
                findings.append(_hook_finding(
                    "hook/unqualified-reference", Severity.MEDIUM,
                    f"'{ref.repo_id}' is a legacy name without an owner: the Hub redirects it, and it "
                    "cannot be vetted or pinned as written", ref, model=ref.repo_id,
                    remediation="Write the full repo id (e.g. openai-community/gpt2 for gpt2)."))
            continue
        groups.setdefault((ref.repo_id, ref.revision or ""), []).append(ref)
    need_stamp = lock is not None and any(not policy.repo_listed(r, policy.deny) for r, _ in groups)
    stamp = stamp or (current_stamp(policy, options) if need_stamp else None)
    vetted: list[LockEntry] = []
    stale: list[Reference] = []
    entries = {key: lock.lookup(*key, stamp) if lock is not None and stamp else None for key in groups}
    to_vet = [key for key in sorted(groups) if entries[key] is None and not offline
              and not policy.repo_listed(key[0], policy.deny)]
    reports = _vet_all(to_vet, vet, policy, progress)
    for (repo, requested), group in sorted(groups.items()):
        if policy.repo_listed(repo, policy.deny):
            findings += [denied_finding(repo, policy, r.file, r.location) for r in group]
            continue
        entry = entries[(repo, requested)]
        if entry is None:
            stale += group
            if offline:
                # what the name alone says needs no network: a look-alike is named even offline
                early = name_findings(repo, policy, deny=False)
                findings += [f for r in group for f in carry_over(r, early, requested or None, policy)]
                findings += [_hook_finding(
                    "hook/not-locked", Severity.HIGH,
                    f"{repo}{'@' + requested if requested else ''} has no current entry in "
                    f"{lock.path.name if lock else 'hfguard.lock'} and HF_HUB_OFFLINE is set",
                    r, error=True, model=repo,
                    remediation="Run `hfguard lock` with network access and commit hfguard.lock.")
                    for r in group]
                continue
            report = reports[(repo, requested)]
            model_findings, revision = report.all_findings(), report.revision
            if report.revision and stamp and report.verdict is not Verdict.ERROR:
                # missing evidence is looked for again next time, never pinned
                vetted.append(entry_from_report(repo, requested, report, policy, stamp))
        else:
            model_findings, revision = entry.to_findings(), entry.revision
        for r in group:
            findings += carry_over(r, model_findings, revision, policy)
            if not r.pinned and not r.suppresses("hook/unpinned-reference"):
                findings.append(_hook_finding(
                    "hook/unpinned-reference", Severity.LOW,
                    f"{repo} is not pinned to a commit" +
                    (f" ('{requested}' can move)" if requested else "") +
                    (f"; vetted at {revision}" if revision else ""), r,
                    model=repo, revision=revision,
                    remediation=f"Pin it: revision=\"{revision or '<commit sha>'}\" "
                                "(or org/name@<sha>), so what was vetted is what loads."))
    report = Report(target="model references", source="hook", findings=findings)
    finalize(report, policy)
    report.stats = {"files": len({r.file for r in refs}) if files is None else files,
                    "references": len(refs),
                    "models": len(groups), "vetted": len(vetted)}
    return RefsResult(report=report, vetted=vetted, stale=stale)


def _vet_all(keys: list[tuple[str, str]], vet: Vet, policy: Policy,
             progress: Callable[[str], None]) -> dict[tuple[str, str], Report]:
    """Vet models on the Hub, a few at a time (each is mostly waiting on the network)."""
    def one(key: tuple[str, str]) -> Report:
        repo, requested = key
        progress(f"vetting {repo}{'@' + requested if requested else ''}")
        return vet(repo, requested or None, policy)

    if len(keys) <= 1:
        return {k: one(k) for k in keys}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, len(keys))) as pool:
        return dict(zip(keys, pool.map(one, keys), strict=True))


def refs_hook(files: Iterable[str], policy: Policy, lock: Lockfile | None, *, update_lock: bool = False,
              offline: bool | None = None, vet: Vet | None = None, options: dict | None = None,
              progress: Callable[[str], None] = lambda msg: None) -> Report:
    """`hfguard hook refs FILES`: extract, vet (lock first), optionally record new verdicts."""
    got: Extraction = extract(files)
    result = vet_references(got.references, policy, lock, offline=offline, vet=vet, options=options,
                            progress=progress, problems=got.problems, files=got.files,
                            failures=got.failures, unread=got.unread)
    if update_lock and lock is not None and result.vetted:
        for entry in result.vetted:
            lock.put(entry)
        lock.save()
        progress(f"recorded {len(result.vetted)} verdict(s) in {lock.path}")
    return result.report


def escaping_link(path: str, target: str) -> Finding | None:
    """A committed symlink whose target leaves the repository (absolute, or `..` past its root):
    git stores only the path, so what loads there is whatever the machine that checks the commit
    out holds at that path, which no hook can vet. `path` is relative to the repository root."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if not (target.startswith("/") or joined == ".." or joined.startswith("../")):
        return None
    return Finding(check="hook", rule="file/symlink-outside-root", severity=Severity.MEDIUM, file=path,
                   message=f"symlink to {target}, outside the repository: what loads here is whatever "
                           "that path holds on the machine that checks this commit out (not vetted)",
                   evidence={"link": path, "target": target})


def files_hook(files: Iterable[str], policy: Policy, *, budget_seconds: float = 60.0,
               options: dict | None = None,
               progress: Callable[[str], None] = lambda msg: None) -> Report:
    """`hfguard hook files FILES`: scan the model files among them, locally. A file is a model
    file by its content (`sniff.carries_model`: a pickle named checkpoint.dat is one), or by a
    model-file extension. A symlink that leaves the repository is a finding (`escaping_link`)."""
    from hfguard.checks import checks_for_tiers
    from hfguard.engine import scan
    from hfguard.target import local_target

    files = list(files)
    odd = [x for f in files if os.path.islink(f)
           and (x := escaping_link(Path(f).as_posix(), os.readlink(f))) is not None]
    paths = [f for f in files if _is_model_file(Path(f))]
    if not paths:
        report = Report(target="model files", source="hook", findings=odd)
        finalize(report, policy)
        report.stats = {"files": 0}
        return report
    report = scan(local_target(paths), policy, checks_for_tiers(policy.tiers), progress=progress,
                  budget_seconds=budget_seconds, options=options)
    if odd:
        report.findings += odd
        finalize(report, policy)
    return report


def _is_model_file(path: Path) -> bool:
    """Sniff a few hundred bytes (a file that cannot be read is scanned: the scan reports why)."""
    if not path.is_file():   # a dangling link named like weights is missing evidence (the scan says so)
        return path.is_symlink() and path.name.lower().endswith(MODEL_SUFFIXES)
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return True
    return carries_model(head, path.name)
