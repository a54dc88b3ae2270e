"""Published pickle-scanner bypasses as named regression tests, one per advisory, each payload
assembled from opcodes (testing/pickle_asm.py) the way the advisory's proof of concept writes it:
picklescan's GHSA test data (tests/init_data_files.py), fickling's (test/test_bypasses.py),
modelscan's evasion categories, and the ShadowPickle class (a pickle that rebinds an attribute of
an imported object, then calls the overwritten name). Every gadget that runs code, processes or a
nested deserialiser must BLOCK; nothing here is ever loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfguard.findings import Verdict
from testing import pickles as fx
from testing.advisories import GADGETS, Gadget
from testing.pickle_asm import asm, call, const, frame, o, program, stack_global


def _blocks(scan_bytes, data: bytes, *qualnames: str, name: str = "model.pkl") -> dict[str, object]:
    report = scan_bytes(name, data)
    assert report.verdict is Verdict.BLOCK, [f.to_dict() for f in report.all_findings()]
    found = fx.dangerous(report)
    assert set(qualnames) <= set(found), sorted(found)
    return found


def _gadgets(scan_bytes, mark: Path, *gadgets: Gadget) -> None:
    """Each gadget called in its own pickle, the advisory's way (STACK_GLOBAL + REDUCE, framed)."""
    for module, name, args in gadgets:
        args = tuple(a if a != "CMD" else f"touch {mark}" for a in args)
        found = _blocks(scan_bytes, program(frame(call(module, name, *args))), f"{module}.{name}")
        assert found[f"{module}.{name}"].evidence["use"] == "called"


# -- picklescan (github.com/mmaitre314/picklescan/security/advisories) --------------------------------
def test_GHSA_g38g_8gr9_h9xp(scan_bytes, mark):
    """stdlib helpers with hidden subprocess/os.system calls."""
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-g38g-8gr9-h9xp"])


