"""Shared fixtures. Tests run offline; Hub paths go through testing/fakehub (a local Hub server)."""

from __future__ import annotations

import os

import pytest

# Never let a test reach the real Hub, even by accident.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def isolated_hf_home(tmp_path, monkeypatch):
    """A private HF_HOME so tests never read or pollute the user's cache."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    return home
