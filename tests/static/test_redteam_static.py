"""Regression tests for what the static red-team (bench/redteam_static.py) found: everyday files
written by the real libraries that were flagged, and attacks that got through. Benign files are made
by torch / sklearn / numpy / joblib / skops here; payloads by testing/pickle_asm.py or by editing
a real skops schema. Nothing is ever loaded."""

from __future__ import annotations

import importlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor, make_column_selector
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.preprocessing import StandardScaler

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.diffusers import DiffusersCheck
from hfguard.static.formats.skops import SkopsCheck
from hfguard.static.pickle.check import SerializationCheck
from hfguard.static.pickle.rules import load_rules
from hfguard.target import local_target
from testing import pickles as fx
from testing.chat_templates import EVERYDAY_TEMPLATE, SSTI_VARIANTS
from testing.pickle_asm import call, const, o, program, stack_global

torch = pytest.importorskip("torch")

X = np.random.default_rng(0).random((40, 3))
Y = (X[:, 0] > 0.5).astype(int)


def _findings(report) -> list:
    return [f.to_dict() for f in report.all_findings() if f.severity is not Severity.INFO]


# -- a whole module in torch's legacy (non-zip) format --------------------------------------------------

def test_legacy_whole_stock_module_passes_with_advice(scan_bytes):
    """torch's legacy save names the module class by persistent id ('module', cls, file, source) and
    its loader returns cls: a rebuild of a stock class, not a call of an unknown value."""
    buf = io.BytesIO()
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1), torch.nn.LSTM(2, 2))
    torch.save(model, buf, _use_new_zipfile_serialization=False)
    report = scan_bytes("model.pt", buf.getvalue())
    assert report.verdict is Verdict.PASS, _findings(report)
    [info] = report.all_findings()
    assert info.rule == "pickle/whole-module"
    assert "torch.nn.modules.rnn.LSTM" in info.evidence["classes"]


def test_legacy_module_persistent_id_naming_a_dangerous_callable(scan_bytes, mark):
    """The same persistent id naming os.system: the loader returns it and NEWOBJ calls it."""
    pid = [o.MARK(), *const("module"), *stack_global("os", "system"), *const("x.py"), *const("src"),
           o.TUPLE()]
    data = program(*pid, o.BINPERSID(), *const((f"touch {mark}",)), o.NEWOBJ(), proto=2)
    report = scan_bytes("model.pt", data)
    assert report.verdict is Verdict.BLOCK
    found = fx.dangerous(report)
    assert found["os.system"].evidence["use"] == "called"


def test_other_persistent_ids_stay_indirect_calls(scan_bytes):
    data = program(*const(("storage", "x")), o.BINPERSID(), o.EMPTY_TUPLE(), o.NEWOBJ(), proto=2)
    report = scan_bytes("model.pt", data)
    assert "pickle/indirect-call" in {f.rule for f in report.all_findings()}


# -- everyday sklearn / numpy pickles ----------------------------------------------------------------

EVERYDAY = {
    "grid_search": lambda: GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2, scoring="accuracy")
    .fit(X, Y),
    "random_search": lambda: RandomizedSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, n_iter=2, cv=2)
    .fit(X, Y),
    "target_ufuncs": lambda: TransformedTargetRegressor(LinearRegression(), func=np.log1p,
                                                        inverse_func=np.expm1).fit(X, Y + 1.0),
    "dtype_selector": lambda: ColumnTransformer(
        [("n", StandardScaler(), make_column_selector(dtype_include=np.number))]),
    "numpy_values": lambda: {"masked": np.ma.masked_array([1, 2], [0, 1]), "const": np.ma.masked,
                             "rec": np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
                             "ufuncs": [np.add, np.abs, np.sqrt], "scalar_types": [np.floating, np.integer]},
}


@pytest.mark.parametrize("kind", sorted(EVERYDAY))
def test_everyday_sklearn_and_numpy_pickles_pass(tmp_path, scan_bytes, kind):
    obj = EVERYDAY[kind]()
    path = tmp_path / "src.joblib"
    joblib.dump(obj, path)
    for name, data in (("model.joblib", path.read_bytes()), ("model.pkl", pickle.dumps(obj, protocol=5))):
        report = scan_bytes(name, data)
        assert report.verdict is Verdict.PASS, _findings(report)


