"""static.keras on .keras v3 archives and legacy .h5 models written here by hand, following the
formats Keras itself writes (no TensorFlow or Keras needed)."""

from __future__ import annotations

import base64
import copy
import io
import json
import marshal
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from hfguard import signatures
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats import keras as keras_check
from hfguard.static.formats.keras import KerasCheck, bytecode_names, h5py_configs
from hfguard.target import local_target


def _b64_code(source: str) -> str:
    # what keras' func_dump writes: base64 (with newlines) of marshal.dumps(code)
    return base64.encodebytes(marshal.dumps(compile(source, "<lambda>", "exec"))).decode("ascii")


def _payload(mark: Path) -> str:
    return f"import os\nopen({str(mark)!r}, 'w').write(os.name)\n"


def _dense(name: str, units: int) -> dict:
    return {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
            "config": {"name": name, "trainable": True,
                       "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                 "config": {"name": "float32"}, "registered_name": None},
                       "units": units, "activation": "relu", "use_bias": True,
                       "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                              "config": {"seed": None}, "registered_name": None},
                       "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros",
                                            "config": {}, "registered_name": None},
                       "kernel_regularizer": None, "bias_regularizer": None},
            "build_config": {"input_shape": [None, 4]}}


def _lambda_v3(code_b64: str) -> dict:
    return {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "lambda", "trainable": True,
                       "function": {"class_name": "__lambda__",
                                    "config": {"value": [code_b64, None, None]}},
                       "arguments": {}}}


def _sequential(*layers: dict) -> dict:
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "sequential", "trainable": True,
                       "layers": [{"module": "keras.layers", "class_name": "InputLayer",
                                   "config": {"batch_shape": [None, 4], "dtype": "float32",
                                              "name": "input_layer"}, "registered_name": None},
                                  *layers]},
            "build_config": {"input_shape": [None, 4]},
            "compile_config": {"optimizer": {"module": "keras.optimizers", "class_name": "Adam",
                                             "config": {"learning_rate": 0.001}, "registered_name": None},
                               "loss": "mse"}}


def _weights_h5() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((4, 2), np.float32))
        f.create_dataset("layers/dense/vars/1", data=np.zeros((2,), np.float32))
    return buf.getvalue()


def _keras_archive(path: Path, config: dict, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2025-01-01"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", _weights_h5())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _legacy_h5(path: Path, config: dict, training: dict | None = None) -> Path:
    # what keras 2's save_model_to_hdf5 writes: JSON strings as root attributes, weights in a group
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode("utf-8")
        if training is not None:
            f.attrs["training_config"] = json.dumps(training).encode("utf-8")
        f.create_dataset("model_weights/dense/dense/kernel:0", data=np.zeros((4, 2), np.float32))
    return path


NO_H5PY = Policy(thresholds={"static.keras": {"use-h5py": False}})


def _findings(path: Path, policy: Policy | None = None):
    report = scan(local_target([str(path)]), policy or Policy(), [KerasCheck()])
    return report, {(f.rule, f.severity) for f in report.all_findings()}


def test_plain_keras_archive_passes(tmp_path):
    report, found = _findings(_keras_archive(tmp_path / "model.keras", _sequential(_dense("dense", 2))))
    assert found == set() and report.verdict is Verdict.PASS


def test_lambda_bytecode_in_keras_archive_is_detected_and_never_run(tmp_path):
    mark = tmp_path / "mark"
    path = _keras_archive(tmp_path / "model.keras", _sequential(_lambda_v3(_b64_code(_payload(mark)))))
    report, found = _findings(path)
    assert ("keras/lambda-bytecode", Severity.CRITICAL) in found
    [f] = [f for f in report.all_findings() if f.rule == "keras/lambda-bytecode"]
    assert {"os", "open"} <= set(f.evidence["dangerous_names"])
    assert "CVE-2024-3660" in f.evidence["advisories"]
    assert "CVE-2025-9905" not in f.evidence["advisories"]   # that one is about HDF5 only
    assert report.verdict is Verdict.BLOCK
    assert not mark.exists()
    # control: the very same payload does leave its mark when run, so the assertion above means something
    control = tmp_path / "control"
    exec(marshal.loads(base64.decodebytes(_b64_code(_payload(control)).encode())))  # noqa: S102
    assert control.exists()


def test_harmless_lambda_is_still_high(tmp_path):
    path = _keras_archive(tmp_path / "model.keras", _sequential(_lambda_v3(_b64_code("y = 2 * 3\n"))))
    _, found = _findings(path)
    assert ("keras/lambda-bytecode", Severity.HIGH) in found


