"""Every entry in signatures/known_bad.yaml and popular_repos.yaml is exercised here."""

from __future__ import annotations

import hashlib

import pytest

from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.signatures import load
from hfguard.static.provenance import ProvenanceCheck, lookalikes
from hfguard.target import Target, local_target

KNOWN_BAD = load("known_bad")


@pytest.mark.parametrize("entry", KNOWN_BAD["repos"], ids=lambda e: e["id"])
def test_known_bad_repo_entries(entry):
    for repo in entry["test"]["match"]:
        target = Target(name=repo, source="hub", repo_id=repo, revision="c" * 40, files=[])
        report = scan(target, Policy(), [ProvenanceCheck()])
        assert "provenance/known-bad-repo" in {f.rule for f in report.findings}
        assert report.verdict is Verdict.BLOCK


@pytest.mark.parametrize("entry", KNOWN_BAD["files"], ids=lambda e: e["name"])
def test_known_bad_file_entries(entry, tmp_path):
    data = entry["test"]["text"].encode()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert entry.get("size", len(data)) == len(data)   # a wrong size would hide the file
    path = tmp_path / entry["name"]
    path.write_bytes(data)
    report = scan(local_target([str(path)]), Policy(), [ProvenanceCheck()])
    assert "provenance/known-bad-file" in {f.rule for fr in report.files for f in fr.findings}


def test_popular_repos_are_not_lookalikes_of_each_other():
    popular = load("popular_repos")["repos"]
    assert len(popular) == len({p.lower() for p in popular})
    for repo in popular:
        if "/" in repo:
            assert lookalikes(repo) == [], repo
