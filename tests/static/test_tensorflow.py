"""TensorFlow SavedModel / frozen GraphDef ops (issue 12): PyFunc, ReadFile, WriteFile, MatchingFiles
in the graph or in a TF2 library function. Protos from tensorboard's copy of TensorFlow's."""

from __future__ import annotations

import pytest

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.tensorflow import TensorFlowCheck, graph_ops
from hfguard.target import local_target
from testing.tensorflow_files import graph, saved_model

SERVING = ["Placeholder", "MatMul", "BiasAdd", "Relu", "Identity", "StatefulPartitionedCall", "SaveV2",
           "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin"]


def _scan(path):
    report = scan(local_target([str(path)]), Policy(), [TensorFlowCheck()])
    return report, report.all_findings()


def test_benign_saved_model_passes(tmp_path):
    pb = saved_model(tmp_path / "m", SERVING, {"__inference_call_12": ["MatMul", "Softmax"]},
                     const_bytes=1 << 20)
    report, found = _scan(tmp_path / "m")
    assert report.verdict is Verdict.PASS, [f.message for f in found]
    ops = graph_ops(pb.read_bytes()).ops
    assert {"MatMul", "Softmax", "Const"} <= set(ops)


@pytest.mark.parametrize("op, severity", [("PyFunc", Severity.CRITICAL), ("EagerPyFunc", Severity.CRITICAL),
                                          ("ReadFile", Severity.HIGH), ("WriteFile", Severity.HIGH),
                                          ("MatchingFiles", Severity.HIGH)])
def test_dangerous_op_in_a_library_function(tmp_path, op, severity):
    saved_model(tmp_path / "m", SERVING, {"__inference_serve_7": ["Const", op, "Identity"]})
    report, found = _scan(tmp_path / "m")
    [f] = found
    assert (f.rule, f.severity, f.evidence["op"]) == ("tf/dangerous-op", severity, op)
    assert "__inference_serve_7" in f.location and report.verdict is Verdict.BLOCK


def test_frozen_graphdef_and_pbtxt(tmp_path):
    g = graph(["Placeholder", "ReadFile"])
    (tmp_path / "frozen.pb").write_bytes(g.SerializeToString())
    assert {f.evidence["op"] for f in _scan(tmp_path / "frozen.pb")[1]} == {"ReadFile"}
    (tmp_path / "saved_model.pbtxt").write_text(f'meta_graphs {{ graph_def {{ {g} }} }}\n'.replace(
        '"ReadFile"', '"PyFuncStateless"'))
    assert {f.evidence["op"] for f in _scan(tmp_path / "saved_model.pbtxt")[1]} == {"PyFuncStateless"}


def test_broken_saved_model_is_a_finding(tmp_path):
    pb = saved_model(tmp_path / "m", ["PyFunc"])
    data = pb.read_bytes()
    pb.write_bytes(data[: len(data) // 2])
    assert {f.rule for f in _scan(pb)[1]} == {"tf/malformed"}
    (tmp_path / "other.pb").write_bytes(b"\xff\xff\xff")   # not a graph: not ours to judge
    assert _scan(tmp_path / "other.pb")[0].verdict is Verdict.PASS


def test_constant_tensors_are_skipped_not_read(tmp_path):
    from hfguard.static.formats.protowire import Source

    pb = saved_model(tmp_path / "m", ["ReadFile"], const_bytes=8 << 20)
    with open(pb, "rb") as fh:
        src = Source(fh, pb.stat().st_size)
        assert set(graph_ops(src).ops) == {"Const", "ReadFile"}
    assert src.bytes_read < 1 << 20 < pb.stat().st_size