def test_sklearn_test_helper_that_runs_scripts_blocks(scan_bytes, mark):
    """sklearn.utils._testing.assert_run_python_script_without_output(source) runs source in a
    subprocess, as stdlib's test.support.script_helper does."""
    data = program(*call("sklearn.utils._testing", "assert_run_python_script_without_output",
                         f"import os; os.system('touch {mark}')"))
    found = fx.dangerous(scan_bytes("model.pkl", data))
    runner = found["sklearn.utils._testing.assert_run_python_script_without_output"]
    assert runner.severity is Severity.CRITICAL


@pytest.mark.parametrize("module,name,real", [
    ("sklearn.neighbors._base", "partial", "functools.partial"),
    ("sklearn.feature_selection._base", "attrgetter", "operator.attrgetter"),
    ("sklearn.decomposition._dict_learning", "sys", "sys"),
    ("sklearn.pipeline", "deepcopy", "copy.deepcopy"),
])
def test_gadgets_re_exported_by_allow_listed_modules_are_not_allowed(scan_bytes, module, name, real):
    """An allow glob names modules, and a module holds what it imports: `sklearn.neighbors._base`
    + `partial` is functools.partial. Each such name is judged as the denied global it is."""
    assert hasattr(importlib.import_module(module), name)  # the re-export is real in this sklearn
    report = scan_bytes("model.pkl", program(*stack_global(module, name), o.EMPTY_TUPLE(), o.REDUCE()))
    found = fx.dangerous(report)
    assert f"{module}.{name}" in found and report.verdict is Verdict.BLOCK
    expected = load_rules().classify(real, real.rsplit(".", 1)[-1])
    assert found[f"{module}.{name}"].evidence["signature"] == expected.rule.id


def test_no_class_or_function_sklearn_defines_is_read_as_a_re_export():
    """The re-export rule keys on bare names; none of sklearn's own estimators shares one."""
    from sklearn.utils import all_estimators

    rules = load_rules()
    for _, cls in all_estimators():
        c = rules.classify(f"{cls.__module__}.{cls.__qualname__}", cls.__qualname__)
        assert c.status == "allowed", (cls, c)


# -- skops: names an sklearn module holds are not all sklearn estimators ---------------------------------

def _skops_with(tmp_path, node: dict):
    base = tmp_path / "base.skops"
    sio.dump({"model": LogisticRegression().fit(X, Y)}, base)
    with zipfile.ZipFile(base) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    schema = json.loads(members["schema.json"])
    schema["content"]["extra"] = node
    members["schema.json"] = json.dumps(schema).encode()
    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    report = scan(local_target([str(path)]), Policy(), [SkopsCheck(), SerializationCheck()])
    return report, [f for f in report.all_findings() if f.check == "static.skops"]


def _json(value):
    return {"__class__": type(value).__name__, "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True}


def _args(*values):
    return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
            "content": [_json(v) for v in values]}


def test_skops_constructor_call_of_sklearn_test_helper_blocks(tmp_path):
    """ConstructorFromReduceNode calls the name with the file's arguments; skops trusts none, and
    skops.io.load(trusted=get_untrusted_types(...)) runs this script."""
    node = {"__class__": "assert_run_python_script_without_output", "__module__": "sklearn.utils._testing",
            "__loader__": "ConstructorFromReduceNode", "content": _args("import os")}
    report, found = _skops_with(tmp_path, node)
    assert [(f.rule, f.severity) for f in found] == [("skops/dangerous-type", Severity.CRITICAL)]
    assert report.verdict is Verdict.BLOCK


def test_skops_loss_node_of_a_re_exported_callable_blocks(tmp_path):
    """LossNode calls the class its node names: subprocess.check_output as sklearn.utils._testing
    holds it."""
    node = {"__class__": "check_output", "__module__": "sklearn.utils._testing", "__loader__": "LossNode",
            "__reduce__": {"args": _args("id")}, "content": _json(None)}
    report, found = _skops_with(tmp_path, node)
    assert {f.rule for f in found} == {"skops/dangerous-type"} and report.verdict is Verdict.BLOCK


def test_skops_constructor_call_of_an_unknown_sklearn_name_is_untrusted(tmp_path):
    node = {"__class__": "remove", "__module__": "sklearn.datasets._base",
            "__loader__": "ConstructorFromReduceNode", "content": _args("/home/user/.bashrc")}
    report, found = _skops_with(tmp_path, node)
    assert [(f.rule, f.evidence["type"]) for f in found] == [("skops/untrusted-type",
                                                              "sklearn.datasets._base.remove")]
    assert report.verdict is Verdict.FLAG


