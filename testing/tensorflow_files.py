"""TensorFlow SavedModel / GraphDef files without tensorflow: the graph protos are tensorboard's own
copies of TensorFlow's (tensorboard.compat.proto); SavedModel is `int64 saved_model_schema_version = 1;
repeated MetaGraphDef meta_graphs = 2;` (tensorflow/core/protobuf/saved_model.proto), framed by hand."""

from __future__ import annotations

from pathlib import Path

from tensorboard.compat.proto import graph_pb2, meta_graph_pb2, tensor_pb2, types_pb2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def graph(ops: list[str], functions: dict[str, list[str]] | None = None,
          const_bytes: int = 64) -> graph_pb2.GraphDef:
    """A graph of one node per op (plus a Const of `const_bytes` bytes), and library functions."""
    g = graph_pb2.GraphDef()
    c = g.node.add(name="weights", op="Const")
    c.attr["value"].tensor.CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8,
                                                            tensor_content=b"\x01" * const_bytes))
    for i, op in enumerate(ops):
        g.node.add(name=f"n{i}_{op.lower()}", op=op, input=["weights"])
    for fname, fops in (functions or {}).items():
        f = g.library.function.add()
        f.signature.name = fname
        for i, op in enumerate(fops):
            f.node_def.add(name=f"f{i}", op=op)
    return g


def saved_model(path: Path, ops: list[str], functions: dict[str, list[str]] | None = None,
                const_bytes: int = 64) -> Path:
    return saved_model_of(path, graph(ops, functions, const_bytes))


def print_to(g: graph_pb2.GraphDef, stream: str, function: str | None = None) -> graph_pb2.GraphDef:
    """Adds what tf.print(..., output_stream=stream) builds: a PrintV2 node (in `function` when given)."""
    nodes = g.node
    if function is not None:
        f = g.library.function.add()
        f.signature.name = function
        nodes = f.node_def
    n = nodes.add(name="print", op="PrintV2", input=["weights"])
    n.attr["output_stream"].s = stream.encode()
    n.attr["end"].s = b"\n"
    return g


def saved_model_of(path: Path, g: graph_pb2.GraphDef) -> Path:
    mg = meta_graph_pb2.MetaGraphDef()
    mg.meta_info_def.tags.append("serve")
    mg.graph_def.CopyFrom(g)
    body = mg.SerializeToString()
    path.mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(b"\x08\x01" + b"\x12" + _varint(len(body)) + body)
    (path / "variables").mkdir(exist_ok=True)
    return path / "saved_model.pb"
