"""Run checks over a target and turn their findings into verdicts. Nothing here knows a format."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable

from hfguard.budget import BudgetExceeded
from hfguard.card import card_metadata
from hfguard.checks import Check, ScanContext
from hfguard.findings import FileReport, Finding, Report, Severity
from hfguard.policy import Policy
from hfguard.sniff import HDF5, HDF5_SUFFIXES, hdf5_after_userblock, sniff
from hfguard.target import Target, TargetFile

SNIFF_BYTES = 600  # enough for the tar magic at offset 257


def run_checks(check: Check, what: str, call: Callable[[], Iterable[Finding]],
               file: str | None = None) -> list[Finding]:
    """Collect a check's findings; a crash or timeout becomes an error finding, never silence."""
    try:
        return list(call())
    except BudgetExceeded as exc:
        rule, msg = "check/timeout", f"{check.id} gave up on {what}: {exc}"
    except MemoryError:
        rule, msg = "check/out-of-memory", f"{check.id} ran out of memory on {what}"
    except Exception as exc:  # noqa: BLE001 - any failure must become a finding
        named = getattr(exc, "rule", None)
        if isinstance(named, str):  # a failure that names its rule (a Hub read: hub/read-failed ...)
            return [Finding(check=check.id, rule=named, severity=Severity.HIGH,
                            message=f"{check.id} could not read {what}: {exc}", file=file, error=True)]
        rule, msg = "check/crashed", f"{check.id} failed on {what}: {type(exc).__name__}: {exc}"
        import traceback  # (with textwrap: only when a check crashed)

        tb = traceback.format_exc(limit=6)
        return [Finding(check=check.id, rule=rule, severity=Severity.HIGH, message=msg,
                        file=file, error=True, evidence={"traceback": tb})]
    return [Finding(check=check.id, rule=rule, severity=Severity.HIGH, message=msg, file=file,
                    error=True)]


def scan_file(file: TargetFile, checks: list[Check], ctx: ScanContext) -> FileReport:
    try:
        fmt = sniff(file.head(SNIFF_BYTES), file.name, file.size)
        if fmt != HDF5 and file.name.lower().endswith(HDF5_SUFFIXES):  # a user block before the superblock
            with file.open() as fh:
                fmt = HDF5 if hdf5_after_userblock(fh, file.size) else fmt
    except OSError as exc:
        report = FileReport(path=file.path, format="unreadable", size=file.size)
        # a remote read says why it failed (hub/gated, hub/read-failed ...): keep its rule
        named = getattr(exc, "rule", None)
        rule = named if isinstance(named, str) else "file/unreadable"
        report.findings.append(Finding(check="engine", rule=rule, severity=Severity.HIGH,
                                       message=f"cannot read {file.path}: {exc}", file=file.path,
                                       error=True))
        return report
    file.meta["format"] = fmt   # for target-level checks that ask what a model carries
    report = FileReport(path=file.path, format=fmt, size=file.size, sha256=file.expected_sha256)
    report.findings += file.meta.get("findings", [])   # evidence the path itself gave (a symlink)
    for check in checks:
        if check.applies_to(file, fmt):
            report.findings += run_checks(
                check, file.path, functools.partial(check.check_file, file, fmt, ctx), file=file.path)
    return report


def scan(target: Target, policy: Policy, checks: list[Check], *,
         options: dict | None = None, progress: Callable[[str], None] = lambda msg: None,
         budget_seconds: float = 60.0) -> Report:
    started = time.monotonic()
    ctx = ScanContext(policy=policy, target=target, options=options or {}, progress=progress,
                      budget_seconds=budget_seconds, checks=tuple(c.id for c in checks))
    if not target.card:   # a local folder's README front matter, read once for every check
        target.card = card_metadata(target)
    report = Report(target=target.display, source=target.source, revision=target.revision,
                    checks=[{"id": c.id, "tier": c.tier, "version": c.version} for c in checks],
                    card=_json_safe(target.card))
    report.findings += target.meta.get("findings", [])  # evidence gathered while resolving
    if not checks:
        report.findings.append(Finding(check="engine", rule="scan/no-checks", severity=Severity.HIGH,
                                       message=f"no checks for tiers {list(policy.tiers)}",
                                       error=True))
    if not target.files:
        report.findings.append(Finding(check="engine", rule="scan/no-files", severity=Severity.HIGH,
                                       message=f"nothing to scan in {target.name}", error=True))
    for i, file in enumerate(target.files, 1):
        progress(f"[{i}/{len(target.files)}] {file.path}")
        report.files.append(scan_file(file, checks, ctx))
    with ctx.resources:   # shared by target checks (the weights tier's shard streams): ends here
        for check in checks:
            report.findings += run_checks(check, target.display,
                                          functools.partial(check.check_target, target, ctx))
    keys = {f.path: f.key for f in target.files if f.key}
    for finding in report.all_findings():
        if finding.file in keys and finding.file_key is None:
            finding.file_key = keys[finding.file]
    finalize(report, policy)
    report.stats = {"files": len(report.files),
                    "bytes": sum(f.size or 0 for f in report.files),
                    "seconds": round(time.monotonic() - started, 3)}
    return report


def _json_safe(card: dict) -> dict:
    """Card metadata as plain JSON values (YAML front matter may hold dates and other objects)."""
    import json

    return json.loads(json.dumps(card, default=str))


def finalize(report: Report, policy: Policy) -> None:
    """Verdicts per file and overall; findings sorted worst first for readers."""
    for fr in report.files:
        fr.findings.sort(key=lambda f: (-int(f.severity), f.rule))
        fr.verdict = policy.verdict_of(fr.findings)
    report.findings.sort(key=lambda f: (-int(f.severity), f.rule))
    report.verdict = policy.verdict_of(report.all_findings())