def test_skops_dump_of_a_search_passes(tmp_path):
    """Object nodes are trusted by the pickle signatures now: a fitted search (estimator, splitter,
    scorer) still passes."""
    path = tmp_path / "grid.skops"
    sio.dump(GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(X, Y), path)
    report = scan(local_target([str(path)]), Policy(), [SkopsCheck(), SerializationCheck()])
    assert report.verdict is Verdict.PASS, _findings(report)


# -- diffusers: a custom component's code lives in the component's folder -------------------------------

def test_diffusers_component_code_in_its_own_folder_flags(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "unet": ["my_unet", "MyUNet"], "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]}))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "my_unet.py").write_text("class MyUNet:\n    pass\n")
    report = scan(local_target([str(tmp_path)]), Policy(), [DiffusersCheck()])
    [f] = report.all_findings()
    assert (f.rule, f.location, f.evidence["in_repo"]) == ("diffusers/custom-component", "unet", True)
    assert report.verdict is Verdict.FLAG



# -- numpy: every spelling numpy reads as an object dtype ------------------------------------------------

def _npy(descr: str, payload: bytes) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}"
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


@pytest.mark.parametrize("descr", ["'object'", "'object_'", "'f4,O'", "'(2,)O'", "('O', (2,))",
                                   "[('a', '<f4'), ('b', ('|O', (2,)))]"])
def test_npy_object_dtype_spellings_are_scanned(scan_bytes, mark, descr):
    """numpy.lib.format.descr_to_dtype reads each of these as (or with) an object field."""
    assert np.lib.format.descr_to_dtype(eval(descr)).hasobject  # noqa: S307 - our own literal
    report = scan_bytes("x.npy", _npy(descr, program(*call("os", "system", f"touch {mark}"))))
    assert report.verdict is Verdict.BLOCK and "os.system" in fx.dangerous(report)


def test_npy_layouts_numpy_writes_pass(tmp_path, scan_bytes):
    arrays = {"fortran": np.asfortranarray(np.ones((3, 4), ">f8")),
              "struct": np.zeros(3, dtype=[("a", "<i4"), ("b", [("c", "<f2"), ("d", "S3")], (2,))]),
              "dates": np.array(["2024-01-01"], dtype="M8[D]"), "text": np.array(["héllo", "wörld"]),
              "long": np.zeros(2, np.longdouble), "deltas": np.array([1], dtype="m8[us]")}
    for name, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr)
        report = scan_bytes(f"{name}.npy", buf.getvalue())
        assert report.verdict is Verdict.PASS and not report.all_findings(), (name, _findings(report))


# -- NeMo: targets hidden behind interpolations, native loaders, remote code ----------------------------

def _nemo_config(tmp_path, text: str):
    from hfguard.static.formats.nemo import NemoCheck

    path = tmp_path / "model_config.yaml"
    path.write_text(text)
    report = scan(local_target([str(path)]), Policy(), [NemoCheck()])
    return report, report.all_findings()


@pytest.mark.parametrize("text", [
    "names:\n  runner: os.system\nmodel:\n  x:\n    _target_: ${names.runner}\n",
    "p: s.sys\nmodel:\n  x:\n    _target_: \"o${p}tem\"\n",
    "model:\n  mod: subprocess\n  x:\n    _target_: ${..mod}.run\n",
    "model:\n  x:\n    fn: builtins.exec\n    _target_: ${.fn}\n",
    "a: ${b}\nb: posix.system\nm:\n  _target_: ${a}\n",
])
def test_hydra_target_interpolations_are_resolved_and_judged(tmp_path, text):
    """instantiate resolves the config before it imports `_target_`."""
    report, found = _nemo_config(tmp_path, text)
    assert [(f.rule, f.severity) for f in found] == [("nemo/hydra-target", Severity.CRITICAL)]
    assert "resolves to" in found[0].message and report.verdict is Verdict.BLOCK


def test_hydra_interpolations_that_stay_open_or_are_stock(tmp_path):
    report, found = _nemo_config(tmp_path, "m:\n  _target_: ${oc.env:TARGET}\n")
    assert [(f.rule, f.severity) for f in found] == [("nemo/hydra-target", Severity.MEDIUM)]
    text = ("enc: nemo.collections.asr.modules.ConformerEncoder\nmodel:\n  sample_rate: 16000\n"
            "  encoder:\n    _target_: ${enc}\n    feat_in: ${model.sample_rate}\n")
    report, found = _nemo_config(tmp_path, text)
    assert report.verdict is Verdict.PASS, [f.message for f in found]


