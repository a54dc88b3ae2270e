"""Tensor access without executing anything: safetensors headers parsed here, torch zip layouts
recovered by the static tier's symbolic pickle VM. Tensors come out one at a time as float32
numpy arrays, each from its own short-lived mmap, so memory stays bounded by the largest tensor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from hfguard.findings import Observation, Severity
from hfguard.sniff import TORCH_SUFFIXES as _TORCH_EXTS
from hfguard.weights import compiled

MAX_HEADER = 100 << 20  # the reference implementation's own limit on a safetensors header

# safetensors dtype -> (numpy storage dtype, bytes per element, is floating point)
ST_DTYPES: dict[str, tuple[str, int, bool]] = {
    "F64": ("float64", 8, True), "F32": ("float32", 4, True), "F16": ("float16", 2, True),
    "BF16": ("bfloat16", 2, True), "F8_E4M3": ("float8_e4m3fn", 1, True),
    "F8_E5M2": ("float8_e5m2", 1, True),
    "I64": ("int64", 8, False), "I32": ("int32", 4, False), "I16": ("int16", 2, False),
    "I8": ("int8", 1, False), "U64": ("uint64", 8, False), "U32": ("uint32", 4, False),
    "U16": ("uint16", 2, False), "U8": ("uint8", 1, False), "BOOL": ("bool", 1, False),
}
FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}
_ITEMSIZE = {v[0]: v[1] for v in ST_DTYPES.values()}
# bits per entry, packed codes (`attach_packed`) included
ITEM_BITS = {**{k: 8 * v for k, v in _ITEMSIZE.items()}, "uint2": 2, "uint4": 4}


class WeightsFormatError(ValueError):
    """A checkpoint that cannot be read as declared (truncated, inconsistent, unsupported)."""


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str                       # numpy-style name; "bfloat16" and float8 names too
    shape: tuple[int, ...]
    file: str                        # display path of the file that holds it
    path: Path                       # local path
    offset: int                      # absolute byte offset of the storage's first element
    nbytes: int                      # bytes of the storage (torch: the whole storage)
    stride: tuple[int, ...] | None = None   # in elements; None: contiguous
    storage_offset: int = 0                 # in elements
    # a remote shard fetched on first read (hfguard.weights.stream); None: `path` is on disk
    shard: Any = field(default=None, compare=False, repr=False)
    # a quantized weight (float8 or int8) with the tensors that dequantize it (`attach_scales`):
    # its values are (stored - zero_point) x scale, as the loader computes them
    scale: TensorMeta | None = None
    zero_point: TensorMeta | None = None
    # a packed GPTQ / AWQ linear weight (`attach_packed`): its codes live in int32 words, `scale`
    # and `zero_point` are the layer's `scales` and packed `qzeros`
    packed: Packed | None = None
    # bitsandbytes' LLM.int8 stores each row's absmax (`SCB`): its step is SCB / 127
    scale_factor: float = 1.0
    # small integer tensors whose values the read assumes, checked when the weight is read
    # (compressed-tensors' `weight_shape` [out, in]; bitsandbytes' `weight_format` 0, row-major)
    declared: tuple[tuple[TensorMeta, tuple[int, ...]], ...] = ()

    @property
    def data_path(self) -> Path:
        """Where the bytes are now: `path`, or the remote shard once fetched (fetched here)."""
        return self.path if self.shard is None else self.shard.local(self.name)

    @property
    def value_parts(self) -> list[TensorMeta]:
        """The other stored tensors its values are computed from (scales, zero points, g_idx)."""
        parts = [self.scale, self.zero_point, self.packed.g_idx if self.packed else None]
        return [p for p in parts if p is not None] + list(self.packed.parts if self.packed else ()) \
            + [t for t, _ in self.declared]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES or self.scale is not None

    @property
    def mapped_as_is(self) -> bool:
        """float32 in C order: `load_tensor(copy=False)` returns the file's pages, no copy."""
        return self.dtype == "float32" and self.contiguous and self.scale is None

    @property
    def contiguous(self) -> bool:
        """In C order in its storage (a torch zip may store strides of a view)."""
        if self.stride is None:
            return True
        expect, contiguous = 1, []
        for dim in reversed(self.shape):
            contiguous.append(expect)
            expect *= dim
        return tuple(reversed(contiguous)) == self.stride or self.numel <= 1


@dataclass
class Checkpoint:
    """One model's tensors, possibly spread over shards."""

    name: str                                   # display path (file, or index json for shards)
    kind: str                                   # "safetensors" | "torch-zip"
    tensors: dict[str, TensorMeta] = field(default_factory=dict)
    problems: list[Observation] = field(default_factory=list)
    dequantized: int = 0                        # weights read as (stored - zero point) x scale

    @property
    def directory(self) -> str:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else "."

    def load(self, name: str, copy: bool = True) -> np.ndarray:
        return load_tensor(self.tensors[name], copy)

    def float_tensors(self) -> list[TensorMeta]:
        """Floating tensors with entries, in file order (reads stay sequential)."""
        return sorted((m for m in self.tensors.values() if m.is_float and m.numel),
                      key=lambda m: (str(m.path), m.offset))


@dataclass(frozen=True)
class Packing:
    """How a checkpoint packs its integer codes, from its quantization config (`packing_of`)."""

    method: str               # "gptq": qweight [in * bits / 32, out]; "awq" (GEMM): [in, out * bits / 32];
    #                           "awq-gemv": [out, in * bits / 32]; "pack-quantized" (compressed-tensors):
    #                           weight_packed [out, in * bits / 32]
    bits: int
    zero_offset: int          # added to the stored zero points: 1 in GPTQ's v1 format (stored minus one);
    #                           pack-quantized: the zero of a symmetric layer (2^(bits-1), no zero points)
    group_size: int | None    # inputs per group; None: from the shapes


@dataclass(frozen=True)
class Packed:
    """The packed parts of one linear weight beyond its scales and zero points."""

    packing: Packing
    qweight: TensorMeta
    g_idx: TensorMeta | None   # each input's group (act-order: GPTQ, compressed-tensors); None: in order
    group_size: int            # bitsandbytes 4-bit: entries per absmax block, in C order
    # bitsandbytes 4-bit (`attach_bnb4`): the other stored parts its values depend on (quant_map,
    # the JSON quant_state, nested absmax and map), and with double quantization (nested_absmax,
    # nested_quant_map, nested_blocksize, nested_offset): absmax is itself 8-bit codes
    parts: tuple[TensorMeta, ...] = ()
    nested: tuple[TensorMeta, TensorMeta, int, float] | None = None


# -- safetensors --------------------------------------------------------------------------------
# header problems after which the tensor entries cannot be trusted for reading (the static tier
# reports every problem; layout ones such as holes or trailing data do not stop us reading)
_FATAL_HEADER = ("safetensors/truncated", "safetensors/header-length", "safetensors/header-too-large",
                 "safetensors/bad-entry", "safetensors/bad-shape", "safetensors/bad-offsets",
                 "safetensors/numel-overflow", "safetensors/byte-count", "safetensors/bad-dtype",
                 "safetensors/header-encoding", "safetensors/header-not-object", "safetensors/past-eof",
                 "safetensors/duplicate-key", "safetensors/header-start")


def read_safetensors_header(path: Path, display: str, fh: BinaryIO | None = None, size: int | None = None,
                            shard: Any = None) -> dict[str, TensorMeta]:
    """Tensor entries through the static tier's strict header parser (hfguard.static). With `fh`
    and `size` the header is read from that stream (a Hub file by range reads) and `path` is where
    the bytes will lie once `shard` has fetched them."""
    from hfguard.static.formats.safetensors import read_header

    if fh is None:
        size = path.stat().st_size
        with open(path, "rb") as own:
            header = read_header(own, size)
    else:
        assert size is not None
        header = read_header(fh, size)
    fatal = [p for p in header.problems if p.rule in _FATAL_HEADER or p.rule.endswith("json")]
    if fatal or (header.problems and not header.tensors):
        why = (fatal or header.problems)[0]
        raise WeightsFormatError(f"{display}: {why.message} ({why.rule})")
    out: dict[str, TensorMeta] = {}
    data_len = size - header.data_start
    for t in header.tensors:
        if t.name in out:
            raise WeightsFormatError(f"{display}: tensor {t.name!r} is declared twice")
        dtype, itemsize, _ = ST_DTYPES.get(t.dtype, (f"unsupported:{t.dtype}", 0, False))
        shape = tuple(t.shape)
        # the invariants the mapping relies on, whatever the parser above let through
        size_ok = not itemsize or t.end - t.begin == math.prod(shape) * itemsize
        if not (0 <= t.begin <= t.end <= data_len and size_ok):
            raise WeightsFormatError(f"{display}: tensor {t.name!r} does not fit its bytes")
        out[t.name] = TensorMeta(t.name, dtype, shape, display, path, header.data_start + t.begin,
                                 t.end - t.begin, shard=shard)
    return out


