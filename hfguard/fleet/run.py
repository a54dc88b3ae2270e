"""Vet many Hub repos on Ray: one task per repo per tier, results written as they arrive.

Ray is embedded in-process by default (`ray.init()` with this machine's CPUs; nothing to set up)
or joined by address (`--ray-address`). Each task runs `hfguard.hub.check.check_repo` for one
repo and one tier, so a fleet verdict is exactly the single-repo `check` verdict: the tiers'
reports are merged and judged by the same policy. Static tasks take a CPU and import no torch;
deeper tiers ask for a GPU when the cluster has one. A rerun skips every repo whose result was
recorded under the same stamp (tiers, checks, signatures, policy, inputs); Ray retries a task
whose worker died. Hub rate limits (429 + Retry-After) are waited out inside each task's retry
loop; a repo that still ends rate-limited is put back in the queue and the fleet slows down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfguard.findings import FileReport, Finding, Report, Severity, Verdict
from hfguard.fleet.results import ResultStore
from hfguard.policy import Policy

DEEPER_TIERS = ("weights", "behavior")
RATE_LIMIT_RULES = ("hub/rate-limited",)
MAX_REQUEUES = 3
START_ATTEMPTS = 3
# environment the workers need to reach the same Hub, caches and code as the driver
_FORWARDED_ENV = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY",
                  "HF_TOKEN", "TRANSFORMERS_OFFLINE", "PYTHONPATH")


@dataclass
class FleetResult:
    summary: dict[str, Any]
    verdict: Verdict          # the worst over the fleet
    skipped: int              # recorded by an earlier run under the same stamp


def fleet_stamp(policy: Policy, options: dict[str, Any] | None) -> str:
    from hfguard.hooks.lockfile import current_stamp

    stamp = dataclasses.asdict(current_stamp(policy, options))
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:16]


def vet_one(spec: str, policy: Policy, options: dict[str, Any], token: str | None,
            budget_seconds: float) -> dict[str, Any]:
    """One repo, the policy's tiers: what a Ray task runs. Never raises: a failure is an ERROR report."""
    try:
        from hfguard.hub.check import check_repo

        report = check_repo(spec, policy, options=options, token=token, budget_seconds=budget_seconds)
        doc = report.to_dict()
    except Exception as exc:  # noqa: BLE001 - a crashed task is evidence not gathered: ERROR
        doc = Report(target=spec, source="hub", verdict=Verdict.ERROR, findings=[Finding(
            check="fleet", rule="fleet/task-failed", severity=Severity.HIGH, error=True,
            message=f"vetting {spec} failed: {type(exc).__name__}: {exc}")]).to_dict()
    return doc


def merge_tiers(docs: list[dict[str, Any]], policy: Policy) -> Report:
    """One report from the per-tier reports of one repo (files and findings united, verdict anew)."""
    from hfguard.engine import finalize
    from hfguard.hub.cache import report_from_dict

    reports = [report_from_dict(d) for d in docs]
    merged = Report(target=reports[0].target, source=reports[0].source, revision=reports[0].revision,
                    card=reports[0].card)
    files: dict[str, FileReport] = {}
    seen: set[tuple[Any, ...]] = set()
    for r in reports:
        merged.checks += [c for c in r.checks if c not in merged.checks]
        for f in r.findings:
            key = (f.rule, f.file, f.location, f.message)
            if key not in seen:
                seen.add(key)
                merged.findings.append(f)
        for fr in r.files:
            into = files.setdefault(fr.path, FileReport(path=fr.path, format=fr.format, size=fr.size,
                                                        sha256=fr.sha256))
            into.findings += [f for f in fr.findings if f not in into.findings]
        for k, v in r.stats.items():
            merged.stats.setdefault(k, v)
    merged.files = list(files.values())
    finalize(merged, policy)
    return merged


def _rate_limited(doc: dict[str, Any]) -> bool:
    return doc.get("verdict") == "ERROR" and any(
        f.get("rule") in RATE_LIMIT_RULES for f in doc.get("findings", []))


def _init_ray(address: str | None, num_cpus: int | None) -> tuple[Any, bool]:
    """Ray, and whether this call started it (then the fleet shuts it down when done)."""
    import ray

    if ray.is_initialized():
        return ray, False
    env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith("HFGUARD_")})
    if address:
        env = {k: v for k, v in env.items() if k in ("HF_ENDPOINT", "HF_HUB_DISABLE_TELEMETRY")}
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        return ray, True
    # a local node can miss its own start-up deadline on a machine under heavy load (its agent
    # process starts too slowly): try again before giving up
    for attempt in range(START_ATTEMPTS):
        try:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env})
            return ray, True
        except Exception:  # noqa: BLE001 - Ray raises a bare Exception when its node times out
            ray.shutdown()
            if attempt == START_ATTEMPTS - 1:
                raise
            time.sleep(2.0)
    raise AssertionError("unreachable")


