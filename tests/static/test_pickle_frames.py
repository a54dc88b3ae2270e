"""Protocol-4/5 frames that lie (issue 12): opcodes and arguments straddling a frame end, a FRAME
inside a frame, a frame past the end of the file, a frame left unread at STOP, a FRAME in a
protocol-2 pickle. Each variant is first proven loadable by CPython with a benign global
(builtins.len, through the C unpickler `pickle.loads` or the pure-Python `pickle._loads` that
joblib uses), then built with os.system: the VM must still find the call (BLOCK) and report the
framing (pickle/frame-anomaly). Malicious variants are never loaded."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable

import pytest

from hfguard.findings import Verdict
from hfguard.static.pickle.vm import HANDLERS, PickleVM, Reader, scan_stream
from testing import pickles as fx
from testing.advisories import (
    hidden_in_bytes,
    nested,
    old_protocol,
    past_end,
    straddle_argument,
    straddle_opcode,
    unread,
)
from testing.pickle_asm import asm, call, o

Builder = Callable[[str, str, str], bytes]
C_LOADS, PY_LOADS = pickle.loads, pickle._loads  # type: ignore[attr-defined]
VARIANTS: list[tuple[Builder, Callable[[bytes], object], str]] = [
    (straddle_argument, C_LOADS, "straddle"),
    (straddle_opcode, C_LOADS, "straddle"),
    (nested, C_LOADS, "nested"),
    (past_end, PY_LOADS, "past-end"),
    (unread, C_LOADS, "unread"),
    (old_protocol, C_LOADS, "protocol"),
]
IDS = [v[0].__name__.replace("_", "-") for v in VARIANTS]


@pytest.mark.parametrize(("build", "loads", "kind"), VARIANTS, ids=IDS)
def test_cpython_executes_the_benign_form(build, loads, kind):
    assert loads(build("builtins", "len", "abcd")) == 4


@pytest.mark.parametrize(("build", "loads", "kind"), VARIANTS, ids=IDS)
def test_lying_frames_never_hide_a_global(build, loads, kind, scan_bytes, mark):
    report = scan_bytes("framed.pkl", build("os", "system", f"touch {mark}"))
    assert report.verdict is Verdict.BLOCK
    assert fx.dangerous(report)["os.system"].evidence["use"] == "called"
    anomalies = [f for f in report.all_findings() if f.rule == "pickle/frame-anomaly"]
    assert [f.evidence["kind"] for f in anomalies] == [kind]


@pytest.mark.parametrize(("build", "loads", "kind"), VARIANTS, ids=IDS)
def test_the_benign_form_is_flagged_for_its_framing_only(build, loads, kind, scan_bytes):
    report = scan_bytes("framed.pkl", build("builtins", "len", "abcd"))
    assert fx.rules_of(report) >= {"pickle/frame-anomaly"}
    assert "pickle/dangerous-global" not in fx.rules_of(report)
    assert report.verdict is Verdict.FLAG


def test_cpython_reading_a_file_runs_what_the_linear_reading_sees_as_bytes():
    benign = hidden_in_bytes("builtins", "len", "abcd")
    assert pickle.loads(benign) is None  # linear: the call is inside a bytes value
    assert pickle.load(io.BytesIO(benign)) == 4  # a file: the call runs


def test_the_c_file_reading_is_decoded_too(scan_bytes, mark):
    report = scan_bytes("divergent.pkl", hidden_in_bytes("os", "system", f"touch {mark}"))
    assert report.verdict is Verdict.BLOCK
    assert fx.dangerous(report)["os.system"].evidence["use"] == "called"
    kinds = {f.evidence["kind"] for f in report.all_findings() if f.rule == "pickle/frame-anomaly"}
    assert kinds == {"straddle", "divergent"}


@pytest.mark.parametrize("protocol", [4, 5])
def test_pickler_frames_are_not_anomalies(protocol):
    # many frames (data > 64 KiB per frame) and large bytes written outside frames
    obj = {"rows": [{"i": i, "s": f"tok{i}"} for i in range(20_000)], "blob": b"x" * 300_000}
    data = pickle.dumps(obj, protocol=protocol)
    assert data.count(b"\x95") > 3
    results, trailing = scan_stream(Reader(io.BytesIO(data), size=len(data)), PickleVM())
    assert trailing is None and results[0].complete and results[0].anomalies == []


def test_every_opcode_of_protocols_0_to_5_has_a_handler():
    import pickletools

    from hfguard.static.pickle.vm import _INLINE

    names = {op.name for op in pickletools.opcodes if op.proto <= 5}
    assert names == set(HANDLERS) | _INLINE and not set(HANDLERS) & _INLINE


def test_the_second_reading_leaves_the_stream_where_the_first_stopped(scan_bytes, mark):
    # a pickle after the divergent one is still read from its own start
    second = asm(o.PROTO(2), call("subprocess", "call", f"touch {mark}"), o.STOP())
    report = scan_bytes("two.pkl", hidden_in_bytes("os", "system", f"touch {mark}") + second)
    assert {"os.system", "subprocess.call"} <= set(fx.dangerous(report))
