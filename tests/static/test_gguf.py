"""static.gguf on real GGUF files written by the gguf package (llama.cpp's own writer), then corrupted."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.gguf import GGML_TYPES, GGUFCheck, read_gguf_header
from hfguard.target import local_target

SAFE_TEMPLATE = ("{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
EVIL_TEMPLATE = ("{{ cycler.__init__.__globals__.os.popen('touch MARK').read() }}"
                 "{% for message in messages %}{{ message['content'] }}{% endfor %}")


def _write(path: Path, template: str = SAFE_TEMPLATE) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_chat_template(template)
    w.add_token_list([f"tok{i}" for i in range(300)])
    w.add_context_length(128)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    q = gguf.quants.quantize(np.ones((4, 64), np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", np.ones((32,), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _rules(path: Path) -> set[str]:
    return {f.rule for f in scan_report(path).all_findings()}


def scan_report(path: Path):
    return scan(local_target([str(path)]), Policy(), [GGUFCheck()])


def _info_offset_pos(data: bytes, name: str) -> int:
    """Byte position of a tensor's u64 offset field in its tensor info."""
    i = data.index(name.encode()) + len(name)
    (n_dims,) = struct.unpack("<I", data[i:i + 4])
    return i + 4 + 8 * n_dims + 4


def test_real_file_passes(tmp_path):
    path = _write(tmp_path / "m.gguf")
    with open(path, "rb") as fh:
        header = read_gguf_header(fh, path.stat().st_size)
    assert header.problems == [] and header.version == 3
    assert [t.name for t in header.tensors] == ["token_embd.weight", "blk.0.attn_q.weight",
                                                "output_norm.weight"]
    assert scan_report(path).verdict is Verdict.PASS


def test_type_table_agrees_with_the_reference_writer():
    ref = {t.value: sizes for t, sizes in gguf.constants.GGML_QUANT_SIZES.items()}
    for type_id, sizes in GGML_TYPES.items():
        assert ref[type_id] == sizes, type_id


def test_hostile_counts_and_lengths(tmp_path):
    data = bytearray(_write(tmp_path / "m.gguf").read_bytes())
    huge = bytearray(data)
    huge[8:16] = struct.pack("<Q", 1 << 60)     # tensor count
    (tmp_path / "count.gguf").write_bytes(huge)
    assert _rules(tmp_path / "count.gguf") == {"gguf/count-bounds"}
    long_key = bytearray(data)
    long_key[24:32] = struct.pack("<Q", 1 << 40)  # length of the first metadata key
    (tmp_path / "key.gguf").write_bytes(long_key)
    assert _rules(tmp_path / "key.gguf") == {"gguf/bounds"}
    (tmp_path / "cut.gguf").write_bytes(bytes(data[:200]))
    assert _rules(tmp_path / "cut.gguf") == {"gguf/truncated"}
    (tmp_path / "v9.gguf").write_bytes(b"GGUF" + struct.pack("<I", 9) + bytes(data[8:]))
    assert _rules(tmp_path / "v9.gguf") == {"gguf/bad-version"}


def test_offsets_misaligned_overlapping_and_past_eof(tmp_path):
    data = bytearray(_write(tmp_path / "m.gguf").read_bytes())
    pos = _info_offset_pos(data, "output_norm.weight")
    mis = bytearray(data)
    mis[pos:pos + 8] = struct.pack("<Q", 1001)
    (tmp_path / "mis.gguf").write_bytes(mis)
    assert "gguf/misaligned-offset" in _rules(tmp_path / "mis.gguf")
    over = bytearray(data)
    over[pos:pos + 8] = struct.pack("<Q", 0)
    (tmp_path / "over.gguf").write_bytes(over)
    assert _rules(tmp_path / "over.gguf") == {"gguf/overlap"}
    (tmp_path / "short.gguf").write_bytes(bytes(data[:-40]))
    assert "gguf/past-eof" in _rules(tmp_path / "short.gguf")


def test_chat_template_injection(tmp_path):
    mark = tmp_path / "MARK"
    path = _write(tmp_path / "evil.gguf", EVIL_TEMPLATE.replace("MARK", str(mark)))
    report = scan_report(path)
    [f] = report.all_findings()
    assert f.rule == "chat-template/injection" and f.severity is Severity.CRITICAL
    assert "__globals__" in f.evidence["gadgets"]
    assert report.verdict is Verdict.BLOCK and not mark.exists()


def test_oversized_chat_template_is_not_silently_skipped(tmp_path, monkeypatch):
    from hfguard.static.formats import gguf as gguf_check

    monkeypatch.setattr(gguf_check, "MAX_TEMPLATE", 64)
    assert _rules(_write(tmp_path / "m.gguf")) == {"gguf/template-too-large"}


def test_hostile_template_is_reported_when_the_layout_after_it_is_broken(tmp_path):
    """The metadata is read whole before the tensor infos: a layout error there (here: the file cut
    inside the tensor infos) must not hide the template."""
    mark = tmp_path / "MARK"
    data = _write(tmp_path / "evil.gguf", EVIL_TEMPLATE.replace("MARK", str(mark))).read_bytes()
    cut = data.index(b"blk.0.attn_q.weight") + 5    # inside the tensor-info section
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    report = scan_report(tmp_path / "cut.gguf")
    assert {"gguf/truncated", "chat-template/injection"} <= {f.rule for f in report.all_findings()}
    assert report.verdict is Verdict.BLOCK and not mark.exists()
