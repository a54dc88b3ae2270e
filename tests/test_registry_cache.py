"""The rule registry is kept validated in the user cache between runs (hfguard.rules.registry):
an edited rules file must be read again, and a damaged cache must not change what is read."""

from __future__ import annotations

import shutil

import pytest

from hfguard import rules


@pytest.fixture
def rules_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("HFGUARD_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "rules"
    shutil.copytree(rules.RULES_DIR, folder)
    return folder


def _registry(folder):
    return rules.registry.__wrapped__(folder)   # past the in-process memo: what a new run reads


def test_an_edited_rules_file_is_read_again(rules_copy, tmp_path):
    first = _registry(rules_copy)
    assert list((tmp_path / "cache" / "signatures").glob("rules-*.json"))
    assert _registry(rules_copy) == first   # from the cache: the same rules
    path = rules_copy / "pickle.yaml"
    old = first["pickle/dangerous-global"].title
    path.write_text(path.read_text().replace(f"title: {old}", "title: Edited title"))
    assert _registry(rules_copy)["pickle/dangerous-global"].title == "Edited title"


def test_a_broken_edit_is_an_error_even_after_a_cached_run(rules_copy):
    _registry(rules_copy)
    path = rules_copy / "pickle.yaml"
    path.write_text(path.read_text().replace("severity: critical", "severity: catastrophic", 1))
    with pytest.raises(rules.RuleError, match="severity"):
        _registry(rules_copy)


def test_a_damaged_cache_is_ignored(rules_copy, tmp_path):
    first = _registry(rules_copy)
    for cached in (tmp_path / "cache" / "signatures").glob("rules-*.json"):
        cached.write_text('[{"id": "pickle/dangerous-global"')
    assert _registry(rules_copy) == first
