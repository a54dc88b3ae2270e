"""What a repo's name alone shows (a look-alike of a popular repo, a known-bad repo, the deny list)
needs no network: `check`, `hook refs` and `lock` report it before any request, also when the Hub
is offline or unreachable, next to the ERROR that says why nothing else was checked."""

from __future__ import annotations

import json
import textwrap

from click.testing import CliRunner

from tests.hub.conftest import rules, run_check

LOOKALIKE = "sentence-transfomers/all-MiniLM-L6-v2"   # one letter off sentence-transformers/...
DEAD = "http://127.0.0.1:9"                            # nothing listens there


def lookalike_of(findings: list[dict]) -> dict:
    [hit] = [f for f in findings if f["rule"] == "provenance/lookalike-name"]
    return hit


def test_check_offline_names_the_lookalike(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, report, err = run_check(LOOKALIKE)
    assert rules(report) == {"provenance/lookalike-name", "hub/offline-not-cached"}
    imitates = lookalike_of(report["findings"])["evidence"]["imitates"]
    assert imitates == "sentence-transformers/all-MiniLM-L6-v2"
    assert report["verdict"] == "BLOCK" and code == 1     # a look-alike is block-level evidence
    assert "not in the local Hugging Face cache" in err
    assert hub.log == []


def test_check_with_the_hub_unreachable_names_the_lookalike_known_bad_and_denied(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", DEAD)
    monkeypatch.setenv("HFGUARD_HUB_RETRIES", "1")
    code, report, _ = run_check(LOOKALIKE)
    assert rules(report) == {"provenance/lookalike-name", "hub/unreachable"}
    assert report["verdict"] == "BLOCK" and code == 1
    code, report, _ = run_check("baller423/goober2")      # signatures/known_bad.yaml
    assert "provenance/known-bad-repo" in rules(report) and "hub/unreachable" in rules(report)
    assert report["verdict"] == "BLOCK"
    policy = tmp_path / "hfguard.toml"
    policy.write_text('deny = ["evil-org"]\n')
    code, report, _ = run_check("evil-org/model", "--policy", str(policy))
    assert rules(report) == {"provenance/denied-repo", "hub/unreachable"} and code == 1
    # an honest name with the Hub down is an ERROR, not a pass and not a block
    code, report, _ = run_check("sentence-transformers/all-MiniLM-L6-v2")
    assert rules(report) == {"hub/unreachable"} and code == 2


def _project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(textwrap.dedent(f'''
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer("{LOOKALIKE}")
    '''))


def test_hook_refs_offline_names_the_lookalike_at_the_source_line(hub, tmp_path, monkeypatch):
    from hfguard.cli import main

    _project(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(main, ["hook", "refs", "train.py", "-q", "--format", "json"])
    doc = json.loads(res.stdout)
    assert {f["rule"] for f in doc["findings"]} == {"provenance/lookalike-name", "hook/not-locked"}
    hit = lookalike_of(doc["findings"])
    assert hit["file"] == "train.py" and hit["location"] == "line 3"
    assert doc["verdict"] == "BLOCK" and res.exit_code == 1
    # lock --check is offline by definition: the same finding
    res = CliRunner().invoke(main, ["lock", "--check", "-q", "--format", "json"])
    assert "provenance/lookalike-name" in {f["rule"] for f in json.loads(res.stdout)["findings"]}
    assert hub.log == []


def test_lock_with_the_hub_unreachable_names_the_lookalike(hub, tmp_path, monkeypatch):
    from hfguard.cli import main

    _project(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", DEAD)
    monkeypatch.setenv("HFGUARD_HUB_RETRIES", "1")
    res = CliRunner().invoke(main, ["lock", "-q", "--format", "json"])
    doc = json.loads(res.stdout)
    got = {f["rule"] for f in doc["findings"]}
    assert {"provenance/lookalike-name", "hub/unreachable"} <= got, got
    assert doc["verdict"] == "BLOCK" and res.exit_code == 1
    res = CliRunner().invoke(main, ["hook", "refs", "train.py", "-q", "--format", "json"])
    got = {f["rule"] for f in json.loads(res.stdout)["findings"]}
    assert {"provenance/lookalike-name", "hub/unreachable"} <= got, got
