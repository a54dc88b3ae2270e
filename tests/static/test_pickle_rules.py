"""Signatures: every advisory's global is denied, legitimate checkpoint globals are allowed, and every
rule id the check can emit is documented in signatures/pickle_globals.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hfguard import signatures
from hfguard.checks import available_checks
from hfguard.findings import Severity, Verdict
from hfguard.static.pickle.rules import SIGNATURE_FILE, load_rules
from testing import pickles as fx

# (module, name, rule id) - names from the advisories listed at the top of the YAML
ADVISORY_GLOBALS = [
    ("os", "system", "exec-os"),
    ("posix", "system", "exec-os"),
    ("nt", "system", "exec-os"),
    ("subprocess", "Popen", "exec-os"),
    ("pty", "spawn", "exec-os"),
    ("builtins", "eval", "exec-builtins"),
    ("__builtin__", "exec", "exec-builtins"),
    ("builtins", "getattr", "exec-builtins"),
    ("builtins", "__import__", "exec-builtins"),
    ("runpy", "_run_code", "exec-interpreters"),
    ("code", "InteractiveInterpreter.runcode", "exec-interpreters"),
    ("cProfile", "run", "exec-interpreters"),
    ("profile", "Profile.run", "exec-interpreters"),
    ("timeit", "timeit", "exec-interpreters"),
    ("trace", "Trace.run", "exec-interpreters"),
    ("doctest", "debug_script", "exec-interpreters"),
    ("pdb", "run", "exec-interpreters"),
    ("bdb", "Bdb.run", "exec-interpreters"),
    ("pydoc", "pipepager", "exec-interpreters"),
    ("idlelib.pyshell", "ModifiedInterpreter.runcode", "exec-interpreters"),
    ("lib2to3.pgen2.pgen", "ParserGenerator.make_label", "exec-interpreters"),
    ("pip", "main", "exec-interpreters"),
    ("pip._internal", "main", "exec-interpreters"),
    ("ensurepip", "_run_pip", "exec-interpreters"),
    ("venv", "create", "exec-interpreters"),
    ("asyncio.unix_events", "_UnixSubprocessTransport._start", "exec-interpreters"),
    ("asyncio", "create_subprocess_shell", "exec-interpreters"),
    ("importlib", "import_module", "exec-interpreters"),
    ("pkgutil", "resolve_name", "exec-interpreters"),
    ("ctypes", "CDLL", "exec-interpreters"),
    ("multiprocessing.util", "spawnv_passfds", "exec-interpreters"),
    ("webbrowser", "open", "exec-interpreters"),
    ("sys", "modules", "exec-interpreters"),
    ("numpy.testing._private.utils", "runstring", "exec-interpreters"),
    ("numpy.f2py", "compile", "exec-interpreters"),
    ("distutils.spawn", "spawn", "exec-interpreters"),
    ("setuptools.sandbox", "run_setup", "exec-interpreters"),
    ("functools", "reduce", "exec-interpreters"),
    ("_operator", "attrgetter", "exec-operator"),
    ("operator", "methodcaller", "exec-operator"),
    ("functools", "partial", "exec-operator"),
    ("types", "FunctionType", "code-objects"),
    ("types", "CodeType", "code-objects"),
    ("marshal", "loads", "code-objects"),
    ("shutil", "rmtree", "io-files"),
    ("_io", "FileIO", "io-files"),
    ("io", "open", "io-files"),
    ("tempfile", "mktemp", "io-files"),
    ("pathlib", "Path.write_text", "io-files"),
    ("socket", "create_connection", "io-network"),
    ("ssl", "get_server_certificate", "io-network"),
    ("urllib.request", "urlopen", "io-network"),
    ("requests", "get", "io-network"),
    ("httpx", "get", "io-network"),
    ("http.client", "HTTPSConnection", "io-network"),
    ("ftplib", "FTP", "io-network"),
    ("smtplib", "SMTP", "io-network"),
    ("pickle", "loads", "nested-deserializer"),
    ("_pickle", "loads", "nested-deserializer"),
    ("dill", "loads", "nested-deserializer"),
    ("cloudpickle", "loads", "nested-deserializer"),
    ("joblib", "load", "nested-deserializer"),
    ("torch", "load", "nested-deserializer"),
    ("torch.serialization", "load", "nested-deserializer"),
    ("torch.storage", "_load_from_bytes", "nested-deserializer"),
    ("numpy", "load", "nested-deserializer"),
    ("shelve", "open", "nested-deserializer"),
    ("yaml", "unsafe_load", "nested-deserializer"),
    ("jsonpickle", "decode", "nested-deserializer"),
    ("torch._C", "_load_for_lite_interpreter", "torch-internals"),
    ("torch.hub", "load", "torch-internals"),
    ("torch", "hub.load", "torch-internals"),
    ("torch.jit", "load", "torch-internals"),
    ("torch.package", "PackageImporter", "nested-deserializer"),
    ("torch._dynamo.guards", "GuardBuilder.get", "torch-internals"),
    ("torch.fx.experimental.symbolic_shapes", "ShapeEnv.evaluate_guards_expression", "torch-internals"),
    ("torch.utils.bottleneck.__main__", "run_cprofile", "torch-internals"),
    ("torch.utils._config_module", "ConfigModule.load_config", "nested-deserializer"),  # GHSA-vv6j-3g6g-2pvj
    ("torch.utils", "x", None),  # not listed: unknown
]


@pytest.mark.parametrize(("module", "name", "rule_id"), ADVISORY_GLOBALS)
def test_advisory_globals_are_denied(module, name, rule_id):
    from hfguard.static.pickle.vm import _dotted

    qual = ".".join(_dotted(module, name))
    c = load_rules().classify(qual)
    if rule_id is None:
        assert c.status == "unknown"
    else:
        assert c.status == "denied" and c.rule.id == rule_id, (qual, c)


@pytest.mark.parametrize(("module", "name", "rule_id"), [g for g in ADVISORY_GLOBALS if g[2]][::3])
def test_advisory_globals_block_in_a_pickle(scan_bytes, module, name, rule_id):
    data = f"c{module}\n{name}\n(tR.".encode()
    report = scan_bytes("x.pkl", data)
    assert report.verdict is Verdict.BLOCK
    [f] = fx.dangerous(report).values()
    assert f.evidence["signature"] == rule_id and f.evidence["use"] == "called"


def test_referenced_only_is_lower_but_still_blocks(scan_bytes):
    # os.system only referenced (as a dict value), never called
    report = scan_bytes("ref.pkl", b"\x80\x02}X\x01\x00\x00\x00acos\nsystem\ns.")
    [f] = fx.dangerous(report).values()
    assert f.evidence["use"] == "referenced" and f.severity is Severity.HIGH
    assert report.verdict is Verdict.BLOCK


def test_dunder_attribute_walks(scan_bytes):
    report = scan_bytes(
        "d.pkl", b"\x80\x04" + fx.op_str("builtins") + fx.op_str("object.__subclasses__") + b"\x93)R."
    )
    [f] = [f for f in report.all_findings() if f.rule == "pickle/dunder-attribute"]
    assert f.evidence["global"] == "builtins.object.__subclasses__" and report.verdict is Verdict.BLOCK


def test_reconstructor_arguments_count_as_called(scan_bytes):
    # copyreg._reconstructor(cls, base, state) calls base.__init__: base=os.system is "called"
    data = b"\x80\x02ccopyreg\n_reconstructor\ncbuiltins\nobject\ncos\nsystem\nX\x02\x00\x00\x00id\x87R."
    [f] = fx.dangerous(scan_bytes("r.pkl", data)).values()
    assert f.evidence["global"] == "os.system" and f.evidence["use"] == "called"
    assert f.severity is Severity.CRITICAL


@pytest.mark.parametrize(
    "qual",
    [
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.FloatStorage",
        "torch.BFloat16Storage",
        "torch.storage.UntypedStorage",
        "torch.bfloat16",
        "torch.Size",
        "torch.device",
        "collections.OrderedDict",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.dtype",
        "numpy.random._pickle.__randomstate_ctor",
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.tree._tree.Tree",
        "sklearn.linear_model._logistic.LogisticRegression",
        "argparse.Namespace",
        "pathlib.PosixPath",
        "builtins.set",
        "_codecs.encode",
        "copyreg._reconstructor",
        "torch.cuda.FloatStorage",
        "torch.cuda.HalfTensor",
        "torch.FloatTensor",
    ],
)
def test_checkpoint_globals_are_allowed(qual):
    assert load_rules().classify(qual).status == "allowed", qual


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("sklearn.linear_model._base", "os.system"),
        ("transformers.training_args", "os.system"),
        ("torch.serialization", "os.system"),
        ("numpy.core.multiarray", "sys.modules"),
        ("collections", "OrderedDict.__init__.__globals__"),
    ],
)
def test_attribute_walks_through_allowed_modules_are_denied(scan_bytes, module, name):
    from hfguard.static.pickle.vm import _dotted

    qual = ".".join(_dotted(module, name))
    c = load_rules().classify(qual, name)
    if "__globals__" in name:
        assert c.status == "unknown"  # and the dunder rule blocks it, below
    else:
        assert c.status == "denied", qual
    data = b"\x80\x04" + fx.op_str(module) + fx.op_str(name) + b"\x93)R."
    assert scan_bytes("walk.pkl", data).verdict is Verdict.BLOCK


def test_deny_wins_and_prefixes_are_whole_components():
    rules = load_rules()
    assert rules.classify("os.path.join").status == "denied"
    assert rules.classify("osmosis.thing").status == "unknown"  # prefix is per dotted component
    assert rules.classify("torch.storage._load_from_bytes").status == "denied"
    assert rules.classify("pathlib.PosixPath.write_text").status == "denied"
    assert rules.classify("torch.jit._pickle.build_intlist").status == "allowed"  # a deny exception
    assert rules.classify("torch.jit.load").status == "denied"


def test_signature_file_is_well_formed_and_documents_every_rule():
    doc = signatures.load(SIGNATURE_FILE)
    assert doc["version"]
    ids = [e["id"] for e in doc["deny"] + doc["allow"]]
    assert len(ids) == len(set(ids))
    for entry in doc["deny"]:
        Severity.parse(entry["severity"])
        assert entry["category"] and entry["description"] and entry["match"]
    # every rule id the code can emit is documented with a severity
    src = Path(__file__).parents[2] / "hfguard" / "static" / "pickle"
    emitted = set()
    for f in src.rglob("*.py"):
        emitted |= set(re.findall(r'"((?:pickle|zip|archive|numpy|torch)/[a-z0-9-]+)"', f.read_text()))
    assert emitted, "no rule ids found"
    assert emitted <= set(doc["structural"]), emitted - set(doc["structural"])


def test_many_unknown_globals_are_summarised(scan_bytes):
    body = b"".join(f"cpkg{i}\nThing\n0".encode() for i in range(120))
    report = scan_bytes("many.pkl", b"\x80\x02" + body + b"N.")
    unknown = [f for f in report.all_findings() if f.rule == "pickle/unknown-global"]
    summary = [f for f in unknown if "more" in f.evidence]
    assert len(unknown) == 51 and len(summary) == 1 and summary[0].evidence["more"] == 70
    assert report.verdict is Verdict.FLAG


def test_check_is_registered():
    [c] = [c for c in available_checks() if c.id == "static.serialization"]
    assert c.tier == "static"
