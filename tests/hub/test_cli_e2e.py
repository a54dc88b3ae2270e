"""`hfguard check` as a user runs it: a subprocess with HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE set."""

from __future__ import annotations

import json

import pytest

from testing.fakehub.builders import safetensors_bytes
from testing.fakehub.server import FakeHub
from tests.hub.conftest import run_cli


@pytest.fixture
def served(isolated_hf_home, tmp_path):
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(isolated_hf_home),
               "HF_HUB_DISABLE_TELEMETRY": "1",
               "HFGUARD_CACHE_DIR": str(tmp_path / "verdicts"), "HFGUARD_HUB_RETRY_WAIT": "0.01"}
        yield hub, env


FILES = {"model.safetensors": safetensors_bytes(1 << 18), "config.json": b'{"model_type": "gpt2"}',
         "README.md": b"---\nlicense: mit\n---\n"}


def test_pass_then_cached_after_only_the_listing(served):
    hub, env = served
    sha = hub.add_repo("acme/tiny", FILES)
    first = run_cli("acme/tiny", "--format", "json", env=env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["verdict"] == "PASS" and report["revision"] == sha
    assert "resolving" in first.stderr and "range requests" in first.stderr
    n = len(hub.log)
    second = run_cli(f"acme/tiny@{sha}", "--format", "json", env=env)
    assert second.returncode == 0 and json.loads(second.stdout)["stats"]["cached"] is True
    # the cache key names the files' content hashes: the listing is the only request
    assert [r["path"] for r in hub.log[n:]] == [f"/api/models/acme/tiny/tree/{sha}"]


def test_gated_is_exit_2_with_a_message(served):
    hub, env = served
    hub.add_repo("acme/gated", FILES, gated="auto")
    proc = run_cli("acme/gated", env=env)
    assert proc.returncode == 2
    assert "accept the terms" in proc.stderr and "HF_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr
    ok = run_cli("acme/gated", "-q", env={**env, "HF_TOKEN": "hf_good_token"})
    assert ok.returncode == 0, ok.stderr
    assert "PASS" in ok.stdout


def test_missing_repo_and_unreachable_hub_are_exit_2(served):
    hub, env = served
    proc = run_cli("acme/absent", env=env)
    assert proc.returncode == 2 and "repository not found" in proc.stderr
    dead = run_cli("acme/absent", env={**env, "HF_ENDPOINT": "http://127.0.0.1:9",
                                       "HFGUARD_HUB_RETRIES": "1"})
    assert dead.returncode == 2 and "cannot reach the Hub" in dead.stderr
    assert "Traceback" not in dead.stderr
    bad = run_cli("not a repo id", env=env)
    assert bad.returncode == 2 and "not a Hub model id" in bad.stderr


def test_offline_with_and_without_the_local_cache(served):
    hub, env = served
    sha = hub.add_repo("acme/tiny", FILES)
    assert run_cli("acme/tiny", "--download", "-q", env=env).returncode == 0
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    n = len(hub.log)
    proc = run_cli("acme/tiny", "--no-cache", "--format", "json", env=offline)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["revision"] == sha
    missing = run_cli("acme/other", env=offline)
    assert missing.returncode == 2 and "not in the local Hugging Face cache" in missing.stderr
    assert len(hub.log) == n
