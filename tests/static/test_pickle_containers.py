"""Malicious payloads in every container: BLOCK, the right rule and location, and no mark."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest

from hfguard.findings import Verdict
from hfguard.policy import policy_from_mapping
from testing import pickles as fx


def _blocked_by(report, qualname: str):
    assert report.verdict is Verdict.BLOCK, [f.to_dict() for f in report.all_findings()]
    found = fx.dangerous(report)
    assert qualname in found, sorted(found)
    return found[qualname]


@pytest.mark.parametrize("protocol", range(6))
def test_raw_pickle_every_protocol(mark, scan_bytes, protocol):
    report = scan_bytes("model.ckpt", fx.evil_pickle(mark, protocol))
    f = _blocked_by(report, "posix.system" if protocol else "posix.system")
    assert f.evidence["use"] == "called" and f.evidence["signature"] == "exec-os"


def test_protocol0_text_pickle_is_tried(mark, scan_bytes):
    # sniffed as text, still parsed: INST payload in printable protocol 0
    report = scan_bytes("notes.txt", fx.inst_payload(mark))
    assert report.files[0].format == "text"
    _blocked_by(report, "builtins.exec")


def test_truncated_protocol0_payload_is_still_reported(mark, scan_bytes):
    # pickle.loads runs os.system before it notices the missing STOP
    data = b"cos\nsystem\n(S'touch " + str(mark).encode() + b"'\ntR"
    report = scan_bytes("notes.txt", data)
    _blocked_by(report, "os.system")
    assert "pickle/truncated" in fx.rules_of(report)


def test_legacy_torch_with_another_protocol(scan_bytes):
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf, _use_new_zipfile_serialization=False, pickle_protocol=4)
    report = scan_bytes("legacy4.pt", buf.getvalue())
    assert report.files[0].format == "pickle" and report.verdict is Verdict.PASS, report.all_findings()


def test_text_that_is_not_a_pickle_passes(scan_bytes):
    for text in (
        b"little\n",
        b"3\n",
        b"licence: MIT\n",
        b"(hello world)\n",
        b"class Foo:\n    pass\n",
        b"cfg = 1\nname = x\n",
    ):
        report = scan_bytes("byteorder", text)
        assert report.verdict is Verdict.PASS, text


def test_polyglots_tar_and_safetensors(mark, scan_bytes):
    # a tar whose first member name is a protocol 0 pickle: pickle.load runs it
    payload = b"cos\nsystem\n(S'touch " + str(mark).encode() + b"'\ntR."
    data = fx.tar_with([(payload.decode(), b"hello")])
    report = scan_bytes("model.pkl", data)
    assert report.files[0].format == "tar"
    _blocked_by(report, "os.system")
    # a pickle whose first 8 bytes read as a small safetensors header length
    inner = fx.evil_pickle(mark, 2)
    # BINUNICODE of 2 chars "\0{": the first 8 bytes read as a header length of 0x02580280 (39 MB)
    poly = b"\x80\x02X\x02\x00\x00\x00\x00{0" + inner[2:]
    poly += b"\x00" * (0x02580280 + 16 - len(poly))  # pad so that "header" fits in the file
    path_report = scan_bytes("model.safetensors", poly)
    assert path_report.files[0].format == "safetensors"
    _blocked_by(path_report, "posix.system")


def test_real_safetensors_are_not_pickles(scan_bytes):
    import torch
    from safetensors.torch import save

    for n in (1, 40, 300):  # header lengths whose first byte may be 0x80
        data = save({f"t{i}": torch.ones(2) for i in range(n)})
        assert scan_bytes(f"m{n}.safetensors", data).verdict is Verdict.PASS


def test_torch_zip_data_pkl(mark, scan_bytes):
    report = scan_bytes("pytorch_model.bin", fx.evil_torch_zip(mark))
    f = _blocked_by(report, "posix.system")
    assert f.location.startswith("member ") and "data.pkl" in f.location
    assert f.evidence["offset"] > 0


def test_torch_zip_other_member_is_scanned_by_content(mark, scan_bytes):
    good = fx.torch_zip_bytes({"w": [1, 2]})
    report = scan_bytes(
        "model.pt", fx.add_member(good, "archive/extra/notes", fx.evil_pickle(mark, 2), zipfile.ZIP_DEFLATED)
    )
    f = _blocked_by(report, "posix.system")
    assert "archive/extra/notes" in f.location


def test_duplicate_member_names(mark, scan_bytes):
    report = scan_bytes("model.pt", fx.duplicate_name_zip(mark))
    _blocked_by(report, "posix.system")
    assert "zip/duplicate-member" in fx.rules_of(report)


def test_local_central_name_mismatch(mark, scan_bytes):
    data = fx.zip_with([("archive/data.pkl", fx.evil_pickle(mark, 2))])
    bad = fx.rename_local_header(data, b"archive/data.pkl", b"archive/safe.pkl")
    report = scan_bytes("model.pt", bad)
    _blocked_by(report, "posix.system")
    [m] = [f for f in report.all_findings() if f.rule == "zip/header-mismatch"]
    assert m.evidence["local_vs_central"]["name"] == ["archive/safe.pkl", "archive/data.pkl"]


def test_bad_crc_is_reported_and_still_scanned(mark, scan_bytes):
    data = fx.zip_with([("archive/data.pkl", fx.evil_pickle(mark, 2))])
    report = scan_bytes("model.pt", fx.corrupt_crc(data, b"archive/data.pkl"))
    _blocked_by(report, "posix.system")
    [c] = [f for f in report.all_findings() if f.rule == "zip/bad-crc"]
    assert c.evidence["expected"] == "efbeadde"


def test_encryption_flag_bits_do_not_hide_a_member(mark, scan_bytes):
    data = fx.zip_with([("archive/data.pkl", fx.evil_pickle(mark, 2))])
    report = scan_bytes("model.pt", fx.set_flag_bits(data, 0x1))
    _blocked_by(report, "posix.system")
    assert "zip/flag-bits" in fx.rules_of(report)


def test_member_only_in_local_headers_is_found(mark, scan_bytes):
    data = fx.zip_with(
        [
            ("archive/hidden.pkl", fx.evil_pickle(mark, 2)),
            ("archive/data.pkl", pickle.dumps({"ok": 1}, protocol=2)),
        ]
    )
    hidden = fx.drop_central_entry(data, b"archive/hidden.pkl")
    assert zipfile.ZipFile(io.BytesIO(hidden)).namelist() == ["archive/data.pkl"]
    report = scan_bytes("model.pt", hidden)
    f = _blocked_by(report, "posix.system")
    assert "archive/hidden.pkl (unlisted)" in f.location
    assert "zip/unlisted-member" in fx.rules_of(report)


def test_nested_zip_in_zip_and_depth_bound(mark, scan_bytes):
    inner = fx.zip_with([("archive/data.pkl", fx.evil_pickle(mark, 2))])
    outer = fx.zip_with([("inner.zip", inner)], zipfile.ZIP_DEFLATED)
    f = _blocked_by(scan_bytes("bundle.zip", outer), "posix.system")
    assert f.location.startswith("member inner.zip!archive/data.pkl")
    deep = inner
    for i in range(7):
        deep = fx.zip_with([(f"l{i}.zip", deep)])
    report = scan_bytes("deep.zip", deep)
    assert "archive/depth-exceeded" in fx.rules_of(report) and report.verdict is Verdict.BLOCK


def test_legacy_torch_every_pickle(mark, scan_bytes):
    report = scan_bytes("old.pt", fx.legacy_torch(fx.evil_pickle(mark, 2)))
    assert report.files[0].format == "torch-legacy"
    _blocked_by(report, "posix.system")


def test_legacy_torch_payload_after_the_storages(mark, scan_bytes):
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf, _use_new_zipfile_serialization=False)
    good = buf.getvalue()
    assert scan_bytes("ok.pt", good).verdict is Verdict.PASS
    report = scan_bytes("bad.pt", good + pickle.dumps(fx.Exec(mark), protocol=2))
    _blocked_by(report, "builtins.exec")


def test_tar_old_torch_and_generic(mark, scan_bytes):
    data = fx.tar_with([("sys_info", pickle.dumps({}, protocol=2)), ("pickle", fx.evil_pickle(mark, 2))])
    f = _blocked_by(scan_bytes("old.tar", data), "posix.system")
    assert f.location.startswith("member pickle")
    gz = fx.tar_with([("dir/model.pkl", fx.evil_pickle(mark, 4))], mode="w:gz")
    f = _blocked_by(scan_bytes("bundle.tgz", gz), "posix.system")
    assert "dir/model.pkl" in f.location


def test_old_torch_tar_records_are_all_scanned(mark, scan_bytes):
    report = scan_bytes("ok.tar", fx.old_torch_tar())
    assert report.verdict is Verdict.PASS and not report.all_findings()
    evil = fx.old_torch_tar(
        [pickle.dumps(("0", "cpu", __import__("torch").FloatStorage), protocol=2), fx.evil_pickle(mark, 2)]
    )
    report = scan_bytes("bad.tar", evil)
    f = _blocked_by(report, "posix.system")
    assert f.location.startswith("member storages")


def test_numpy_object_array_and_npz(mark, scan_bytes):
    npy = fx.npy_object([1, fx.System(mark)])
    report = scan_bytes("arr.npy", npy)
    _blocked_by(report, "posix.system")
    assert "numpy/object-array" in fx.rules_of(report)
    npz = fx.zip_with([("arr.npy", npy)], zipfile.ZIP_DEFLATED)
    f = _blocked_by(scan_bytes("arrs.npz", npz), "posix.system")
    assert f.location.startswith("member arr.npy")


def test_numpy_structured_field_names_are_not_objects(scan_bytes):
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.zeros(3, dtype=[("Orange", "<f4"), ("Olive", "<i8")]))
    assert scan_bytes("s.npy", buf.getvalue()).verdict is Verdict.PASS
    buf = io.BytesIO()
    arr = np.empty(2, dtype=[("a", "<f4"), ("o", "O")])
    arr["o"] = [fx.System(Path("/nonexistent/x")), 1]
    np.save(buf, arr, allow_pickle=True)
    assert scan_bytes("so.npy", buf.getvalue()).verdict is Verdict.BLOCK


def test_numpy_bad_header(scan_bytes):
    bad = b"\x93NUMPY\x01\x00" + (20).to_bytes(2, "little") + b"__import__('os')   \n"
    report = scan_bytes("x.npy", bad)
    assert "numpy/malformed-header" in fx.rules_of(report) and report.verdict is Verdict.BLOCK


@pytest.mark.parametrize("comp", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3)])
def test_joblib_plain_and_compressed(mark, tmp_path, scan_bytes, comp):
    import numpy as np

    obj = {
        "coef": np.arange(1000, dtype=np.float64),
        "names": np.array(["a", "bb"]),
        "payload": fx.System(mark),
        "after": np.ones((3, 4), dtype=np.int8),
    }
    path = fx.joblib_file(tmp_path / "m.joblib", obj, comp)
    report = scan_bytes("model.joblib", path.read_bytes())
    _blocked_by(report, "posix.system")
    # the raw arrays around the payload were skipped, not misread as opcodes
    assert not {"pickle/malformed", "pickle/trailing-data", "pickle/truncated"} & fx.rules_of(report)


def test_joblib_array_bytes_that_plain_pickle_would_run(mark, scan_bytes):
    """joblib reads the bytes after a NumpyArrayWrapper as array data; pickle.load would decode them
    as opcodes. A payload planted there (no alignment padding, as in joblib < 1.2) is found."""
    payload = b"cos\nsystem\n(S'touch " + str(mark).encode() + b"'\ntR0"
    n = len(payload)
    wrapper = (
        b"\x80\x02cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81}(X\x05\x00\x00\x00shapeK"
        + bytes([n])
        + b"\x85X\x05\x00\x00\x00dtypecnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R"
        + b"(K\x03X\x01\x00\x00\x00|NNNJ"
        + b"\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbX\x05\x00\x00\x00orderX\x01\x00\x00\x00Cub"
    )
    data = wrapper + payload + b"."
    report = scan_bytes("model.joblib", data)
    f = _blocked_by(report, "os.system")
    assert "array bytes as pickle.load reads them" in f.location
    assert not {"pickle/malformed", "pickle/trailing-data"} & fx.rules_of(report)  # joblib's view parses


def test_joblib_object_array_nested_pickle(mark, tmp_path, scan_bytes):
    import numpy as np

    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = "fine", fx.Exec(mark)
    path = fx.joblib_file(tmp_path / "o.joblib", {"objs": arr, "w": np.zeros(10)})
    f = _blocked_by(scan_bytes("o.joblib", path.read_bytes()), "builtins.exec")
    assert "object-array@" in f.location


def test_joblib_legacy_zf_format(mark, scan_bytes, tmp_path):
    import warnings
    import zlib

    import joblib

    def zf(payload: bytes) -> bytes:
        return b"ZF" + hex(len(payload)).encode().ljust(19) + zlib.compress(payload)

    benign = tmp_path / "benign_zf.pkl"
    benign.write_bytes(zf(pickle.dumps({"ok": [1, 2]}, protocol=2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert joblib.load(benign) == {"ok": [1, 2]}  # the format is real: joblib still reads it
    assert scan_bytes("ok.pkl", benign.read_bytes()).verdict is Verdict.PASS
    f = _blocked_by(scan_bytes("old.pkl", zf(fx.evil_pickle(mark, 2))), "posix.system")
    assert f.location.startswith("member <zlib>")


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz", "lzma", "zlib"])
def test_compressed_pickles(mark, scan_bytes, kind):
    f = _blocked_by(scan_bytes("model.pkl.x", fx.compress(kind, fx.evil_pickle(mark, 4))), "posix.system")
    assert f.location.startswith("member <")


def test_embedded_payload_of_a_nested_deserializer_is_scanned(mark, scan_bytes):
    inner = fx.evil_pickle(mark, 4, "exec")
    outer = b"\x80\x04" + fx.op_str("pickle") + fx.op_str("loads") + b"\x93C" + bytes([len(inner)]) + inner
    outer += b"\x85R."
    report = scan_bytes("n.pkl", outer)
    assert fx.dangerous(report)["pickle.loads"].evidence["use"] == "called"
    f = _blocked_by(report, "builtins.exec")
    assert f.location.startswith("member <embedded@")


@pytest.mark.parametrize(
    ("magic", "kind", "module"),
    [
        (b"Rar!\x1a\x07\x01\x00", "rar", None),
        (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z", "py7zr"),
        (b"\x28\xb5\x2f\xfd\x00", "zstd", "zstandard"),
        (b"\x04\x22\x4d\x18\x64", "lz4", "lz4"),
    ],
)
def test_archives_hfguard_cannot_open_are_findings(scan_bytes, monkeypatch, magic, kind, module):
    """rar has no reader; 7z/zstd/lz4 have optional ones: without the package, unscannable."""
    import sys

    if module is not None:
        monkeypatch.setitem(sys.modules, module, None)  # the optional package is not installed
        monkeypatch.setitem(sys.modules, f"{module}.frame", None)
    report = scan_bytes("model.pkl", magic + bytes(100))
    [f] = [f for f in report.all_findings() if f.rule == "archive/unscannable"]
    assert f.evidence["format"] == kind and report.verdict is Verdict.FLAG
    report = scan_bytes("bundle.zip", fx.zip_with([("weights.x", magic + bytes(100))]))
    [f] = [f for f in report.all_findings() if f.rule == "archive/unscannable"]
    assert f.location.startswith("member weights.x")


def _seven_zip(members: list[tuple[str, bytes]], method: str = "lzma2") -> bytes:
    py7zr = pytest.importorskip("py7zr")
    buf = io.BytesIO()
    filters = {"lzma2": None, "deflate": [{"id": py7zr.FILTER_DEFLATE}]}[method]
    with py7zr.SevenZipFile(buf, "w", filters=filters) as z:
        for name, data in members:
            z.writestr(data, name)
    return buf.getvalue()


def test_nullifai_style_7z_torch_pickle_is_blocked(mark, scan_bytes):
    """nullifAI (ReversingLabs, 2025): a PyTorch model packed with 7z instead of zip, its pickle
    running a payload first and breaking afterwards."""
    broken = fx.evil_pickle(mark, 2) + b"\x00 broken stream"
    data = _seven_zip([("archive/data.pkl", broken), ("archive/version", b"3\n")])
    f = _blocked_by(scan_bytes("pytorch_model.bin", data), "posix.system")
    assert f.location.startswith("member archive/data.pkl")


def test_7z_of_a_benign_checkpoint_passes(scan_bytes):
    import torch

    data = _seven_zip([("model.pt", fx.torch_zip_bytes({"w": torch.ones(3)})), ("config.json", b"{}")])
    report = scan_bytes("model.7z", data)
    assert report.verdict is Verdict.PASS, [f.to_dict() for f in report.all_findings()]


def test_7z_bounds_and_garbage(scan_bytes):
    policy = policy_from_mapping({"thresholds": {"static.serialization": {"max-decompressed": 1 << 20}}})
    data = _seven_zip([("data.pkl", pickle.dumps(bytes(2 << 20), protocol=4))])
    report = scan_bytes("big.7z", data, policy)
    assert "archive/bomb" in fx.rules_of(report) and report.verdict is Verdict.BLOCK
    assert scan_bytes("fine.7z", data).verdict is Verdict.PASS
    report = scan_bytes("junk.7z", b"7z\xbc\xaf\x27\x1c" + bytes(60))
    assert "archive/malformed" in fx.rules_of(report)


def _scan_peak(scan_bytes, name: str, data: bytes):
    """The report, and the peak of Python allocations during the scan (a loose sanity bound)."""
    import tracemalloc

    tracemalloc.start()
    try:
        report = scan_bytes(name, data)
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_7z_members_decode_in_small_steps(scan_bytes):
    """py7zr's own loop asks for a whole member (up to 128 MB) per call and its deflate ignores the
    request: 48 MiB of zeros, under every bound, must still decode a few MiB at a time."""
    from testing import bombs

    head, tail = bombs.pickle_of_zeros(48 << 20)
    data = _seven_zip([("archive/data.pkl", head + bytes(48 << 20) + tail)], "deflate")
    report, peak = _scan_peak(scan_bytes, "model.7z", data)
    assert report.verdict is Verdict.PASS, fx.rules_of(report)
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"


@pytest.mark.slow  # compressing 256 MiB of zeros takes a second or two
def test_7z_bomb_stops_before_decoding(scan_bytes):
    """256 MiB of zeros in 250 KB of 7z: the sizes the header declares give it away; nothing is
    decoded, so the finding comes at once and memory stays flat."""
    from testing import bombs

    head, tail = bombs.pickle_of_zeros(256 << 20)
    data = _seven_zip([("archive/data.pkl", head + bytes(256 << 20) + tail)], "deflate")
    report, peak = _scan_peak(scan_bytes, "bomb.7z", data)
    [f] = [f for f in report.all_findings() if f.rule == "archive/bomb"]
    assert report.verdict is Verdict.BLOCK and f.evidence["decompressed"] >= 256 << 20
    assert "declared" in f.message and peak < 64 << 20, f"peak {peak >> 20} MiB"


def test_7z_header_bomb_is_refused_before_opening(scan_bytes):
    """py7zr inflates a compressed header whole (up to 256 MB) while opening: 200 MiB of zeros
    behind a 200 KB header is refused on the size it declares, before py7zr sees the file."""
    pytest.importorskip("py7zr")
    from testing import bombs

    report, peak = _scan_peak(scan_bytes, "header.7z", bombs.seven_zip_header_bomb(200))
    [f] = [f for f in report.all_findings() if f.rule == "archive/bomb"]
    assert report.verdict is Verdict.BLOCK and "header" in f.message
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"


@pytest.mark.parametrize("kind", ["zstd", "lz4"])
def test_zstd_and_lz4_are_decoded_and_scanned(mark, scan_bytes, kind):
    import torch

    compress = _frame_compressor(kind)
    f = _blocked_by(scan_bytes(f"model.pkl.{kind}", compress(fx.evil_pickle(mark, 4))), "posix.system")
    assert f.location.startswith(f"member <{kind}>")
    benign = compress(fx.torch_zip_bytes({"w": torch.ones(3)}))
    assert scan_bytes(f"model.pt.{kind}", benign).verdict is Verdict.PASS


@pytest.mark.parametrize("kind", ["zstd", "lz4"])
def test_zstd_and_lz4_bombs_stop_as_they_inflate(scan_bytes, kind):
    """Frames concatenate: one frame of 1 MiB of zeros repeated 10,000 times is a 10 GB stream."""
    from testing import bombs

    compress = _frame_compressor(kind)
    head, tail = (compress(part) for part in bombs.pickle_of_zeros(10_000 << 20))
    data = head + compress(bytes(1 << 20)) * 10_000 + tail
    report = scan_bytes(f"bomb.pkl.{kind}", data)
    [f] = [f for f in report.all_findings() if f.rule == "archive/bomb"]
    assert report.verdict is Verdict.BLOCK and f.evidence["decompressed"] < 160 << 20


@pytest.mark.parametrize("kind", ["zstd", "lz4", "gzip", "bzip2", "xz", "lzma", "zlib"])
@pytest.mark.parametrize("cut", [0.5, 12 / 13])
def test_a_cut_compressed_stream_fails_closed(scan_bytes, kind, cut):
    """A frame cut short decodes to fewer bytes, or to none (zstd's reader stops quietly inside a
    frame): an unreadable stream is a finding, never a PASS on what little was decoded."""
    compress = _frame_compressor(kind) if kind in ("zstd", "lz4") else lambda d: fx.compress(kind, d)
    whole = compress(pickle.dumps({"weights": list(range(2000))}, protocol=4))
    assert scan_bytes(f"model.pkl.{kind}", whole).verdict is Verdict.PASS
    report = scan_bytes(f"model.pkl.{kind}", whole[: int(len(whole) * cut)])
    assert report.verdict is not Verdict.PASS and "archive/malformed" in fx.rules_of(report)


def _frame_compressor(kind: str):
    if kind == "zstd":
        zstandard = pytest.importorskip("zstandard")
        return zstandard.ZstdCompressor().compress
    lz4_frame = pytest.importorskip("lz4.frame")
    return lz4_frame.compress


def test_zip_bomb_is_a_finding(scan_bytes):
    import struct

    n = 48 << 20
    zeros = b"\x80\x04\x8e" + struct.pack("<Q", n) + bytes(n) + b"."  # 48 MB of BINBYTES8
    policy = policy_from_mapping({"thresholds": {"static.serialization": {"max-decompressed": 16 << 20}}})
    report = scan_bytes("bomb.pkl.gz", fx.compress("gzip", zeros), policy)
    assert "archive/bomb" in fx.rules_of(report) and report.verdict is Verdict.BLOCK
    member = fx.zip_with([("archive/data.pkl", zeros)], zipfile.ZIP_DEFLATED)
    report = scan_bytes("bomb.pt", member, policy)
    assert "archive/bomb" in fx.rules_of(report)
    assert scan_bytes("fine.pt", member).verdict is Verdict.PASS  # under the default bounds


def test_ratio_bound():
    from hfguard.static.pickle.streams import StreamLimit, open_decompressed

    data = fx.compress("zlib", bytes(4 << 20))
    stream = open_decompressed(
        "zlib", io.BytesIO(data), len(data), cap=1 << 40, ratio=100.0, ratio_floor=1 << 20, budget=None
    )
    with pytest.raises(StreamLimit) as exc:
        while stream.read(1 << 16):
            pass
    assert exc.value.rule == "archive/bomb" and exc.value.evidence["ratio"] > 100


def test_policy_thresholds_reach_the_check(scan_bytes):
    data = pickle.dumps(list(range(5000)), protocol=4)
    policy = policy_from_mapping({"thresholds": {"static.serialization": {"max-opcodes": 100}}})
    report = scan_bytes("many.pkl", data, policy)
    assert "pickle/limit-exceeded" in fx.rules_of(report)
    assert scan_bytes("many2.pkl", data).verdict is Verdict.PASS


def test_truncated_zip_and_garbage_zip(scan_bytes, mark):
    data = fx.evil_torch_zip(mark)
    report = scan_bytes("cut.pt", data[: len(data) // 2])
    assert report.verdict in (Verdict.BLOCK, Verdict.FLAG) and "archive/malformed" in fx.rules_of(report)
    report = scan_bytes("junk.pt", b"PK\x03\x04" + b"\xff" * 200)
    assert "archive/malformed" in fx.rules_of(report)


def test_zip_scan_reads_directory_headers_and_pickles_only(tmp_path):
    """Tensor data is never read: the bytes read stay tiny however large the checkpoint."""
    from hfguard.checks import ScanContext
    from hfguard.engine import scan_file
    from hfguard.policy import Policy
    from hfguard.static.pickle.check import SerializationCheck
    from hfguard.target import Target, TargetFile

    path = tmp_path / "big.pt"
    fx.write_sparse_torch_zip(path, [256 << 20] * 4)  # 1 GiB of tensors, sparse on disk
    read = []

    class Counting(io.FileIO):
        def readinto(self, b):
            n = super().readinto(b)
            read.append(n or 0)
            return n

    file = TargetFile(
        path="big.pt", size=path.stat().st_size, opener=lambda: io.BufferedReader(Counting(path))
    )
    ctx = ScanContext(policy=Policy(), target=Target(name="t", source="local", files=[file]))
    report = scan_file(file, [SerializationCheck()], ctx)
    assert report.format == "zip" and not report.findings
    assert sum(read) < 256 << 10, sum(read)  # < 256 KiB of a 1 GiB file


@pytest.fixture
def inflated(monkeypatch):
    """Bytes zlib actually inflates during the test (every deflate/gzip stream goes through
    zlib.decompressobj): the library is wrapped, none of hfguard's code."""
    import zlib

    real = zlib.decompressobj
    counts: list[int] = []

    class Counting:
        def __init__(self, *args, **kwargs):
            self._d = real(*args, **kwargs)

        def decompress(self, data, max_length=0):
            out = self._d.decompress(data, max_length)
            counts.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self._d, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    return counts


