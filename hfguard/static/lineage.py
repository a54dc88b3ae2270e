"""Lineage: what a model says it was derived from (`base_model` in its card), hop by hop.

Each declared base is named-checked offline (known-bad repos, the policy's deny list, look-alikes
of popular repos): a fine-tune of a known-bad or look-alike base is as suspect as the base. For Hub
targets each hop is also resolved to its commit sha and vetted at the static tier (verdict cache
honoured), following the chain up to `max-depth` hops; a hop that cannot be reached is reported,
not an error — the model's own files were still scanned. The chain (repo, sha, verdict per hop) is
in the `lineage/chain` finding's evidence, so it shows in JSON and SARIF.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from hfguard.card import card_metadata, declared_bases
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Severity, Verdict
from hfguard.static.provenance import known_bad_repo, lookalikes
from hfguard.target import Target

MAX_DEPTH = 4
MAX_BASES_PER_HOP = 8


class LineageCheck(Check):
    id = "static.lineage"
    tier = "static"
    version = "1"
    description = "base_model chain: known-bad, denied and look-alike bases; each hop vetted (Hub)"

    def check_target(self, target: Target, ctx: ScanContext) -> Iterator[Finding]:
        if ctx.options.get("lineage") is False:   # vetting a hop: the walk above follows the chain
            return
        bases = declared_bases(card_metadata(target))[:MAX_BASES_PER_HOP]
        if not bases:
            return
        chain: list[dict[str, Any]] = []
        seen = {(target.repo_id or target.name).lower()}
        hops = [(b, 1, target.display) for b in bases]
        online = target.source == "hub" and not target.meta.get("offline")
        max_depth = int(ctx.threshold(self.id, "max-depth", MAX_DEPTH))
        while hops:
            base, depth, child = hops.pop(0)
            if base.lower() in seen:
                continue
            seen.add(base.lower())
            yield from self._names(base, child, ctx)
            hop: dict[str, Any] = {"repo": base, "depth": depth, "base_of": child}
            if online:
                report = self._vet(base, ctx)
                hop.update(sha=report.revision, verdict=str(report.verdict))
                yield from self._verdict(base, child, report)
                if report.verdict is not Verdict.ERROR and depth < max_depth:
                    hops += [(b, depth + 1, base) for b in report.stats.get("bases", [])[:MAX_BASES_PER_HOP]]
            chain.append(hop)
        yield self.finding("lineage/chain", Severity.INFO,
                           f"{target.display} declares {len(chain)} base model(s): "
                           + " <- ".join(h["repo"] for h in chain),
                           evidence={"chain": chain, "vetted": online})

    def _names(self, base: str, child: str, ctx: ScanContext) -> Iterator[Finding]:
        ev = {"base": base, "base_of": child}
        bad = known_bad_repo(base)
        if bad:
            yield self.finding("lineage/known-bad-base", Severity.CRITICAL,
                               f"{child} declares the known-bad repo {base} as its base: "
                               f"{bad.get('reason', '')}",
                               evidence=ev, remediation="Do not use a model derived from a known-bad base.")
        if ctx.policy.repo_listed(base, ctx.policy.deny):
            yield self.finding("lineage/denied-base", Severity.HIGH,
                               f"{child} declares {base}, on the policy deny list, as its base", evidence=ev)
        if ctx.policy.repo_listed(base, ctx.policy.allow):
            return
        hits = lookalikes(base)
        if hits:
            real, how, _sev, evidence = hits[0]
            yield self.finding("lineage/lookalike-base", Severity.HIGH,
                               f"{child} declares {base} as its base, a look-alike of the popular "
                               f"{real} ({how})",
                               evidence={**ev, "imitates": real, **evidence},
                               remediation=f"Check the base: a derivative of {real} would name {real}.")

    def _vet(self, base: str, ctx: ScanContext) -> Any:
        from hfguard.hub.check import check_repo

        static_only = dataclasses.replace(ctx.policy, tiers=("static",))
        ctx.progress(f"{self.id}: vetting base model {base}")
        return check_repo(base, static_only, options={"lineage": False}, budget_seconds=ctx.budget_seconds)

    def _verdict(self, base: str, child: str, report: Any) -> Iterator[Finding]:
        ev = {"base": base, "base_of": child, "sha": report.revision, "verdict": str(report.verdict)}
        # unresolved (no commit): its name findings, the only possible BLOCK, are this check's own
        if report.verdict is Verdict.ERROR or report.revision is None:
            reasons = [f.message for f in report.all_findings() if f.error][:3]
            yield self.finding("lineage/base-unavailable", Severity.LOW,
                               f"base model {base} of {child} could not be vetted: {'; '.join(reasons)}",
                               evidence=ev)
        elif report.verdict is Verdict.BLOCK:
            worst = [f"{f.rule}: {f.message}" for f in report.all_findings()
                     if f.severity >= Severity.HIGH][:3]
            yield self.finding("lineage/unsafe-base", Severity.HIGH,
                               f"base model {base} of {child} is BLOCKed at the static tier: "
                               f"{'; '.join(worst)}",
                               evidence={**ev, "findings": worst},
                               remediation=f"Run `hfguard check {base}` for details; a model derived from "
                               "an unsafe base inherits its risk.")
        elif report.verdict is Verdict.FLAG:
            yield self.finding("lineage/flagged-base", Severity.LOW,
                               f"base model {base} of {child} is FLAGged at the static tier", evidence=ev)