@pytest.mark.parametrize("target", ["torch.ops.load_library", "numpy.ctypeslib.load_library",
                                    "torch.classes.load_library", "ctypes.CDLL"])
def test_hydra_targets_that_load_native_code_block(tmp_path, target):
    report, found = _nemo_config(tmp_path, f"model:\n  ext:\n    _target_: {target}\n    path: ./libext.so\n")
    assert [(f.rule, f.severity) for f in found] == [("nemo/hydra-target", Severity.CRITICAL)]


@pytest.mark.parametrize("flag", ["true", "'yes'", "1"])
def test_hydra_target_with_trust_remote_code_is_high(tmp_path, flag):
    text = ("model:\n  encoder:\n    _target_: transformers.AutoModel.from_pretrained\n"
            f"    pretrained_model_name_or_path: someone/encoder\n    trust_remote_code: {flag}\n")
    report, found = _nemo_config(tmp_path, text)
    assert [(f.rule, f.severity) for f in found] == [("nemo/hydra-target", Severity.HIGH)]
    off = text.replace(f"trust_remote_code: {flag}", "trust_remote_code: false")
    report, found = _nemo_config(tmp_path, off)
    assert report.verdict is Verdict.PASS


# -- TensorFlow: tf.print to a file is a file write ------------------------------------------------------

def _tf_scan(path):
    from hfguard.static.formats.tensorflow import TensorFlowCheck

    report = scan(local_target([str(path)]), Policy(), [TensorFlowCheck()])
    return report, report.all_findings()


@pytest.mark.parametrize("function", [None, "__inference_serve_9"])
def test_tf_print_to_a_file_is_a_file_write(tmp_path, function):
    """tf.print(cmd, output_stream="file://~/.bashrc") appends graph-chosen text to that file."""
    from testing import tensorflow_files as tff

    g = tff.print_to(tff.graph(["MatMul"]), "file:///home/user/.bashrc", function=function)
    report, found = _tf_scan(tff.saved_model_of(tmp_path / "sm", g))
    [write] = [f for f in found if f.evidence.get("output_stream")]
    assert write.severity is Severity.HIGH and write.evidence["output_stream"] == "file:///home/user/.bashrc"
    assert report.verdict is Verdict.BLOCK


def test_tf_print_to_a_file_in_pbtxt(tmp_path):
    from google.protobuf import text_format

    from testing import tensorflow_files as tff

    path = tmp_path / "saved_model.pbtxt"
    path.write_text(text_format.MessageToString(tff.print_to(tff.graph(["MatMul"]), "file:///etc/cron.d/x")))
    report, found = _tf_scan(path)
    assert report.verdict is Verdict.BLOCK
    assert [f.evidence["output_stream"] for f in found if f.evidence.get("output_stream")] == ["file:///etc/cron.d/x"]


def test_tf_print_to_the_log_passes(tmp_path):
    from testing import tensorflow_files as tff

    g = tff.print_to(tff.graph(["MatMul"]), "log(info)")
    report, _ = _tf_scan(tff.saved_model_of(tmp_path / "sm", g))
    assert report.verdict is Verdict.PASS


# -- chat templates: SSTI names built from pieces ---------------------------------------------------------



def _custom_code_scan(folder: Path):
    from hfguard.static.code.custom_code import CustomCodeCheck

    report = scan(local_target([str(folder)]), Policy(), [CustomCodeCheck()])
    return report, report.all_findings()


@pytest.mark.parametrize("kind", sorted(SSTI_VARIANTS))
def test_chat_template_gadgets_built_from_pieces_block(tmp_path, kind):
    """Dunder names hidden by escapes, concatenation, repetition, join or format, a subscript keyed by
    render-time string building, an item or attribute of a global callable."""
    template = EVERYDAY_TEMPLATE + SSTI_VARIANTS[kind]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    report, found = _custom_code_scan(tmp_path)
    assert [(f.rule, f.severity) for f in found] == [("chat-template/injection", Severity.CRITICAL)]
    assert report.verdict is Verdict.BLOCK