# -- torch zip (layout from the static tier's symbolic pickle VM; never torch.load) -------------
def torch_zip_available() -> bool:
    try:
        from hfguard.static.pickle.torch_layout import torch_zip_tensors  # noqa: F401
    except ImportError:
        return False
    return True


def read_torch_zip_layout(path: Path, display: str, fh: BinaryIO | None = None,
                          shard: Any = None) -> dict[str, TensorMeta]:
    try:
        from hfguard.static.pickle.torch_layout import torch_zip_tensors
    except ImportError:
        raise WeightsFormatError("weights tier: torch zip reading not available "
                                 "(hfguard.static.pickle.torch_layout is missing)") from None
    try:
        if fh is None:
            with open(path, "rb") as own:
                refs = torch_zip_tensors(own)
        else:
            refs = torch_zip_tensors(fh)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - the layout reader's refusals become findings
        raise WeightsFormatError(f"{display}: torch zip layout not recovered: {exc}") from None
    out: dict[str, TensorMeta] = {}
    for ref in refs:
        if ref.data_offset is None:
            raise WeightsFormatError(f"{display}: storage {ref.member} is compressed; "
                                     "only STORED members can be mapped")
        if ref.dtype not in _ITEMSIZE:
            raise WeightsFormatError(f"{display}: tensor {ref.name!r} has unsupported dtype {ref.dtype}")
        out[ref.name] = TensorMeta(ref.name, ref.dtype, tuple(ref.shape), display, path,
                                   ref.data_offset, ref.data_length, tuple(ref.stride),
                                   ref.storage_offset, shard=shard)
    return out


# -- decoding -------------------------------------------------------------------------------------
def _e4m3fn_table() -> np.ndarray:
    b = np.arange(256, dtype=np.uint32)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exp, mant = (b >> 3) & 0xF, b & 0x7
    val = np.where(exp == 0, mant / 8.0 * 2.0 ** -6, (1 + mant / 8.0) * 2.0 ** (exp.astype(np.float64) - 7))
    val = sign * val
    val[(exp == 0xF) & (mant == 0x7)] = np.nan
    return val.astype(np.float32)


_E4M3 = _e4m3fn_table()


def widen(raw: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """Storage values (contiguous; bfloat16/float8 as raw integers) -> float32, written into
    `out` (a flat float32 buffer at least as long) when given, else a new array."""
    if out is None or out.size < raw.size:
        wide = np.empty(raw.shape, np.float32)
    else:
        wide = out[: raw.size].reshape(raw.shape)
    if compiled.widen(raw, dtype, wide):   # bfloat16 and float16 in one compiled loop (numba)
        return wide
    if dtype == "bfloat16":   # bfloat16 is the top half of a float32
        # 4 MiB at a time: the shift then finds its block in cache (3.1 vs 4.1 ms for 11.5M)
        bits, half = wide.reshape(-1).view(np.uint32), raw.reshape(-1).view(np.uint16)
        for i in range(0, int(half.size), 1 << 20):
            b = bits[i:i + (1 << 20)]
            np.copyto(b, half[i:i + (1 << 20)])
            np.left_shift(b, 16, out=b)
    elif dtype == "float8_e5m2":  # the top byte of a float16
        np.copyto(wide, (raw.view(np.uint8).astype(np.uint16) << 8).view(np.float16))
    elif dtype == "float8_e4m3fn":
        np.take(_E4M3, raw.view(np.uint8), out=wide)
    else:
        np.copyto(wide, raw, casting="same_kind")
    return wide


def _storage_dtype(dtype: str) -> str:
    return {"bfloat16": "uint16", "float8_e4m3fn": "uint8", "float8_e5m2": "uint8"}.get(dtype, dtype)


def map_bytes(path: Path, offset: int, nbytes: int) -> np.ndarray:
    """A read-only uint8 view of file bytes [offset, offset+nbytes); unmapped with the last view."""
    import mmap

    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    with open(path, "rb") as fh:
        if offset + nbytes > os.fstat(fh.fileno()).st_size:
            raise WeightsFormatError(f"{path}: tensor data lies beyond the end of the file")
        length = offset - start + nbytes
        if hasattr(mmap, "MAP_POPULATE"):   # Linux
            # the page tables filled in one call, not one fault per 64 KiB as the pass walks the
            # tensor (15% of a compiled pass's time over bfloat16 in the page cache)
            mm = mmap.mmap(fh.fileno(), length, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                           prot=mmap.PROT_READ, offset=start)
        else:
            mm = mmap.mmap(fh.fileno(), length, offset=start, access=mmap.ACCESS_READ)
    return np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=offset - start)


class Widening:
    """A tensor widened front to back into a float32 buffer as a pass reaches it: `upto(k)`
    widens its first k entries (in flat order) if not done yet. A statistics pass that widens each
    block just before reading it finds the block in cache, instead of reading back a whole
    widened tensor from memory (on 2 cores the pass is memory-bound; docs/bench/weights-cpu.txt)."""

    def __init__(self, raw: np.ndarray, dtype: str, out: np.ndarray) -> None:
        self.raw, self.dtype = raw.reshape(-1), dtype
        self.flat = out[: self.raw.size]
        self.array = self.flat.reshape(raw.shape)
        self.done = 0

    def upto(self, k: int) -> None:
        k = min(k, int(self.raw.size))
        if k > self.done:
            widen(self.raw[self.done:k], self.dtype, self.flat[self.done:k])
            self.done = k


def widening(meta: TensorMeta, out: np.ndarray) -> Widening | None:
    """A `Widening` of a contiguous tensor that is not float32 in place into `out` (a flat float32
    buffer of at least meta.numel entries); None where `load_tensor` must do it whole."""
    if meta.mapped_as_is or out.size < meta.numel or meta.scale is not None:
        return None
    raw = stored_values(meta)
    return None if raw is None else Widening(raw.reshape(meta.shape), meta.dtype, out)


def stored_values(meta: TensorMeta) -> np.ndarray | None:
    """The entries of a contiguous tensor as stored, flat, mapped read-only (bfloat16 and float8
    as raw integers: `widen` makes them float32); None where `load_tensor` must gather them."""
    if not meta.contiguous or meta.numel == 0:
        return None
    raw = map_bytes(meta.data_path, meta.offset, meta.nbytes).view(_storage_dtype(meta.dtype))
    start = meta.storage_offset if meta.stride is not None else 0
    if start < 0 or start + meta.numel > raw.shape[0]:
        return None   # load_tensor refuses it with the reason
    return raw[start:start + meta.numel]


