"""The symbolic VM on hand-written opcode streams: bypass techniques, structure, hostile input."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import subprocess
import sys

import pytest

from hfguard.findings import Severity, Verdict
from hfguard.static.pickle.vm import (
    OPCODES,
    Call,
    Global,
    Limits,
    PersistentRef,
    PickleVM,
    Reader,
    SymDict,
    scan_stream,
)
from testing import pickles as fx


def run(data: bytes, limits: Limits | None = None):
    r = Reader(io.BytesIO(data), size=len(data))
    return scan_stream(r, PickleVM(limits))


def one(data: bytes, limits: Limits | None = None):
    results, trailing = run(data, limits)
    assert trailing is None
    return results[0]


def test_every_stdlib_opcode_is_known():
    assert {op.name for op in pickletools.opcodes} == set(OPCODES.values())
    assert {ord(op.code.encode("latin-1")) for op in pickletools.opcodes} == set(OPCODES)


def test_payload_is_live_when_really_unpickled(tmp_path):
    """The fixtures are real: unpickled in a child process, they leave the mark."""
    mark = tmp_path / "LIVE"
    code = "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=fx.evil_pickle(mark), check=True)
    assert mark.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_value_tree_of_every_protocol(protocol):
    data = pickle.dumps(
        {
            "a": [1, 2.5, "x", b"y", None, True],
            "t": (1, 2),
            "s": {3},
            "f": frozenset({4}),
            "big": 1 << 100,
            "neg": -7,
            "u": "é",
        },
        protocol=protocol,
    )
    res = one(data)
    assert res.complete and res.protocol == (protocol if protocol >= 2 else 0)
    assert isinstance(res.value, SymDict)
    a = res.value.get("a")
    assert a[:3] + a[4:] == [1, 2.5, "x", None, True]
    if protocol >= 3:
        assert a[3] == b"y"
    else:  # bytes before protocol 3 are rebuilt by _codecs.encode (an allowed global)
        assert isinstance(a[3], Call) and a[3].func.qualname == "_codecs.encode"
    assert res.value.get("t") == (1, 2) and res.value.get("big") == 1 << 100 and res.value.get("u") == "é"


def test_memo_built_stack_global_resolves_the_real_name(mark):
    res = one(fx.memo_stack_global(mark))
    [g] = [g for g in res.globals]
    assert (g.module, g.name, g.opcode) == ("builtins", "exec", "STACK_GLOBAL")
    assert g.uses == {"called"} and g.sources == ("memo", "memo")
    assert isinstance(res.value, Call) and res.value.func is g and res.value.kind == "reduce"


def test_inst_with_python2_name(mark):
    res = one(fx.inst_payload(mark))
    [g] = res.globals
    assert g.qualname == "builtins.exec" and g.opcode == "INST" and "called" in g.uses
    assert res.value.kind == "inst" and res.value.args == (fx.exec_code(mark),)


def test_obj_and_escaped_strings(mark):
    res = one(fx.obj_payload(mark))
    assert res.globals[0].qualname == "os.system" and res.value.kind == "obj"
    res = one(fx.escaped_stack_global(mark))
    g = res.globals[0]
    assert g.qualname == "os.system" and set(g.sources) == {"escaped-string", "escaped-unicode"}


def test_string_escapes_decode_as_pickle_does_without_warnings():
    """A protocol-0 STRING with an escape Python warns about (an unknown `\\-`, an octal past
    \\377) decodes to the bytes pickle gets, and no DeprecationWarning escapes: under
    `python -W error` one was an exception, and a harmless old pickle an ERROR (check crashed)."""
    import codecs
    import random
    import warnings

    from hfguard.static.pickle.vm import string_escape_decode

    rng = random.Random(7)
    alphabet = b"\\\\\\x0123456789abfnrtv'\"-8Z\n"
    cases = [b"a\\-b", b"\\400", b"\\777a", b"\\8", b"\\x4", b"\\", b"\\\\-", b"\\0\\12\\123"]
    cases += [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(5000)]
    for data in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                want: bytes | type[ValueError] = codecs.escape_decode(data)[0]
            except ValueError:
                want = ValueError
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                got: bytes | type[ValueError] = string_escape_decode(data)
            except ValueError:
                got = ValueError
        assert got == want, data
    code = ("import io, sys; from hfguard.static.pickle.vm import PickleVM, Reader, scan_stream; "
            "d = sys.stdin.buffer.read(); "
            "[r], _ = scan_stream(Reader(io.BytesIO(d), size=len(d)), PickleVM()); "
            "print(r.complete, repr(r.value))")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], input=b"S'a\\-b'\np0\n.",
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [b"True", b"'a\\\\-b'"]


def test_ext_codes_are_anomalies():
    res = one(fx.ext_payload())
    assert [a.rule for a in res.anomalies] == ["pickle/unknown-extension"]
    assert res.anomalies[0].evidence == {"code": 0x42} and res.anomalies[0].offset == 2


def test_every_pickle_after_stop_is_scanned(mark):
    results, trailing = run(fx.two_pickles(mark))
    assert trailing is None and len(results) == 2
    assert [g.qualname for g in results[1].globals] == ["builtins.exec"]
    assert results[1].start == len(pickle.dumps({"ok": 1}, protocol=2))


def test_trailing_garbage_and_truncation():
    good = pickle.dumps([1, 2, 3], protocol=4)
    results, trailing = run(good + b"\x00garbage")
    assert trailing is not None and trailing.rule == "pickle/trailing-data" and trailing.offset == len(good)
    res = one(good[:-3])
    assert not res.complete and res.anomalies[-1].rule == "pickle/truncated"


def test_non_string_stack_global_and_indirect_call():
    # STACK_GLOBAL whose "module" is the result of a call: getattr-style gadget
    data = (
        b"\x80\x04"
        + fx.op_str("builtins")
        + fx.op_str("str")
        + b"\x93"
        + fx.op_str("o")
        + b"\x85R"
        + fx.op_str("system")
        + b"\x93)R."
    )
    res = one(data)
    rules = [a.rule for a in res.anomalies]
    assert "pickle/non-string-global" in rules
    # calling the result of a call
    data = b"\x80\x04" + fx.op_str("collections") + fx.op_str("OrderedDict") + b"\x93)R)R."
    assert [a.rule for a in one(data).anomalies] == ["pickle/indirect-call"]


def test_build_on_a_global_is_a_mutation():
    data = b"cos\nenviron\n}" + fx.op_str("LD_PRELOAD").replace(b"\x8c", b"X", 1)[:0] + b"b."
    res = one(b"cos\nenviron\n}b.")
    assert res.globals[0].uses == {"mutated"}
    assert [a.rule for a in res.anomalies] == ["pickle/global-mutation"]
    assert data  # the short form above is the one scanned


def test_persistent_ids_and_torch_like_structure():
    data = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n"
        b")RtR."
    )
    res = one(data)
    assert res.complete and res.persistent_ids == 1
    assert isinstance(res.value, Call) and res.value.func.qualname == "torch._utils._rebuild_tensor_v2"
    pid = res.value.args[0]
    assert isinstance(pid, PersistentRef) and pid.pid[0] == "storage" and isinstance(pid.pid[1], Global)


@pytest.mark.parametrize(
    "blob",
    [
        b"\x80\x04\x8e" + struct.pack("<Q", 1 << 60),  # BINBYTES8 of 1 EiB
        b"\x80\x04\x8d" + struct.pack("<Q", 1 << 40) + b"abc",  # BINUNICODE8 of 1 TiB
        b"\x80\x02T" + struct.pack("<i", -5),  # negative BINSTRING length
        b"\x80\x02\x8b" + struct.pack("<i", 1 << 30),  # LONG4 of 1 GiB
    ],
)
def test_hostile_lengths_never_allocate(blob):
    res = one(blob)
    assert not res.complete and res.anomalies[0].rule in ("pickle/truncated", "pickle/malformed")
    assert res.anomalies[0].offset == 2


def test_bounds_are_findings_not_crashes():
    deep = b"\x80\x04" + b"(" * 20_000 + b"."
    res = one(deep)
    assert (
        res.anomalies[0].rule == "pickle/limit-exceeded"
        and res.anomalies[0].evidence["limit_name"] == "max_marks"
    )
    nested = b"\x80\x04" + b"]" * 100_000 + b"a" * 99_999 + b"."  # 100k nested lists, no MARK
    res = one(nested)
    assert res.complete and not res.anomalies
    million = b"\x80\x04" + b"N0" * 1_000_000 + b"N."
    res = one(million, Limits(max_opcodes=100_000))
    assert res.anomalies[0].rule == "pickle/limit-exceeded" and res.opcodes == 100_000
    globs = b"\x80\x04" + (fx.op_str("a") + fx.op_str("b") + b"\x930") * 50 + b"N."
    assert one(globs, Limits(max_globals=10)).anomalies[0].evidence["limit_name"] == "max_globals"
    calls = b"\x80\x04" + fx.op_str("a") + fx.op_str("b") + b"\x93\x94" + b"h\x00)R0" * 50 + b"N."
    assert one(calls, Limits(max_calls=10)).anomalies[0].evidence["limit_name"] == "max_calls"
    memo = b"\x80\x04N" + b"\x94" * 5000 + b"."
    res = one(memo, Limits(max_memo=1000))
    assert res.anomalies[0].evidence["limit_name"] == "max_memo"


def test_garbage_is_malformed_with_offset():
    for data, rule in (
        (b"\x80\x04\xffN.", "pickle/malformed"),
        (b"\x80\x09N.", "pickle/malformed"),
        (b"\x80\x04h\x07.", "pickle/malformed"),
        (b"\x80\x04R.", "pickle/malformed"),
        (b"\x80\x04cos\n", "pickle/truncated"),
    ):
        res = one(data)
        assert res.anomalies[0].rule == rule, data
    assert one(b"\x80\x04\xffN.").anomalies[0].offset == 2


def test_engine_blocks_and_never_runs(mark, scan_bytes):
    report = scan_bytes("model.bin", fx.memo_stack_global(mark))
    assert report.verdict is Verdict.BLOCK
    f = fx.dangerous(report)["builtins.exec"]
    assert f.rule == "pickle/dangerous-global" and f.check == "static.serialization"
    assert f.severity is Severity.CRITICAL and f.evidence["use"] == "called"
    assert f.evidence["opcode"] == "STACK_GLOBAL" and f.location.startswith("offset ")