def test_nested_lambda_inside_time_distributed_and_bidirectional(tmp_path):
    inner = _lambda_v3(_b64_code("import subprocess\n"))
    wrapped = {"module": "keras.layers", "class_name": "TimeDistributed", "registered_name": None,
               "config": {"name": "td", "layer": {"module": "keras.layers", "class_name": "Bidirectional",
                                                  "config": {"name": "bi", "layer": inner}}}}
    functional = {"module": "keras", "class_name": "Functional",
                  "config": {"name": "outer", "layers": [{"module": "keras", "class_name": "Functional",
                                                          "config": {"name": "inner", "layers": [wrapped]}}]}}
    report, found = _findings(_keras_archive(tmp_path / "nested.keras", functional))
    assert ("keras/lambda-bytecode", Severity.CRITICAL) in found
    [f] = [f for f in report.all_findings() if f.rule == "keras/lambda-bytecode"]
    assert "td" in f.location and "bi" in f.location


def test_legacy_h5_lambda_with_and_without_h5py(tmp_path):
    mark = tmp_path / "mark"
    lam = {"class_name": "Lambda",
           "config": {"name": "lambda", "trainable": True, "dtype": "float32",
                      "function": [_b64_code(_payload(mark)), None, None], "function_type": "lambda",
                      "module": "__main__", "output_shape": None, "output_shape_type": "raw",
                      "arguments": {}}}
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [lam]}}
    path = _legacy_h5(tmp_path / "model.h5", config, training={"loss": "mse"})
    report, found = _findings(path)
    assert ("keras/lambda-bytecode", Severity.CRITICAL) in found
    [f] = [f for f in report.all_findings() if f.rule == "keras/lambda-bytecode"]
    assert "CVE-2025-9905" in f.evidence["advisories"]   # HDF5 loading ignores safe_mode
    # the static tier does not need h5py: the byte scan alone finds the config
    _, found = _findings(path, NO_H5PY)
    assert ("keras/lambda-bytecode", Severity.CRITICAL) in found
    assert not mark.exists()


def test_large_h5_config_found_by_byte_scan(tmp_path):
    # > 64 KiB of attribute: HDF5 moves it to dense attribute storage
    layers = [_dense(f"dense_{i}", 2) for i in range(150)]
    layers.append(_lambda_v3(_b64_code("import socket\n")))
    path = _legacy_h5(tmp_path / "big.h5", _sequential(*layers))
    _, found = _findings(path, NO_H5PY)
    assert ("keras/lambda-bytecode", Severity.CRITICAL) in found


def test_plain_h5_weights_pass(tmp_path):
    path = tmp_path / "tf_model.h5"
    path.write_bytes(_weights_h5())
    report, found = _findings(path)
    assert found == set() and report.verdict is Verdict.PASS
    # and a legacy model without code passes too
    _, found = _findings(_legacy_h5(tmp_path / "ok.h5", _sequential(_dense("dense", 2))))
    assert found == set()


def test_archive_structure(tmp_path):
    cfg = _sequential(_dense("dense", 2))
    _, found = _findings(_keras_archive(tmp_path / "a.keras", cfg, {"../evil.py": b"x", "notes.txt": b"x",
                                                                    "model.weights.npz": b""}))
    rules = {r for r, _ in found}
    assert {"keras/archive-path", "keras/unexpected-member", "keras/npz-weights"} <= rules
    (tmp_path / "b.keras").write_bytes(b"not a zip at all")
    _, found = _findings(tmp_path / "b.keras")
    assert ("keras/bad-archive", Severity.HIGH) in found
    with zipfile.ZipFile(tmp_path / "c.keras", "w") as zf:
        zf.writestr("metadata.json", "{}")
    _, found = _findings(tmp_path / "c.keras")
    assert ("keras/bad-archive", Severity.HIGH) in found
    # a zip that is not a keras archive (a torch checkpoint, say) is not this check's business
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}.")
    _, found = _findings(tmp_path / "other.zip")
    assert found == set()


def test_bytecode_names_rejects_non_code():
    assert bytecode_names(base64.b64encode(b"hello world").decode()) is None
    assert bytecode_names("not base64 at all!") is None
    names = bytecode_names(_b64_code("import subprocess\nsubprocess.run(['x'])\n"))
    assert names is not None and {"subprocess", "run"} <= names


def _yaml_examples() -> list[tuple[str, dict]]:
    return [(r["rule"], r["example"]) for r in signatures.load("keras")["rules"].values()]


@pytest.mark.parametrize("rule, example", _yaml_examples(), ids=[r for r, _ in _yaml_examples()])
@pytest.mark.parametrize("container", ["keras", "h5"])
def test_every_signature_rule_fires_on_its_example(tmp_path, rule, example, container):
    config = json.loads(json.dumps(copy.deepcopy(example)).replace("{bytecode}", "").replace(
        '["", null', json.dumps([_b64_code("x = 1\n")])[:-1] + ", null"))
    if container == "keras":
        path = _keras_archive(tmp_path / "m.keras", config)
    else:
        path = _legacy_h5(tmp_path / "m.h5", config)
    _, found = _findings(path, NO_H5PY)   # the byte scan; the h5py path has tests of its own
    assert rule in {r for r, _ in found}


