"""Valid files of every format hfguard scans, built with the real libraries, for the fuzzer
(tests/test_fuzz.py, bench/fuzz.py). Malicious seeds carry os.system("touch MARK") the way each
format really carries code (a pickle __reduce__, a Keras Lambda's marshalled bytecode).

Each Seed says how a loader would reach its payload (`payload_reachable`): the oracle that tells
whether a mutated malicious file must still BLOCK (or ERROR): pickle's own unpickler
with every global replaced by an inert stand-in (nothing is imported, nothing from the data runs),
and the standard library's zipfile, tarfile and gzip to reach the pickle inside a container.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import marshal
import os
import pickle
import pickletools
import struct
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testing.pickles import System, evil_pickle

DANGEROUS = {("posix", "system"), ("nt", "system"), ("os", "system")}


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    suffix: str                                   # how it is named on disk
    malicious: bool = False
    # mutated bytes -> whether a loader would still reach the dangerous call
    payload_reachable: Callable[[bytes], bool] | None = None


# -- oracles ------------------------------------------------------------------------------------
class _Inert(dict):
    """What every global resolves to in the oracle: accepts any construction and state."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()

    def __setstate__(self, state: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


class _Replay:
    """pickle's own unpickler with every import replaced by an inert stand-in: it follows the
    loader's exact path through the opcodes (stack, marks, memo, frames) and records whether the
    dangerous callable would be called. Nothing is imported and nothing from the data runs."""

    called = False

    def find_class(self, module: str, name: str) -> object:
        return self._dangerous if (module, name) in DANGEROUS else _Inert

    def persistent_load(self, pid: object) -> object:
        return _Inert()

    def _dangerous(self, *args: object, **kwargs: object) -> object:
        self.called = True
        return _Inert()


class _Recorder(_Replay, pickle.Unpickler):
    """The C unpickler, which pickle.load and torch.load use."""


class _PyRecorder(_Replay, pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python one, for streams whose memo indexes would make the C unpickler allocate a
    table of that size (a few GB): its memo is a dict."""


_MAX_MEMO_INDEX = 1_000_000


def _huge_memo(data: bytes) -> bool:
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if "PUT" in op.name and isinstance(arg, int) and arg > _MAX_MEMO_INDEX:
                return True
            if op.name == "STOP":
                return False
    except Exception:  # noqa: BLE001 - the replay stops at the same place
        return False
    return False


def pickle_reaches_global(data: bytes, start: int = 0) -> bool:
    """Whether pickle.load of the pickles from `start` on would call a dangerous global (replayed
    with `_Recorder`; stacked pickles are read one after the other, as torch and joblib do)."""
    fh = io.BytesIO(data)
    fh.seek(start)
    for _ in range(8):
        pos = fh.tell()
        if pos >= len(data):
            return False
        rec = (_PyRecorder if _huge_memo(data[pos:]) else _Recorder)(fh)
        try:
            rec.load()
        except RecursionError:
            return True
        except Exception:  # noqa: BLE001 - the loader stops here too
            return rec.called
        if rec.called:
            return True
    return False


_stacked_pickles_reach = pickle_reaches_global


def _zip_member_reaches(data: bytes) -> bool:
    """torch.load reads a zip only if it starts with a local header (else it tries the legacy
    format); Python's zipfile would also accept data before it."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return any(pickle_reaches_global(zf.read(i)) for i in zf.infolist()
                       if i.filename.endswith(".pkl") and i.file_size < 1 << 20)
    except Exception:  # noqa: BLE001
        return False


def _tar_member_reaches(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            for m in tf.getmembers():
                fh = tf.extractfile(m) if m.isfile() and m.size < 1 << 20 else None
                if fh is not None and pickle_reaches_global(fh.read()):
                    return True
    except Exception:  # noqa: BLE001
        return False
    return False


def _gzip_reaches(data: bytes) -> bool:
    try:
        return pickle_reaches_global(gzip.decompress(data))
    except Exception:  # noqa: BLE001
        return False


def _npy_reaches(data: bytes) -> bool:
    try:
        if not data.startswith(b"\x93NUMPY"):
            return False
        major = data[6]
        n, fmt = (struct.unpack("<H", data[8:10])[0], 10) if major == 1 else \
            (struct.unpack("<I", data[8:12])[0], 12)
        return pickle_reaches_global(data, fmt + n)
    except Exception:  # noqa: BLE001
        return False


def _keras_reaches(data: bytes) -> bool:
    """config.json still parses and still holds a Lambda with bytecode (keras would unmarshal it)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            config = json.loads(zf.read("config.json"))
    except Exception:  # noqa: BLE001
        return False
    return "__lambda__" in json.dumps(config)


# -- builders -----------------------------------------------------------------------------------
def _torch_seeds(mark: Path) -> list[Seed]:
    import torch

    out = []
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}
    for label, obj, malicious in (("benign", state, False), ("evil", {**state, "x": System(mark)}, True)):
        for legacy in (False, True):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
            kind = "torch-legacy" if legacy else "torch-zip"
            out.append(Seed(f"{kind}-{label}", buf.getvalue(), ".bin", malicious,
                            (_stacked_pickles_reach if legacy else _zip_member_reaches)
                            if malicious else None))
    return out


def _numpy_seeds(mark: Path) -> list[Seed]:
    import numpy as np

    out = []
    buf = io.BytesIO()
    np.save(buf, np.arange(12, dtype=np.float32).reshape(3, 4))
    out.append(Seed("npy-benign", buf.getvalue(), ".npy"))
    buf = io.BytesIO()
    np.save(buf, np.array([1, System(mark)], dtype=object), allow_pickle=True)
    out.append(Seed("npy-evil", buf.getvalue(), ".npy", True, _npy_reaches))
    return out


def _joblib_seeds(mark: Path) -> list[Seed]:
    import joblib
    import numpy as np

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        # the payload before the array: joblib writes array bytes inside the pickle stream, where
        # pickletools (the oracle) stops; joblib's own unpickler would read on
        for label, obj, malicious in (("benign", {"coef": np.ones(4)}, False),
                                      ("evil", {"x": System(mark), "coef": np.ones(4)}, True)):
            path = Path(tmp) / f"{label}.joblib"
            joblib.dump(obj, path)
            out.append(Seed(f"joblib-{label}", path.read_bytes(), ".joblib", malicious,
                            _stacked_pickles_reach if malicious else None))
    return out


def _safetensors_seed() -> Seed:
    import numpy as np
    from safetensors.numpy import save

    return Seed("safetensors", save({"w": np.ones((4, 4), np.float32), "b": np.zeros(4, np.float16)},
                                    metadata={"format": "pt"}), ".safetensors")


def _gguf_seed() -> Seed:
    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_block_count(1)
        w.add_string("tokenizer.chat_template", "{{ messages[0]['content'] }}")
        w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
        w.add_tensor("w", np.ones((4, 4), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return Seed("gguf", path.read_bytes(), ".gguf")


def _onnx_seed() -> Seed:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    return Seed("onnx", helper.make_model(graph).SerializeToString(), ".onnx")


def _keras_config(code_b64: str | None) -> dict:
    dense = {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
             "config": {"name": "dense", "units": 2, "activation": "relu", "use_bias": True}}
    layers: list[dict] = [dense]
    if code_b64 is not None:
        layers.append({"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                       "config": {"name": "lambda", "arguments": {},
                                  "function": {"class_name": "__lambda__",
                                               "config": {"value": [code_b64, None, None]}}}})
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "sequential", "layers": layers}}


def keras_archive(config: dict) -> bytes:
    """A .keras archive as keras 3 writes it (metadata.json, config.json, model.weights.h5)."""
    import h5py
    import numpy as np

    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((4, 2), np.float32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2025-01-01"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", weights.getvalue())
    return buf.getvalue()


def _keras_seeds(mark: Path) -> list[Seed]:
    # keras' func_dump: base64 of marshal.dumps(the lambda's code object)
    code = compile(f"import os\nos.system('touch {mark}')\n", "<lambda>", "exec")
    evil = base64.encodebytes(marshal.dumps(code)).decode("ascii")
    return [Seed("keras-benign", keras_archive(_keras_config(None)), ".keras"),
            Seed("keras-evil", keras_archive(_keras_config(evil)), ".keras", True, _keras_reaches)]


def real_keras_seed(mark: Path) -> Seed:
    """The same Lambda attack saved by keras itself (slow: imports keras with the torch backend)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    command = f"touch {mark}"
    inp = keras.Input((4,))
    out = keras.layers.Lambda(lambda x: x if os.system(command) else x)(keras.layers.Dense(2)(inp))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.keras"
        keras.Model(inp, out).save(path)
        return Seed("keras-real-evil", path.read_bytes(), ".keras", True, _keras_reaches)


def build_seeds(mark: Path) -> list[Seed]:
    """Every seed (about 25). `mark`: the file a payload would create; it must never appear."""
    seeds = [Seed(f"pickle-p{p}-benign", pickle.dumps({"w": [1.0, 2.0], "n": "x"}, protocol=p), ".pkl")
             for p in range(6)]
    seeds += [Seed(f"pickle-p{p}-evil", evil_pickle(mark, protocol=p), ".pkl", True, pickle_reaches_global)
              for p in range(6)]
    seeds += _torch_seeds(mark) + _numpy_seeds(mark) + _joblib_seeds(mark) + _keras_seeds(mark)
    seeds += [_safetensors_seed(), _gguf_seed(), _onnx_seed()]
    evil = evil_pickle(mark, protocol=2)
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        info = tarfile.TarInfo("model/data.pkl")
        info.size = len(evil)
        tf.addfile(info, io.BytesIO(evil))
    seeds.append(Seed("tar-evil", tar.getvalue(), ".tar", True, _tar_member_reaches))
    seeds.append(Seed("gzip-evil", gzip.compress(evil), ".gz", True, _gzip_reaches))
    return seeds
