"""ExecuTorch .pte programs (issue 12): operators outside the stock namespaces and unknown delegates."""

from __future__ import annotations

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.sniff import EXECUTORCH, sniff
from hfguard.static.formats.executorch import ExecuTorchCheck
from hfguard.target import local_target
from testing.executorch_files import program

STOCK = ["aten::linear", "aten::relu", "aten::add", "quantized_decomposed::quantize_per_tensor",
         "dim_order_ops::_to_dim_order_copy"]


def _scan(tmp_path, data: bytes, name: str = "model.pte"):
    (tmp_path / name).write_bytes(data)
    report = scan(local_target([str(tmp_path / name)]), Policy(), [ExecuTorchCheck()])
    return report, report.all_findings()


def test_stock_program_passes_and_is_sniffed(tmp_path):
    data = program({"forward": (STOCK, ["XnnpackBackend"])})
    assert sniff(data[:64]) == EXECUTORCH
    report, found = _scan(tmp_path, data, "program.bin")
    assert report.verdict is Verdict.PASS, [f.message for f in found]


def test_custom_operator_and_unknown_delegate(tmp_path):
    data = program({"forward": (STOCK, []), "backdoor": (["my_ops::exfiltrate"], ["SomeVendorBackend"])})
    report, found = _scan(tmp_path, data)
    got = {(f.rule, f.severity, f.location) for f in found}
    assert got == {("executorch/custom-op", Severity.MEDIUM, "plan backdoor"),
                   ("executorch/unknown-delegate", Severity.LOW, "plan backdoor")}
    assert report.verdict is Verdict.FLAG


def test_broken_program(tmp_path):
    data = program({"forward": (STOCK, [])})
    assert {f.rule for f in _scan(tmp_path, data[:30])[1]} == {"executorch/malformed"}
    assert {f.rule for f in _scan(tmp_path, b"not a program at all", "x.pte")[1]} == {"executorch/malformed"}