def test_h5_config_past_the_scan_limit_without_h5py_is_reported(tmp_path):
    # root attributes in dense storage (libver latest, more than 8 of them): the walk cannot list
    # them, so the byte scan looks for the config and says where it stopped
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w", libver="latest") as f:
        for i in range(12):
            f.attrs[f"note_{i}"] = b"x" * 100
        f.create_dataset("w", data=np.zeros(4096, np.float32))
    policy = Policy(thresholds={"static.keras": {"h5-scan-bytes": 1024, "use-h5py": False}})
    report = scan(local_target([str(path)]), policy, [KerasCheck()])
    assert {f.rule for f in report.all_findings()} == {"keras/h5-not-fully-scanned"}


def test_h5_config_is_read_from_the_root_header_wherever_it_lies(tmp_path):
    """The config attribute set after 4 MiB of weights lands in a header continuation at the end of
    the file: read from the root's object header, not found by a prefix byte scan."""
    lam = _lambda_v3(_b64_code("import os\nos.system('id')\n"))
    path = tmp_path / "late.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("model_weights/dense/kernel:0", data=np.ones((1024, 1024), np.float32))
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["model_config"] = json.dumps(_sequential(lam)).encode()
    assert path.read_bytes().find(b'{"module"') > 1 << 20
    policy = Policy(thresholds={"static.keras": {"h5-scan-bytes": 1 << 20, "use-h5py": False}})
    _, found = _findings(path, policy)
    assert ("keras/lambda-bytecode", Severity.CRITICAL) in found


def test_module_outside_keras_severity_depends_on_the_module(tmp_path):
    def layer(module: str) -> dict:
        return {"module": module, "class_name": "TFBertMainLayer", "config": {"name": module},
                "registered_name": "transformers>TFBertMainLayer"}

    _, found = _findings(_keras_archive(tmp_path / "a.keras", _sequential(layer("transformers.models.bert"))))
    assert ("keras/module-outside-keras", Severity.MEDIUM) in found
    _, found = _findings(_keras_archive(tmp_path / "b.keras", _sequential(layer("subprocess"))))
    assert ("keras/module-outside-keras", Severity.HIGH) in found


def test_h5py_reads_the_attributes_in_a_child_process(tmp_path):
    config = _sequential(_dense("dense", 2))
    path = _legacy_h5(tmp_path / "m.h5", config, training={"loss": "mse"})
    [file] = local_target([str(path)]).files
    configs, failure = h5py_configs(file, timeout=60)
    assert failure is None and [json.loads(c) for c in configs] == [config, {"loss": "mse"}]


def test_h5py_that_hangs_is_a_finding_not_a_hang(tmp_path, monkeypatch):
    # libhdf5 hangs on some corrupt files (fuzzing found it); stand-in: a child that never finishes
    monkeypatch.setattr(keras_check, "_H5PY_CHILD", "import time; time.sleep(60)")
    monkeypatch.setattr(keras_check, "H5PY_TIMEOUT", 1.0)
    report, found = _findings(_legacy_h5(tmp_path / "m.h5", _sequential(_dense("dense", 2))))
    assert found == {("keras/h5-unreadable", Severity.HIGH)} and report.verdict is Verdict.BLOCK


def test_hostile_zip_structure_is_bounded(tmp_path):
    """.keras archives are read with the bounded directory reader, not zipfile: a directory of
    100,001 entries overlapping one member's bytes is one finding, not 100,001 parsed members (and
    as many unexpected-member findings); sizes that lie are refused as zipfile (Keras) refuses them."""
    from testing.bombs import hand_zip

    config = json.dumps(_sequential(_dense("dense", 2))).encode()
    members = [("config.json", config), ("metadata.json", b"{}")]
    path = tmp_path / "m.keras"
    path.write_bytes(hand_zip(members))
    assert _findings(path)[1] == set()
    path.write_bytes(hand_zip(members, aliases=100_001))
    report, found = _findings(path)
    assert found == {("keras/bad-archive", Severity.HIGH)} and report.verdict is Verdict.BLOCK
    assert "100003 entries" in report.all_findings()[0].message
    for deflate in (True, False):
        path.write_bytes(hand_zip(members, declared={"config.json": len(config) - 7}, deflate=deflate))
        assert _findings(path)[1] == {("keras/bad-archive", Severity.HIGH)}
    path.write_bytes(hand_zip(members, declared={"config.json": keras_check.MAX_CONFIG_BYTES + 1}))
    assert _findings(path)[1] == {("keras/config-too-large", Severity.HIGH)}
