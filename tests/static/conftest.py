"""Helpers shared by the static pickle tests: scan bytes written to disk with the real engine."""

from __future__ import annotations

import pytest

from hfguard.engine import scan
from hfguard.policy import Policy
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target


@pytest.fixture
def mark(tmp_path):
    """Where a payload would leave its mark if it ever ran."""
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran during the scan"


@pytest.fixture
def scan_bytes(tmp_path):
    def run(name: str, data: bytes, policy: Policy | None = None):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        report = scan(local_target([str(path)]), policy or Policy(), [SerializationCheck()])
        return report

    return run
