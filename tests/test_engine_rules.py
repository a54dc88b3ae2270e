"""The engine's own rules: missing evidence is an ERROR finding, never silence."""

from __future__ import annotations

from hfguard.checks import Check
from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target


class GreedyCheck(Check):
    """A check that exhausts memory on every file (as a hostile size field could make it)."""

    id = "test.greedy"

    def applies_to(self, file, fmt):
        return True

    def check_file(self, file, fmt, ctx):
        raise MemoryError


def _errors(report) -> set[str]:
    return {f.rule for f in report.all_findings() if f.error}


def test_out_of_memory_is_an_error(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"data")
    report = scan(local_target([str(tmp_path)]), Policy(), [GreedyCheck()])
    assert report.verdict is Verdict.ERROR and _errors(report) == {"check/out-of-memory"}


def test_file_that_vanishes_before_it_is_read_is_an_error(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"data")
    target = local_target([str(tmp_path)])
    (tmp_path / "m.bin").unlink()
    report = scan(target, Policy(), [SerializationCheck()])
    assert report.verdict is Verdict.ERROR and _errors(report) == {"file/unreadable"}


def test_no_checks_is_an_error(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"data")
    report = scan(local_target([str(tmp_path)]), Policy(), [])
    assert report.verdict is Verdict.ERROR and _errors(report) == {"scan/no-checks"}
