"""Loader advisories: pins and declared versions in a model, and the loaders installed here."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.specifiers import SpecifierSet

from hfguard.cli import main
from hfguard.static import loaders


def scan(model: Path) -> dict:
    result = CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q"])
    return json.loads(result.output)


def loader_findings(doc: dict) -> list[dict]:
    return [f for f in doc["findings"] if f["rule"].startswith("loader/")]


def test_every_advisory_parses_and_matches_its_own_affected_range():
    advs = loaders.advisories()
    assert len(advs) >= 8 and len({a.id for a in advs}) == len(advs)
    for a in advs:
        assert not a.affects(a.fixed), a.id            # the fixed release is outside the range
        assert a.affects("0.0.1") or a.affects("3.0.0"), a.id   # and something below it is inside


@pytest.mark.parametrize(("requirement", "vulnerable"), [
    ("torch==2.4.1", True), ("torch<=2.5.1", True), ("torch<2.6", True), ("torch>=2.6.0", False),
    ("torch==2.6.0", False), ("torch", False), ("torch~=2.3.0", True), ("torch>=2.0", False),
])
def test_pins_that_only_admit_affected_versions(requirement, vulnerable):
    [(_, pkg, spec)] = list(loaders.parse_requirements(requirement + "\n")) or [(0, "torch", SpecifierSet())]
    [adv] = [a for a in loaders.advisories() if a.id == "CVE-2025-32434"]
    assert loaders.pin_admits_only_affected(adv, spec) is vulnerable


def test_model_pinning_a_vulnerable_torch_beside_a_pickle_is_blocked(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "requirements.txt").write_text("# to run this model\ntorch==2.4.1\ntransformers>=4.50\n")
    (model / "config.json").write_text('{"model_type": "bert"}')
    doc = scan(model)
    [f] = [f for f in loader_findings(doc) if f["evidence"]["advisory"] == "CVE-2025-32434"]
    assert f["severity"] == "medium" and f["location"] == "line 2"   # no pickle here: medium
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": [0.0, 1.0]}, protocol=2))
    doc = scan(model)
    [f] = [f for f in loader_findings(doc) if f["evidence"]["advisory"] == "CVE-2025-32434"]
    assert f["severity"] == "high" and f["evidence"]["model_carries_format"] is True
    assert doc["verdict"] == "BLOCK"


def test_config_saved_with_an_affected_version_is_low(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "rag", "transformers_version": "4.30.0"}')
    doc = scan(model)
    rules = {(f["rule"], f["evidence"]["advisory"]) for f in loader_findings(doc)}
    assert ("loader/saved-with-affected-version", "CVE-2023-6730") in rules
    assert doc["verdict"] == "PASS"      # low: reported, not flagged
    (model / "config.json").write_text('{"model_type": "bert", "transformers_version": "4.57.0"}')
    assert loader_findings(scan(model)) == []
    # the RAG advisory concerns RAG models only: an old BERT config is not exposed to it
    (model / "config.json").write_text('{"model_type": "bert", "transformers_version": "4.30.0"}')
    assert loader_findings(scan(model)) == []


def test_env_lists_installed_loaders_without_importing_them(tmp_path):
    result = CliRunner().invoke(main, ["env", "--format", "json"])
    doc = json.loads(result.output)
    found = {entry["package"]: entry for entry in doc["loaders"]}
    import torch  # the test extra installs torch; env must report the same version
    assert found["torch"]["version"] == torch.__version__.split("+")[0] or \
        found["torch"]["version"] == torch.__version__
    assert result.exit_code == (1 if any(e["advisories"] for e in doc["loaders"]) else 0)


def test_env_reports_an_affected_install(tmp_path, monkeypatch):
    # a fake distribution on sys.path: package metadata only, nothing importable
    dist = tmp_path / "site" / "keras-3.8.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: keras\nVersion: 3.8.0\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 1, result.output
    assert "CVE-2025-1550" in result.output and "keras" in result.output
    assert "keras" not in sys.modules or not hasattr(sys.modules["keras"], "__version__")
