"""Lineage: the card's base_model chain, named-checked offline and vetted hop by hop on the fake Hub."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hfguard.cli import main
from testing.fakehub.builders import safetensors_bytes
from testing.pickles import evil_pickle
from tests.hub.conftest import hub, run_check  # noqa: F401 - the fake-Hub fixture


def benign_files(n_floats: int = 64) -> dict[str, bytes]:
    return {"model.safetensors": safetensors_bytes(n_floats), "config.json": b'{"model_type": "bert"}'}


def findings(report: dict, prefix: str = "lineage/") -> dict[str, dict]:
    return {f["rule"]: f for f in report["findings"] if f["rule"].startswith(prefix)}


def test_a_clean_model_on_a_malicious_base_is_blocked_and_the_chain_is_reported(hub, tmp_path):  # noqa: F811
    hub.add_repo("evil-org/base", {"pytorch_model.bin": evil_pickle(tmp_path / "mark"), "config.json": b"{}"})
    hub.add_repo("acme/mid", benign_files(64), card={"base_model": "evil-org/base"})
    sha = hub.add_repo("acme/finetune", benign_files(64), card={"base_model": ["acme/mid"]})
    code, report, _ = run_check(f"acme/finetune@{sha}")
    lin = findings(report)
    assert report["verdict"] == "BLOCK" and code == 1
    assert lin["lineage/unsafe-base"]["evidence"]["base"] == "evil-org/base"
    chain = lin["lineage/chain"]["evidence"]["chain"]
    assert [h["repo"] for h in chain] == ["acme/mid", "evil-org/base"]
    assert [h["verdict"] for h in chain] == ["PASS", "BLOCK"]
    assert all(len(h["sha"]) == 40 for h in chain)      # each hop pinned to its commit
    assert not (tmp_path / "mark").exists()


def test_a_lookalike_or_known_bad_base_is_named_even_when_the_hop_is_unreachable(hub):  # noqa: F811
    sha = hub.add_repo("acme/finetune", benign_files(64),
                       card={"base_model": ["sentence-transfomers/all-MiniLM-L6-v2", "baller423/goober2"]})
    code, report, _ = run_check(f"acme/finetune@{sha}")
    lin = findings(report)
    assert lin["lineage/lookalike-base"]["evidence"]["imitates"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert lin["lineage/known-bad-base"]["severity"] == "critical"
    assert "lineage/base-unavailable" in lin             # neither exists on this Hub: reported, not ERROR
    assert report["verdict"] == "BLOCK"


def test_clean_chain_passes_and_a_cycle_ends(hub):  # noqa: F811
    hub.add_repo("acme/a", benign_files(64), card={"base_model": "acme/b"})
    hub.add_repo("acme/b", benign_files(64), card={"base_model": "acme/a"})
    sha = hub.add_repo("acme/c", benign_files(64), card={"base_model": "acme/a"})
    code, report, _ = run_check(f"acme/c@{sha}")
    chain = findings(report)["lineage/chain"]["evidence"]["chain"]
    assert [h["repo"] for h in chain] == ["acme/a", "acme/b"]
    assert report["verdict"] == "PASS" and code == 0


def test_local_folder_base_is_named_checked_offline(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "README.md").write_text("---\nbase_model: meta-llama/Llama-2-7b-hf\n---\n# my fine-tune\n")
    (model / "config.json").write_text("{}")
    doc = json.loads(CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q"]).output)
    chain = findings(doc)["lineage/chain"]["evidence"]
    assert chain["vetted"] is False and chain["chain"][0]["repo"] == "meta-llama/Llama-2-7b-hf"
    assert doc["verdict"] == "PASS"
    (model / "README.md").write_text("---\nbase_model: meta-lama/Llama-2-7b-hf\n---\n")
    doc = json.loads(CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q"]).output)
    assert "lineage/lookalike-base" in findings(doc) and doc["verdict"] == "BLOCK"


def test_the_chain_is_in_sarif_properties(hub, tmp_path):  # noqa: F811
    hub.add_repo("acme/base", benign_files(64))
    sha = hub.add_repo("acme/tuned", benign_files(64), card={"base_model": "acme/base"})
    result = CliRunner().invoke(main, ["check", f"acme/tuned@{sha}", "--format", "sarif", "-q"])
    sarif = json.loads(result.stdout)
    [res] = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "lineage/chain"]
    [hop] = res["properties"]["evidence"]["chain"]
    assert hop["repo"] == "acme/base" and hop["verdict"] == "PASS" and len(hop["sha"]) == 40


def test_each_hop_is_resolved_and_listed_once_per_scan(hub):  # noqa: F811
    """The lineage walk vets acme/base and the weights tier diffs against it: one metadata request
    and one file listing per repo for the whole scan, whichever check asks first."""
    base_sha = hub.add_repo("acme/base", benign_files(64))
    sha = hub.add_repo("acme/tuned", benign_files(64), card={"base_model": "acme/base"})
    code, report, _ = run_check(f"acme/tuned@{sha}", "--tier", "static", "--tier", "weights", "--no-cache")
    assert code == 0 and report["verdict"] == "PASS", report
    assert [h["repo"] for h in findings(report)["lineage/chain"]["evidence"]["chain"]] == ["acme/base"]
    assert any(f["check"].startswith("weights") for f in report["findings"])   # the diff did run
    assert len(hub.requests(r"^GET /api/models/acme/base$")) == 1
    assert len(hub.requests(rf"^GET /api/models/acme/base/tree/{base_sha}$")) == 1
    assert len(hub.requests(rf"^GET /api/models/acme/tuned/(revision|tree)/{sha}$")) == 2
