"""Builders for benign and malicious pickle-bearing files.

Malicious payloads are harmless but leave a mark if run: they create the file `mark` (in the
test's tmp_path). Every test that scans one also proves the mark never appears.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path


class System:
    """os.system("touch MARK") when unpickled."""

    def __init__(self, mark: Path) -> None:
        self.cmd = f"touch {mark}"

    def __reduce__(self):
        return os.system, (self.cmd,)


class Exec:
    """builtins.exec(...) writing MARK when unpickled."""

    def __init__(self, mark: Path) -> None:
        self.code = f"open({str(mark)!r}, 'w').write('pwned')"

    def __reduce__(self):
        import builtins

        return builtins.exec, (self.code,)


def evil_pickle(mark: Path, protocol: int = 4, kind: str = "system") -> bytes:
    payload = System(mark) if kind == "system" else Exec(mark)
    return pickle.dumps({"weights": [1.0, 2.0], "payload": payload}, protocol=protocol)


def exec_code(mark: Path) -> str:
    return f"open({str(mark)!r}, 'w').write('pwned')"


# -- hand-written opcode streams --------------------------------------------------------------
def op_str(s: str) -> bytes:
    """SHORT_BINUNICODE"""
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def memo_stack_global(mark: Path) -> bytes:
    """builtins.exec via STACK_GLOBAL whose strings come from the memo, put there with a mix of
    BINPUT and MEMOIZE (picklescan issue #14: memo confusion), plus decoy safe strings."""
    return (
        b"\x80\x04"
        + op_str("builtins")
        + b"q\x05"  # memo[5] = "builtins" (BINPUT)
        + op_str("exec")
        + b"\x94"  # MEMOIZE -> memo[1] (len(memo) == 1)
        + op_str("torch._utils")
        + b"\x94"  # memo[2] decoy
        + b"000"  # POP x3
        + op_str("_rebuild_tensor_v2")
        + b"0"
        + b"h\x05h\x01\x93"  # BINGET 5, BINGET 1, STACK_GLOBAL
        + op_str(exec_code(mark))
        + b"\x85R."
    )  # TUPLE1, REDUCE, STOP


def inst_payload(mark: Path) -> bytes:
    """protocol 0 INST: builtins.exec via the Python 2 name __builtin__."""
    return b"(S" + repr(exec_code(mark)).encode() + b"\ni__builtin__\nexec\n."


def obj_payload(mark: Path) -> bytes:
    """protocol 1 OBJ with the class from GLOBAL."""
    return b"(cos\nsystem\nS'touch " + str(mark).encode() + b"'\no."


def escaped_stack_global(mark: Path) -> bytes:
    """STACK_GLOBAL fed by protocol-0 STRING with escapes and UNICODE with \\u escapes."""
    return b"\x80\x04S'o\\x73'\n" + b"Vsys\\u0074em\n" + b"\x93" + op_str(f"touch {mark}") + b"\x85R."


def ext_payload() -> bytes:
    """EXT1 code 0x42: the loader's copyreg registry decides what it imports."""
    return b"\x80\x02\x82\x42)R."


def two_pickles(mark: Path) -> bytes:
    """A harmless pickle, then a second one after STOP that runs exec."""
    return pickle.dumps({"ok": 1}, protocol=2) + pickle.dumps(Exec(mark), protocol=2)


# -- torch zip ----------------------------------------------------------------------------------
def torch_zip_bytes(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def replace_member(zip_bytes: bytes, name_suffix: str, data: bytes) -> bytes:
    """Rebuild a zip with the member ending in `name_suffix` replaced (others kept, stored)."""
    src = zipfile.ZipFile(io.BytesIO(zip_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = data if info.filename.endswith(name_suffix) else src.read(info)
            dst.writestr(info.filename, body)
    return out.getvalue()


def add_member(zip_bytes: bytes, name: str, data: bytes, compress: int = zipfile.ZIP_STORED) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(zip_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr(name, data, compress_type=compress)
    return out.getvalue()


def evil_torch_zip(mark: Path) -> bytes:
    import torch

    good = torch_zip_bytes({"w": torch.ones(2, 2)})
    return replace_member(good, "data.pkl", evil_pickle(mark, protocol=2))


def zip_with(members: list[tuple[str, bytes]], compress: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compress) as z:
        for name, data in members:
            z.writestr(name, data)
    return out.getvalue()


def duplicate_name_zip(mark: Path) -> bytes:
    """Two central entries both named archive/data.pkl: one benign, one malicious."""
    import warnings

    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", pickle.dumps({"ok": 1}, protocol=2))
            z.writestr("archive/data.pkl", evil_pickle(mark, protocol=2))
    return out.getvalue()


def rename_local_header(zip_bytes: bytes, old: bytes, new: bytes) -> bytes:
    """Change a member's name in its local header only (same length): local/central mismatch."""
    assert len(old) == len(new)
    i = zip_bytes.index(b"PK\x03\x04")
    while i >= 0:
        nlen = struct.unpack("<H", zip_bytes[i + 26 : i + 28])[0]
        if zip_bytes[i + 30 : i + 30 + nlen] == old:
            return zip_bytes[: i + 30] + new + zip_bytes[i + 30 + nlen :]
        i = zip_bytes.find(b"PK\x03\x04", i + 4)
    raise ValueError("member not found")


def corrupt_crc(zip_bytes: bytes, name: bytes) -> bytes:
    """Flip the CRC of `name` in both headers (consistent headers, wrong CRC)."""
    data = bytearray(zip_bytes)
    for sig, crc_at, nlen_at, name_at in ((b"PK\x03\x04", 14, 26, 30), (b"PK\x01\x02", 16, 28, 46)):
        i = data.find(sig)
        while i >= 0:
            nlen = struct.unpack("<H", data[i + nlen_at : i + nlen_at + 2])[0]
            if bytes(data[i + name_at : i + name_at + nlen]) == name:
                data[i + crc_at : i + crc_at + 4] = b"\xde\xad\xbe\xef"
            i = data.find(sig, i + 4)
    return bytes(data)


def set_flag_bits(zip_bytes: bytes, flags: int) -> bytes:
    data = bytearray(zip_bytes)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = data.find(sig)
        while i >= 0:
            data[i + at : i + at + 2] = struct.pack("<H", flags)
            i = data.find(sig, i + 4)
    return bytes(data)


def drop_central_entry(zip_bytes: bytes, name: bytes) -> bytes:
    """Remove `name` from the central directory only: its local header and data stay (unlisted)."""
    eocd = zip_bytes.rindex(b"PK\x05\x06")
    total, cd_size, cd_offset = struct.unpack("<HII", zip_bytes[eocd + 10 : eocd + 20])
    cd = zip_bytes[cd_offset : cd_offset + cd_size]
    kept, pos = b"", 0
    while pos < len(cd):
        nlen, elen, clen = struct.unpack("<HHH", cd[pos + 28 : pos + 34])
        size = 46 + nlen + elen + clen
        if cd[pos + 46 : pos + 46 + nlen] != name:
            kept += cd[pos : pos + size]
        pos += size
    tail = bytearray(zip_bytes[eocd:])
    tail[8:16] = struct.pack("<HHI", total - 1, total - 1, len(kept))
    return zip_bytes[:cd_offset] + kept + bytes(tail)


def sparse_data_pkl(sizes: list[int]) -> bytes:
    """data.pkl as torch writes it for float32 tensors of these byte sizes (torch's own globals)."""
    import collections

    import torch

    class _Storage:
        def __init__(self, key: str, numel: int) -> None:
            self.key, self.numel = key, numel

    class _Tensor:
        def __init__(self, storage: _Storage) -> None:
            self.storage = storage

        def __reduce__(self):
            args = (self.storage, 0, (self.storage.numel,), (1,), False, collections.OrderedDict())
            return torch._utils._rebuild_tensor_v2, args

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
            return None

    buf = io.BytesIO()
    sd = collections.OrderedDict(
        (f"layers.{i}.weight", _Tensor(_Storage(str(i), n // 4))) for i, n in enumerate(sizes)
    )
    _Pickler(buf, protocol=2).dump(sd)
    return buf.getvalue()


def write_sparse_torch_zip(path: Path, sizes: list[int], real_crc: bool = False) -> None:
    """A STORED torch zip whose tensor members are holes (zeros, sparse on disk) of these byte
    sizes; zip64 records once offsets pass 4 GiB. CRCs of the holes are only computed when asked
    (slow for GBs; a scanner that never reads tensor data never needs them)."""

    def crc_of_zeros(n: int) -> int:
        crc, block = 0, bytes(1 << 24)
        while n:
            k = min(n, len(block))
            crc, n = zlib.crc32(block[:k], crc), n - k
        return crc

    members: list[tuple[str, bytes | int]] = [
        ("archive/data.pkl", sparse_data_pkl(sizes)),
        ("archive/byteorder", b"little"),
        ("archive/version", b"3\n"),
    ]
    members += [(f"archive/data/{i}", n) for i, n in enumerate(sizes)]
    crcs: dict[int, int] = {}
    central = b""
    big = 0xFFFFFFFF
    with open(path, "wb") as fh:
        for name, body in members:
            offset = fh.tell()
            size = body if isinstance(body, int) else len(body)
            if isinstance(body, int):
                crc = crcs.setdefault(size, crc_of_zeros(size)) if real_crc else 0
            else:
                crc = zlib.crc32(body)
            nb = name.encode()
            fh.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 0, 0, 0, crc, size, size, len(nb), 0))
            fh.write(nb)
            if isinstance(body, int):
                fh.seek(size, 1)
            else:
                fh.write(body)
            extra = struct.pack("<HHQ", 1, 8, offset) if offset >= big else b""
            central += (
                struct.pack(
                    "<4sHHHHHHIIIHHHHHII",
                    b"PK\x01\x02",
                    45,
                    45,
                    0,
                    0,
                    0,
                    0,
                    crc,
                    size,
                    size,
                    len(nb),
                    len(extra),
                    0,
                    0,
                    0,
                    0,
                    min(offset, big),
                )
                + nb
                + extra
            )
        cd_offset = fh.tell()
        fh.write(central)
        n = len(members)
        if cd_offset >= big:
            z64 = fh.tell()
            fh.write(
                struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
            )
            fh.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1))
        fh.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), min(cd_offset, big), 0))


# -- legacy torch, tar, numpy, joblib, compressed --------------------------------------------------
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def legacy_torch(data_pickle: bytes, keys: list[str] | None = None, raw: bytes = b"") -> bytes:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    return (
        pickle.dumps(LEGACY_MAGIC, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps(sys_info, protocol=2)
        + data_pickle
        + pickle.dumps(keys or [], protocol=2)
        + raw
    )


def old_torch_tar(records: list[bytes] | None = None) -> bytes:
    """torch's pre-1.0 tar checkpoint: sys_info, pickle, storages (count, then per storage a pickled
    (key, location, storage_type) and size + raw bytes), tensors (count, then records + layout)."""
    import torch

    storages = pickle.dumps(2, protocol=2)
    for key, n in (("0", 3), ("1", 2)):
        storages += records.pop(0) if records else pickle.dumps((key, "cpu", torch.FloatStorage), protocol=2)
        storages += struct.pack("<q", n) + bytes(4 * n)
    tensors = pickle.dumps(1, protocol=2) + pickle.dumps(("t0", "0", torch.FloatTensor), protocol=2)
    tensors += struct.pack("<ii", 1, 0) + struct.pack("<qqq", 3, 1, 0)
    return tar_with(
        [
            ("sys_info", pickle.dumps({"protocol_version": 1001}, protocol=2)),
            ("pickle", pickle.dumps({"w": 1}, protocol=2)),
            ("storages", storages),
            ("tensors", tensors),
        ]
    )


def tar_with(members: list[tuple[str, bytes]], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def npy_object(obj_list) -> bytes:
    import numpy as np

    arr = np.empty(len(obj_list), dtype=object)
    for i, o in enumerate(obj_list):
        arr[i] = o
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def compress(kind: str, data: bytes) -> bytes:
    return {
        "gzip": gzip.compress,
        "bzip2": bz2.compress,
        "xz": lzma.compress,
        "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
        "zlib": zlib.compress,
    }[kind](data)


def joblib_file(path: Path, obj, compress_arg=0) -> Path:
    import joblib

    joblib.dump(obj, path, compress=compress_arg)
    return path


# -- report helpers ---------------------------------------------------------------------------------


def rules_of(report) -> set[str]:
    return {f.rule for f in report.all_findings()}


def dangerous(report) -> dict[str, object]:
    """qualname -> finding, for pickle/dangerous-global findings."""
    return {f.evidence["global"]: f for f in report.all_findings() if f.rule == "pickle/dangerous-global"}


class LoadFromBytes:
    """Pickles as `torch.storage._load_from_bytes(data)`: what plain pickle.dumps of a tensor
    writes (the storage's torch.save bytes), here with any bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self):
        import torch.storage

        return (torch.storage._load_from_bytes, (self.data,))


def load_from_bytes_pickle(data: bytes, protocol: int = 4) -> bytes:
    return pickle.dumps(LoadFromBytes(data), protocol=protocol)
