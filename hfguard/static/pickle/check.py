"""`static.serialization`: is any pickle in this file unsafe to load?

Every pickle-bearing container is unpacked (`containers/`), every pickle is run through the
symbolic VM (`vm.py`), and every global it imports is classified against
`signatures/pickle_globals.yaml` (`rules.py`). Nothing is imported, called or unpickled.

Rule ids emitted (all described, with severities, in signatures/pickle_globals.yaml):
  pickle/dangerous-global  a denied global; severity from its rule, lower when only referenced
  pickle/unknown-global    on neither list (medium), e.g. a custom nn.Module class.
  pickle/malformed, pickle/truncated, pickle/trailing-data, pickle/limit-exceeded,
  pickle/non-string-global, pickle/unknown-extension, pickle/indirect-call, pickle/global-mutation,
  pickle/out-of-band-buffer, pickle/multiple-pickles, pickle/dunder-attribute,
  archive/bomb, archive/depth-exceeded, archive/malformed, archive/too-many-members, archive/unscannable,
  archive/unsupported-compression, zip/duplicate-member, zip/header-mismatch, zip/bad-crc,
  zip/flag-bits, zip/out-of-bounds, zip/unlisted-member, zip/unlisted-data, numpy/malformed-header,
  numpy/object-array, torch/legacy-layout
  pickle/whole-module (info)  a whole nn.Module of stock torch.nn classes rebuilt without constructor
                           calls: PASS, with the advice to ship a state dict
  torchscript/archive (info), torchscript/custom-op, torchscript/custom-class,
  torchscript/dangerous-call, torchscript/unreadable-code   (containers/torchscript.py)

Thresholds (policy ``[tool.hfguard.thresholds."static.serialization"]``): max-opcodes, max-memo,
max-depth, max-decompressed, max-ratio, max-members.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from hfguard import sniff as sn
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.pickle.containers import (
    SCANNED_FORMATS,
    ContainerScanner,
    PickleSite,
    ScanConfig,
    member_location,
)
from hfguard.static.pickle.rules import Classification, RuleSet, load_rules
from hfguard.static.pickle.vm import Global, Limits, SymDict
from hfguard.static.pickle.zipdir import ZIP_DIRECTORY
from hfguard.static.problems import lfs_pointer_problem

CHECK_ID = "static.serialization"
MAX_UNKNOWN_FINDINGS = 50  # per pickle; the rest are summarised in one finding
_DUNDER = re.compile(r"__\w+__")
_REMEDIATION = (
    "Do not load this file with pickle/torch.load(weights_only=False)/joblib.load. Ask for a "
    "safetensors version, or load with torch.load(weights_only=True) after reviewing the globals."
)


def config_from(ctx: ScanContext | None) -> ScanConfig:
    if ctx is None:
        return ScanConfig()

    def t(name: str, default: Any) -> Any:
        return ctx.threshold(CHECK_ID, name, default)

    d = ScanConfig()
    return ScanConfig(
        limits=Limits(
            max_opcodes=int(t("max-opcodes", d.limits.max_opcodes)),
            max_memo=int(t("max-memo", d.limits.max_memo)),
        ),
        max_depth=int(t("max-depth", d.max_depth)),
        max_decompressed=int(t("max-decompressed", d.max_decompressed)),
        max_ratio=float(t("max-ratio", d.max_ratio)),
        max_members=int(t("max-members", d.max_members)),
    )


def scan_stream_findings(
    check: Check,
    fh: Any,
    size: int | None,
    fmt: str,
    path: str,
    config: ScanConfig | None = None,
    budget: Budget | None = None,
) -> list[Finding]:
    """Scan one stream sniffed as `fmt`; the findings a `SerializationCheck` would report."""
    scanner = ContainerScanner(config, budget)
    scanner.scan(fh, size, fmt)
    return list(findings_of(check, scanner, path, load_rules()))


WHOLE_PICKLE = "whole-pickle"   # ctx.file_facts key: bool, see check_file


# names a pickle loader reads (archives: a checkpoint inside); the other model formats' own checks
# report a pointer in their place (safetensors/lfs-pointer ...)
_PICKLE_NAMES = (*sn.TORCH_SUFFIXES, ".pkl", ".pickle", ".joblib", ".dill", ".npy", ".npz", ".mar",
                 ".sav", ".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z")


class SerializationCheck(Check):
    id = CHECK_ID
    THRESHOLDS = {"max-opcodes": Limits.max_opcodes, "max-memo": Limits.max_memo,
                  "max-depth": ScanConfig.max_depth, "max-decompressed": ScanConfig.max_decompressed,
                  "max-ratio": ScanConfig.max_ratio, "max-members": ScanConfig.max_members}
    tier = "static"
    version = "1"
    description = (
        "Symbolic pickle VM over every pickle-bearing container (raw, torch zip/legacy, tar, "
        "numpy, joblib, compressed, nested); globals classified by signatures/pickle_globals.yaml"
    )

    def applies_to(self, file: Any, fmt: str) -> bool:
        # text/unknown files are tried too: a protocol 0 pickle is printable text
        # safetensors: only a pickle polyglot (a header length whose bytes are pickle opcodes)
        return fmt in SCANNED_FORMATS or fmt in (sn.TEXT, sn.UNKNOWN, sn.SAFETENSORS)

    def check_file(self, file: Any, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        if file.name.lower().endswith(_PICKLE_NAMES) and (pointer := lfs_pointer_problem(file, "pickle")):
            # the weights are not here: missing evidence (was a FLAG "named .bin but text", which
            # --fail-on block let through)
            return list(self.findings_from([pointer], file=file.path, error=True))
        scanner = ContainerScanner(config_from(ctx), ctx.budget())
        with file.open() as fh:
            scanner.scan(fh, file.size, fmt)
        first, facts = scanner.first_pickle, ctx.file_facts(file)
        # the format claims ask whether a text file is one whole pickle (decodes to STOP without an
        # anomaly): answered here, not decoded again
        facts[WHOLE_PICKLE] = first is not None and first.complete and not first.anomalies
        bounds = scanner.config.max_members, scanner.config.max_central_directory
        if scanner.file_zip is not None and bounds == (ScanConfig.max_members,
                                                       ScanConfig.max_central_directory):
            facts[ZIP_DIRECTORY] = (True, scanner.file_zip)
        return list(findings_of(self, scanner, file.path, load_rules()))


@dataclass
class _Agg:
    first: Global
    count: int = 0
    uses: set[str] = field(default_factory=set)
    ids: set[int] = field(default_factory=set)


def findings_of(check: Check, scanner: ContainerScanner, path: str, rules: RuleSet) -> Iterator[Finding]:
    judged = _judged_by_content(check, scanner, path, rules)
    for site in scanner.sites:
        archive = site.where.rsplit("!", 1)[0] if "!" in site.where else ""
        script = scanner.script_classes.get(archive, set())
        yield from _site_findings(check, site, path, rules, judged, script)
    yield from _observation_findings(check, scanner.observations, path, rules)


def _observation_findings(
    check: Check, observations: Iterable[Observation], path: str, rules: RuleSet
) -> Iterator[Finding]:
    yield from check.findings_from(
        observations, file=path, remediation=_REMEDIATION, severity_of=rules.severity_of
    )


def _judged_by_content(check: Check, scanner: ContainerScanner, path: str, rules: RuleSet) -> set[int]:
    """ids of loader globals (torch.storage._load_from_bytes) every call of which received a torch
    checkpoint that scanned clean (nothing above info): the nested scan judged them. Delegations
    complete inner-first, so a clean inner delegation counts when the outer one is judged."""
    clean: set[int] = set()
    dirty: set[int] = set()
    for d in scanner.delegations:
        ok = d.judged
        if ok:
            sites = (scanner.sites[i] for i in d.sites)
            found = [f for site in sites for f in _site_findings(check, site, path, rules, clean - dirty)]
            observations = (scanner.observations[i] for i in d.observations)
            found += _observation_findings(check, observations, path, rules)
            ok = all(f.severity <= Severity.INFO for f in found)
        (clean if ok else dirty).add(d.global_id)
    return clean - dirty


def _invoked_args(site: PickleSite, rules: RuleSet) -> set[int]:
    """ids of globals handed to callables that call what they receive (copyreg._reconstructor ...)."""
    out: set[int] = set()
    for call in site.result.calls:
        if not isinstance(call.func, Global):
            continue
        c = rules.classify(call.func.qualname, call.func.name)
        if c.rule is not None and c.rule.invokes_args:
            for arg in call.args if isinstance(call.args, tuple) else ():
                if isinstance(arg, Global):
                    out.add(id(arg))
    return out


def _rebuilt(site: PickleSite) -> set[int]:
    """ids of globals whose every call is a constructor-free rebuild: NEWOBJ with no arguments
    (cls.__new__(cls)), or copyreg._reconstructor(cls, object, None) / copyreg.__newobj__(cls).
    A global called any other way, handed to anything else, or mutated is left out."""
    good: set[int] = set()
    bad: set[int] = set()
    for call in site.result.calls:
        args = call.args if isinstance(call.args, tuple) else None
        func = call.func
        if isinstance(func, Global):
            plain_new = call.kind in ("newobj", "newobj_ex") and args == () and not _nonempty(call.kwargs)
            (good if plain_new else bad).add(id(func))
        for i, arg in enumerate(args or ()):
            if not isinstance(arg, Global):
                continue
            q = func.qualname if isinstance(func, Global) else ""
            reconstructor = (
                q == "copyreg._reconstructor"
                and i == 0
                and args is not None
                and len(args) == 3
                and isinstance(args[1], Global)
                and args[1].qualname == "builtins.object"
                and args[2] is None
            )
            newobj = q == "copyreg.__newobj__" and i == 0 and len(args or ()) == 1
            (good if reconstructor or newobj else bad).add(id(arg))
    mutated = {id(g) for g in site.result.globals if "mutated" in g.uses}
    return good - bad - mutated


def _nonempty(kwargs: Any) -> bool:
    if kwargs is None:
        return False
    if isinstance(kwargs, SymDict):
        return bool(kwargs.items)
    return kwargs != {}


def _site_findings(
    check: Check,
    site: PickleSite,
    path: str,
    rules: RuleSet,
    judged: AbstractSet[int] = frozenset(),
    script: AbstractSet[str] = frozenset(),
) -> Iterator[Finding]:
    """`judged`: ids of loader globals a nested scan judged clean; `script`: the __torch__ classes
    the TorchScript archive holding this pickle defines in its own (analysed) code."""
    res = site.result
    for a in res.anomalies:
        yield check.finding(
            a.rule,
            rules.severity_of(a.rule),
            a.message,
            file=path,
            location=member_location(site.where, a.offset, a.index),
            evidence={**a.evidence, "pickle_start": res.start},
            remediation=_REMEDIATION,
        )
    invoked = _invoked_args(site, rules)
    groups: dict[str, _Agg] = {}
    for g in res.globals:
        if id(g) in judged:
            continue  # a loader whose argument was scanned as a checkpoint and found clean
        agg = groups.setdefault(g.qualname, _Agg(g))
        agg.count += 1
        agg.uses |= g.uses
        agg.ids.add(id(g))
        if id(g) in invoked:
            agg.uses.add("called")
    unknown: list[str] = []
    rebuilt = _rebuilt(site) if res.calls else set()
    modules: list[str] = []
    for qualname, agg in groups.items():
        c = rules.classify(qualname, agg.first.name)
        if c.status == "allowed" and c.rule is not None and c.rule.rebuilt_only:
            if "mutated" not in agg.uses and (agg.ids <= rebuilt or "called" not in agg.uses):
                modules.append(qualname)
                continue
            c = Classification("unknown")  # a stock class constructed with pickle-supplied arguments
        if c.status == "allowed" or (c.status == "unknown" and qualname in script):
            continue
        g = agg.first
        use = "called" if "called" in agg.uses else "mutated" if "mutated" in agg.uses else "referenced"
        evidence = {
            "global": qualname,
            "module": g.module,
            "name": g.name,
            "use": use,
            "opcode": g.opcode,
            "offset": g.offset,
            "opcode_index": g.index,
            "occurrences": agg.count,
            "pickle_start": res.start,
            "protocol": res.protocol,
        }
        if g.sources:
            evidence["name_sources"] = list(g.sources)
        location = member_location(site.where, g.offset, g.index)
        if c.status == "denied" and c.rule is not None:
            sev = c.rule.severity if use != "referenced" else c.rule.referenced
            evidence |= {
                "signature": c.rule.id,
                "category": c.rule.category,
                "pattern": c.pattern,
                "severity_basis": "rule severity" if use != "referenced" else "referenced severity",
            }
            yield check.finding(
                "pickle/dangerous-global",
                sev,
                f"{qualname} is {use} by the pickle ({c.rule.description})",
                file=path,
                location=location,
                evidence=evidence,
                remediation=_REMEDIATION,
            )
        elif any(_DUNDER.fullmatch(part) for part in g.name.split(".")):
            yield check.finding(
                "pickle/dunder-attribute",
                rules.severity_of("pickle/dunder-attribute"),
                f"{qualname} ({use}) walks dunder attributes, a sandbox-escape pattern",
                file=path,
                location=location,
                evidence=evidence,
                remediation=_REMEDIATION,
            )
        else:
            unknown.append(qualname)
            if len(unknown) > MAX_UNKNOWN_FINDINGS:
                continue  # summarised below: one finding per name would drown the report
            yield check.finding(
                "pickle/unknown-global",
                rules.severity_of("pickle/unknown-global"),
                f"{qualname} ({use}) is not a known-safe global; loading imports it",
                file=path,
                location=location,
                evidence=evidence,
                remediation="Review the class; prefer a plain state dict or safetensors.",
            )
    if modules:
        yield check.finding(
            "pickle/whole-module",
            Severity.INFO,
            f"a whole torch.nn module is pickled ({len(modules)} stock classes, rebuilt without "
            "constructor calls); loading it needs torch.load(weights_only=False)",
            file=path,
            location=member_location(site.where, res.start, None),
            evidence={"classes": modules[:50], "pickle_start": res.start},
            remediation="Prefer a state dict (model.state_dict()) saved as safetensors.",
        )
    if len(unknown) > MAX_UNKNOWN_FINDINGS:
        rest = unknown[MAX_UNKNOWN_FINDINGS:]
        yield check.finding(
            "pickle/unknown-global",
            rules.severity_of("pickle/unknown-global"),
            f"{len(rest)} more unknown globals in this pickle",
            file=path,
            location=member_location(site.where, res.start, None),
            evidence={"more": len(rest), "globals": rest[:200], "pickle_start": res.start},
            remediation="Review the classes; prefer a plain state dict or safetensors.",
        )
