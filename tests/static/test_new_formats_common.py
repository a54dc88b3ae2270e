"""What the new format checks share: a git-lfs pointer where the file should be is missing evidence
(ERROR), and every check is registered in BUILTIN_CHECKS and claims its files by name or content."""

from __future__ import annotations

import pytest

from hfguard.checks import available_checks
from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.static.formats.executorch import ExecuTorchCheck
from hfguard.static.formats.flax import FlaxCheck
from hfguard.static.formats.nemo import NemoCheck
from hfguard.static.formats.paddle import PaddleCheck
from hfguard.static.formats.tensorflow import TensorFlowCheck
from hfguard.static.formats.tflite import TFLiteCheck
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target

POINTER = ("version https://git-lfs.github.com/spec/v1\n"
           "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


@pytest.mark.parametrize("name, check, rule", [
    ("model.nemo", NemoCheck(), "nemo/lfs-pointer"),
    ("saved_model.pb", TensorFlowCheck(), "tf/lfs-pointer"),
    ("flax_model.msgpack", FlaxCheck(), "flax/lfs-pointer"),
    ("inference.pdmodel", PaddleCheck(), "paddle/lfs-pointer"),
    ("model.tflite", TFLiteCheck(), "tflite/lfs-pointer"),
    ("model.pte", ExecuTorchCheck(), "executorch/lfs-pointer"),
    ("pytorch_model.bin", SerializationCheck(), "pickle/lfs-pointer"),
    ("model.joblib", SerializationCheck(), "pickle/lfs-pointer"),
])
def test_lfs_pointer_is_missing_evidence(tmp_path, name, check, rule):
    (tmp_path / name).write_text(POINTER)
    report = scan(local_target([str(tmp_path / name)]), Policy(), [check])
    assert [f.rule for f in report.all_findings()] == [rule] and report.verdict is Verdict.ERROR


def test_new_checks_are_built_in():
    ids = {c.id for c in available_checks()}
    assert {"static.nemo", "static.skops", "static.tensorflow", "static.mlflow", "static.diffusers",
            "static.flax", "static.paddle", "static.tflite", "static.executorch"} <= ids


def test_a_pointer_where_pickle_weights_belong_fails_closed_whatever_fail_on_says(tmp_path):
    # it was a FLAG ("named .bin but the content is text"), which --fail-on block let through
    from click.testing import CliRunner

    from hfguard.cli import main

    (tmp_path / "pytorch_model.bin").write_text(POINTER)
    res = CliRunner().invoke(main, ["scan", str(tmp_path), "-q", "--fail-on", "block"])
    assert res.exit_code == 2 and "pickle/lfs-pointer" in res.stdout