def test_GHSA_4r9r_ch6f_vxmx(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-4r9r-ch6f-vxmx"])


def test_GHSA_4whj_rm5r_c2v8(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-4whj-rm5r-c2v8"])


def test_GHSA_86cj_95qr_2p4f(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-86cj-95qr-2p4f"])


def test_GHSA_f4x7_rfwp_v3xw(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-f4x7-rfwp-v3xw"])


def test_GHSA_f745_w6jp_hpxx(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-f745-w6jp-hpxx"])


def test_GHSA_jhph_76pp_mggw(scan_bytes, mark):
    # run_and_read_all(run, cmd): the runner is passed as an argument, not called by the stream
    body = [
        *stack_global("torch.utils.collect_env", "run_and_read_all"),
        o.MARK(),
        *stack_global("torch.utils.collect_env", "run"),
        *const(f"touch {mark}"),
        o.TUPLE(),
        o.REDUCE(),
    ]
    _blocks(
        scan_bytes,
        program(frame(body)),
        "torch.utils.collect_env.run_and_read_all",
        "torch.utils.collect_env.run",
    )


def test_GHSA_h3qp_7fh3_f8h4(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-h3qp-7fh3-f8h4"])


def test_GHSA_vr7h_p6mm_wpmh(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-vr7h-p6mm-wpmh"])


def test_GHSA_vv6j_3g6g_2pvj(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-vv6j-3g6g-2pvj"])


def test_GHSA_5qwp_399c_mjwf(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-5qwp-399c-mjwf"])


def test_GHSA_g344_hcph_8vgg(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-g344-hcph-8vgg"])


def test_GHSA_x696_vm39_cp64(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-x696-vm39-cp64"])


def test_GHSA_6vqj_c2q5_j97w(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-6vqj-c2q5-j97w"])


def test_GHSA_7wx9_6375_f5wh(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-7wx9-6375-f5wh"])


def test_GHSA_9w88_8rmg_7g2p(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-9w88-8rmg-7g2p"])


def test_GHSA_49gj_c84q_6qm9(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-49gj-c84q-6qm9"])


def test_GHSA_f54q_57x4_jg88(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-f54q-57x4-jg88"])


def test_GHSA_p9w7_82w4_7q8m(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-p9w7-82w4-7q8m"])


def test_GHSA_3vg9_h568_4w9m(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-3vg9-h568-4w9m"])


def test_GHSA_6w4w_5w54_rjvr(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-6w4w-5w54-rjvr"])


def test_GHSA_7cq8_mj8x_j263(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-7cq8-mj8x-j263"])


def test_GHSA_8r4j_24qv_fmq9(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-8r4j-24qv-fmq9"])


def test_GHSA_9xph_j2h6_g47v(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-9xph-j2h6-g47v"])


def test_GHSA_m869_42cg_3xwr(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-m869-42cg-3xwr"])


def test_GHSA_j343_8v2j_ff7w(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-j343-8v2j-ff7w"])


def test_GHSA_3gf5_cxq9_w223(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-3gf5-cxq9-w223"])


def test_GHSA_cj3c_v495_4xqh(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-cj3c-v495-4xqh"])


def test_GHSA_fqq6_7vqf_w3fg(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-fqq6-7vqf-w3fg"])


def test_GHSA_xp4f_hrf8_rxw7(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-xp4f-hrf8-rxw7"])


def test_GHSA_vvpj_8cmc_gx39(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-vvpj-8cmc-gx39"])


def test_GHSA_q77w_mwjj_7mqx(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-q77w-mwjj-7mqx"])


def test_GHSA_jgw4_cr84_mqxg(scan_bytes, mark):
    # the same asyncio gadget as the data.pkl of a torch-style zip named .bin
    data = program(
        frame(call("asyncio.unix_events", "_UnixSubprocessTransport._start", None, f"touch {mark}"))
    )
    z = fx.zip_with([("archive/data.pkl", data), ("archive/version", b"3\n")])
    _blocks(scan_bytes, z, "asyncio.unix_events._UnixSubprocessTransport._start", name="pytorch_model.bin")


def test_GHSA_m273_6v24_x4m4(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-m273-6v24-x4m4"])


def test_GHSA_4675_36f9_wf6r(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-4675-36f9-wf6r"])


def test_GHSA_84r2_jw7c_4r5q(scan_bytes, mark):
    # operator.methodcaller("system", cmd)(pydoc.locate("os"))
    body = [
        *call("operator", "methodcaller", "system", f"touch {mark}"),
        o.MARK(),
        *call("pydoc", "locate", "os"),
        o.TUPLE(),
        o.REDUCE(),
    ]
    _blocks(scan_bytes, program(frame(body)), "pydoc.locate", "operator.methodcaller")


def test_GHSA_vqmv_47xg_9wpr(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-vqmv-47xg-9wpr"])


def test_GHSA_r8g5_cgf2_4m4m(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-r8g5-cgf2-4m4m"])


def test_GHSA_955r_x9j8_7rhh(scan_bytes, mark):
    # _operator.methodcaller("system", cmd)(builtins.__import__("os")), protocol-0 GLOBALs
    body = [
        o.GLOBAL("_operator", "methodcaller"),
        *const(("system", f"touch {mark}")),
        o.REDUCE(),
        o.MARK(),
        o.GLOBAL("builtins", "__import__"),
        *const(("os",)),
        o.REDUCE(),
        o.TUPLE(),
        o.REDUCE(),
    ]
    _blocks(scan_bytes, program(body, proto=2), "_operator.methodcaller", "builtins.__import__")


def test_GHSA_46h3_79wf_xr6c(scan_bytes, mark):
    # _operator.attrgetter("system")(builtins.__import__("os"))(cmd)
    body = [
        o.GLOBAL("_operator", "attrgetter"),
        *const(("system",)),
        o.REDUCE(),
        o.MARK(),
        o.GLOBAL("builtins", "__import__"),
        *const(("os",)),
        o.REDUCE(),
        o.TUPLE(),
        o.REDUCE(),
        *const((f"touch {mark}",)),
        o.REDUCE(),
    ]
    _blocks(scan_bytes, program(body, proto=2), "_operator.attrgetter", "builtins.__import__")


def test_GHSA_9726_w42j_3qjr(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-9726-w42j-3qjr"])


def test_GHSA_m7j5_r2p5_c39r(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-m7j5-r2p5-c39r"])


def test_GHSA_9m3x_qqw2_h32h(scan_bytes, mark):
    # cloudpickle's function reconstruction: CodeType through _builtin_type, then _make_function
    body = [
        *call("cloudpickle.cloudpickle", "_builtin_type", "CodeType"),
        o.POP(),
        *call("cloudpickle.cloudpickle", "subimport", "os"),
        o.POP(),
        *call("cloudpickle.cloudpickle", "_make_function", None, None, None, None),
        o.POP(),
        *call("types", "CodeType", 0, 0),
    ]
    _blocks(scan_bytes, program(frame(body)), "cloudpickle.cloudpickle._make_function", "types.CodeType")


def test_GHSA_97f8_7cmv_76j2(scan_bytes, mark):
    # legacy torch file whose magic number comes from eval() instead of a literal
    magic = program(call("builtins", "eval", "0x1950a86a20f9469cfc6c"), proto=2)
    rest = program(const(1001), proto=2) + program(o.EMPTY_DICT(), proto=2)
    evil = program(call("os", "system", f"touch {mark}"), proto=2)
    _blocks(scan_bytes, magic + rest + evil, "builtins.eval", "os.system", name="legacy.pt")


# -- fickling (github.com/trailofbits/fickling/security/advisories) ----------------------------------
def test_GHSA_r7v6_mfhq_g3m2(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-r7v6-mfhq-g3m2"])
    _blocks(
        scan_bytes, program([o.GLOBAL("pty", "spawn"), *const(("id",)), o.REDUCE()], proto=2), "pty.spawn"
    )


def test_GHSA_565g_hwwr_4pp3(scan_bytes, mark):
    # types.FunctionType(marshal.loads(code), {})
    body = [
        *stack_global("types", "FunctionType"),
        o.MARK(),
        *call("marshal", "loads", b"c\x00"),
        o.EMPTY_DICT(),
        o.TUPLE(),
        o.REDUCE(),
    ]
    _blocks(scan_bytes, program(frame(body)), "types.FunctionType", "marshal.loads")


def test_GHSA_wfq2_52f7_7qvj(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-wfq2-52f7-7qvj"])


def test_GHSA_q5qq_mvfm_j35x(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-q5qq-mvfm-j35x"])


def test_GHSA_p523_jq9w_64x9(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-p523-jq9w-64x9"])


def test_GHSA_5hvc_6wx8_mvv4(scan_bytes, mark):
    # builtins.getattr(ctypes.CDLL("libc"), "system")(cmd); pydoc.locate("os.system")(cmd)
    via_ctypes = [
        *stack_global("builtins", "getattr"),
        o.MARK(),
        *call("ctypes", "CDLL", "libc.so.6"),
        *const("system"),
        o.TUPLE(),
        o.REDUCE(),
        *const((f"touch {mark}",)),
        o.REDUCE(),
    ]
    _blocks(scan_bytes, program(frame(via_ctypes)), "builtins.getattr", "ctypes.CDLL")
    via_pydoc = [*call("pydoc", "locate", "os.system"), *const((f"touch {mark}",)), o.REDUCE()]
    _blocks(scan_bytes, program(frame(via_pydoc)), "pydoc.locate")


def test_GHSA_h4rm_mm56_xf63(scan_bytes, mark):
    # getattr(__import__("os"), "system")(cmd) with protocol-0 GLOBALs
    body = [
        o.GLOBAL("builtins", "getattr"),
        o.MARK(),
        o.GLOBAL("builtins", "__import__"),
        *const(("os",)),
        o.REDUCE(),
        *const("system"),
        o.TUPLE(),
        o.REDUCE(),
        *const((f"touch {mark}",)),
        o.REDUCE(),
    ]
    _blocks(scan_bytes, program(body, proto=2), "builtins.getattr", "builtins.__import__")


def test_GHSA_mxhj_88fx_4pcv(scan_bytes, mark):
    # OBJ's call is discarded by POP: still a call
    body = [o.MARK(), *stack_global("smtplib", "SMTP"), *const("127.0.0.1"), o.OBJ(), o.POP(), o.NONE()]
    found = _blocks(scan_bytes, program(body), "smtplib.SMTP")
    assert found["smtplib.SMTP"].evidence["use"] == "called"


def test_GHSA_5hwf_rc88_82xm(scan_bytes, mark):
    _gadgets(scan_bytes, mark, *GADGETS["GHSA-5hwf-rc88-82xm"])


def test_GHSA_5j3x_jp52_966f(scan_bytes, mark):
    # a dotted name walked from an innocent module's own import: pathlib -> os.system
    body = [*stack_global("pathlib", "os.system"), o.EMPTY_TUPLE(), o.REDUCE()]
    _blocks(scan_bytes, program(body), "pathlib.os.system")


def test_GHSA_cffv_grgg_g429(scan_bytes):
    # a global outside every allow list is never silently passed (ast.parse: unknown, FLAG)
    report = scan_bytes("model.pkl", program(stack_global("ast", "parse")))
    assert report.verdict is Verdict.FLAG and "pickle/unknown-global" in fx.rules_of(report)


def test_GHSA_6ggj_6f2q_f7mx(scan_bytes, mark):
    for module in ("_interpreters", "_xxsubinterpreters", "_interpqueues"):
        body = [*stack_global(module, "create"), o.EMPTY_TUPLE(), o.REDUCE()]
        _blocks(scan_bytes, program(body), f"{module}.create")


# -- modelscan's evasion categories: how STACK_GLOBAL's strings are made ------------------------------
def test_modelscan_memo_indirection(scan_bytes, mark):
    # names stored in the memo first, fetched back for STACK_GLOBAL (picklescan issue #14 too)
    body = [
        *const("os"),
        o.MEMOIZE(),
        o.POP(),
        *const("system"),
        o.BINPUT(7),
        o.POP(),
        o.BINGET(0),
        o.BINGET(7),
        o.STACK_GLOBAL(),
        *const((f"touch {mark}",)),
        o.REDUCE(),
    ]
    found = _blocks(scan_bytes, program(body), "os.system")
    assert found["os.system"].evidence["name_sources"] == ["memo", "memo"]


@pytest.mark.parametrize(
    ("push", "source"),
    [
        (lambda s: o.STRING(s), "string"),  # modelscan PR #313
        (lambda s: o.BINSTRING(s), "binstring"),
        (lambda s: o.UNICODE(s), "unicode"),
        (lambda s: o.STRING(s.replace("s", "\\x73")), "escaped-string"),
    ],
    ids=["STRING", "BINSTRING", "UNICODE", "escaped-STRING"],
)
def test_modelscan_pr313_string_opcodes(scan_bytes, mark, push, source):
    text = asm(push("os"))
    if source == "escaped-string":  # a Python-2 STRING with an escape the unpickler decodes
        text = b"S'o\\x73'\n"
    body = [
        text,
        push("system") if source != "escaped-string" else b"S'system'\n",
        o.STACK_GLOBAL(),
        *const((f"touch {mark}",)),
        o.REDUCE(),
    ]
    found = _blocks(scan_bytes, program(body), "os.system")
    assert source in found["os.system"].evidence["name_sources"]


def test_modelscan_non_string_operands(scan_bytes, mark):
    # STACK_GLOBAL's module is built by a call: the name is unknowable statically -> BLOCK
    body = [
        *call("builtins", "str", "os"),
        *const("system"),
        o.STACK_GLOBAL(),
        *const((f"touch {mark}",)),
        o.REDUCE(),
    ]
    report = scan_bytes("model.pkl", program(body))
    assert report.verdict is Verdict.BLOCK and "pickle/non-string-global" in fx.rules_of(report)


# -- ShadowPickle: rebind an attribute of an imported object, then call the overwritten name ----------
def test_shadowpickle_setattr_rebinds_then_calls(scan_bytes, mark):
    # builtins.setattr(collections.OrderedDict, "fromkeys", <callable>); collections.OrderedDict.fromkeys(...)
    body = [
        *stack_global("builtins", "setattr"),
        o.MARK(),
        *stack_global("collections", "OrderedDict"),
        *const("fromkeys"),
        *stack_global("builtins", "len"),
        o.TUPLE(),
        o.REDUCE(),
        o.POP(),
        *call("collections", "OrderedDict.fromkeys", f"touch {mark}"),
    ]
    _blocks(scan_bytes, program(frame(body)), "builtins.setattr")


def test_shadowpickle_build_on_an_allowed_global(scan_bytes, mark):
    # BUILD with (None, {"fromkeys": f}) on a class sets its attribute: only allowed globals in the
    # stream, the overwrite itself is what blocks
    body = [
        *stack_global("collections", "OrderedDict"),
        o.NONE(),
        o.EMPTY_DICT(),
        *const("fromkeys"),
        *stack_global("torch._utils", "_rebuild_tensor"),
        o.SETITEM(),
        o.TUPLE2(),
        o.BUILD(),
        o.POP(),
        *call("collections", "OrderedDict.fromkeys", f"touch {mark}"),
    ]
    report = scan_bytes("model.pkl", program(frame(body)))
    assert report.verdict is Verdict.BLOCK
    assert "pickle/global-mutation" in fx.rules_of(report) and not fx.dangerous(report)
