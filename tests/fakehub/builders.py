"""Model files built by hand for Hub tests (no torch needed): safetensors, torch zips, pickles."""

from __future__ import annotations

import io
import json
import struct
import zipfile
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
    """A torch zip of about `size` bytes: a huge stored member written sparsely (ZIP64 when needed)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_STORED
        with zf.open(info, "w", force_zip64=True) as member:
            chunk = b"\0" * (1 << 24)
            left = size
            while left > 0:   # zeros compress to nothing on disk only if we seek; write modestly
                member.write(chunk[:min(left, len(chunk))])
                left -= len(chunk)
    return path