def _bomb_finding(report):
    assert report.verdict is Verdict.BLOCK, [f.to_dict() for f in report.all_findings()]
    [f] = [f for f in report.all_findings() if f.rule == "archive/bomb"]
    return f


def test_gzip_bomb_is_stopped_as_it_inflates(scan_bytes, inflated):
    from testing import bombs

    head, tail = bombs.pickle_of_zeros(10_000 << 20)
    data = bombs.gzip_bomb(10_000, head, tail)  # 10 MB of gzip members -> 10 GB of zeros
    f = _bomb_finding(scan_bytes("bomb.pkl.gz", data))
    assert f.evidence["limit_name"] == "max_ratio" and f.evidence["ratio"] > 200
    # stopped near the 64 MiB floor, not at 200 x the 10 MB file (2 GB)
    assert sum(inflated) < 160 << 20, sum(inflated)
    assert f.evidence["decompressed"] <= sum(inflated)


def test_nested_zip_bomb_is_stopped_as_it_inflates(scan_bytes, inflated):
    from testing import bombs

    n_mb = 10_000
    head, tail = bombs.pickle_of_zeros(n_mb << 20)
    deflated = bombs.deflate_zeros(n_mb, head, tail)
    inner = bombs.zip64_member_zip("archive/data.pkl", deflated, len(head) + (n_mb << 20) + len(tail))
    outer = bombs.nested_zip([("inner.zip", inner)])  # deflate of a deflate of zeros
    f = _bomb_finding(scan_bytes("bomb.pt", outer))
    assert f.location.startswith("member inner.zip!archive/data.pkl")
    assert sum(inflated) < 160 << 20, sum(inflated)


