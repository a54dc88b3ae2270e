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
from testing.pickle_asm import asm, call, const, frame, o, stack_global


def _straddle_argument(module: str, name: str, arg: str) -> bytes:
    # the frame ends in the middle of the module string: the C unpickler reads on past the end
    body = asm(call(module, name, arg), o.STOP())
    return asm(o.PROTO(5), frame(body, length=3))


def _straddle_opcode(module: str, name: str, arg: str) -> bytes:
    # the frame ends between an opcode and its argument, a second frame holds the rest
    head = asm(stack_global(module, name))
    tail = asm(const((arg,)), o.REDUCE(), o.STOP())
    return asm(o.PROTO(5), frame(head, length=1), frame(tail))


def _nested(module: str, name: str, arg: str) -> bytes:
    # a FRAME inside a frame with bytes still unread (the outer frame claims everything)
    inner = frame(call(module, name, arg), o.STOP())
    outer = asm(o.EMPTY_TUPLE(), o.POP()) + inner
    return asm(o.PROTO(4), frame(outer, length=len(outer)))


def _past_end(module: str, name: str, arg: str) -> bytes:
    # the frame claims more bytes than the file holds: pickle._Unpickler runs it to STOP
    body = asm(call(module, name, arg), o.STOP())
    return asm(o.PROTO(4), frame(body, length=len(body) + 4096))


def _unread(module: str, name: str, arg: str) -> bytes:
    # STOP inside the frame, bytes of the frame left after it (data a frame-aware reader skips)
    body = asm(call(module, name, arg), o.STOP(), b"\x00" * 16)
    return asm(o.PROTO(4), frame(body))


def _old_protocol(module: str, name: str, arg: str) -> bytes:
    return asm(o.PROTO(2), frame(call(module, name, arg), o.STOP()))


Builder = Callable[[str, str, str], bytes]
C_LOADS, PY_LOADS = pickle.loads, pickle._loads  # type: ignore[attr-defined]
VARIANTS: list[tuple[Builder, Callable[[bytes], object], str]] = [
    (_straddle_argument, C_LOADS, "straddle"),
    (_straddle_opcode, C_LOADS, "straddle"),
    (_nested, C_LOADS, "nested"),
    (_past_end, PY_LOADS, "past-end"),
    (_unread, C_LOADS, "unread"),
    (_old_protocol, C_LOADS, "protocol"),
]
IDS = [v[0].__name__.lstrip("_") for v in VARIANTS]


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


def _hidden_in_bytes(module: str, name: str, arg: str) -> bytes:
    """CPython gh-154848 (fickling's test_frame_boundary_divergence): FRAME claims 2 bytes, BINBYTES
    declares 0x107. Read linearly, the call is the content of a bytes object; the C unpickler reading
    a file without peek() (io.BytesIO, as torch.load reads a zip member) drops the length bytes
    beyond the frame, reads the length afresh (1) and then runs the call as opcodes. (fickling's
    version adds a 128 KiB UNICODE line so that a peeking file behaves the same.)"""
    hidden = asm(o.GLOBAL(module, name), o.UNICODE(arg), o.TUPLE1(), o.REDUCE(), o.MARK())
    return asm(
        o.PROTO(5),
        o.NONE(),
        o.MARK(),
        o.FRAME(2),
        o.BINBYTES(b"", length=0x107),
        b"\x00\x00",
        hidden.ljust(256 + 5, asm(o.NONE())),
        o.POP_MARK(),
        o.STOP(),
    )


def test_cpython_reading_a_file_runs_what_the_linear_reading_sees_as_bytes():
    benign = _hidden_in_bytes("builtins", "len", "abcd")
    assert pickle.loads(benign) is None  # linear: the call is inside a bytes value
    assert pickle.load(io.BytesIO(benign)) == 4  # a file: the call runs


def test_the_c_file_reading_is_decoded_too(scan_bytes, mark):
    report = scan_bytes("divergent.pkl", _hidden_in_bytes("os", "system", f"touch {mark}"))
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
