"""A fake Hub per test, the real huggingface_hub client pointed at it, private caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from testing.fakehub.server import FakeHub

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(isolated_hf_home, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    fake = FakeHub().start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(isolated_hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HFGUARD_HUB_RETRY_WAIT", "0.01")
    monkeypatch.setenv("HFGUARD_CACHE_DIR", str(tmp_path / "hfguard-cache"))
    close_session()
    yield fake
    close_session()
    fake.stop()


def run_check(*args: str, env: dict[str, str] | None = None):
    """`hfguard check` in-process; returns (exit code, parsed JSON report, stderr)."""
    runner = CliRunner()
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        result = runner.invoke(_main(), ["check", *args, "--format", "json"], catch_exceptions=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result.exit_code, json.loads(result.stdout), result.stderr


def _main():
    from hfguard.cli import main

    return main


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`hfguard check` in a subprocess with the environment a user would set."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFGUARD_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "hfguard", "check", *args], capture_output=True, text=True,
                          env=full, cwd=REPO_ROOT, timeout=60)


def rules(report: dict) -> set[str]:
    return {f["rule"] for f in report["findings"]} | {f["rule"] for fr in report["files"]
                                                       for f in fr["findings"]}