def test_everyday_chat_template_with_transformers_tags_passes(tmp_path):
    """{% generation %} and {% break %} parse (transformers' renderer knows them); namespace, items,
    tojson, raise_exception and strftime_now calls are ordinary."""
    from hfguard.static.code.template_ast import built_strings

    built = built_strings(EVERYDAY_TEMPLATE)
    assert built is not None and built.unanalysed is None  # parsed and walked, not skipped
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": EVERYDAY_TEMPLATE}))
    (tmp_path / "chat_template.jinja").write_text(EVERYDAY_TEMPLATE)
    report, found = _custom_code_scan(tmp_path)
    assert report.verdict is Verdict.PASS, [f.message for f in found]


def test_folding_is_bounded():
    from hfguard.static.code.template_ast import MAX_TEXT, built_strings

    built = built_strings("{{ x['_' * 100000000] }}{{ x[('ab' * 64) * 64] }}")
    assert built is not None
    assert all(len(s) <= MAX_TEXT for s in built.strings) and built.gadgets  # not folded, still built


def test_hostile_template_shapes_stay_bounded():
    """A 200k-deep subscript chain (jinja2's own find_all would overflow), a 50k-piece key, and a
    template over the parse bound: findings, never a crash; the last one only medium."""
    from hfguard.static.code.templates import template_problems

    deep = template_problems("{{ x" + "[0]" * 200_000 + " }}", "t")
    assert [o.severity for o in deep] in ([], [Severity.MEDIUM])
    assert [o.severity for o in template_problems("{{ x[" + "+".join(["1"] * 50_000) + "] }}", "t")] \
        == [Severity.CRITICAL]
    big = template_problems(EVERYDAY_TEMPLATE * 400, "t")
    assert [(o.severity, "unanalysed" in o.evidence) for o in big] == [(Severity.MEDIUM, True)]


# -- TorchScript: torch.<fn> reached by its op name ---------------------------------------------------------

class _MapsAFile(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file("/etc/hostname", False, 1, dtype=torch.uint8).float().sum() + x


@pytest.mark.parametrize("spelling", ["ops.aten.from_file(", "torch.ops.aten.from_file("])
def test_torchscript_op_spelling_of_a_dangerous_torch_function_blocks(scan_bytes, spelling):
    """torch.jit.load compiles `ops.aten.from_file(...)` as readily as `torch.from_file(...)`."""
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_MapsAFile()), buf)
    data = buf.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        [code] = [n for n in zf.namelist() if n.endswith(".py")]
        source = zf.read(code)
    assert b"torch.from_file(" in source
    tampered = source.replace(b"torch.from_file(", spelling.encode())
    report = scan_bytes("scripted.pt", fx.replace_member(data, code.rsplit("/", 1)[-1], tampered))
    hits = [f for f in report.all_findings() if f.rule == "torchscript/dangerous-call"]
    assert [f.evidence["name"] for f in hits] == ["ops.aten.from_file"] and report.verdict is Verdict.BLOCK


# -- gadgets that were only unknown globals ------------------------------------------------------------------

@pytest.mark.parametrize("module,name,args,signature", [
    # sympy.sympify is eval; every sympy constructor sympifies string arguments
    ("sympy", "sympify", ("__import__('os').system('id')",), "exec-interpreters"),
    ("sympy.core.add", "Add", ("__import__('os').system('id')", "1"), "exec-interpreters"),
    ("hydra.utils", "instantiate", ("os.system",), "exec-interpreters"),
    ("transformers.dynamic_module_utils", "get_class_from_dynamic_module", ("m.C", "someone/repo"),
     "exec-interpreters"),
    ("codecs", "open", ("/home/user/.bashrc", "w"), "io-files"),
    ("numpy", "save", ("/home/user/.bashrc", "x"), "io-files"),
    ("wave", "open", ("/home/user/.bashrc", "wb"), "io-files"),
])
def test_eval_resolvers_and_file_openers_block(scan_bytes, module, name, args, signature):
    found = fx.dangerous(scan_bytes("model.pkl", program(*call(module, name, *args))))
    assert found[f"{module}.{name}"].evidence["signature"] == signature


def test_sympy_really_evaluates_strings(tmp_path):
    """Why sympy is denied: sympify (and so every sympy call on a string) runs eval."""
    sympy = pytest.importorskip("sympy")
    mark = tmp_path / "ran"
    sympy.sympify(f"__import__('pathlib').Path({str(mark)!r}).touch()")
    assert mark.exists()


# -- HDF5 behind a user block ----------------------------------------------------------------------------

