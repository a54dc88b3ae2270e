"""Mutated files of every new format (bit flips, 4-byte length lies, truncations, insertions): no scan
ends in check/crashed (hostile input gets the format's own findings). Each seed is malicious and is
BLOCKed or FLAGged unmutated, so the mutations start from a file the parser really walks."""

from __future__ import annotations

import io
import json
import random
import struct
import tarfile
import zipfile

import h5py
import numpy as np
import pytest
import yaml

from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.static.formats.executorch import ExecuTorchCheck
from hfguard.static.formats.flax import FlaxCheck
from hfguard.static.formats.keras import KerasCheck
from hfguard.static.formats.nemo import NemoCheck
from hfguard.static.formats.paddle import PaddleCheck
from hfguard.static.formats.skops import SkopsCheck
from hfguard.static.formats.tensorflow import TensorFlowCheck
from hfguard.static.formats.tflite import TFLiteCheck
from hfguard.target import local_target
from testing.executorch_files import program as et_program
from testing.flax_files import raw_ndarray, to_bytes
from testing.paddle_files import program as pd_program
from testing.tensorflow_files import graph
from testing.tflite_files import model as tflite_model

NO_H5PY = Policy(thresholds={"static.keras": {"use-h5py": False}})


def _h5() -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        g = f.create_group("model_weights/dense")
        g.create_dataset("kernel", data=np.ones((4, 4), np.float32))
        for i in range(20):
            g.create_dataset(f"w{i}", data=[i])
        g["leak"] = h5py.ExternalLink("/etc/passwd", "/")
    return buf.getvalue()


def _nemo() -> bytes:
    buf = io.BytesIO()
    text = yaml.safe_dump({"encoder": {"_target_": "os.system", "cmd": "id"}}).encode()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("./model_config.yaml")
        info.size = len(text)
        tf.addfile(info, io.BytesIO(text))
    return buf.getvalue()


def _skops() -> bytes:
    buf = io.BytesIO()
    schema = {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "protocol": 2,
              "content": {"f": {"__class__": "eval", "__module__": "builtins", "__loader__": "TypeNode"}}}
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("schema.json", json.dumps(schema))
    return buf.getvalue()


SEEDS = {
    "model.h5": (_h5, KerasCheck()),
    "model.nemo": (_nemo, NemoCheck()),
    "model.skops": (_skops, SkopsCheck()),
    "frozen.pb": (lambda: graph(["ReadFile"], {"f": ["PyFunc"]}).SerializeToString(), TensorFlowCheck()),
    "model.tflite": (lambda: tflite_model(["CONV_2D"], ["FlexWriteFile", "X"]), TFLiteCheck()),
    "model.pte": (lambda: et_program({"forward": (["aten::add", "evil::x"], [])}), ExecuTorchCheck()),
    "m.pdmodel": (lambda: pd_program([["conv2d", "py_func"]]), PaddleCheck()),
    "flax_model.msgpack": (lambda: to_bytes({"p": {"w": np.ones((4, 4), np.float32),
                                                   "x": raw_ndarray((2,), "object", b"\0" * 16)}}),
                           FlaxCheck()),
}


def _mutate(data: bytes, rng: random.Random) -> bytes:
    d = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        if not d:
            break
        i, r = rng.randrange(len(d)), rng.random()
        if r < 0.5:
            d[i] ^= 1 << rng.randrange(8)
        elif r < 0.75:
            d[i:i + 4] = struct.pack("<I", rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32)]))
        elif r < 0.9:
            del d[i:]
        else:
            d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(d)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutations_never_crash(tmp_path, name):
    make, check = SEEDS[name]
    seed = make()
    rng = random.Random(name)
    path = tmp_path / name
    for _ in range(40):
        path.write_bytes(_mutate(seed, rng))
        report = scan(local_target([str(path)]), NO_H5PY, [check])
        rules = {f.rule for f in report.all_findings()}
        assert "check/crashed" not in rules, [f.message for f in report.all_findings()]
    path.write_bytes(seed)
    assert scan(local_target([str(path)]), NO_H5PY, [check]).verdict is not Verdict.PASS
