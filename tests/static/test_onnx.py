"""static.onnx on real ONNX models built and saved by the onnx package (external data included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.static.formats.onnx import ONNXCheck
from hfguard.target import local_target


def _model(extra_domain: str | None = None, subgraph_location: str | None = None) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    if subgraph_location is not None:
        const = numpy_helper.from_array(np.ones(4, np.float32), "c")
        set_external_data(const, location=subgraph_location, offset=0, length=16)
        const.data_location = TensorProto.EXTERNAL
        const.ClearField("raw_data")
        then = helper.make_graph([helper.make_node("Constant", [], ["t"], value=const)], "then", [],
                                 [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
        zeros = numpy_helper.from_array(np.zeros(4, np.float32), "z")
        other = helper.make_graph([helper.make_node("Constant", [], ["e"], value=zeros)], "else", [],
                                  [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
        nodes.append(helper.make_node("If", ["cond"], ["z_out"], then_branch=then, else_branch=other))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                     helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], initializer=[w])
    opsets = [helper.make_opsetid("", 17)]
    if extra_domain:
        opsets.append(helper.make_opsetid(extra_domain, 1))
    return helper.make_model(graph, opset_imports=opsets)


def _relocate(tensor: TensorProto, **entries: object) -> None:
    """Rewrite a saved tensor's external_data entries, the way a hand-edited file would."""
    existing = {e.key: e for e in tensor.external_data}
    for key, value in entries.items():
        entry = existing.get(key) or tensor.external_data.add()
        entry.key, entry.value = key, str(value)


def _save_external(model: onnx.ModelProto, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx_data", size_threshold=0)
    return path


def _findings(folder: Path):
    report = scan(local_target([str(folder)]), Policy(), [ONNXCheck()])
    return report, {(f.rule, f.location) for f in report.all_findings()}


def test_model_with_external_data_passes(tmp_path):
    path = _save_external(_model(), tmp_path / "repo")
    assert (tmp_path / "repo" / "model.onnx_data").is_file()
    report, found = _findings(path.parent)
    assert found == set() and report.verdict is Verdict.PASS
    # and the same model with its weights inline
    onnx.save_model(_model(), str(tmp_path / "inline.onnx"))
    assert _findings(tmp_path / "inline.onnx")[1] == set()


def test_external_data_escaping_the_repo(tmp_path):
    model = _model(subgraph_location="/etc/shadow")
    path = _save_external(model, tmp_path / "repo")
    m = onnx.load(str(path), load_external_data=False)
    _relocate(m.graph.initializer[0], location="../../../home/user/.ssh/id_rsa")
    onnx.save_model(m, str(path))
    report, found = _findings(path.parent)
    assert ("onnx/external-data-escape", "tensor w") in found
    assert ("onnx/external-data-escape", "tensor c") in found   # inside an If branch's Constant
    assert report.verdict is Verdict.BLOCK


def test_external_data_missing_or_out_of_range(tmp_path):
    path = _save_external(_model(), tmp_path / "repo")
    m = onnx.load(str(path), load_external_data=False)
    _relocate(m.graph.initializer[0], location="model.onnx_data", offset=0, length=1 << 20)
    onnx.save_model(m, str(path))
    _, found = _findings(path.parent)
    assert found == {("onnx/external-data-range", "tensor w")}
    _relocate(m.graph.initializer[0], location="gone.bin")
    onnx.save_model(m, str(path))
    _, found = _findings(path.parent)
    assert found == {("onnx/external-data-missing", "tensor w")}


def test_custom_domain_and_malformed(tmp_path):
    onnx.save_model(_model(extra_domain="com.example.customops"), str(tmp_path / "custom.onnx"))
    _, found = _findings(tmp_path / "custom.onnx")
    assert found == {("onnx/custom-domain", None)}
    data = (tmp_path / "custom.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    report, found = _findings(tmp_path / "cut.onnx")
    assert {r for r, _ in found} == {"onnx/malformed"} and report.verdict is Verdict.BLOCK


def _nested_if(levels: int, location: str) -> onnx.ModelProto:
    """`levels` If nodes, each the then-branch of the one above; the innermost reads `location`."""
    const = numpy_helper.from_array(np.ones(4, np.float32), "c")
    set_external_data(const, location=location, offset=0, length=16)
    const.data_location = TensorProto.EXTERNAL
    const.ClearField("raw_data")
    out = helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Constant", [], ["t"], value=const)], "inner", [], [out])
    zeros = numpy_helper.from_array(np.zeros(4, np.float32), "z")
    other = helper.make_graph([helper.make_node("Constant", [], ["t"], value=zeros)], "else", [], [out])
    for i in range(levels):
        node = helper.make_node("If", ["cond"], ["t"], then_branch=graph, else_branch=other)
        graph = helper.make_graph([node], f"level{i}", [], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nested_subgraphs_are_walked_to_a_bound(tmp_path):
    """Subgraphs recurse (Graph > Node > Attribute > Graph): an escape ten levels down is found; a
    nesting past the walker's depth bound is malformed, not a stack overflow or a silent PASS."""
    onnx.save_model(_nested_if(10, "../../etc/passwd"), str(tmp_path / "deep.onnx"))
    _, found = _findings(tmp_path / "deep.onnx")
    assert found == {("onnx/external-data-escape", "tensor c")}
    onnx.save_model(_nested_if(30, "data.bin"), str(tmp_path / "deeper.onnx"))
    report, found = _findings(tmp_path / "deeper.onnx")
    assert {r for r, _ in found} == {"onnx/malformed"} and report.verdict is Verdict.BLOCK
