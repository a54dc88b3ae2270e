"""Tensor layout of a PyTorch zip checkpoint, recovered from data.pkl by the symbolic VM.

For the weights tier: where every tensor's bytes are, without torch.load. Nothing is unpickled;
only the value tree of `torch._utils._rebuild_tensor_v2(...)` calls and persistent ids is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

from hfguard.static.pickle.streams import buffered, open_decompressed, open_slice
from hfguard.static.pickle.vm import Call, Global, PersistentRef, PickleVM, Reader, SymDict
from hfguard.static.pickle.zipdir import ZipEntry, read_zip_directory, torch_data_pickles

# storage class name -> numpy-style dtype name (torch._utils storage map, plus dtype constants)
_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}
_DTYPE_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
    "chalf": "complex32",
}
_REBUILD_TENSOR = {
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
}
_REBUILD_PARAM = {"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"}
_DICT_CLASSES = {"collections.OrderedDict", "builtins.dict", "collections.defaultdict"}


class LayoutError(ValueError):
    pass


@dataclass(frozen=True)
class TensorRef:
    name: str  # dotted path of dict keys ("encoder.layer.0.weight")
    dtype: str  # numpy-style name ("float32", "bfloat16", "int64", "bool" ...)
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_key: str
    storage_offset: int  # in elements
    member: str  # zip member holding the storage ("archive/data/0")
    data_offset: int | None  # absolute byte offset of the member's data when STORED, else None
    data_length: int  # bytes in the storage member


def torch_zip_tensors(
    stream: IO[bytes], size: int | None = None, max_opcodes: int = 5_000_000
) -> list[TensorRef]:
    """Every tensor in the (possibly nested) state dict of a PyTorch zip checkpoint."""
    if size is None:
        size = stream.seek(0, 2)
    entries = read_zip_directory(stream, size)
    pkl = torch_data_pickles(entries)
    if len(pkl) != 1:
        raise LayoutError(f"expected one <archive>/data.pkl, found {len(pkl)}")
    data_pkl = pkl[0]
    prefix = data_pkl.name.rsplit("/", 1)[0]
    by_name = {e.name: e for e in entries}
    reader = Reader(_open(stream, data_pkl), size=data_pkl.usize)
    from hfguard.static.pickle.vm import Limits

    res = PickleVM(Limits(max_opcodes=max_opcodes)).run_one(reader)
    if not res.complete:
        problem = res.anomalies[0].message if res.anomalies else "incomplete"
        raise LayoutError(f"data.pkl does not decode: {problem}")
    out: list[TensorRef] = []
    for name, call in _walk(res.value):
        out.append(_tensor(name, call, prefix, by_name))
    return out


def _open(stream: IO[bytes], e: ZipEntry) -> Any:
    if e.data_offset is None:
        raise LayoutError(f"{e.name}: member data out of bounds")
    raw = open_slice(stream, e.data_offset, e.csize)
    if e.method == 0:
        return raw
    if e.method == 8:
        return buffered(
            open_decompressed("deflate", raw, e.csize, cap=1 << 30, ratio=1e9, ratio_floor=0, budget=None)
        )
    raise LayoutError(f"{e.name}: compression method {e.method}")


def _walk(value: Any) -> list[tuple[str, Call]]:
    """(dotted name, rebuild call) for every tensor, depth-first, iteratively (hostile nesting)."""
    found: list[tuple[str, Call]] = []
    todo: list[tuple[str, Any, int]] = [("", value, 0)]
    seen: set[int] = set()
    while todo:
        path, v, depth = todo.pop()
        if depth > 256 or id(v) in seen:
            continue
        if isinstance(v, Call) and isinstance(v.func, Global):
            q = v.func.qualname
            if q in _REBUILD_TENSOR:
                found.append((path, v))
                continue
            if q in _REBUILD_PARAM and isinstance(v.args, tuple) and v.args:
                todo.append((path, v.args[0], depth + 1))
                continue
            if q in _DICT_CLASSES:
                seen.add(id(v))
                todo += [(_join(path, k), x, depth + 1) for k, x in reversed(v.items)]
                continue
        if isinstance(v, SymDict):
            seen.add(id(v))
            todo += [(_join(path, k), x, depth + 1) for k, x in reversed(v.items)]
        elif isinstance(v, list | tuple):
            seen.add(id(v))
            todo += [(_join(path, i), x, depth + 1) for i, x in reversed(list(enumerate(v)))]
    return found


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if isinstance(v, Call) and isinstance(v.func, Global) and v.func.qualname == "torch.Size":
        v = v.args[0] if isinstance(v.args, tuple) and v.args else ()
    if not (isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)):
        raise LayoutError(f"{what} is not a tuple of ints")
    return v


def _tensor(name: str, call: Call, prefix: str, by_name: dict[str, ZipEntry]) -> TensorRef:
    args = call.args if isinstance(call.args, tuple) else ()
    if len(args) < 4 or not isinstance(args[0], PersistentRef):
        raise LayoutError(f"{name}: unexpected rebuild arguments")
    pid = args[0].pid
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], Global)):
        raise LayoutError(f"{name}: unexpected persistent id")
    key = str(pid[2])
    storage_name = pid[1].name
    if (
        isinstance(call.func, Global)
        and call.func.name == "_rebuild_tensor_v3"
        and len(args) > 6
        and isinstance(args[6], Global)
    ):
        storage_name = args[6].name  # v3 carries the dtype beside an untyped storage
    dtype = _STORAGE_DTYPES.get(storage_name) or _DTYPE_ALIASES.get(storage_name, storage_name)
    if storage_name.endswith("Storage") and storage_name not in _STORAGE_DTYPES:
        raise LayoutError(f"{name}: storage type {storage_name} has no dtype")
    offset = args[1]
    if not isinstance(offset, int):
        raise LayoutError(f"{name}: storage offset is not an int")
    member = f"{prefix}/data/{key}"
    entry = by_name.get(member)
    if entry is None:
        raise LayoutError(f"{name}: storage member {member} is missing")
    return TensorRef(
        name=name,
        dtype=dtype,
        shape=_ints(args[2], "shape"),
        stride=_ints(args[3], "stride"),
        storage_key=key,
        storage_offset=offset,
        member=member,
        data_offset=entry.data_offset if entry.method == 0 else None,
        data_length=entry.usize,
    )
