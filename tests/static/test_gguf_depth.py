"""GGUF metadata arrays nested 100,000 deep (issue 11): a bounded parse with its own finding, not a
RecursionError turned into check/crashed."""

from __future__ import annotations

import struct
import sys

from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.static.formats.gguf import GGUFCheck
from hfguard.target import local_target


def _gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _nested_array_file(depth: int) -> bytes:
    """A GGUF v3 file with one metadata key whose value is an array of arrays ... `depth` deep,
    written byte for byte after the GGUF spec (llama.cpp's own writer refuses to nest)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, 1))
    out += _gguf_string("general.nested") + struct.pack("<I", 9)
    out += struct.pack("<IQ", 9, 1) * (depth - 1)          # array of 1 array, ...
    out += struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)  # ... of one u32
    return bytes(out)


def test_arrays_nested_100000_deep_are_a_finding_not_a_crash(tmp_path):
    path = tmp_path / "deep.gguf"
    path.write_bytes(_nested_array_file(100_000))
    assert sys.getrecursionlimit() < 100_000
    report = scan(local_target([str(path)]), Policy(), [GGUFCheck()])
    rules = {f.rule for f in report.all_findings()}
    assert rules == {"gguf/too-deep"}
    assert report.verdict is Verdict.BLOCK


def test_one_level_of_nesting_is_fine(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(_nested_array_file(2))
    report = scan(local_target([str(path)]), Policy(), [GGUFCheck()])
    assert report.verdict is Verdict.PASS, [f.rule for f in report.all_findings()]
