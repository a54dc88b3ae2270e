"""`hfguard scan` with no PATH vets the local Hugging Face cache, as filled by the real client."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from huggingface_hub import snapshot_download

from testing.fakehub.builders import os_system_pickle, safetensors_bytes, torch_zip_bytes
from tests.hub.conftest import REPO_ROOT


def test_scan_without_paths_vets_every_cached_snapshot(hub, isolated_hf_home, tmp_path):
    mark = tmp_path / "PWNED"
    hub.add_repo("acme/good", {"model.safetensors": safetensors_bytes(256), "config.json": b"{}"})
    hub.add_repo("acme/bad", {"pytorch_model.bin": torch_zip_bytes(os_system_pickle(f"touch {mark}"))})
    for repo in ("acme/good", "acme/bad"):
        snapshot_download(repo)   # the real client lays out blobs, snapshots and symlinks

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFGUARD_"))}
    env["HF_HOME"] = str(isolated_hf_home)
    res = subprocess.run([sys.executable, "-m", "hfguard", "scan", "--format", "json"],
                         capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    verdicts = {f["path"].split("/hub/", 1)[1]: f["verdict"] for f in report["files"]}
    bad = [p for p in verdicts if p.startswith("models--acme--bad/snapshots/")]
    good = [p for p in verdicts if p.startswith("models--acme--good/snapshots/")]
    assert [verdicts[p] for p in bad] == ["BLOCK"] and bad[0].endswith("/pytorch_model.bin")
    assert sorted(p.rsplit("/", 1)[1] for p in good) == ["config.json", "model.safetensors"]
    assert all(verdicts[p] == "PASS" for p in good)
    assert report["verdict"] == "BLOCK" and not mark.exists()


def test_scan_of_an_empty_cache_is_an_error_not_a_pass(isolated_hf_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFGUARD_"))}
    env["HF_HOME"] = str(isolated_hf_home)
    res = subprocess.run([sys.executable, "-m", "hfguard", "scan", "-q", "--format", "json"],
                         capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert res.returncode == 2
    assert json.loads(res.stdout)["findings"][0]["rule"] == "scan/no-files"


def test_scan_check_and_offline_resolution_share_one_cache_locator(hub, tmp_path, monkeypatch):
    """HF_HUB_CACHE set after huggingface_hub was imported (its constants are frozen then) is
    still the cache every command reads: `scan` with no path and offline `check` alike."""
    from click.testing import CliRunner

    from hfguard.cli import main

    hub.add_repo("acme/bad", {"pytorch_model.bin": torch_zip_bytes(os_system_pickle("true"))})
    moved = tmp_path / "elsewhere"
    monkeypatch.setenv("HF_HUB_CACHE", str(moved))
    assert CliRunner().invoke(main, ["check", "acme/bad", "--download", "-q"]).exit_code == 1
    assert (moved / "models--acme--bad" / "snapshots").is_dir()     # the download landed there
    res = CliRunner().invoke(main, ["scan", "--format", "json"])
    report = json.loads(res.stdout)
    assert res.exit_code == 1 and report["verdict"] == "BLOCK"
    assert all(f["path"].startswith(str(moved)) for f in report["files"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(main, ["check", "acme/bad", "--no-cache", "--format", "json"])
    assert json.loads(res.stdout)["stats"]["offline"] is True and res.exit_code == 1
