"""MLflow model folders (issue 12): the MLmodel file's pyfunc loader module, code folders, paths and
pickle flavors. The fast tests use MLmodel files as mlflow 3.17 writes them; a slow test saves real
models with mlflow itself."""

from __future__ import annotations

import os
import pickle

import pytest
import yaml

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.mlflow import MLflowCheck
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target

SKLEARN_MLMODEL = {
    "flavors": {
        "python_function": {"env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                            "loader_module": "mlflow.sklearn", "model_path": "model.pkl",
                            "predict_fn": "predict", "python_version": "3.11.7"},
        "sklearn": {"code": None, "pickled_model": "model.pkl", "serialization_format": "cloudpickle",
                    "sklearn_version": "1.9.1", "skops_trusted_types": None}},
    "mlflow_version": "3.17.2", "model_id": None, "model_size_bytes": 728,
    "model_uuid": "c3790b7df19744ddb04cde232b6ef539", "utc_time_created": "2026-11-30 16:37:45.834584",
}


class _Payload:
    def __reduce__(self):
        return os.system, ("id",)


def _folder(tmp_path, mlmodel: dict, pickled: object = None):
    d = tmp_path / "model"
    d.mkdir()
    (d / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (d / "model.pkl").write_bytes(pickle.dumps(pickled if pickled is not None else {"coef": [1.0, 2.0]}))
    report = scan(local_target([str(d)]), Policy(), [MLflowCheck(), SerializationCheck()])
    return report, report.all_findings()


def test_sklearn_cloudpickle_model_is_only_noted(tmp_path):
    report, found = _folder(tmp_path, SKLEARN_MLMODEL)
    assert [(f.rule, f.severity) for f in found] == [("mlflow/pickle-flavor", Severity.LOW)]
    assert report.verdict is Verdict.PASS


@pytest.mark.parametrize("loader, severity", [("evil_pkg.loader", Severity.HIGH), ("os", Severity.CRITICAL)])
def test_loader_module_outside_mlflow_blocks(tmp_path, loader, severity):
    doc = yaml.safe_load(yaml.safe_dump(SKLEARN_MLMODEL))
    doc["flavors"]["python_function"]["loader_module"] = loader
    report, found = _folder(tmp_path, doc)
    f = next(f for f in found if f.rule == "mlflow/loader-module")
    assert f.severity is severity and f.evidence["loader_module"] == loader
    assert report.verdict is Verdict.BLOCK


def test_paths_out_of_the_folder_and_code(tmp_path):
    doc = yaml.safe_load(yaml.safe_dump(SKLEARN_MLMODEL))
    doc["flavors"]["python_function"]["model_path"] = "../../home/user/.ssh/id_rsa"
    doc["flavors"]["sklearn"]["code"] = "code"
    report, found = _folder(tmp_path, doc)
    assert {"mlflow/path-escape", "mlflow/model-code"} <= {f.rule for f in found}
    assert report.verdict is Verdict.BLOCK


def test_malicious_pickle_in_the_folder_is_judged_by_the_serialization_check(tmp_path):
    report, found = _folder(tmp_path, SKLEARN_MLMODEL, _Payload())
    assert "pickle/dangerous-global" in {f.rule for f in found} and report.verdict is Verdict.BLOCK


def test_broken_mlmodel(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "MLmodel").write_text("flavors: [unclosed\n")
    report = scan(local_target([str(d)]), Policy(), [MLflowCheck()])
    assert {f.rule for f in report.all_findings()} == {"mlflow/bad-mlmodel"}


@pytest.mark.slow
def test_real_mlflow_models(tmp_path):
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.random.default_rng(0).random((10, 3)), [0, 1] * 5)
    mlflow_sklearn.save_model(model, str(tmp_path / "sk"), serialization_format="cloudpickle")
    report = scan(local_target([str(tmp_path / "sk")]), Policy(), [MLflowCheck(), SerializationCheck()])
    assert report.verdict is Verdict.PASS, [f.message for f in report.all_findings()]
    mlmodel = tmp_path / "sk" / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("loader_module: mlflow.sklearn", "loader_module: evil"))
    assert scan(local_target([str(tmp_path / "sk")]), Policy(), [MLflowCheck()]).verdict is Verdict.BLOCK