def run_fleet(specs: list[str], policy: Policy, output: Path, *, options: dict[str, Any] | None = None,
              token: str | None = None, ray_address: str | None = None, num_cpus: int | None = None,
              refresh: bool = False, budget_seconds: float = 60.0,
              progress: Callable[[dict[str, Any]], None] = lambda event: None) -> FleetResult:
    """Vet `specs`, appending each repo's merged report to output/results.jsonl as it completes."""
    started = time.monotonic()
    options = dict(options or {})
    stamp = fleet_stamp(policy, options)
    store = ResultStore.open(output)
    pending = [s for s in specs if refresh or store.current(s, stamp) is None]
    skipped = len(specs) - len(pending)
    recorded = set(specs) - set(pending)
    counts: Counter[str] = Counter(store.done[s]["verdict"] for s in recorded)
    progress({"total": len(specs), "done": skipped, "verdicts": dict(counts)})
    extra: dict[str, Any] = {"skipped": skipped, "stamp": stamp, "tiers": list(policy.tiers)}
    if pending:
        ray, owns = _init_ray(ray_address, num_cpus)
        try:
            resources = ray.cluster_resources()
            gpus = resources.get("GPU", 0) > 0
            extra.update(ray_nodes=len(ray.nodes()), ray_cpus=resources.get("CPU", 0), gpus=gpus)
            static_task = ray.remote(num_cpus=1, max_retries=3)(vet_one)
            deep_task = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=3)(vet_one)
            _drive(ray, pending, policy, options, token, budget_seconds, static_task, deep_task, store, stamp,
                   counts, skipped, len(specs), progress)
        finally:
            if owns:
                ray.shutdown()
    store.compact()
    summary = store.write_summary(specs, time.monotonic() - started, extra)
    order = {"PASS": 0, "FLAG": 1, "BLOCK": 2, "ERROR": 3}
    worst = max((store.done[s]["verdict"] for s in specs if s in store.done), key=order.__getitem__,
                default="PASS")
    return FleetResult(summary=summary, verdict=Verdict(worst), skipped=skipped)


def _drive(ray: Any, pending: list[str], policy: Policy, options: dict[str, Any], token: str | None,
           budget: float, static_task: Any, deep_task: Any, store: ResultStore, stamp: str,
           counts: Counter[str], done: int, total: int, progress: Callable[[dict[str, Any]], None]) -> None:
    """Keep a bounded window of repos in flight; merge each repo's tier reports when all are back."""
    tiers = [t for t in policy.tiers if t == "static"]
    deeper = [t for t in policy.tiers if t in DEEPER_TIERS]
    window = max(2, int(ray.cluster_resources().get("CPU", 1)) * 4)
    queue = list(pending)
    requeues: Counter[str] = Counter()
    in_flight: dict[Any, tuple[str, int]] = {}      # object ref -> (spec, slot)
    parts: dict[str, list[dict[str, Any] | None]] = {}
    started: dict[str, float] = {}
    not_before = 0.0

    def submit(spec: str) -> None:
        calls = [(static_task, (*tiers,))] if tiers else []
        calls += [(deep_task, (t,)) for t in deeper]
        parts[spec] = [None] * len(calls)
        started[spec] = time.monotonic()
        for slot, (task, tier_set) in enumerate(calls):
            tier_policy = dataclasses.replace(policy, tiers=tier_set)
            in_flight[task.remote(spec, tier_policy, options, token, budget)] = (spec, slot)

    while queue or in_flight:
        while queue and len({s for s, _ in in_flight.values()}) < window and time.monotonic() >= not_before:
            submit(queue.pop(0))
        if not in_flight:
            time.sleep(max(0.0, not_before - time.monotonic()))
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        for ref in ready:
            spec, slot = in_flight.pop(ref)
            parts[spec][slot] = ray.get(ref)
            if any(p is None for p in parts[spec]):
                continue
            docs = [p for p in parts.pop(spec) if p is not None]
            if any(_rate_limited(d) for d in docs) and requeues[spec] < MAX_REQUEUES:
                requeues[spec] += 1
                window = max(1, window // 2)                 # slow the whole fleet down
                not_before = time.monotonic() + 2.0 ** requeues[spec]
                queue.append(spec)
                continue
            doc = merge_tiers(docs, policy).to_dict() if len(docs) > 1 else docs[0]
            doc["fleet"] = {"spec": spec, "stamp": stamp, "tiers": list(policy.tiers),
                            "seconds": round(time.monotonic() - started.pop(spec), 3)}
            store.append(doc)
            counts[doc["verdict"]] += 1
            done += 1
            progress({"total": total, "done": done, "verdicts": dict(counts), "last": spec})
