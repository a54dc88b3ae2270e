"""Model files built by hand for Hub tests (no torch needed): safetensors, torch zips, pickles."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path


def safetensors_bytes(n_floats: int = 1024, name: str = "w") -> bytes:
    header = json.dumps({name: {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]},
                         "__metadata__": {"format": "pt"}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * n_floats)


def write_sparse_safetensors(path: Path, size: int) -> Path:
    """A valid safetensors file of `size` bytes whose data region is a hole (cheap on disk)."""
    n = (size - 4096) // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + 4 * n)
    return path


def os_system_pickle(command: str) -> bytes:
    """Protocol 2 pickle that would call os.system(command) if anyone unpickled it."""
    cmd = command.encode()
    return (b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(cmd)) + cmd + b"\x85q\x01Rq\x02.")


def torch_zip_bytes(payload: bytes, *, padding: int = 0, root: str = "archive") -> bytes:
    """A PyTorch-style zip checkpoint whose data.pkl is `payload`, plus a stored tensor blob."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{root}/data.pkl", payload)
        zf.writestr(f"{root}/byteorder", "little")
        zf.writestr(f"{root}/data/0", b"\0" * padding)
        zf.writestr(f"{root}/version", "3\n")
    return buf.getvalue()


def write_sparse_torch_zip(path: Path, size: int, payload: bytes) -> Path:
    """A ZIP64 PyTorch-style checkpoint of about `size` bytes whose big tensor member is a hole.

    Written by hand (zipfile would write every zero): data.pkl and version first, the tensor
    blob last, then the central directory and the ZIP64 end records, as torch.save lays them out.
    """
    members = [("archive/data.pkl", payload), ("archive/version", b"3\n")]
    big_name, big_size = b"archive/data/0", max(0, size - 4096)
    zeros_crc = 0
    chunk = bytes(1 << 20)
    for off in range(0, big_size, len(chunk)):
        zeros_crc = zlib.crc32(chunk[:min(len(chunk), big_size - off)], zeros_crc)
    central = []
    with open(path, "wb") as fh:
        for name, data in members:
            offset, crc = fh.tell(), zlib.crc32(data)
            fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, len(data), len(data),
                                 len(name), 0) + name.encode() + data)
            entry = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc,
                                len(data), len(data), len(name), 0, 0, 0, 0, 0, offset)
            central.append(entry + name.encode())
        offset = fh.tell()
        extra = struct.pack("<HHQQ", 1, 16, big_size, big_size)
        fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, zeros_crc, 0xFFFFFFFF,
                             0xFFFFFFFF, len(big_name), len(extra)) + big_name + extra)
        fh.seek(big_size, 1)   # the hole
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, zeros_crc,
                                   0xFFFFFFFF, 0xFFFFFFFF, len(big_name), len(extra), 0, 0, 0, 0, offset)
                       + big_name + extra)
        cd_offset = fh.tell()
        cd = b"".join(central)
        fh.write(cd)
        eocd64 = fh.tell()
        fh.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(central), len(central),
                             len(cd), cd_offset))
        fh.write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(cd),
                             0xFFFFFFFF, 0))
    return path
