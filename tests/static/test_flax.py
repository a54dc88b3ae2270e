"""flax msgpack checkpoints (issue 12): extension types, dtypes, array sizes, nesting; headers only."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.static.formats.flax import FlaxCheck, scan_msgpack
from hfguard.target import local_target
from testing.flax_files import raw_ndarray, to_bytes

STATE = {"params": {"Dense_0": {"kernel": np.ones((64, 32), np.float32), "bias": np.zeros(32, np.float16)},
                    "embed": {"embedding": np.arange(40, dtype=np.int64).reshape(8, 5)}},
         "step": np.int32(7), "opt": {"lr": 1e-3, "c": complex(1, 2), "names": ["a", "b"]}}


def _scan(tmp_path, data: bytes):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(data)
    report = scan(local_target([str(path)]), Policy(), [FlaxCheck()])
    return report, {f.rule for f in report.all_findings()}


def test_checkpoint_passes_and_only_headers_are_read(tmp_path):
    big = {**STATE, "big": np.zeros((512, 512), np.float32)}
    report, rules = _scan(tmp_path, to_bytes(big))
    assert report.verdict is Verdict.PASS, rules

    class Counting:
        def __init__(self, fh):
            self.fh, self.read_bytes = fh, 0

        def read(self, n):
            self.read_bytes += n
            return self.fh.read(n)

        def seek(self, pos, whence=0):
            return self.fh.seek(pos, whence)

    path = tmp_path / "flax_model.msgpack"
    with open(path, "rb") as fh:
        counting = Counting(fh)
        result = scan_msgpack(counting, path.stat().st_size)
    assert result.arrays == 4 and counting.read_bytes < 8192 < path.stat().st_size


@pytest.mark.parametrize("leaf, rule", [
    (msgpack.ExtType(42, b"\x00" * 8), "flax/unknown-ext"),
    (raw_ndarray((2,), "object", b"\x00" * 16), "flax/bad-dtype"),
    (raw_ndarray((1000, 1000), "float32", b"\x00" * 4), "flax/bad-array"),
])
def test_hostile_leaves(tmp_path, leaf, rule):
    data = msgpack.packb({"params": {"w": leaf, "ok": msgpack.ExtType(1, msgpack.packb(((1,), "float32",
                                                                                          b"\x00" * 4)))}})
    report, rules = _scan(tmp_path, data)
    assert rules == {rule} and report.verdict is not Verdict.PASS


def test_nesting_100000_deep_and_truncation(tmp_path):
    deep = b"\x81\xa1k" * 100_000 + b"\xc0"
    assert _scan(tmp_path, deep)[1] == {"flax/too-deep"}
    data = to_bytes(STATE)
    assert _scan(tmp_path, data[: len(data) - 100])[1] == {"flax/malformed"}
    assert _scan(tmp_path, data + b"\x00junk")[1] == {"flax/trailing-data"}
    assert _scan(tmp_path, b"\xdf\xff\xff\xff\xff")[1] == {"flax/malformed"}   # a count past the file


def test_item_flood_stops_at_the_item_limit(tmp_path, monkeypatch):
    import hfguard.static.formats.flax as flax

    monkeypatch.setattr(flax, "MAX_ITEMS", 1000)     # the limit, not its size, is under test
    flood = msgpack.packb({"params": {f"w{i}": i for i in range(2000)}})
    report, rules = _scan(tmp_path, flood)
    assert rules == {"flax/too-complex"} and report.verdict is Verdict.FLAG
