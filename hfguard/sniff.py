"""What a file really is, from its bytes. The extension is only a hint for text formats."""

from __future__ import annotations

import struct
from typing import BinaryIO

# Names used across checks; keep them stable (they appear in reports).
PICKLE = "pickle"
TORCH_LEGACY = "torch-legacy"      # stacked pickles: magic number, protocol, sys info, data, keys
ZIP = "zip"                        # torch zip checkpoints, .npz, .keras, nested archives
TAR = "tar"
GZIP = "gzip"
BZIP2 = "bzip2"
XZ = "xz"
LZMA = "lzma"
ZLIB = "zlib"
ZSTD = "zstd"
LZ4 = "lz4"                        # the lz4 frame format
SEVENZIP = "7z"
NUMPY = "numpy"
SAFETENSORS = "safetensors"
HDF5 = "hdf5"
GGUF = "gguf"
ONNX = "onnx"
TFLITE = "tflite"                  # flatbuffer with file identifier TFL3
EXECUTORCH = "executorch"          # flatbuffer with file identifier ET12 (.pte)
PYTHON = "python"
JSON = "json"
TEXT = "text"
UNKNOWN = "unknown"

# Protocol 2+ pickles start with PROTO; protocol 0/1 pickles start with an opcode. Legacy torch
# files start with a pickled long (the magic number 0x1950a86a20f9469cfc6c) under PROTO 2.
_TORCH_LEGACY_PREFIX = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_PICKLE_FIRST_OPCODES = set(b"(}]acdefghijlpqrstuvwxyzIJKLMNPQRSTUVX\x80\x8a\x8b\x8c\x8d\x8e\x8f"
                            b"\x93\x94\x95\x96\x97\x98GFB.0")
_TEXT_EXTENSIONS = {".py": PYTHON, ".json": JSON}

# The one list of model-file extensions. A name is only a hint: what a file is comes from its bytes
# (`carries_model`); the names tell where weights are expected and what a loader would try.
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
WEIGHT_SUFFIXES = (".safetensors", *TORCH_SUFFIXES)
MODEL_SUFFIXES = (*WEIGHT_SUFFIXES, ".pkl", ".pickle", ".joblib", ".dill", ".npy", ".npz", ".h5",
                  ".hdf5", ".keras", ".pb", ".onnx", ".gguf", ".ggml", ".msgpack", ".mar", ".nemo",
                  ".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".model", ".sav")
# Formats that serialize models or can carry a pickle (archives, compressed streams).
MODEL_FORMATS = frozenset({PICKLE, TORCH_LEGACY, ZIP, TAR, GZIP, BZIP2, XZ, LZMA, ZLIB, NUMPY,
                           SAFETENSORS, HDF5, GGUF, ONNX})
HEAD_BYTES = 512   # enough for every magic number above, the tar header included


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5", ".hdf")


def hdf5_after_userblock(fh: BinaryIO, size: int) -> bool:
    """libhdf5 (and so h5py, Keras' legacy .h5 loader) looks for the superblock at 0, 512, 1024,
    2048 ...: whatever a user block before it holds, the file opens as HDF5. At most ~40 probes."""
    offset = 512
    while offset + 8 <= size:
        fh.seek(offset)
        if fh.read(8) == HDF5_SIGNATURE:
            return True
        offset *= 2
    return False


def sniff(head: bytes, name: str = "", size: int | None = None) -> str:
    """Classify a file by its first bytes (64 are plenty; 512 help the tar check)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return ZIP
    if head.startswith(_TORCH_LEGACY_PREFIX):
        return TORCH_LEGACY
    if head.startswith(b"\x93NUMPY"):
        return NUMPY
    if head.startswith(HDF5_SIGNATURE):
        return HDF5
    if head.startswith(b"GGUF"):
        return GGUF
    if head[4:8] == b"TFL3":
        return TFLITE
    if head[4:8] == b"ET12":
        return EXECUTORCH
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head.startswith(b"BZh"):
        return BZIP2
    if head.startswith(b"\xfd7zXZ\x00"):
        return XZ
    if head.startswith(b"\x5d\x00\x00"):
        return LZMA
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return ZSTD
    if head.startswith(b"\x04\x22\x4d\x18"):
        return LZ4
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return SEVENZIP
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    if _looks_like_safetensors(head, size):
        return SAFETENSORS
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return PICKLE
    if len(head) >= 2 and head[0] == 0x78 and head[1] in (0x01, 0x5E, 0x9C, 0xDA):
        return ZLIB
    lower = name.lower()
    for ext, fmt in _TEXT_EXTENSIONS.items():
        if lower.endswith(ext) and _is_text(head):
            return fmt
    if _is_text(head):
        if head.lstrip()[:1] in (b"{", b"["):
            return JSON
        return TEXT
    if head[:1] and head[0] in _PICKLE_FIRST_OPCODES:
        return PICKLE  # protocol 0/1 binary-ish pickle; the pickle scanner decides for real
    return UNKNOWN


def _looks_like_safetensors(head: bytes, size: int | None) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if size is not None and n > size - 8:
        return False
    return n < (1 << 40) and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    if not head:
        return True
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the window is still text
        return exc.start >= len(head) - 3
    return True


def carries_model(head: bytes, name: str = "", size: int | None = None) -> bool:
    """Whether a file must be scanned as a model, from its first HEAD_BYTES bytes: a model or
    pickle-bearing format by content, whatever its name, or a model-file extension (a loader
    would try it). Text that parses as pickle opcodes counts: a protocol-0 pickle is printable."""
    if name.lower().endswith(MODEL_SUFFIXES):
        return True
    fmt = sniff(head, name, size)
    return fmt in MODEL_FORMATS or (fmt in (TEXT, JSON, UNKNOWN) and _parses_as_pickle(head))


def _parses_as_pickle(head: bytes) -> bool:
    """The head decodes as pickle opcodes up to STOP, or until it ends inside an opcode or before
    STOP (a long string or padding can push the first global past the head, so none is required).
    Prose and code hit an unknown opcode or a malformed argument within a few bytes."""
    import pickletools

    if not head or head[0] not in _PICKLE_FIRST_OPCODES:
        return False
    count = 0
    try:
        for op, _arg, _pos in pickletools.genops(head):
            count += 1
            if op.name == "STOP":
                return count > 1
    except ValueError as exc:
        # pickletools' words for "the bytes ran out", as opposed to "this is not a pickle"
        return len(head) >= HEAD_BYTES and any(t in str(exc) for t in _RAN_OUT)
    return False


_RAN_OUT = ("no newline found", "but only", "exhausted before seeing STOP")
