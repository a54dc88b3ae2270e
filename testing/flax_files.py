"""flax msgpack checkpoints without jax: the encoding of flax.serialization.msgpack_serialize
(flax 0.12), reproduced with msgpack and numpy — ext 1 ndarray = packb((shape, dtype.name, bytes)),
ext 2 complex, ext 3 numpy scalar."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np


def _ndarray_to_bytes(arr: np.ndarray) -> bytes:
    return msgpack.packb((arr.shape, arr.dtype.name, arr.tobytes("C")), use_bin_type=True)


def _ext_pack(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return msgpack.ExtType(1, _ndarray_to_bytes(x))
    if isinstance(x, np.generic):
        return msgpack.ExtType(3, _ndarray_to_bytes(np.asarray(x)))
    if isinstance(x, complex):
        return msgpack.ExtType(2, msgpack.packb((x.real, x.imag)))
    return x


def to_bytes(state: Any) -> bytes:
    """What flax.serialization.to_bytes writes for a state dict of numpy leaves."""
    return msgpack.packb(state, default=_ext_pack, strict_types=True)


def raw_ndarray(shape: tuple[int, ...], dtype_name: str, data: bytes) -> msgpack.ExtType:
    """An ndarray extension with any header (for hostile files)."""
    return msgpack.ExtType(1, msgpack.packb((shape, dtype_name, data), use_bin_type=True))
