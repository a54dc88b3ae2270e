"""CycloneDX 1.6 ML-BOM, validated by cyclonedx-python-lib's own schema validator."""

from __future__ import annotations

import json

from click.testing import CliRunner
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from hfguard.cli import main
from tests.hub.conftest import hub, run_check  # noqa: F401 - the fake-Hub fixture
from tests.provenance.test_lineage import benign_files


def valid(doc_text: str) -> dict:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(doc_text)
    assert errors is None, errors
    return json.loads(doc_text)


def test_local_folder_bom_has_the_model_files_findings_and_card(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "README.md").write_text("---\nbase_model: google-bert/bert-base-uncased\nlicense: apache-2.0\n"
                                     "pipeline_tag: fill-mask\n---\n")
    (model / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo x'\ntR.")
    result = CliRunner().invoke(main, ["scan", str(model), "--format", "cyclonedx", "-q"])
    assert result.exit_code == 1
    bom = valid(result.output)
    comp = bom["metadata"]["component"]
    assert comp["type"] == "machine-learning-model"
    assert {c["name"] for c in comp["components"]} == {f"{model}/README.md", f"{model}/evil.pkl"}
    props = {p["name"]: p["value"] for p in comp["properties"]}
    assert props["hfguard:verdict"] == "BLOCK" and props["hfguard:card:pipeline_tag"] == "fill-mask"
    assert comp["pedigree"]["ancestors"][0]["name"] == "google-bert/bert-base-uncased"
    [vuln] = [v for v in bom["vulnerabilities"] if v["id"] == "pickle/dangerous-global"]
    assert vuln["ratings"][0]["severity"] == "critical"
    assert vuln["affects"][0]["ref"] == f"file:{model}/evil.pkl"


def test_hub_bom_has_purl_hashes_and_pinned_ancestors(hub, tmp_path):  # noqa: F811
    base_sha = hub.add_repo("acme/base", benign_files())
    sha = hub.add_repo("acme/tuned", benign_files(), card={"base_model": "acme/base", "license": "mit"})
    code, _, _ = run_check(f"acme/tuned@{sha}")
    from hfguard.cli import main as cli

    result = CliRunner().invoke(cli, ["check", f"acme/tuned@{sha}", "--format", "cyclonedx", "-q"])
    bom = valid(result.output)
    comp = bom["metadata"]["component"]
    assert comp["purl"] == f"pkg:huggingface/acme/tuned@{sha}"
    [st] = [c for c in comp["components"] if c["name"] == "model.safetensors"]
    assert st["hashes"][0]["alg"] == "SHA-256" and len(st["hashes"][0]["content"]) == 64
    [anc] = comp["pedigree"]["ancestors"]
    assert anc["purl"] == f"pkg:huggingface/acme/base@{base_sha}"
    assert comp["licenses"][0]["license"]["name"] == "mit"