def _h5_model(path: Path, link: bool, userblock: int) -> Path:
    import h5py

    with h5py.File(path, "w", userblock_size=userblock) as f:
        f.attrs["keras_version"] = "2.15.0"
        g = f.create_group("model_weights/dense/dense")
        g.create_dataset("kernel:0", data=np.zeros((4, 2), np.float32))
        if link:
            g["bias:0"] = h5py.ExternalLink("/etc/passwd", "/")
    return path


def _keras_scan(path: Path):
    from hfguard.static.formats.keras import KerasCheck
    from hfguard.static.provenance import ProvenanceCheck

    report = scan(local_target([str(path)]), Policy(thresholds={"static.keras": {"use-h5py": False}}),
                  [KerasCheck(), ProvenanceCheck()])
    return report, {f.rule for f in report.all_findings()}


@pytest.mark.parametrize("userblock", [512, 4096])
def test_hdf5_after_a_user_block_is_walked(tmp_path, userblock):
    """h5py opens a file whose superblock sits after a user block (512, 1024 ... bytes in); the
    scan must too, not call it a format mismatch and skip the walk."""
    report, rules = _keras_scan(_h5_model(tmp_path / "model.h5", True, userblock))
    assert "hdf5/external-link" in rules and report.verdict is Verdict.BLOCK
    report, rules = _keras_scan(_h5_model(tmp_path / "plain.h5", False, userblock))
    assert report.verdict is Verdict.PASS, rules


def test_hdf5_user_block_holding_another_format(tmp_path):
    """The user block is free-form: a zip header there does not make an .h5 a zip for h5py."""
    path = _h5_model(tmp_path / "model.h5", True, 512)
    data = bytearray(path.read_bytes())
    data[:4] = b"PK\x03\x04"
    path.write_bytes(bytes(data))
    report, rules = _keras_scan(path)
    assert "hdf5/external-link" in rules and report.verdict is Verdict.BLOCK


# -- NeMo 2 context/io.json (fiddle JSON): every pyref is imported, configured ones are called ---

def _pyref(module: str, name: str) -> dict:
    return {"type": "pyref", "module": module, "name": name}


def _io_json(fn: dict, extra: dict | None = None) -> dict:
    """fiddle's JSON layout: a Config of `fn` with a tuple argument, a dtype and a path."""
    return {
        "root": {"type": "ref", "key": "config_1"},
        "objects": {
            "config_1": {"type": _pyref("fiddle._src.config", "Config"),
                         "items": [["Attr(name='config')", {"type": "ref", "key": "tuple_2"}],
                                   ["Attr(name='dtype')", _pyref("torch", "bfloat16")],
                                   ["Attr(name='path')", {"type": _pyref("pathlib", "PosixPath"),
                                                          "items": [], "metadata": "/ckpt"}]],
                         "metadata": {"type": _pyref("fiddle._src.config", "BuildableTraverserMetadata"),
                                      "items": [["Attr(name='fn_or_cls')", fn]], "metadata": None},
                         **(extra or {})},
            "tuple_2": {"type": _pyref("builtins", "tuple"),
                        "items": [["Index(index=0)", {"type": "leaf", "value": 4096}]], "metadata": None},
        },
        "refcounts": {"config_1": 1, "tuple_2": 1}, "version": "0.0.1",
    }


def _io_scan(tmp_path, doc: dict):
    from hfguard.static.formats.nemo import NemoCheck

    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "io.json").write_text(json.dumps(doc))
    report = scan(local_target([str(tmp_path)]), Policy(), [NemoCheck()])
    return report, report.all_findings()


def test_nemo2_io_json_of_a_stock_model_passes(tmp_path):
    doc = _io_json(_pyref("nemo.collections.llm.gpt.model.llama", "LlamaModel"))
    report, found = _io_scan(tmp_path, doc)
    assert report.verdict is Verdict.PASS, [f.message for f in found]


@pytest.mark.parametrize("module,name,severity", [
    ("subprocess", "check_output", Severity.CRITICAL),
    ("nemo.utils.subprocess", "run", Severity.CRITICAL),   # a re-export reaches subprocess.run
    ("torch.ops", "load_library", Severity.CRITICAL),
    ("some_package.models", "Net", Severity.MEDIUM),
])
def test_nemo2_io_json_pyrefs_are_judged(tmp_path, module, name, severity):
    report, found = _io_scan(tmp_path, _io_json(_pyref(module, name)))
    assert [(f.rule, f.severity) for f in found] == [("nemo/hydra-target", severity)]
    assert found[0].evidence["target"] == f"{module}.{name}"
