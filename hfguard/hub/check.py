"""`check_repo`: vet one Hub model, pinned to a commit: cache -> resolve -> range reads -> checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hfguard.card import declared_bases
from hfguard.checks import options_fingerprint
from hfguard.findings import Finding, Report, Severity
from hfguard.hub.http import DeadlineExceeded, check_deadline, current, grow_for_download
from hfguard.hub.resolve import (
    SHA_RE,
    HubError,
    HubFile,
    display_name,
    hub_files,
    hub_target,
    is_offline,
    list_files,
    parse_ref,
    record_ref,
    resolve,
    scan_memo,
    set_files,
)
from hfguard.policy import Policy
from hfguard.units import human_bytes


def error_report(spec: str, exc: HubError, checks: list[dict[str, str]], policy: Policy,
                 early: list[Finding] | None = None) -> Report:
    """The report of a check the Hub stopped; `early`: what was found before any network (names)."""
    from hfguard.engine import finalize

    report = Report(target=spec, source="hub", checks=checks)
    report.findings.append(Finding(check="hub", rule=exc.rule, severity=Severity.HIGH, message=str(exc),
                                   error=True, remediation=_remedy(exc.rule)))
    report.findings += early or []
    finalize(report, policy)
    report.stats = {"files": 0, "bytes": 0, "cached": False}
    return report


def _remedy(rule: str) -> str | None:
    return {
        "hub/gated": "Accept the model's terms on its Hub page and set HF_TOKEN (or run `hf auth login`).",
        "hub/repo-not-found": "Check the repo id; for a private repo set HF_TOKEN.",
        "hub/revision-not-found": "Check the branch, tag or commit sha after '@'.",
        "hub/offline-not-cached": "Run once online (or unset HF_HUB_OFFLINE) to cache the model.",
        "provenance/hash-mismatch": "Do not load this file: the bytes served are not the ones the Hub lists.",
    }.get(rule)


def fetch_error_finding(exc: Exception, hf: HubFile) -> Finding:
    from hfguard.hub.fetch import IntegrityError

    if isinstance(exc, IntegrityError):
        return Finding(check="hub", rule=exc.rule, severity=Severity.CRITICAL, message=str(exc),
                       file=hf.path, evidence=dict(exc.evidence), error=True,
                       remediation=_remedy(exc.rule))
    rule = getattr(exc, "rule", "hub/download-failed")
    return Finding(check="hub", rule=rule, severity=Severity.HIGH, message=str(exc), file=hf.path,
                   error=True, remediation=_remedy(rule))


def check_repo(spec: str, policy: Policy, *, use_cache: bool = True, download: bool = False,
               token: str | bool | None = None, options: dict[str, Any] | None = None,
               progress: Callable[[str], None] = lambda m: None, budget_seconds: float = 60.0,
               deadline_seconds: float | None = None) -> Report:
    """Vet `org/model[@revision]`. Never raises for Hub trouble: that is an ERROR report.

    options["context"] == "hook" marks a pre-commit run (an unpinned reference is then a finding).
    `deadline_seconds` bounds all Hub traffic of this check, retries and waits included (default:
    hfguard.hub.http.check_deadline, which grows with what the check downloads; 0 or less: none),
    never past the deadline of an enclosing check.
    """
    deadline = check_deadline(deadline_seconds, download)
    outer = current()   # a check inside a check (a lineage hop) never outlives the outer one
    if outer.end is not None and (deadline.end is None or outer.end < deadline.end):
        deadline = outer
    with deadline.active(), scan_memo():   # a hop or a base named twice is fetched once
        return _check_repo(spec, policy, use_cache=use_cache, download=download, token=token,
                           options=options, progress=progress, budget_seconds=budget_seconds)


def _check_repo(spec: str, policy: Policy, *, use_cache: bool, download: bool, token: str | bool | None,
                options: dict[str, Any] | None, progress: Callable[[str], None],
                budget_seconds: float) -> Report:
    from hfguard.checks import checks_for_tiers
    from hfguard.engine import finalize, scan
    from hfguard.hub.cache import VerdictCache, cache_key, manifest
    from hfguard.hub.remote import TransferStats
    from hfguard.static.provenance import name_findings

    checks = checks_for_tiers(policy.tiers)
    check_meta = [{"id": c.id, "tier": c.tier, "version": c.version} for c in checks]
    options = dict(options or {})
    # every option that can change the evidence (--base, --reference, --probe-data by content,
    # context) is part of the key, so a cached verdict never stands in for a scan that asked for more;
    # --device is not (it changes where numbers are computed, not what they say)
    key_options: dict[str, Any] = {"download": download, "context": options.get("context"),
                                   "inputs": options_fingerprint(options)}
    cache = VerdictCache() if use_cache else None
    early: list[Finding] = []
    late: list[Finding] = []
    try:
        repo_id, rev = parse_ref(spec)
        # the name alone (look-alike, deny list, known-bad) needs no network: reported even if it fails
        early = name_findings(repo_id, policy)
        if options.get("context") == "hook":   # the verdict there depends on the reference being pinned
            key_options["pinned"] = bool(rev and SHA_RE.fullmatch(rev))
        pinned_online = bool(rev and SHA_RE.fullmatch(rev)) and not is_offline()
        if cache and pinned_online:   # a pinned sha: the listing alone names the content
            files = hub_files(repo_id, str(rev), token=token, progress=progress)
            key = cache_key(repo_id, str(rev), check_meta, policy.fingerprint(), policy.tiers, key_options,
                            manifest(files))
            if hit := _cached(cache, key, display_name(repo_id, rev), progress):
                return hit
        resolved = resolve(spec, token=token, with_files=False, progress=progress)
        if resolved.meta.get("offline"):
            if download:   # re-hash the cached bytes before anything trusts their names
                progress(f"verifying {len(resolved.files)} cached files against their content hashes…")
                late, resolved.files = verify_cached(resolved)
        elif cache and pinned_online:
            set_files(resolved, files)
        else:
            list_files(resolved, token=token, progress=progress)
        # keyed by what the verdict is computed on: the commit and every file's content hash
        key = cache_key(resolved.repo_id, resolved.sha, check_meta, policy.fingerprint(), policy.tiers,
                        key_options, manifest(resolved.files))
        if cache and not late and (hit := _cached(cache, key, display_name(repo_id, rev), progress)):
            return hit
    except HubError as exc:
        return error_report(spec, exc, check_meta, policy, early)
    except DeadlineExceeded as exc:   # normally translated already; never a crash
        return error_report(spec, HubError(str(exc), rule="hub/timeout"), check_meta, policy, early)

    stats = TransferStats()
    target = hub_target(resolved, stats=stats, token=token,
                        on_fetch_error=lambda exc, hf: late.append(fetch_error_finding(exc, hf)))
    repo_bytes = sum(f.size for f in target.files)
    if download or WHOLE_FILE_TIERS & set(policy.tiers):
        grow_for_download(repo_bytes, f"the {len(target.files)} files of {resolved.repo_id}", progress)
    if download and not resolved.meta.get("offline"):
        progress(f"downloading {len(target.files)} files ({human_bytes(repo_bytes)}) into the HF cache…")
        for tf in target.files:
            try:
                tf.materialize()
            except Exception:  # noqa: BLE001 - recorded through on_fetch_error
                pass
        record_ref(resolved)
    if not download:
        progress(f"reading headers of {len(target.files)} files ({human_bytes(repo_bytes)} in all) "
                 f"by HTTP range requests…")
    report = scan(target, policy, checks, options=options, progress=progress, budget_seconds=budget_seconds)
    report.target = target.name   # the engine writes repo@sha; the sha is already Report.revision
    if late:
        seen = {(f.rule, f.file) for f in report.findings}
        report.findings += [f for f in late if (f.rule, f.file) not in seen]
        finalize(report, policy)
    report.stats.update({
        "bases": declared_bases(resolved.card),   # the next hops of a lineage walk
        "cached": False, "offline": bool(resolved.meta.get("offline")),
        "repo_bytes": repo_bytes, "bytes_transferred": stats.bytes, "requests": stats.requests,
        "downloaded_files": stats.downloaded_files,
        "fraction_transferred": round(stats.bytes / repo_bytes, 6) if repo_bytes else 0.0,
    })
    progress(f"read {human_bytes(stats.bytes)} of {human_bytes(repo_bytes)} in {stats.requests} "
             "range requests"
             + (f", downloaded {stats.downloaded_files} files" if stats.downloaded_files else ""))
    if cache and cache.put(key, report):
        progress("verdict cached")
    return report


# tiers that read whole weight files (downloaded as they go), not only headers by Range
WHOLE_FILE_TIERS = {"weights", "behavior"}


def verify_cached(resolved: Any) -> tuple[list[Finding], list[HubFile]]:
    """Offline --download: the local snapshot's bytes against the hashes the cache names them by.

    Returns the findings and the files still fit to scan: a blob whose bytes do not match its
    name is removed from the HF cache (link and blob) so that nothing loads it later.
    """
    from hfguard.hub.fetch import IntegrityError, evict, verify
    from hfguard.hub.remote import HubReadError

    found: list[Finding] = []
    kept: list[HubFile] = []
    for hf in resolved.files:
        try:
            if not (hf.lfs_sha256 or hf.blob_id):   # a plain file in the snapshot: nothing vouches for it
                raise HubReadError(f"{hf.path}: not a link to a content-addressed blob in the cache; its "
                                   "bytes cannot be verified offline", rule="hub/unverifiable-cached-file")
            verify(hf.local, hf.path, sha256=hf.lfs_sha256, blob_id=hf.blob_id, size=None)
        except IntegrityError as exc:
            evict(hf.local)
            found.append(fetch_error_finding(exc, hf))
            continue
        except OSError as exc:
            found.append(fetch_error_finding(exc, hf))
        kept.append(hf)
    return found, kept


def _cached(cache: Any, key: str, name: str, progress: Callable[[str], None]) -> Report | None:
    hit = cache.get(key)
    if hit is not None:
        hit.target = name
        hit.stats = {**hit.stats, "cached": True, "bytes_transferred": 0, "requests": 0}
        progress(f"cached verdict for {hit.target}: {hit.verdict}")
    return hit
