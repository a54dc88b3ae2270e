"""PyTorch's legacy formats: the stacked-pickle file (magic, protocol, sys_info, data, storage keys,
then raw storages whose layout is checked) and the pre-1.0 tar checkpoint's `storages`/`tensors`
record streams."""

from __future__ import annotations

import re
import struct
from typing import IO

from hfguard.static.pickle.containers.common import STORAGE_ELEMENT, PickleSite, Scanner
from hfguard.static.pickle.vm import Global, PickleVM, Reader, VMStop


def scan_legacy(sc: Scanner, fh: IO[bytes], size: int | None, where: str, base: int) -> None:
    """magic, protocol, sys_info, the data pickle, the storage keys; then raw storages."""
    results = sc.scan_pickles(fh, size, where, base, max_pickles=5, trailing_ok=True)
    if len(results) < 5 or not all(r.complete for r in results):
        if all(r.complete for r in results):
            msg = f"legacy torch file with {len(results)} pickles instead of 5"
            sc.observe("torch/legacy-layout", msg, where)
        return
    keys, data = results[4].value, results[3]
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        sc.observe(
            "torch/legacy-layout", "legacy storage key list is not a list of strings", where, results[4].start
        )
        return
    elsize = {}
    for pid in data.pids:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], Global):
            m = re.fullmatch(r"(\w*?)Storage", pid[1].name)
            elsize[pid[2]] = STORAGE_ELEMENT.get(m.group(1) if m else "")
    end = results[4].end
    left = None if size is None else size - (end - base)
    reader = Reader(sc.last_fh, base=end, size=left, budget=sc.budget)
    try:
        for key in keys:
            (numel,) = struct.unpack("<q", reader.read(8, "storage size"))
            es = elsize.get(key)
            if es is None or numel < 0:
                msg = f"storage {key!r} has no known element size or a bad size"
                raise VMStop("torch/legacy-layout", msg)
            reader.skip(numel * es, f"storage {key}")
            sc.budget.tick("legacy storages")
    except VMStop as exc:
        msg = f"raw storage section: {exc.message}"
        sc.observe("torch/legacy-layout", msg, where, reader.offset, exc.evidence)
        return
    if reader.remaining():
        # bytes after the last storage: maybe one more pickle hidden there
        tail = sc.scan_pickles(fh, reader.remaining(), where, reader.offset, quiet=True)
        if not tail:
            sc.observe(
                "pickle/trailing-data",
                f"{reader.remaining()} bytes after the last legacy storage",
                where,
                reader.offset,
                {"bytes": reader.remaining()},
            )


def scan_torch_tar_records(sc: Scanner, fh: IO[bytes], size: int, where: str, kind: str) -> None:
    """torch's pre-1.0 tar checkpoints: `storages` and `tensors` hold a pickled count, then per
    record a pickle (every one runs under pickle.load) followed by raw bytes of a known layout."""
    reader = Reader(fh, size=size, budget=sc.budget)
    vm = PickleVM(sc.config.limits, sc.budget)
    try:
        first = vm.run_one(reader)
        sc.sites.append(PickleSite(where, first))
        count = first.value
        if not first.complete or not isinstance(count, int) or not 0 <= count <= sc.config.max_members:
            raise VMStop("torch/legacy-layout", f"{kind}: record count is not a small int")
        for _ in range(count):
            rec = vm.run_one(reader)
            sc.sites.append(PickleSite(where, rec))
            value = rec.value
            if not (rec.complete and isinstance(value, tuple) and len(value) == 3):
                raise VMStop("torch/legacy-layout", f"{kind}: a record is not a 3-tuple pickle")
            if kind == "storages":
                stype = value[2]
                m = re.fullmatch(r"(\w*?)Storage", stype.name) if isinstance(stype, Global) else None
                elsize = STORAGE_ELEMENT.get(m.group(1)) if m else None
                (numel,) = struct.unpack("<q", reader.read(8, "storage size"))
                if elsize is None or numel < 0:
                    raise VMStop("torch/legacy-layout", f"storages: bad storage type or size {numel}")
                reader.skip(numel * elsize, "storage data")
            else:
                (ndim,) = struct.unpack("<i", reader.read(4, "tensor ndim"))
                if not 0 <= ndim <= 64:
                    raise VMStop("torch/legacy-layout", f"tensors: ndim {ndim}")
                reader.skip(4 + 16 * ndim + 8, "tensor sizes, strides and offset")
    except VMStop as exc:
        sc.observe(exc.rule, exc.message, where, reader.offset, exc.evidence)
        return
    if reader.remaining():
        sc.observe(
            "pickle/trailing-data",
            f"{reader.remaining()} bytes after the last record",
            where,
            reader.offset,
            {"bytes": reader.remaining()},
        )
