"""Static-tier rules no other test names, each fired on a real file built here (a real GGUF written
by llama.cpp's gguf package then altered, real .keras zips, real shard indexes and configs)."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import gguf
import numpy as np

from hfguard.engine import scan
from hfguard.policy import Policy
from hfguard.static.code.custom_code import CustomCodeCheck
from hfguard.static.formats.gguf import GGUFCheck
from hfguard.static.formats.keras import MAX_CONFIG_BYTES, MAX_DEPTH, KerasCheck
from hfguard.static.formats.safetensors import MAX_INDEX_BYTES, SafetensorsHeaderCheck
from hfguard.target import local_target


def _rules(path: Path, check) -> set[str]:
    return {f.rule for f in scan(local_target([str(path)]), Policy(), [check]).all_findings()}


# -- GGUF --------------------------------------------------------------------------------------
def _gguf(path: Path, *, alignment: int | None = None) -> bytes:
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_string("zz.key.a", "one")
    w.add_string("zz.key.b", "two")
    w.add_tensor("tensor.a", np.zeros((4, 32), np.float32))
    q = gguf.quants.quantize(np.ones((2, 64), np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("tensor.b", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def _info_pos(data: bytes, name: str) -> int:
    """Start of a tensor's info record after its name: n_dims u32, dims u64..., type u32, offset u64."""
    return data.index(name.encode()) + len(name)


def _fires(tmp_path: Path, data: bytes) -> set[str]:
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    return _rules(path, GGUFCheck())


def test_gguf_alignment_that_is_not_a_power_of_two(tmp_path):
    data = bytearray(_gguf(tmp_path / "m.gguf", alignment=64))
    pos = data.index(b"general.alignment") + len(b"general.alignment") + 4  # after the value type
    assert struct.unpack_from("<I", data, pos)[0] == 64
    struct.pack_into("<I", data, pos, 48)
    assert "gguf/bad-alignment" in _fires(tmp_path, bytes(data))


def test_gguf_duplicate_metadata_key_and_tensor_name(tmp_path):
    data = _gguf(tmp_path / "m.gguf")
    assert _fires(tmp_path, data) == set()  # the real file is clean
    twice = data.replace(b"zz.key.b", b"zz.key.a").replace(b"tensor.b", b"tensor.a")
    assert {"gguf/duplicate-key", "gguf/duplicate-tensor"} <= _fires(tmp_path, twice)


def test_gguf_unknown_type_and_row_not_a_whole_number_of_blocks(tmp_path):
    data = bytearray(_gguf(tmp_path / "m.gguf"))
    a, b = _info_pos(data, "tensor.a"), _info_pos(data, "tensor.b")
    struct.pack_into("<I", data, a + 4 + 8 * 2, 250)   # tensor.a: ggml type 250
    struct.pack_into("<Q", data, b + 4, 48)            # tensor.b: Q8_0 row of 48 (blocks of 32)
    assert {"gguf/unknown-type", "gguf/bad-dims"} <= _fires(tmp_path, bytes(data))


# -- Keras -------------------------------------------------------------------------------------
def _keras(path: Path, config_bytes: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        zf.writestr("config.json", config_bytes)
        zf.writestr("model.weights.h5", b"")
    return path


def test_keras_config_that_is_not_json(tmp_path):
    path = _keras(tmp_path / "m.keras", b'{"class_name": "Sequential", "config": ')
    assert "keras/bad-config" in _rules(path, KerasCheck())


def test_keras_config_too_deep_to_analyse(tmp_path):
    nested: object = {"class_name": "Dense"}
    for _ in range(MAX_DEPTH + 5):
        nested = {"class_name": "Wrapper", "config": {"layer": nested}}
    path = _keras(tmp_path / "m.keras", json.dumps({"class_name": "Sequential", "config": nested}).encode())
    assert "keras/too-complex" in _rules(path, KerasCheck())


def test_keras_config_declared_larger_than_the_limit(tmp_path):
    data = bytearray(_keras(tmp_path / "m.keras", b'{"class_name": "Sequential"}').read_bytes())
    # the central directory entry of config.json claims an uncompressed size above the limit
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(b"config.json")] != b"config.json":
        entry = data.index(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", data, entry + 24, MAX_CONFIG_BYTES + 1)
    path = tmp_path / "m.keras"
    path.write_bytes(bytes(data))
    assert "keras/config-too-large" in _rules(path, KerasCheck())


# -- safetensors shard index -------------------------------------------------------------------
def test_shard_index_that_is_not_a_weight_map(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": ["model-00001-of-00002.safetensors"]}))
    assert "safetensors/index-json" in _rules(tmp_path, SafetensorsHeaderCheck())
    index.write_text('{"weight_map": {"w": "model.safetensors"')   # cut short
    assert "safetensors/index-json" in _rules(tmp_path, SafetensorsHeaderCheck())


def test_shard_index_above_the_size_limit(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    with open(index, "wb") as fh:   # sparse: the size is what matters, and it is never read
        fh.write(b'{"weight_map": {')
        fh.truncate(MAX_INDEX_BYTES + 1)
    assert "safetensors/index-too-large" in _rules(tmp_path, SafetensorsHeaderCheck())


# -- custom code -------------------------------------------------------------------------------
def test_config_that_cannot_be_read_is_reported_not_skipped(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "auto_map": {"AutoModel": "m.M"},}')
    assert "custom-code/config-unreadable" in _rules(tmp_path, CustomCodeCheck())
