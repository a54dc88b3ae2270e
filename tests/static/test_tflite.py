"""TFLite models (issue 12): custom ops and Flex (TensorFlow) ops, from the operator codes only."""

from __future__ import annotations

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.sniff import TFLITE, sniff
from hfguard.static.formats.tflite import TFLiteCheck, operator_codes
from hfguard.target import local_target
from testing.tflite_files import model

BUILTINS = ["CONV_2D", "RELU", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]


def _scan(tmp_path, data: bytes, name: str = "model.tflite"):
    (tmp_path / name).write_bytes(data)
    report = scan(local_target([str(tmp_path / name)]), Policy(), [TFLiteCheck()])
    return report, report.all_findings()


def test_builtin_model_passes_and_is_sniffed_by_content(tmp_path):
    data = model(BUILTINS, buffer_bytes=1 << 16)
    assert sniff(data[:64]) == TFLITE
    report, found = _scan(tmp_path, data, "weights.bin")   # the name does not matter
    assert report.verdict is Verdict.PASS, [f.message for f in found]
    with open(tmp_path / "weights.bin", "rb") as fh:
        assert [c for c, _ in operator_codes(fh, len(data))] == [3, 19, 22, 9, 25]


def test_custom_and_flex_ops(tmp_path):
    report, found = _scan(tmp_path, model(BUILTINS, ["MyDetectionPostprocess", "FlexReadFile", "FlexAddV2"]))
    got = {(f.rule, f.evidence["op"], f.severity) for f in found}
    assert got == {("tflite/custom-op", "MyDetectionPostprocess", Severity.MEDIUM),
                   ("tflite/flex-op", "FlexReadFile", Severity.HIGH)}
    assert report.verdict is Verdict.BLOCK


def test_broken_model(tmp_path):
    data = model(BUILTINS, ["FlexPyFunc"])
    assert {f.rule for f in _scan(tmp_path, data[:40])[1]} == {"tflite/malformed"}
