"""Provenance rules the other provenance tests exercise without naming (tests/test_rules.py requires a
test that names each rule where it fires)."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from hfguard.cli import main
from testing.fakehub.builders import safetensors_bytes
from tests.hub.conftest import hub, run_check  # noqa: F401 - the fake-Hub fixture


def _scan(model: Path, *extra: str) -> dict:
    return json.loads(CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q", *extra]).output)


def _rules(doc: dict) -> dict[str, dict]:
    return {f["rule"]: f for f in doc["findings"]} | {
        f["rule"]: f for fr in doc["files"] for f in fr["findings"]}


def test_requirements_pinning_a_vulnerable_loader(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "requirements.txt").write_text("torch==2.4.1\n")
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [0.0]}, protocol=2))
    found = _rules(_scan(model))["loader/vulnerable-pin"]
    assert found["severity"] == "high" and found["location"] == "line 1"


def test_base_model_on_the_deny_list(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "README.md").write_text("---\nbase_model: evil-org/base\n---\n")
    (model / "config.json").write_text("{}")
    (tmp_path / "hfguard.toml").write_text('deny = ["evil-org/*"]\n')
    doc = _scan(model, "--policy", str(tmp_path / "hfguard.toml"))
    assert _rules(doc)["lineage/denied-base"]["evidence"]["base"] == "evil-org/base"
    assert doc["verdict"] == "BLOCK"


def test_base_model_flagged_at_the_static_tier(hub):  # noqa: F811
    # the base pickles a class no list knows: pickle/unknown-global (medium) flags it
    unknown = b"\x80\x02cmy_private_lib.layers\nBlock\nq\x00)\x81q\x01."
    hub.add_repo("acme/base", {"pytorch_model.bin": unknown, "config.json": b"{}"})
    sha = hub.add_repo("acme/tuned", {"model.safetensors": safetensors_bytes(64), "config.json": b"{}"},
                       card={"base_model": "acme/base"})
    code, report, _ = run_check(f"acme/tuned@{sha}")
    found = {f["rule"]: f for f in report["findings"]}
    assert found["lineage/flagged-base"]["evidence"]["verdict"] == "FLAG"


def test_signed_digest_in_an_unsupported_algorithm(tmp_path):
    pytest.importorskip("model_signing")
    from testing import signing

    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    private, _public = signing.write_key_pair(tmp_path / "keys", "acme")
    sig = signing.sign_with_key(model, private)
    bundle = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    for resource in statement["predicate"]["resources"]:
        resource["algorithm"] = "md5"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(bundle))
    found = _rules(_scan(model))
    assert found["signature/unverifiable"]["error"] is True
