"""Signed known-bad feed updates: verified offline, merged, used by the provenance check at once,
and refused when the signature or the key is wrong."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hfguard.cli import main
from hfguard.signatures import signatures_version
from testing.signing import write_key_pair

FEED = {"repos": [{"id": "fresh-evil/bert-base", "reason": "reverse shell in pytorch_model.bin",
                   "source": "https://example.org/advisory/1"}],
        "files": [{"sha256": "ab" * 32, "reason": "dropper pickle", "source": "https://example.org/advisory/2"}]}


@pytest.fixture
def feed_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HFGUARD_FEED_DIR", str(tmp_path / "feeds"))
    keys = write_key_pair(tmp_path / "keys", "publisher")
    other = write_key_pair(tmp_path / "keys", "mallory")
    (tmp_path / "feed.yaml").write_text(yaml.safe_dump(FEED))
    return tmp_path, keys, other


def sign(tmp_path, private_key) -> str:
    out = tmp_path / "feed.bundle.json"
    result = CliRunner().invoke(main, ["signatures", "sign", str(tmp_path / "feed.yaml"), "--key",
                                       str(private_key), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return str(out)


def test_a_verified_update_is_installed_and_changes_verdicts_at_once(feed_env):
    tmp_path, (priv, pub), _ = feed_env
    before = signatures_version()
    model = tmp_path / "m"
    model.mkdir()
    (model / "README.md").write_text("---\nbase_model: fresh-evil/bert-base\n---\n")
    doc = json.loads(CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q"]).output)
    assert doc["verdict"] == "PASS"
    result = CliRunner().invoke(main, ["signatures", "update", sign(tmp_path, priv), "--key", str(pub)])
    assert result.exit_code == 0 and "1 new repos, 1 new file hashes" in result.output
    assert signatures_version() != before              # cached verdicts and lock entries go stale
    doc = json.loads(CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q"]).output)
    assert doc["verdict"] == "BLOCK"
    assert {f["rule"] for f in doc["findings"]} >= {"lineage/known-bad-base"}
    installed = yaml.safe_load((tmp_path / "feeds" / "known_bad.yaml").read_text())
    assert installed["repos"][0]["signed_by"].startswith("sha256:") and installed["updates"][0]["repos"] == 1


def test_a_bundle_signed_by_another_key_is_refused(feed_env):
    tmp_path, (_, pub), (mallory_priv, _) = feed_env
    bundle = sign(tmp_path, mallory_priv)
    result = CliRunner().invoke(main, ["signatures", "update", bundle, "--key", str(pub)])
    assert result.exit_code == 2 and "none of the trusted keys" in result.output
    assert not (tmp_path / "feeds" / "known_bad.yaml").exists()


def test_a_tampered_bundle_is_refused(feed_env):
    tmp_path, (priv, pub), _ = feed_env
    bundle = sign(tmp_path, priv)
    env = json.loads(Path(bundle).read_text())
    payload = json.loads(base64.b64decode(env["payload"]))
    payload["repos"] = []                       # an attacker drops the entry that names them
    env["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    Path(bundle).write_text(json.dumps(env))
    result = CliRunner().invoke(main, ["signatures", "update", bundle, "--key", str(pub)])
    assert result.exit_code == 2 and not (tmp_path / "feeds" / "known_bad.yaml").exists()


def test_entries_need_a_source(feed_env):
    tmp_path, (priv, _), _ = feed_env
    (tmp_path / "feed.yaml").write_text(yaml.safe_dump({"repos": [{"id": "a/b", "reason": "x"}]}))
    result = CliRunner().invoke(main, ["signatures", "sign", str(tmp_path / "feed.yaml"), "--key", str(priv),
                                       "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 2 and "source" in result.output


def test_shipped_entries_carry_sources():
    from hfguard.signatures import load

    doc = load("known_bad")
    assert all(e.get("source") for e in doc["repos"] + doc["files"])


@pytest.mark.parametrize("with_size", [True, False])
def test_a_feed_file_hash_is_found_with_or_without_its_size(feed_env, with_size):
    """Sizes only narrow which files are hashed: an entry without one makes every file hashed,
    so a hash-only entry still finds a file of a size no other entry has."""
    import hashlib

    tmp_path, (priv, pub), _ = feed_env
    payload = b"cposix\nsystem\n(S'echo feed-sample-of-another-size'\ntR."
    entry = {"sha256": hashlib.sha256(payload).hexdigest(), "reason": "dropper",
             "source": "https://example.org/advisory/3"} | ({"size": len(payload)} if with_size else {})
    (tmp_path / "feed.yaml").write_text(yaml.safe_dump({"files": [entry]}))
    result = CliRunner().invoke(main, ["signatures", "update", sign(tmp_path, priv), "--key", str(pub)])
    assert result.exit_code == 0, result.output
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.pkl").write_bytes(payload)
    (model / "other.pkl").write_bytes(payload + b"\n")
    doc = json.loads(CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q"]).output)
    hits = {Path(fr["path"]).name for fr in doc["files"] for f in fr["findings"]
            if f["rule"] == "provenance/known-bad-file"}
    assert hits == {"model.pkl"}


def test_a_feed_file_size_must_be_a_byte_count(feed_env):
    tmp_path, (priv, _), _ = feed_env
    bad = dict(FEED["files"][0], size="48")
    (tmp_path / "feed.yaml").write_text(yaml.safe_dump({"files": [bad]}))
    result = CliRunner().invoke(main, ["signatures", "sign", str(tmp_path / "feed.yaml"), "--key", str(priv),
                                       "-o", str(tmp_path / "b.json")])
    assert result.exit_code == 2 and "size" in result.output