def load_tensor(meta: TensorMeta, copy: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """The tensor as float32. With copy=False a contiguous float32 tensor comes back as a read-only
    view of the file's pages (no copy; the mapping lives as long as the array); others are
    widened into `out` when given (see `widen`)."""
    if meta.numel == 0:
        return np.zeros(meta.shape, dtype=np.float32)
    for t, expect in meta.declared:
        got = tuple(int(v) for v in load_tensor(t).reshape(-1))
        if got != expect:   # another layout than the one read here: refused, not guessed
            raise WeightsFormatError(f"{meta.file}: {t.name} is {list(got)}, not the {list(expect)} "
                                     f"{meta.name!r} is read as")
    if meta.packed is not None:
        wide = _unpacked(meta, out)
        _dequantize(wide, meta)
        return wide
    itemsize = _ITEMSIZE[meta.dtype]
    raw = map_bytes(meta.data_path, meta.offset, meta.nbytes).view(_storage_dtype(meta.dtype))
    if meta.stride is None:
        arr = raw[: meta.numel].reshape(meta.shape)
    else:
        span = zip(meta.shape, meta.stride, strict=True)
        last = meta.storage_offset + sum((d - 1) * s for d, s in span)
        if meta.storage_offset < 0 or any(s < 0 for s in meta.stride) or last >= raw.shape[0]:
            raise WeightsFormatError(f"{meta.file}: tensor {meta.name!r} reaches outside its storage")
        arr = np.lib.stride_tricks.as_strided(
            raw[meta.storage_offset:], shape=meta.shape,
            strides=tuple(s * itemsize for s in meta.stride), writeable=False)
    if not copy and meta.mapped_as_is:
        return arr
    wide = widen(np.ascontiguousarray(arr), meta.dtype, out)
    if meta.scale is not None:
        _dequantize(wide, meta)
    return wide


# -- quantized weights with scales ---------------------------------------------------------------
# float8 (compressed-tensors / FBGEMM `weight_scale`, DeepSeek-style block `weight_scale_inv`, which
# multiplies too) and int8 (W8A8, optionally a `weight_zero_point`): a scan of the stored integers
# or float8 codes would diff each matrix against its base at ~1/scale times its size and hide an edit
QUANTIZED_DTYPES = {"float8_e4m3fn", "float8_e5m2", "int8"}
SCALE_SUFFIXES = ("_scale", "_scale_inv")


def scale_blocks(shape: tuple[int, ...], scale_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(rows, cols) of the weight block each scale entry covers: one for the tensor, one per row,
    per group of columns, or per 2-D block (128 x 128); None where the shapes do not fit."""
    if len(shape) != 2:
        return None
    rows, cols = shape
    n = math.prod(scale_shape)
    if n == 1:
        s0, s1 = 1, 1
    elif len(scale_shape) == 1 and scale_shape[0] == rows:
        s0, s1 = rows, 1
    elif len(scale_shape) == 2:
        s0, s1 = scale_shape
    else:
        return None
    if not (0 < s0 <= rows and 0 < s1 <= cols):
        return None
    b0, b1 = _block(rows, s0), _block(cols, s1)
    return (b0, b1) if -(-rows // b0) == s0 and -(-cols // b1) == s1 else None


def _block(n: int, count: int) -> int:
    """The block length that cuts n entries into `count` blocks, the last one maybe shorter. Where
    several do (1000 rows in 8 blocks: 125-142), quantizers use a power of two (128): the largest
    one that fits, else the shortest length."""
    low = -(-n // count)
    high = (n - 1) // (count - 1) if count > 1 else n
    pow2 = 1 << (high.bit_length() - 1) if high > 0 else 0
    return pow2 if low <= pow2 <= high and count > 1 else low


def _dequantize(w: np.ndarray, meta: TensorMeta) -> None:
    """w (the stored values widened, float32, meta.shape) -> (w - zero_point) x scale, in place."""
    scale, zp = quantization(meta)
    for r0 in range(0, w.shape[0], ROW_BLOCK):
        rows = w[r0:r0 + ROW_BLOCK]
        if zp is not None:
            np.subtract(rows, zp(r0, r0 + rows.shape[0]), out=rows)
        np.multiply(rows, scale(r0, r0 + rows.shape[0]), out=rows)


ROW_BLOCK = 256   # rows dequantized or bounded at a time: temporaries stay a block of the weight
# the most a stored code is off the value it encodes, relative to the value (normal range) and
# in units of the scale (float8's subnormals; int8's half step; packed codes: `code_error`)
CODE_ERROR = {"float8_e4m3fn": (2.0 ** -4, 2.0 ** -10), "float8_e5m2": (2.0 ** -3, 2.0 ** -17),
              "int8": (0.0, 0.5)}
# a scale's own rounding, relative, by its dtype: a code clipped at the grid's end (a symmetric
# int4 grid's +7.5 steps) is off by half a step plus this over up to 2^bits steps
SCALE_ROUNDING = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8, "float32": 2.0 ** -24, "float64": 2.0 ** -53}


def code_error(meta: TensorMeta) -> tuple[float, float]:
    """CODE_ERROR of a quantized weight; packed codes: half a step plus their scale's rounding
    over up to 2^bits steps from the zero point."""
    if meta.packed is None or meta.scale is None:
        return CODE_ERROR.get(meta.dtype, (0.0, 0.5))
    if meta.packed.packing.method in BNB4_MAPS:   # half the table's widest gap
        return 0.0, float(np.diff(np.sort(BNB4_MAPS[meta.packed.packing.method])).max()) / 2
    if meta.packed.packing.method == "mxfp4":
        return 0.0, MXFP4_CLIP
    if meta.packed.packing.method in NVFP4_LAYOUTS:   # half E2M1's widest gap (4 to 6)
        return 0.0, 1.0
    return 0.0, 0.5 + 2.0 ** meta.packed.packing.bits * SCALE_ROUNDING.get(meta.scale.dtype, 2.0 ** -8)


def quantization(meta: TensorMeta) -> tuple[Any, Any]:
    """(scale(r0, r1), zero_point(r0, r1) or None) of a quantized weight: each gives the factor of
    rows r0:r1, shaped to broadcast over them (a column per row, or the rows' blocks expanded)."""
    assert meta.scale is not None
    if meta.packed is not None and meta.packed.packing.method in BNB4_MAPS:
        return _per_block(_bnb4_absmax(meta.packed, meta.scale), meta), None
    if meta.packed is not None and meta.packed.packing.method == "mxfp4":
        return _mxfp4_steps(meta), None
    if meta.packed is not None and meta.packed.packing.method in NVFP4_LAYOUTS:
        return _nvfp4_steps(meta), None
    if meta.packed is not None:
        return _packed_quantization(meta, meta.packed)
    b0, b1 = scale_blocks(meta.shape, meta.scale.shape) or (1, 1)
    cols = meta.shape[1]

    def rows_of(t: TensorMeta, factor: float = 1.0) -> Any:
        grid = load_tensor(t).reshape(-(-meta.shape[0] // b0), -1)
        if factor != 1.0:
            grid *= np.float32(factor)

        def at(r0: int, r1: int) -> np.ndarray:
            g = grid[np.arange(r0, r1) // b0]
            return g if g.shape[1] == 1 else np.repeat(g, b1, axis=1)[:, :cols]
        return at
    zp = None if meta.zero_point is None else rows_of(meta.zero_point)
    return rows_of(meta.scale, meta.scale_factor), zp


def _packed_quantization(meta: TensorMeta, pk: Packed) -> tuple[Any, Any]:
    """`quantization` of a packed weight: its scales and zero points are [groups, out] (pack-quantized
    and AWQ GEMV store [out, groups]; a symmetric one has no zero points), each input column takes
    its group's (g_idx, or consecutive groups of group_size)."""
    assert meta.scale is not None
    method = pk.packing.method
    n_in, outputs_first = meta.shape[1], method in ("pack-quantized", "awq-gemv")
    groups = np.arange(n_in) // pk.group_size if pk.g_idx is None else \
        load_tensor(pk.g_idx).astype(np.int64)
    if method == "pack-quantized" and pk.g_idx is not None:
        groups = _sorted_groups(groups, pk.group_size, f"{meta.file}: {pk.g_idx.name}")
    if groups.size and (groups.min() < 0 or groups.max() >= meta.scale.shape[1 if outputs_first else 0]):
        raise WeightsFormatError(f"{meta.file}: {pk.g_idx.name if pk.g_idx else meta.name} names a "
                                 "group its scales do not have")
    scales = load_tensor(meta.scale).T if outputs_first else load_tensor(meta.scale)
    if meta.zero_point is None:   # symmetric: every code's zero is the packing's offset
        zeros = np.full((1, 1), pk.packing.zero_offset, np.float32)
    else:   # packed along the groups, or (pack-quantized) down the outputs
        zeros = _codes(_words(meta.zero_point), pk.packing.bits, along_rows=method == "pack-quantized",
                       awq=method == "awq").astype(np.float32) + pk.packing.zero_offset
        zeros = zeros[:meta.shape[0]].T if outputs_first else zeros

    def rows_of(grid: np.ndarray) -> Any:
        if grid.shape == (1, 1):
            return lambda r0, r1: grid
        return lambda r0, r1: grid[:, r0:r1].T[:, groups]
    return rows_of(scales), rows_of(zeros)


def _sorted_groups(g_idx: np.ndarray, size: int, where: str) -> np.ndarray:
    """Each input's group as compressed-tensors reads a weight_g_idx: any -1 (never set) means the
    inputs in order; else the inputs sorted by g_idx are cut into groups of `size`. That is each
    input's own g_idx only where group k holds exactly `size` inputs (the last one the rest), which
    is what its GPTQ writes; any other count is refused, as the cut would then depend on how the
    sort orders ties."""
    if (g_idx == -1).any():
        return np.arange(g_idx.size) // size
    n_groups = -(-g_idx.size // size)
    if g_idx.min(initial=0) < 0 or g_idx.max(initial=0) >= n_groups:
        raise WeightsFormatError(f"{where} names a group outside 0 .. {n_groups - 1}")
    want = np.minimum(size, g_idx.size - np.arange(n_groups) * size)
    if not np.array_equal(np.bincount(g_idx, minlength=n_groups), want):
        raise WeightsFormatError(f"{where}: its groups do not hold {size} inputs each")
    return g_idx


def within_code_error(w0: np.ndarray, w1: np.ndarray, meta: TensorMeta, base_dtype: str) -> bool:
    """True when w1 (a quantized weight, dequantized) is w0 stored in its codes: every entry within
    one code's rounding (`code_error`) of w0, plus w0's own dtype rounding (a quantizer may have
    started from a wider master copy)."""
    rel, absolute = code_error(meta)
    rel += float(np.finfo(np.float32).eps) if base_dtype == "float32" else 2.0 ** -8
    scale, _ = quantization(meta)
    slack = scale_error(meta)
    for r0 in range(0, w0.shape[0], ROW_BLOCK):
        a, b = w0[r0:r0 + ROW_BLOCK], w1[r0:r0 + ROW_BLOCK]
        bound = rel * np.abs(a) + absolute * np.abs(scale(r0, r0 + a.shape[0]))
        if slack is not None:
            bound += (1 + absolute) * slack(r0, r0 + a.shape[0])
        with np.errstate(invalid="ignore"):
            if not bool(np.all(np.abs(b - a) <= 1.01 * bound)):
                return False
    return True


def attach_scales(tensors: dict[str, TensorMeta]) -> int:
    """Join each quantized weight with the scale (and zero point) that dequantizes it; the scales
    leave the checkpoint's tensors, read only through their weight. bitsandbytes' LLM.int8
    (`X.weight` int8 [out, in], `X.SCB` [out], `X.weight_format`) reads as weight x SCB / 127,
    row-major only (older bitsandbytes could save a tiled layout). Returns how many were joined."""
    joined = 0
    for name, meta in list(tensors.items()):
        if meta.dtype not in QUANTIZED_DTYPES or not name.endswith("weight"):
            continue
        found = [(name + sfx, tensors[name + sfx]) for sfx in SCALE_SUFFIXES if name + sfx in tensors]
        scb, fmt = name[:-len("weight")] + "SCB", tensors.get(name + "_format")
        bnb = meta.dtype == "int8" and scb in tensors
        if bnb:
            found.append((scb, tensors[scb]))
        if len(found) != 1:
            continue
        sname, scale = found[0]
        if scale.dtype not in FLOAT_DTYPES or scale.dtype in QUANTIZED_DTYPES \
                or scale_blocks(meta.shape, scale.shape) is None:
            continue
        zp = None if bnb else tensors.get(name + "_zero_point")
        if zp is not None and (zp.shape != scale.shape or not (zp.is_float or zp.dtype.startswith("int"))):
            continue
        if bnb and (scale.shape != meta.shape[:1] or (fmt is not None and (fmt.numel != 1 or fmt.is_float))):
            continue
        declared = ((fmt, (0,)),) if bnb and fmt is not None else ()
        tensors[name] = dataclasses.replace(meta, scale=scale, zero_point=zp, declared=declared,
                                            scale_factor=1 / 127 if bnb else 1.0)
        del tensors[sname]
        if zp is not None:
            del tensors[name + "_zero_point"]
        if declared:
            del tensors[name + "_format"]
        joined += 1
    return joined + attach_bnb4(tensors)


# -- bitsandbytes 4-bit (NF4, FP4) -----------------------------------------------------------------
# Params4bit's save: X.weight uint8 [ceil(n/2), 1] (two codes a byte, the first entry in the high
# nibble), X.weight.absmax (float32 per block of `blocksize` entries in C order, or with double
# quantization uint8 codes of X.weight.nested_quant_map x X.weight.nested_absmax per block of
# nested_blocksize, plus nested_offset), X.weight.quant_map and X.weight.quant_state.bitsandbytes__<type>
# (JSON as uint8). bitsandbytes' kernels decode with their own tables, not the stored quant_map:
# one that differs from the table is not read.
BNB4_MAPS: dict[str, np.ndarray] = {
    "nf4": np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32),
    "fp4": np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3], np.float32) / 12,
}
MAX_QUANT_STATE = 64 << 10   # a quant_state is a few hundred bytes of JSON
_BNB4_DTYPES = ("float16", "bfloat16", "float32")


def attach_bnb4(tensors: dict[str, TensorMeta]) -> int:
    """Join each bitsandbytes 4-bit weight with its parts into one `X.weight` of its declared
    shape, read as quant_map[code] x absmax of its block; its parts leave the tensors. A layer
    with a field not validated here stays as stored (weights/quantized-not-read). Returns how many."""
    joined = 0
    for name in [n for n in tensors if ".weight.quant_state.bitsandbytes__" in n]:
        prefix, qtype = name.split(".quant_state.bitsandbytes__", 1)
        found = _bnb4_layer(tensors, prefix, qtype, tensors[name])
        if found is None:
            continue
        weight, parts, (shape, size, nested) = found
        tensors[prefix] = dataclasses.replace(
            weight, dtype="uint4", shape=shape, stride=None, offset=weight.offset + weight.storage_offset,
            nbytes=weight.numel, storage_offset=0, scale=tensors[prefix + ".absmax"],
            packed=Packed(Packing(qtype, 4, 0, size), weight, None, size, parts, nested))
        for p in parts + (tensors[prefix + ".absmax"],):
            del tensors[p.name]
        joined += 1
    return joined


def _bnb4_layer(tensors: dict[str, TensorMeta], prefix: str, qtype: str, state: TensorMeta) -> Any:
    """(weight, its other parts, (shape, blocksize, nested)) of a 4-bit layer whose parts all
    validate; else None."""
    weight, absmax, qmap = (tensors.get(prefix + s) for s in ("", ".absmax", ".quant_map"))
    doc = _quant_state(state)
    if weight is None or absmax is None or qmap is None or doc is None or qtype not in BNB4_MAPS \
            or doc.get("quant_type") != qtype or doc.get("dtype") not in _BNB4_DTYPES:
        return None
    shape, size = doc.get("shape"), doc.get("blocksize")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(d) is int and d > 0 for d in shape)) \
            or type(size) is not int or size <= 0:
        return None
    n = math.prod(shape)
    itemsize = _ITEMSIZE.get(weight.dtype, 0)
    if not itemsize or not weight.contiguous or weight.numel * itemsize != -(-n // 2) \
            or absmax.numel != -(-n // size) or not _is_table(qmap, BNB4_MAPS[qtype]):
        return None
    if weight.dtype != "uint8":   # bnb_4bit_quant_storage (e.g. bfloat16 for FSDP): the same bytes
        weight = dataclasses.replace(weight, dtype="uint8", shape=(weight.numel * itemsize,),
                                     offset=weight.offset + weight.storage_offset * itemsize,
                                     storage_offset=0, stride=None)
    parts = [qmap, state]
    nested = None
    if "nested_offset" in doc or prefix + ".nested_absmax" in tensors:
        n_absmax, n_map = tensors.get(prefix + ".nested_absmax"), tensors.get(prefix + ".nested_quant_map")
        n_size, offset = doc.get("nested_blocksize"), doc.get("nested_offset")
        if type(offset) is int:
            offset = float(offset)
        if n_absmax is None or n_map is None or type(n_size) is not int or n_size <= 0 \
                or not isinstance(offset, float) or not math.isfinite(offset) \
                or doc.get("nested_dtype") != "float32" or absmax.dtype != "uint8" or not absmax.contiguous \
                or n_absmax.dtype != "float32" or n_absmax.numel != -(-absmax.numel // n_size) \
                or n_map.dtype != "float32" or n_map.numel != 256:
            return None
        parts += [n_absmax, n_map]
        nested = (n_absmax, n_map, n_size, offset)
    elif absmax.dtype != "float32":
        return None
    return weight, tuple(parts), ((shape[0], shape[1]), size, nested)


def _small_bytes(meta: TensorMeta) -> bytes | None:
    """A small contiguous tensor's stored bytes, read while checkpoints are grouped: by range from a
    remote shard not fetched yet (fetching whole shards here fetched each once more than the pass
    needs), else from the file's pages."""
    if not meta.contiguous or meta.storage_offset:
        return None
    n = meta.numel * _ITEMSIZE[meta.dtype]
    if meta.shard is not None and meta.shard.local_path is None:
        with meta.shard.tf.open() as fh:
            fh.seek(meta.offset)
            data = fh.read(n)
        return data if len(data) == n else None
    return bytes(map_bytes(meta.data_path, meta.offset, n))


def _quant_state(meta: TensorMeta) -> dict[str, Any] | None:
    """A quant_state's JSON (bounded; parsed, never executed); None where it is not a JSON object."""
    if meta.dtype != "uint8" or len(meta.shape) != 1 or meta.numel > MAX_QUANT_STATE:
        return None
    raw = _small_bytes(meta)
    try:
        doc = json.loads(raw) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_table(meta: TensorMeta, table: np.ndarray) -> bool:
    if meta.dtype != "float32" or meta.shape != table.shape:
        return False
    raw = _small_bytes(meta)
    return raw is not None and bool(np.allclose(np.frombuffer(raw, "<f4"), table, rtol=0, atol=1e-6))


def _bnb4_absmax(pk: Packed, absmax: TensorMeta) -> np.ndarray:
    """Each block's absmax, flat float32; nested: nested_quant_map[code] x nested_absmax[block] + offset."""
    if pk.nested is None:
        return load_tensor(absmax).reshape(-1)
    n_absmax, n_map, n_size, offset = pk.nested
    codes = stored_values(absmax)
    assert codes is not None
    block = np.arange(codes.size) // n_size
    values = load_tensor(n_map).reshape(-1)[codes] * load_tensor(n_absmax).reshape(-1)[block]
    return values + np.float32(offset)


def scale_error(meta: TensorMeta) -> Any:
    """(r0, r1) -> how far each entry's scale of rows r0:r1 may be off the one its codes were
    chosen against, where the scale is itself quantized (bitsandbytes' nested absmax: half the
    widest gap of its map x its block's nested_absmax); None where it is stored as is. A code
    error of `absolute` scales grows by (1 + absolute) x this."""
    pk = meta.packed
    if pk is None or pk.nested is None:
        return None
    n_absmax, n_map, n_size, _ = pk.nested
    half = float(np.diff(np.sort(load_tensor(n_map).reshape(-1))).max()) / 2
    per = half * np.abs(load_tensor(n_absmax).reshape(-1))
    assert meta.scale is not None
    return _per_block(per[np.arange(meta.scale.numel) // n_size], meta)


def _per_block(values: np.ndarray, meta: TensorMeta) -> Any:
    """(r0, r1) -> each entry of rows r0:r1 its block's value (blocks of group_size in C order)."""
    assert meta.packed is not None
    size, cols = meta.packed.group_size, meta.shape[1]
    return lambda r0, r1: values[np.arange(r0 * cols, r1 * cols) // size].reshape(r1 - r0, cols)


# -- packed int4 / int8 linear weights (GPTQ, AWQ) -------------------------------------------------
# X.qweight (int32 words of 32/bits codes), X.scales [groups, out] and X.qzeros (int32 words)
# [groups, out * bits / 32], GPTQ also X.g_idx [in]; a loader computes the linear weight [out, in]
# as (code - zero) x scale of each input's group. Read so, a GPTQ or AWQ copy diffs against its
# base's X.weight instead of looking like a model whose linear layers were removed.
AWQ_UNORDER = np.array([0, 4, 1, 5, 2, 6, 3, 7])   # AWQ packs columns 0 2 4 6 1 3 5 7 in a word


def packing_of(conf: Any, method: str | None = None) -> Packing | None:
    """The packing a quantization config declares (config.json's `quantization_config`, or
    AutoGPTQ's quantize_config.json, which may not name its `method`); None where it is not one
    read here (marlin, bitblas, exllama, ...): those weights stay as stored."""
    if not isinstance(conf, dict):
        return None
    method = str(conf.get("quant_method", method)).lower()
    if method == "compressed-tensors":
        return _pack_quantized(conf)
    if method == "mxfp4":
        return Packing("mxfp4", 4, 0, MXFP4_BLOCK)
    if method == "modelopt":   # NVIDIA ModelOpt's export: NVFP4 weights (W4A4, or W4A16)
        algo, size = str(conf.get("quant_algo", "")).upper(), conf.get("group_size", NVFP4_BLOCK)
        return Packing("nvfp4-modelopt", 4, 0, NVFP4_BLOCK) \
            if algo in ("NVFP4", "W4A16_NVFP4") and size == NVFP4_BLOCK else None
    bits, group = conf.get("bits", conf.get("w_bit")), conf.get("group_size", conf.get("q_group_size"))
    if type(bits) is not int or (group is not None and type(group) is not int):
        return None
    group = group if group is not None and group > 0 else None
    if method == "gptq" and bits in (2, 4, 8):
        fmt = str(conf.get("checkpoint_format", conf.get("format", "gptq"))).lower()
        offset = {"gptq": 1, "gptq_v2": 0}.get(fmt)
        return None if offset is None else Packing("gptq", bits, offset, group)
    version = str(conf.get("version", "gemm")).lower()
    if method == "awq" and bits == 4 and version in ("gemm", "gemv") and conf.get("zero_point", True) is True:
        return Packing("awq" if version == "gemm" else "awq-gemv", bits, 0, group)
    return None


def _pack_quantized(conf: dict[str, Any]) -> Packing | None:
    """compressed-tensors' "pack-quantized" format: one int weight scheme for every config group
    (per output channel, or per group of inputs), else None (mixed schemes stay as stored); its
    "nvfp4-pack-quantized": symmetric 4-bit floats in groups of 16 (`attach_nvfp4`)."""
    groups, fmt = conf.get("config_groups"), conf.get("format")
    if fmt not in ("pack-quantized", NVFP4_FORMAT) or not isinstance(groups, dict) or not groups:
        return None
    schemes = [g.get("weights") if isinstance(g, dict) and g.get("format", fmt) == fmt else None
               for g in groups.values()]
    w = schemes[0]
    if fmt == NVFP4_FORMAT:
        nvfp4 = isinstance(w, dict) and all(x == w for x in schemes) and w.get("type") == "float" \
            and w.get("num_bits") == 4 and w.get("group_size") == NVFP4_BLOCK \
            and w.get("symmetric", True) is True and w.get("dynamic", False) is False
        return Packing("nvfp4", 4, 0, NVFP4_BLOCK) if nvfp4 else None
    if not isinstance(w, dict) or any(x != w for x in schemes) or w.get("type", "int") != "int" \
            or w.get("dynamic", False) is not False:
        return None
    bits, sym, strategy, size = w.get("num_bits"), w.get("symmetric"), w.get("strategy"), w.get("group_size")
    if bits not in (2, 4, 8) or type(bits) is not int or type(sym) is not bool:
        return None
    if strategy == "group" and type(size) is int and size > 0:
        return Packing("pack-quantized", bits, 1 << (bits - 1) if sym else 0, size)
    if strategy == "channel":
        return Packing("pack-quantized", bits, 1 << (bits - 1) if sym else 0, None)
    return None


def attach_packed(tensors: dict[str, TensorMeta], packing: Packing | None) -> int:
    """Join each packed linear layer's qweight, qzeros, scales (and g_idx) into one `X.weight` of
    shape [out, in], read dequantized; its parts leave the checkpoint's tensors. Layers whose
    shapes do not fit `packing` stay as stored. Returns how many were joined."""
    if packing is None:
        return 0
    if packing.method == "mxfp4":
        return attach_mxfp4(tensors)
    if packing.method in NVFP4_LAYOUTS:
        return attach_nvfp4(tensors, packing)
    compressed = packing.method == "pack-quantized"
    names = _COMPRESSED_PARTS if compressed else ("qweight", "qzeros", "scales", "g_idx")
    joined = 0
    for name in [n for n in tensors if n.endswith("." + names[0])]:
        prefix = name[:-len(names[0]) - 1]
        qweight, qzeros, scales, g_idx, *rest = [tensors.get(f"{prefix}.{p}") for p in names]
        shape_t = rest[0] if rest else None
        if qweight is None or scales is None or f"{prefix}.weight" in tensors:
            continue
        if compressed:
            layout = _compressed_layout(packing, qweight, qzeros, scales, g_idx, shape_t)
        elif packing.method == "awq-gemv":
            layout = None if qzeros is None or g_idx is not None else \
                _gemv_layout(packing, qweight, qzeros, scales)
        else:
            layout = None if qzeros is None else _packed_layout(packing, qweight, qzeros, scales, g_idx)
        if layout is None:
            continue
        shape, group_size = layout
        # the words are the weight's own bytes: raw comparisons (same_bytes, digests) read them
        tensors[f"{prefix}.weight"] = dataclasses.replace(
            qweight, name=f"{prefix}.weight", dtype=f"uint{packing.bits}", shape=shape, stride=None,
            offset=qweight.offset + 4 * qweight.storage_offset, nbytes=4 * qweight.numel,
            storage_offset=0, scale=scales, zero_point=qzeros,
            packed=Packed(packing, qweight, g_idx, group_size),
            declared=() if shape_t is None else ((shape_t, shape),))
        for p in names:
            tensors.pop(f"{prefix}.{p}", None)
        joined += 1
    return joined


# compressed-tensors' parts, in attach_packed's order (GPTQ's qweight, qzeros, scales, g_idx), then
# the original [out, in]
_COMPRESSED_PARTS = ("weight_packed", "weight_zero_point", "weight_scale", "weight_g_idx", "weight_shape")


def _compressed_layout(packing: Packing, packed: TensorMeta, zp: TensorMeta | None, scales: TensorMeta,
                       g_idx: TensorMeta | None, shape: TensorMeta | None
                       ) -> tuple[tuple[int, int], int] | None:
    """`_packed_layout` of compressed-tensors' pack-quantized parts: weight_packed [out, in/per]
    (inputs along the words), scales [out, groups], zero points (asymmetric) [out/per, groups]
    (outputs along the words). Inputs are taken as whole words; `weight_shape` is checked on read.
    Activation-ordered groups: a weight_g_idx [in] (checked on read, `_sorted_groups`)."""
    per = 32 // packing.bits
    if shape is None or shape.shape != (2,) or shape.dtype not in ("int32", "int64") \
            or packed.dtype != "int32" or not packed.contiguous or len(packed.shape) != 2 \
            or scales.dtype not in FLOAT_DTYPES or scales.dtype in QUANTIZED_DTYPES or len(scales.shape) != 2:
        return None
    out, n_in = packed.shape[0], packed.shape[1] * per
    groups = scales.shape[1]
    size = packing.group_size or n_in
    if scales.shape[0] != out or -(-n_in // size) != groups or (packing.group_size is None and groups != 1):
        return None
    if (zp is None) != bool(packing.zero_offset):   # a symmetric layer has no zero points
        return None
    if zp is not None and (zp.dtype != "int32" or not zp.contiguous or zp.shape != (-(-out // per), groups)):
        return None
    if g_idx is not None and (g_idx.dtype not in ("int32", "int64") or g_idx.shape != (n_in,)):
        return None
    return (out, n_in), size


def _words_and_scales(qweight: TensorMeta, qzeros: TensorMeta, scales: TensorMeta) -> bool:
    """What GPTQ and AWQ write: codes and zero points in int32 words in C order, a 2-D qweight and
    2-D float scales (their shapes against each other are the layout's to check)."""
    return qweight.dtype == qzeros.dtype == "int32" and qweight.contiguous and qzeros.contiguous \
        and scales.dtype in FLOAT_DTYPES and scales.dtype not in QUANTIZED_DTYPES \
        and len(qweight.shape) == len(scales.shape) == 2


def _gemv_groups_width(n_in: int, size: int) -> int | None:
    """AutoAWQ's calculate_zeros_width: the int32 words of zero points per output of a GEMV layer
    (the groups rounded up to whole words, then to 1, 2 or 4 words for groups of >= 128, 64 or 32
    inputs; its scales are as many words x 8 wide); None for a group size it does not write."""
    multiple = 1 if size >= 128 else {64: 2, 32: 4}.get(size)
    if multiple is None:
        return None
    words = -(-(n_in // size) // 8)
    return -(-words // multiple) * multiple


def _gemv_layout(packing: Packing, qweight: TensorMeta, qzeros: TensorMeta, scales: TensorMeta
                 ) -> tuple[tuple[int, int], int] | None:
    """`_packed_layout` of AutoAWQ's GEMV layer: qweight [out, in/8] (inputs along the words, in
    order), qzeros [out, width] (groups along the words), scales [out, width x 8] float (the groups
    past the real ones are padding), width = _gemv_groups_width."""
    if not _words_and_scales(qweight, qzeros, scales):
        return None
    per = 32 // packing.bits
    out, n_in = qweight.shape[0], qweight.shape[1] * per
    size = packing.group_size or n_in
    width = _gemv_groups_width(n_in, size)
    if width is None or n_in % size or out % per \
            or qzeros.shape != (out, width) or scales.shape != (out, width * per):
        return None
    return (out, n_in), size


def _packed_layout(packing: Packing, qweight: TensorMeta, qzeros: TensorMeta, scales: TensorMeta,
                   g_idx: TensorMeta | None) -> tuple[tuple[int, int], int] | None:
    """((out, in), group size) where the parts' dtypes and shapes are the ones `packing` writes."""
    per = 32 // packing.bits
    if not _words_and_scales(qweight, qzeros, scales):
        return None
    groups, out = scales.shape
    gptq = packing.method == "gptq"
    n_in = qweight.shape[0] * per if gptq else qweight.shape[0]
    if qweight.shape[1] * (1 if gptq else per) != out or out % per or not 0 < groups <= n_in \
            or qzeros.shape != (groups, out // per):
        return None
    if g_idx is not None and (g_idx.dtype not in ("int32", "int64") or g_idx.shape != (n_in,)):
        return None
    size = packing.group_size or (n_in // groups if n_in % groups == 0 else 0)
    if not size or -(-n_in // size) != groups:
        return None
    return (out, n_in), size


def _words(meta: TensorMeta) -> np.ndarray:
    """An int32 tensor's words as stored (little-endian), mapped read-only."""
    return map_bytes(meta.data_path, meta.offset + 4 * meta.storage_offset, 4 * meta.numel) \
        .view("<u4").reshape(meta.shape)


def _codes(words: np.ndarray, bits: int, along_rows: bool, awq: bool = False) -> np.ndarray:
    """int32 words [r, c] -> their codes, lowest bits first: [r * 32/bits, c] along the rows
    (GPTQ's qweight), or [r, c * 32/bits] along the columns (qzeros; AWQ's in its column order)."""
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    codes = ((words[..., None] >> shifts) & np.uint32((1 << bits) - 1)).astype(np.uint8)
    if awq:
        codes = codes[..., AWQ_UNORDER]
    if along_rows:
        return codes.transpose(0, 2, 1).reshape(-1, words.shape[1])
    return codes.reshape(words.shape[0], -1)


def _unpacked(meta: TensorMeta, out: np.ndarray | None) -> np.ndarray:
    """A packed weight's codes as float32 [out, in], a block of output rows at a time."""
    assert meta.packed is not None
    pk, (rows, _) = meta.packed, meta.shape
    wide = np.empty(meta.shape, np.float32) if out is None or out.size < meta.numel \
        else out[: meta.numel].reshape(meta.shape)
    if pk.packing.method in BNB4_MAPS:
        return _bnb4_values(pk, wide)
    if pk.packing.method == "mxfp4" or pk.packing.method in NVFP4_LAYOUTS:   # MXFP4: [out, in] read [in, out]
        return _e2m1_values(pk, wide, transposed=pk.packing.method == "mxfp4")
    words, bits, per = _words(pk.qweight), pk.packing.bits, 32 // pk.packing.bits
    for r0 in range(0, rows, ROW_BLOCK):   # ROW_BLOCK is a multiple of any 32/bits
        r1 = min(rows, r0 + ROW_BLOCK)
        if pk.packing.method == "gptq":    # inputs along the words' rows
            wide[r0:r1] = _codes(words[:, r0:r1], bits, along_rows=True).T
        elif pk.packing.method == "awq":   # outputs along the words' columns
            wide[r0:r1] = _codes(words[:, r0 // per:r1 // per], bits, along_rows=False, awq=True).T
        else:                              # pack-quantized, AWQ GEMV: inputs along the words' columns
            wide[r0:r1] = _codes(words[r0:r1], bits, along_rows=False)
    return wide


def _bnb4_values(pk: Packed, wide: np.ndarray) -> np.ndarray:
    """A 4-bit weight's table values [out, in], a block of rows at a time (codes two a byte, the
    first in the high nibble; a row of odd length starts mid-byte)."""
    raw = map_bytes(pk.qweight.data_path, pk.qweight.offset + pk.qweight.storage_offset, pk.qweight.numel)
    table, (rows, cols) = BNB4_MAPS[pk.packing.method], wide.shape
    for r0 in range(0, rows, ROW_BLOCK):
        r1 = min(rows, r0 + ROW_BLOCK)
        a, b = r0 * cols, r1 * cols
        chunk = raw[a // 2:-(-b // 2)]
        codes = np.stack((chunk >> 4, chunk & 0x0F), axis=1).reshape(-1)[a % 2:a % 2 + b - a]
        wide[r0:r1] = table[codes].reshape(r1 - r0, cols)
    return wide


# -- MXFP4 (OCP microscaling; gpt-oss) --------------------------------------------------------------
# gpt-oss ships its experts as X_blocks uint8 [experts, out, in/32, 16] (two E2M1 codes a byte, the
# first in the low nibble) and X_scales uint8 [experts, out, in/32] (an E8M0 exponent per 32 inputs,
# biased by 127). transformers' loader computes each expert as FP4[code] x 2^(scale - 127), [out, in],
# and gives the model its transpose [in, out] (gpt-oss computes x @ W), as the bfloat16 copies store it;
# read so, each expert is the matrix `X[e]` a bfloat16 copy's X splits into (`split_experts`).
E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,   # the 4-bit float of MXFP4 and NVFP4
                        -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)
MXFP4_BLOCK = 32
# the most a code is off its value, in steps of its block: the OCP recipe's shared exponent
# (floor(log2 amax) - 2) puts a block's largest entries in [4, 8) steps and clips those past 6 to 6
MXFP4_CLIP = 2.0


def attach_mxfp4(tensors: dict[str, TensorMeta]) -> int:
    """Join each X_blocks with its X_scales into one matrix per expert `X[e]` of shape [in, out];
    the parts leave the tensors. Shapes that do not fit stay as stored. Returns how many were joined."""
    joined = 0
    for name in [n for n in tensors if n.endswith("_blocks")]:
        prefix = name[:-len("_blocks")]
        blocks, scales = tensors[name], tensors.get(prefix + "_scales")
        if scales is None or prefix in tensors or blocks.dtype != "uint8" or scales.dtype != "uint8" \
                or len(blocks.shape) != 4 or blocks.shape[3] != MXFP4_BLOCK // 2 \
                or scales.shape != blocks.shape[:3] or not (blocks.contiguous and scales.contiguous):
            continue
        experts, rows, groups, _ = blocks.shape
        packing = Packing("mxfp4", 4, 0, MXFP4_BLOCK)
        for e in range(experts):
            codes = _rows(blocks, e, 0, rows, expert_name(name, e))
            exps = _rows(scales, e, 0, rows, expert_name(scales.name, e))
            tensors[expert_name(prefix, e)] = dataclasses.replace(
                codes, name=expert_name(prefix, e), dtype="uint4", shape=(groups * MXFP4_BLOCK, rows),
                stride=None, offset=codes.offset + codes.storage_offset, nbytes=codes.numel, storage_offset=0,
                scale=exps, packed=Packed(packing, codes, None, MXFP4_BLOCK))
        del tensors[name], tensors[prefix + "_scales"]
        joined += 1
    return joined


def _e2m1_values(pk: Packed, wide: np.ndarray, transposed: bool) -> np.ndarray:
    """E2M1 codes' values (two a byte, the first in the low nibble) of a weight stored [out, in],
    written into `wide` as is or `transposed` ([in, out]), a block of stored rows at a time."""
    q = pk.qweight
    raw = map_bytes(q.data_path, q.offset + q.storage_offset, q.numel)
    rows, cols = wide.shape[::-1] if transposed else wide.shape
    for r0 in range(0, rows, ROW_BLOCK):
        r1 = min(rows, r0 + ROW_BLOCK)
        chunk = raw[r0 * cols // 2:r1 * cols // 2]
        values = E2M1_VALUES[np.stack((chunk & 0x0F, chunk >> 4), axis=1).reshape(r1 - r0, cols)]
        if transposed:
            wide[:, r0:r1] = values.T
        else:
            wide[r0:r1] = values
    return wide


def _mxfp4_steps(meta: TensorMeta) -> Any:
    """(r0, r1) -> the step 2^(scale - 127) of each entry of rows (inputs) r0:r1; E8M0's 255 is NaN."""
    assert meta.scale is not None
    exps = stored_values(meta.scale)
    assert exps is not None
    steps = np.ldexp(np.float32(1), exps.astype(np.int32) - 127).astype(np.float32)
    steps[exps == 255] = np.nan
    steps = steps.reshape(meta.scale.shape)   # [out, groups]
    return lambda r0, r1: steps[:, np.arange(r0, r1) // MXFP4_BLOCK].T


# -- NVFP4 (compressed-tensors "nvfp4-pack-quantized"; NVIDIA ModelOpt) -----------------------------
# E2M1 codes uint8 [out, in/2] (the first in the low nibble), a float8_e4m3fn scale per 16 inputs
# [out, in/16] and a float32 per-tensor one. compressed-tensors: X.weight_packed, X.weight_scale,
# X.weight_global_scale, and its decompress computes code x weight_scale / weight_global_scale;
# ModelOpt's export: X.weight, X.weight_scale, X.weight_scale_2 (amax / (6 x 448)), and its
# dequantize computes code x weight_scale x weight_scale_2.
NVFP4_FORMAT, NVFP4_BLOCK = "nvfp4-pack-quantized", 16
# packing method -> (the codes' part, the per-tensor scale's part, whether the step divides by it)
NVFP4_LAYOUTS = {"nvfp4": ("weight_packed", "weight_global_scale", True),
                 "nvfp4-modelopt": ("weight", "weight_scale_2", False)}


def attach_nvfp4(tensors: dict[str, TensorMeta], packing: Packing) -> int:
    """Join each NVFP4 layer's parts into one `X.weight` [out, in]; its parts leave the tensors.
    Shapes or dtypes that do not fit stay as stored. Returns how many were joined."""
    codes_part, top_part, _ = NVFP4_LAYOUTS[packing.method]
    joined = 0
    for name in [n for n in tensors if n.endswith("." + codes_part)]:
        prefix = name[:-len(codes_part) - 1]
        codes = tensors[name]
        scale, top = tensors.get(f"{prefix}.weight_scale"), tensors.get(f"{prefix}.{top_part}")
        if scale is None or top is None or (codes_part != "weight" and f"{prefix}.weight" in tensors) \
                or codes.dtype != "uint8" or len(codes.shape) != 2 or not codes.contiguous \
                or scale.dtype != "float8_e4m3fn" or top.dtype != "float32" or top.numel != 1 \
                or scale.shape != (codes.shape[0], 2 * codes.shape[1] // NVFP4_BLOCK) \
                or (2 * codes.shape[1]) % NVFP4_BLOCK:
            continue
        tensors[f"{prefix}.weight"] = dataclasses.replace(
            codes, name=f"{prefix}.weight", dtype="uint4", shape=(codes.shape[0], 2 * codes.shape[1]),
            stride=None, offset=codes.offset + codes.storage_offset, nbytes=codes.numel, storage_offset=0,
            scale=scale, packed=Packed(packing, codes, None, NVFP4_BLOCK, parts=(top,)))
        for p in {codes_part, "weight_scale", top_part} - {"weight"}:   # X.weight: now the joined one
            del tensors[f"{prefix}.{p}"]
        joined += 1
    return joined


def _nvfp4_steps(meta: TensorMeta) -> Any:
    """(r0, r1) -> each entry's step, rows r0:r1: weight_scale / (or x) the per-tensor scale."""
    assert meta.scale is not None and meta.packed is not None
    top = np.float32(load_tensor(meta.packed.parts[0]).reshape(-1)[0])
    scale = load_tensor(meta.scale).reshape(-1)
    divide = NVFP4_LAYOUTS[meta.packed.packing.method][2]
    return _per_block(scale / top if divide else scale * top, meta)


# -- fused mixture-of-experts tensors ---------------------------------------------------------------
# gpt-oss and Llama 4 keep every expert of a layer in one [experts, in, out] tensor
# (`model.layers.3.mlp.experts.down_proj`); Mixtral, Qwen-MoE and DeepSeek files keep one matrix per
# expert (`...experts.5.down_proj.weight`), which transformers 5 fuses in memory into [experts, out,
# in] tensors, gate_up_proj the gate's rows then the up-projection's: what torch.save of its state
# dict writes. Read as the matrices it holds, an expert edited alone is a low-rank change of one
# matrix, as in a per-expert file, not a faint change of a tensor `experts` times its size. Each
# expert is `name[e]`, a fused [gate; up] one its two halves `name[e, :I]` and `name[e, I:]` (the
# per-expert gate_proj and up_proj: names.pair_tensors pairs them so). Every expert of every layer
# is one role (layers.role_of).
FUSED_EXPERTS = re.compile(r"(^|\.)experts\.[A-Za-z_]\w*$")


def split_experts(tensors: dict[str, TensorMeta]) -> None:
    """Each fused experts tensor (plain floats named `...experts.<param>`, 3-D, or 2-D `_bias`)
    replaced in place by its experts' matrices (vectors)."""
    out: dict[str, TensorMeta] = {}
    for name, meta in tensors.items():
        fused = len(meta.shape) == 3 or (len(meta.shape) == 2 and name.endswith("_bias"))
        if not fused or meta.dtype not in FLOAT_DTYPES \
                or meta.scale is not None or not FUSED_EXPERTS.search(name):
            out[name] = meta
            continue
        half = _gate_rows(name, meta, tensors)
        for e in range(meta.shape[0]):
            if half is None:
                out[expert_name(name, e)] = _rows(meta, e, 0, meta.shape[1], expert_name(name, e))
            else:
                for r0, r1, part in ((0, half, f":{half}"), (half, 2 * half, f"{half}:")):
                    out[f"{name}[{e}, {part}]"] = _rows(meta, e, r0, r1, f"{name}[{e}, {part}]")
    tensors.clear()
    tensors.update(out)


def expert_name(name: str, e: int) -> str:
    return f"{name}[{e}]"


def _gate_rows(name: str, meta: TensorMeta, tensors: dict[str, TensorMeta]) -> int | None:
    """I where `name` is transformers 5's fused [experts, 2I, H] gate_up_proj beside its
    [experts, H, I] down_proj (gate rows first); None otherwise (gpt-oss and Llama 4 store
    [experts, H, 2I], gate and up columns interleaved or side by side: read whole)."""
    if not name.endswith("experts.gate_up_proj"):
        return None
    down = tensors.get(name[:-len("gate_up_proj")] + "down_proj")
    if down is None or len(down.shape) != 3:
        return None
    e, rows, cols = meta.shape
    return rows // 2 if (e, rows, cols) == (down.shape[0], 2 * down.shape[2], down.shape[1]) else None


def _rows(meta: TensorMeta, e: int, r0: int, r1: int, name: str) -> TensorMeta:
    """Rows r0:r1 of expert e of a fused [experts, rows, ...] tensor: their own bytes in a file
    that stores it in C order (safetensors), a view of the storage otherwise (a torch zip's strides)."""
    shape = (r1 - r0, *meta.shape[2:])
    if meta.stride is None:
        row = math.prod(meta.shape[2:]) * _ITEMSIZE[meta.dtype]
        start = meta.offset + (e * meta.shape[1] + r0) * row
        return dataclasses.replace(meta, name=name, shape=shape, offset=start, nbytes=(r1 - r0) * row)
    return dataclasses.replace(meta, name=name, shape=shape, stride=meta.stride[1:],
                               storage_offset=meta.storage_offset + e * meta.stride[0] + r0 * meta.stride[1])


# -- grouping a target's files into checkpoints -------------------------------------------------
def _joined(tensors: dict[str, TensorMeta], packing: Packing | None) -> int:
    """A file's (or shards') tensors as a loader sees them: quantized weights joined with their
    scales and packed parts (returns how many), fused experts split into their matrices."""
    joined = attach_scales(tensors) + attach_packed(tensors, packing)
    split_experts(tensors)
    return joined


UNSUPPORTED = "unsupported format"   # prefix of reasons for weight files this tier cannot read


def _dirname(display: str) -> str:
    return display.rsplit("/", 1)[0] if "/" in display else "."


def _is_torch_zip(path: Path) -> bool:
    from hfguard.static.pickle.zipdir import is_torch_zip

    try:
        with open(path, "rb") as fh:   # central directory only; nothing is extracted
            return is_torch_zip(fh)
    except OSError:
        return False


def _read_index(path: Path, display: str) -> dict[str, str]:
    if path.stat().st_size > MAX_HEADER:
        raise WeightsFormatError(f"{display}: index file is implausibly large")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        wm = doc["weight_map"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise WeightsFormatError(f"{display}: not a checkpoint index: {exc!r}") from None
    if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
        raise WeightsFormatError(f"{display}: weight_map is not a mapping of names to files")
    return wm


def _read_file(kind: str, tf: Any, stream: Any = None) -> dict[str, TensorMeta]:
    """The tensors of one weights file. A remote file given a `stream` (hfguard.weights.stream) is
    not downloaded here: its header is range-read and the stream fetches the bytes on first read;
    otherwise the file is materialized (downloaded in full for a remote target)."""
    if stream is not None and tf.local_path is None and tf.fetch is not None:
        shard = stream.add(tf)
        with tf.open() as fh:
            if kind == "safetensors":
                return read_safetensors_header(shard.path, tf.path, fh, tf.size, shard)
            return read_torch_zip_layout(shard.path, tf.path, fh, shard)
    path = tf.materialize()
    return read_safetensors_header(path, tf.path) if kind == "safetensors" else \
        read_torch_zip_layout(path, tf.path)


def _packings(target: Any) -> dict[str, Packing]:
    """Folder -> the packing its quantization config declares: config.json's
    `quantization_config`, else AutoGPTQ's quantize_config.json or ModelOpt's hf_quant_config.json
    (small files only, see read_config)."""
    from hfguard.weights.traps import read_config

    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for f in target.files:
        if f.name in ("config.json", "quantize_config.json", "hf_quant_config.json") and f.size <= 4 << 20:
            try:
                docs[(_dirname(f.path), f.name)] = read_config(f.materialize()) or {}
            except Exception:  # noqa: BLE001 - an unreadable config declares nothing: layers stay as stored
                continue
    out: dict[str, Packing] = {}
    for folder in {d for d, _ in docs}:
        conf = docs.get((folder, "config.json"), {}).get("quantization_config")
        modelopt = docs.get((folder, "hf_quant_config.json"), {}).get("quantization")
        if conf is not None:
            packing = packing_of(conf)
        elif isinstance(modelopt, dict):
            packing = packing_of(modelopt, "modelopt")
        else:
            packing = packing_of(docs.get((folder, "quantize_config.json")), "gptq")
        if packing is not None:
            out[folder] = packing
    return out


def checkpoints_of(target: Any, stream: Any = None) -> tuple[list[Checkpoint], list[tuple[str, str]]]:
    """Group a Target's weight files into checkpoints (shards joined through their index json).

    Returns the checkpoints and the files that could not be read as (display path, reason).
    Index files are materialized; weight files too (a full download for Hub targets), unless a
    `stream` (hfguard.weights.stream.ShardStream) is given: then remote ones are fetched one shard
    at a time as the passes read them, and released after.
    """
    from hfguard.sniff import GGUF, HDF5, NUMPY, ONNX, PICKLE, SAFETENSORS, TORCH_LEGACY, ZIP, sniff

    weights: dict[str, tuple[str, Any]] = {}      # display path -> (kind, TargetFile)
    indexes: list[Any] = []
    failed: list[tuple[str, str]] = []
    for f in target.files:
        if f.name.endswith(".index.json"):
            indexes.append(f)
            continue
        try:
            fmt = sniff(f.head(600), f.name, f.size)
        except OSError as exc:
            failed.append((f.path, f"unreadable: {exc}"))
            continue
        if fmt == SAFETENSORS:
            weights[f.path] = ("safetensors", f)
        elif fmt == ZIP and (f.name.endswith(_TORCH_EXTS) or (f.local_path and _is_torch_zip(f.local_path))):
            weights[f.path] = ("torch-zip", f)
        elif f.name.endswith(".safetensors"):   # named so, not shaped so: a loader would still try it
            failed.append((f.path, "not a valid safetensors file (header length or opening brace)"))
        elif fmt in (TORCH_LEGACY, PICKLE) and f.name.endswith(_TORCH_EXTS):
            failed.append((f.path, f"{UNSUPPORTED}: {fmt} checkpoints are not readable without "
                                   "unpickling; convert to safetensors"))
        elif fmt in (GGUF, ONNX, HDF5, NUMPY):
            failed.append((f.path, f"{UNSUPPORTED}: the weights tier does not read {fmt} tensors yet"))
    out: list[Checkpoint] = []
    claimed: set[str] = set()
    packings = _packings(target)
    for idx in indexes:
        folder = _dirname(idx.path)
        ckpt = Checkpoint(name=idx.path, kind="safetensors" if ".safetensors." in idx.name else "torch-zip")
        try:
            wm = _read_index(idx.materialize(), idx.path)
        except (WeightsFormatError, OSError) as exc:
            failed.append((idx.path, str(exc)))
            continue
        listed: dict[str, set[str]] = {}
        for tname, shard in wm.items():   # Hub paths have no folder: the shard names itself
            listed.setdefault(f"{folder}/{shard}" if "/" in idx.path else shard, set()).add(tname)
        for shard_path, names in sorted(listed.items()):
            if shard_path not in weights:
                ckpt.problems.append(Observation(
                    "weights/missing-shard", Severity.MEDIUM,
                    f"{idx.name} names shard {shard_path} which is not in the target",
                    evidence={"shard": shard_path}))
                continue
            claimed.add(shard_path)
            kind, tf = weights[shard_path]
            try:
                metas = _read_file(kind, tf, stream)
            except (WeightsFormatError, OSError) as exc:
                failed.append((tf.path, str(exc)))
                continue
            extra = sorted(set(metas) - names)
            if extra:   # tensors a loader would never see listed, or would load unannounced
                ckpt.problems.append(Observation(
                    "weights/index-mismatch", Severity.MEDIUM,
                    f"{tf.path} holds {len(extra)} tensors that {idx.name} does not list",
                    evidence={"tensors": extra[:20]}))
            missing = sorted(names - set(metas))
            if missing:
                ckpt.problems.append(Observation(
                    "weights/index-mismatch", Severity.MEDIUM,
                    f"{idx.name} lists {len(missing)} tensors that {tf.path} does not hold",
                    evidence={"tensors": missing[:20]}))
            ckpt.tensors.update(metas)
        ckpt.dequantized = _joined(ckpt.tensors, packings.get(folder))
        out.append(ckpt)
    for display, (kind, tf) in sorted(weights.items()):
        if display in claimed:
            continue
        try:
            metas = _read_file(kind, tf, stream)
        except (WeightsFormatError, OSError) as exc:
            failed.append((display, str(exc)))
            continue
        joined = _joined(metas, packings.get(_dirname(display)))
        out.append(Checkpoint(name=display, kind=kind, tensors=metas, dequantized=joined))
    return out, failed
