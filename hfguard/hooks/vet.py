"""Vet one model reference: the single door from the hook, the lock and the runtime guard to the
Hub checks. Everything above it deals in (repo_id, revision) pairs and Reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hfguard.findings import Finding, Report, Severity
from hfguard.policy import Policy

Vet = Callable[[str, "str | None", Policy], Report]


def with_tiers(policy: Policy, tiers: tuple[str, ...] | list[str] | None) -> Policy:
    return dataclasses.replace(policy, tiers=tuple(tiers)) if tiers else policy


def denied_finding(repo_id: str, policy: Policy, file: str | None = None,
                   location: str | None = None) -> Finding:
    return Finding(check="hook", rule="hook/denied-repo", severity=Severity.CRITICAL,
                   message=f"{repo_id} is denied by policy ({policy.source or 'deny list'})",
                   file=file, location=location, evidence={"model": repo_id}, anchor=f"model {repo_id}",
                   remediation="Use a model the policy allows, or change the policy's deny list.")


def vet_reference(repo_id: str, revision: str | None, policy: Policy,
                  tiers: tuple[str, ...] | list[str] | None = None, *,
                  progress: Callable[[str], None] = lambda msg: None,
                  budget_seconds: float = 60.0, options: dict | None = None) -> Report:
    """Resolve `repo_id@revision` to a pinned sha on the Hub and run the policy's checks on it.

    `options`: deeper-tier settings (--base, --device ...), as `hfguard check` passes them.
    A denied repo is BLOCKed without any network. The returned Report's `revision` is the
    commit sha that was vetted (None only when resolution failed: the verdict is then ERROR).
    """
    policy = with_tiers(policy, tiers)
    if policy.repo_listed(repo_id, policy.deny):
        report = Report(target=repo_id, source="hub", revision=revision, findings=[
            denied_finding(repo_id, policy)])
        from hfguard.engine import finalize

        finalize(report, policy)
        return report
    from hfguard.hub.check import check_repo  # resolve to a sha, range-read, scan, verdict cache

    spec = f"{repo_id}@{revision}" if revision else repo_id
    return check_repo(spec, policy, progress=progress, budget_seconds=budget_seconds, options=options)