def test_compressible_but_small_streams_are_not_bombs(scan_bytes, inflated):
    from testing import bombs

    head, tail = bombs.pickle_of_zeros(32 << 20)  # 32 MiB of zeros: ~1000:1, under the floor
    report = scan_bytes("zeros.pkl.gz", bombs.gzip_bomb(32, head, tail))
    assert report.verdict is Verdict.PASS, [f.to_dict() for f in report.all_findings()]
    assert sum(inflated) >= 32 << 20  # really decoded to the end


def test_load_from_bytes_is_judged_by_the_nested_checkpoint(mark, scan_bytes):
    import torch

    benign = fx.torch_zip_bytes({"w": torch.ones(2)})
    assert scan_bytes("ok.pkl", fx.load_from_bytes_pickle(benign)).verdict is Verdict.PASS
    # the same call with a malicious nested checkpoint: the nested payload and the loader block
    report = scan_bytes("evil.pkl", fx.load_from_bytes_pickle(fx.evil_torch_zip(mark)))
    f = _blocked_by(report, "posix.system")
    assert f.location.startswith("member <embedded@")
    assert "torch.storage._load_from_bytes" in fx.dangerous(report)
    # large (read from the file, not kept by the VM), and protocol 2 (_codecs.encode of the bytes)
    big_evil = fx.add_member(fx.evil_torch_zip(mark), "archive/data/9", bytes(300_000))
    for protocol in (2, 4):
        report = scan_bytes(f"big{protocol}.pkl", fx.load_from_bytes_pickle(big_evil, protocol))
        assert _blocked_by(report, "posix.system").location.startswith("member <embedded@")
    # bytes that are not a torch checkpoint (torch.load would unpickle them with weights_only=False)
    report = scan_bytes("raw.pkl", fx.load_from_bytes_pickle(pickle.dumps({"a": 1})))
    _blocked_by(report, "torch.storage._load_from_bytes")


def test_load_from_bytes_nesting_is_bounded(scan_bytes):
    import torch

    data = fx.torch_zip_bytes({"w": torch.ones(2)})
    for _ in range(6):  # a checkpoint inside a pickle inside a checkpoint ... deeper than the bound
        data = fx.torch_zip_bytes({"x": fx.LoadFromBytes(data)})
    report = scan_bytes("deep.pt", data)
    assert "archive/depth-exceeded" in fx.rules_of(report)
    _blocked_by(report, "torch.storage._load_from_bytes")
