"""CycloneDX 1.6 ML-BOM (`cyclonedx-python-lib`): one `machine-learning-model` component for the
model, its files as sub-components with their hashes, card fields as properties, the declared base
models as `pedigree.ancestors`, and findings as vulnerabilities (rule id, severity, what to do).

The library has no model-card type yet, so card fields (license, pipeline tag, datasets ...) go
into namespaced properties (`hfguard:card:*`); the license also fills `licenses`.
"""

from __future__ import annotations

from typing import Any, TextIO

from hfguard.findings import Finding, Report
from hfguard.policy import Policy

_ML_FILE_CARD_KEYS = ("library_name", "pipeline_tag", "license", "datasets", "language", "tags")


def _purl(repo: str, revision: str | None) -> Any:
    from packageurl import PackageURL

    namespace, _, name = repo.partition("/")
    return PackageURL(type="huggingface", namespace=namespace or None, name=name or namespace,
                      version=revision)


def _is_hub_id(value: str) -> bool:
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith((".", "/"))


def build_bom(report: Report, policy: Policy) -> Any:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType, Pedigree
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.model.vulnerability import (
        BomTarget,
        Vulnerability,
        VulnerabilityRating,
        VulnerabilitySeverity,
        VulnerabilitySource,
    )

    from hfguard import __version__

    hub = report.source == "hub" and _is_hub_id(report.target.split("@")[0])
    repo = report.target.split("@")[0]
    files = [Component(name=fr.path, type=ComponentType.FILE, bom_ref=f"file:{fr.path}",
                       hashes=[HashType(alg=HashAlgorithm.SHA_256, content=fr.sha256)] if fr.sha256 else None,
                       properties=[Property(name="hfguard:format", value=fr.format),
                                   Property(name="hfguard:verdict", value=str(fr.verdict))])
             for fr in report.files]
    card = report.card or {}
    props = [Property(name="hfguard:verdict", value=str(report.verdict))]
    for key in _ML_FILE_CARD_KEYS:
        value = card.get(key)
        if value not in (None, "", []):
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            props.append(Property(name=f"hfguard:card:{key}", value=text))
    licenses: list[LicenseExpression | DisjunctiveLicense] = []
    if isinstance(card.get("license"), str):
        lic = card["license"]
        licenses = [LicenseExpression(lic)] if " " in lic else [DisjunctiveLicense(name=lic)]
    ancestors = [Component(name=a, type=ComponentType.MACHINE_LEARNING_MODEL, bom_ref=f"ancestor:{a}",
                           purl=_purl(a, sha) if _is_hub_id(a) else None, version=sha)
                 for a, sha in _ancestors(report)]
    model = Component(
        name=repo, type=ComponentType.MACHINE_LEARNING_MODEL, bom_ref="model", version=report.revision,
        purl=_purl(repo, report.revision) if hub else None, components=files, properties=props,
        licenses=licenses, pedigree=Pedigree(ancestors=ancestors) if ancestors else None)
    bom = Bom()
    bom.metadata.component = model
    bom.metadata.tools.components.add(Component(name="hfguard", version=__version__,
                                                type=ComponentType.APPLICATION))
    source = VulnerabilitySource(name="hfguard")
    scanned = {fr.path for fr in report.files}
    for i, f in enumerate(report.all_findings()):
        sev = policy.effective_severity(f)
        if int(sev) == 0 and not f.error:
            continue   # info findings describe, they are not vulnerabilities
        bom.vulnerabilities.add(Vulnerability(
            bom_ref=f"finding-{i}", id=f.rule, source=source, description=f.message,
            recommendation=f.remediation,
            ratings=[VulnerabilityRating(source=source, severity=VulnerabilitySeverity(str(sev)))],
            affects=[BomTarget(ref=f"file:{f.file}" if f.file in scanned else "model")],
            properties=_finding_props(f)))
    return bom


def _finding_props(f: Finding) -> list[Any]:
    from cyclonedx.model import Property

    props = [Property(name="hfguard:check", value=f.check), Property(name="hfguard:fingerprint",
                                                                      value=f.fingerprint())]
    if f.location:
        props.append(Property(name="hfguard:location", value=f.location))
    if f.error:
        props.append(Property(name="hfguard:error", value="true"))
    return props


def _ancestors(report: Report) -> list[tuple[str, str | None]]:
    """Declared bases: the vetted lineage chain when there is one (with shas), else the card."""
    for f in report.findings:
        if f.rule == "lineage/chain" and isinstance(f.evidence.get("chain"), list):
            return [(str(h.get("repo")), h.get("sha")) for h in f.evidence["chain"] if h.get("repo")]
    from hfguard.card import declared_bases

    return [(b, None) for b in declared_bases(report.card or {})]


def write_cyclonedx(report: Report, out: TextIO, policy: Policy) -> None:
    try:
        from cyclonedx.output.json import JsonV1Dot6
    except ImportError:
        raise RuntimeError("--format cyclonedx needs cyclonedx-python-lib: "
                           "pip install 'hfguard[sbom]'") from None

    out.write(JsonV1Dot6(build_bom(report, policy)).output_as_string(indent=2))
    out.write("\n")
