"""Tensor access: safetensors parsed and mapped by us, every dtype widened like torch does."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from hfguard.target import local_target
from hfguard.weights.tensors import (
    WeightsFormatError,
    checkpoints_of,
    load_tensor,
    read_safetensors_header,
)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_dtypes_widen_exactly_like_torch(tmp_path, dtype):
    import torch
    from safetensors.torch import save_file

    src = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)) * 3
    t = src.to(getattr(torch, dtype))
    save_file({"w": t, "v": t[1:4, 2].clone()}, str(tmp_path / "m.safetensors"))
    metas = read_safetensors_header(tmp_path / "m.safetensors", "m")
    assert metas["w"].dtype == dtype and metas["w"].shape == (7, 5)
    np.testing.assert_array_equal(load_tensor(metas["w"]), t.float().numpy())
    np.testing.assert_array_equal(load_tensor(metas["v"]), t[1:4, 2].float().numpy())


def _write_raw(path, header: dict, data: bytes) -> None:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


@pytest.mark.parametrize("header,why", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}, "past-eof"),
    ({"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, "byte-count"),
    ({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, "bad-dtype"),
    ({"w": {"dtype": "F32", "shape": [4]}}, "bad-entry"),
])
def test_inconsistent_headers_are_refused(tmp_path, header, why):
    _write_raw(tmp_path / "bad.safetensors", header, b"\0" * 16)
    with pytest.raises(WeightsFormatError, match=why):
        read_safetensors_header(tmp_path / "bad.safetensors", "bad")


def test_shards_join_through_the_index_and_mismatches_are_reported(tmp_path):
    from safetensors.numpy import save_file

    save_file({"a": np.ones(3, np.float32), "smuggled": np.zeros(2, np.float32)},
              str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": np.arange(4, dtype=np.float32)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
                            "c": "model-00003-of-00003.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "broken.safetensors").write_bytes(struct.pack("<Q", 2) + b"{")
    [ckpt], failed = checkpoints_of(local_target([str(tmp_path)]))
    assert set(ckpt.tensors) == {"a", "b", "smuggled"}
    np.testing.assert_array_equal(ckpt.load("b"), np.arange(4))
    rules = sorted(p.rule for p in ckpt.problems)
    assert rules == ["weights/index-mismatch", "weights/missing-shard"]
    assert [p for p, _ in failed] == [f"{tmp_path}/broken.safetensors"]


def test_torch_storage_past_the_end_is_refused(tmp_path):
    from hfguard.weights.tensors import TensorMeta

    p = tmp_path / "w.bin"
    p.write_bytes(b"\0" * 64)
    meta = TensorMeta("w", "float32", (4, 4), "w.bin", p, 32, 64)
    with pytest.raises(WeightsFormatError, match="beyond the end"):
        load_tensor(meta)
    strided = TensorMeta("w", "float32", (4, 4), "w.bin", p, 0, 64, stride=(8, 1))
    with pytest.raises(WeightsFormatError, match="outside its storage"):
        load_tensor(strided)


@pytest.mark.parametrize("fmt", ["safetensors", "torch-zip"])
def test_fused_experts_are_read_one_expert_at_a_time(tmp_path, fmt):
    """gpt-oss / Llama 4 keep a layer's experts in one [experts, a, b] tensor (and their biases in one
    [experts, n]): each expert is read as its own matrix `name[e]`, from its own bytes, or through
    the strides of a torch view; other 3-D tensors (a conv kernel) and per-expert names stay whole."""
    import torch

    g = torch.Generator().manual_seed(0)
    fused = torch.randn(4, 6, 5, generator=g, dtype=torch.float32).to(torch.bfloat16)
    state = {"model.layers.0.mlp.experts.down_proj": fused,
             "model.layers.0.mlp.experts.down_proj_bias": torch.randn(4, 5, generator=g),
             # a view whose experts are not in C order in its storage
             "model.layers.1.mlp.experts.gate_up_proj": torch.randn(6, 4, 5, generator=g).transpose(0, 1),
             "model.layers.0.mlp.experts.3.down_proj.weight": torch.randn(6, 5, generator=g),
             "conv.weight": torch.randn(4, 3, 2, generator=g)}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        del state["model.layers.1.mlp.experts.gate_up_proj"]   # safetensors stores C order only
        save_file(state, str(tmp_path / "model.safetensors"))
    else:
        torch.save(state, tmp_path / "pytorch_model.bin")
    (ckpt,), failed = checkpoints_of(local_target([str(tmp_path)]))
    assert failed == []
    expected = {"conv.weight": state["conv.weight"], "model.layers.0.mlp.experts.3.down_proj.weight":
                state["model.layers.0.mlp.experts.3.down_proj.weight"]}
    for name, t in state.items():
        if name not in expected:
            expected.update((f"{name}[{e}]", t[e]) for e in range(4))
    assert set(ckpt.tensors) == set(expected)
    for name, t in expected.items():
        np.testing.assert_array_equal(ckpt.load(name), t.float().numpy(), err_msg=name)
    assert ckpt.tensors["model.layers.0.mlp.experts.down_proj[1]"].shape == (6, 5)
