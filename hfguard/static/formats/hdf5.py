"""HDF5 objects that make a loader read other files: external storage, external links, virtual datasets.

h5py (and so Keras, for `.h5` models and `model.weights.h5` inside `.keras`) follows them while
loading: a dataset whose bytes live in `/etc/passwd` (External Data Files message), a link to
another file (Link message of type 64), or a virtual dataset mapped onto another file's data
(Data Layout class 3). The weights then carry the other file's bytes: disclosure, or a read of a
device or FIFO that hangs the load.

No libhdf5: this walks the format itself (superblock, object headers v1/v2 with continuations,
symbol-table groups, compact and dense link storage) from the root group, reading only headers
and heaps, never dataset bytes, under a byte, object and time budget. Layout after the HDF5 spec
("HDF5 File Format Specification Version 3.0").
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from hfguard.budget import Budget
from hfguard.findings import Observation, Severity

SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_READ_BYTES = 64 * 1024 * 1024   # header bytes read over the whole walk
MAX_OBJECTS = 100_000
MAX_CHUNKS = 64                     # header continuation chunks per object
MAX_CHUNK_BYTES = 4 * 1024 * 1024
MAX_TREE_DEPTH = 32
MAX_NAME = 4096

# message types
LINK_INFO, LINK, EXTERNAL_FILES, LAYOUT, CONTINUATION, SYMBOL_TABLE = 0x02, 0x06, 0x07, 0x08, 0x10, 0x11
ATTRIBUTE, ATTRIBUTE_INFO = 0x0C, 0x15
ROOT_ATTRIBUTES = ("model_config", "training_config")  # the string attributes Keras keeps its config in
MAX_ATTRIBUTE = 64 * 1024 * 1024
EXTERNAL_LINK = 64


class _Limit(Exception):
    pass


class _Bad(Exception):
    pass


@dataclass
class Hdf5Scan:
    problems: list[Observation] = field(default_factory=list)
    objects: int = 0
    bytes_read: int = 0
    # ROOT_ATTRIBUTES of the root group, read from its object header; root_attributes_known: all of
    # that header was read, no attribute is in dense storage and each of ROOT_ATTRIBUTES decoded
    root_attributes: list[tuple[str, bytes]] = field(default_factory=list)  # every one, duplicates too
    root_attributes_known: bool = False


def _escapes(path: str) -> bool:
    p = path.replace("\\", "/")
    return p.startswith(("/", "~")) or ".." in p.split("/") or (len(p) > 1 and p[1] == ":")


class _Walker:
    def __init__(self, fh: IO[bytes], size: int, budget: Budget | None, where: str) -> None:
        self.fh, self.size, self.budget, self.where = fh, size, budget, where
        self.out = Hdf5Scan()
        self.base = 0
        self.osize = self.lsize = 8          # "size of offsets" and "size of lengths" (superblock)
        self.heap_offset_bytes = 0
        self.seen: set[int] = set()
        self.nodes_seen: set[int] = set()     # B-tree, symbol and heap blocks: a cycle is read once
        self.queue: list[tuple[int, str, bool]] = []   # (address, path, found by a heap-block scan)
        self.tentative = False

    # -- reading ---------------------------------------------------------------------------------
    def read(self, addr: int, n: int) -> bytes:
        pos = self.base + addr
        if addr < 0 or n < 0 or pos + n > self.size:
            raise _Bad(f"{n} bytes at address {addr} lie outside the file")
        self.out.bytes_read += n
        if self.out.bytes_read > MAX_READ_BYTES:
            raise _Limit(f"more than {MAX_READ_BYTES} bytes of headers")
        self.fh.seek(pos)
        data = self.fh.read(n)
        if len(data) != n:
            raise _Bad(f"short read at address {addr}")
        return data

    def cstring(self, addr: int) -> str:
        data = self.read(addr, min(256, self.size - self.base - addr))
        if b"\x00" not in data:
            data = self.read(addr, min(MAX_NAME, self.size - self.base - addr))
        end = data.find(b"\x00")
        return data[: end if end >= 0 else len(data)].decode("utf-8", "replace")

    def uint(self, data: bytes, pos: int, n: int) -> int:
        if pos + n > len(data):
            raise _Bad("field runs past its message")
        return int.from_bytes(data[pos:pos + n], "little")

    def undefined(self, addr: int) -> bool:
        return addr == (1 << (8 * self.osize)) - 1

    def problem(self, rule: str, sev: Severity, msg: str, path: str, **ev: object) -> None:
        loc = f"{self.where}:{path}" if self.where else path
        self.out.problems.append(Observation(rule, sev, msg, loc, dict(ev)))

    # -- walk ------------------------------------------------------------------------------------
    def run(self) -> None:
        root = self.superblock()
        self.root_attributes(root)
        self.queue.append((root, "/", False))
        while self.queue:
            addr, path, tentative = self.queue.pop()
            if addr in self.seen or self.undefined(addr):
                continue
            self.seen.add(addr)
            self.out.objects += 1
            if self.out.objects > MAX_OBJECTS:
                raise _Limit(f"more than {MAX_OBJECTS} objects")
            if self.budget is not None and self.out.objects % 256 == 0:
                self.budget.tick("walking HDF5 object headers")
            try:
                for mtype, data in list(self.messages(addr)):
                    self.message(mtype, data, path)
            except _Bad:
                if not tentative:
                    raise

    def superblock(self) -> int:
        offset = 0
        while offset + 8 <= self.size:
            self.fh.seek(offset)
            if self.fh.read(8) == SIGNATURE:
                break
            offset = 512 if offset == 0 else offset * 2
        else:
            raise _Bad("no HDF5 superblock signature")
        self.fh.seek(offset)
        sb = self.fh.read(128)
        version = sb[8]
        if version in (0, 1):
            self.osize, self.lsize = sb[13], sb[14]
            pos = 24 + (4 if version == 1 else 0)
            if self.osize not in (2, 4, 8) or self.lsize not in (2, 4, 8):
                raise _Bad(f"offset/length sizes {self.osize}/{self.lsize}")
            self.base = self.uint(sb, pos, self.osize)
            # after 4 addresses, the root group's symbol table entry: name offset, header address
            return self.uint(sb, pos + 5 * self.osize, self.osize)
        if version in (2, 3):
            self.osize, self.lsize = sb[9], sb[10]
            if self.osize not in (2, 4, 8) or self.lsize not in (2, 4, 8):
                raise _Bad(f"offset/length sizes {self.osize}/{self.lsize}")
            self.base = self.uint(sb, 12, self.osize)
            return self.uint(sb, 12 + 3 * self.osize, self.osize)
        raise _Bad(f"unknown superblock version {version}")

    def messages(self, addr: int) -> Iterator[tuple[int, bytes]]:
        """(type, data) of every message of the object header at `addr`, continuations included."""
        head = self.read(addr, 16)
        if head[:4] == b"OHDR":
            flags = head[5]
            pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 3)
            size = self.read(addr + pos, width)  # of chunk #0, which follows
            chunks = [(addr + pos + width, int.from_bytes(size, "little"))]
            v2, tracked = True, bool(flags & 0x04)
        elif head[0] == 1:
            chunks = [(addr + 16, self.uint(head, 8, 4))]
            v2, tracked = False, False
        else:
            raise _Bad(f"unknown object header version at address {addr}")
        done = 0
        while chunks:
            start, length = chunks.pop(0)
            done += 1
            if done > MAX_CHUNKS or length > MAX_CHUNK_BYTES:
                raise _Limit(f"object header at {addr} has too many or too large chunks")
            chunk = self.read(start, length)
            hsize = (4 + (2 if tracked else 0)) if v2 else 8
            p = 0
            while p + hsize <= len(chunk):
                if v2:
                    mtype, msize = chunk[p], self.uint(chunk, p + 1, 2)
                else:
                    mtype, msize = self.uint(chunk, p, 2), self.uint(chunk, p + 2, 2)
                data = chunk[p + hsize: p + hsize + msize]
                p += hsize + msize
                if mtype == CONTINUATION:
                    cont, clen = self.uint(data, 0, self.osize), self.uint(data, self.osize, self.lsize)
                    if v2:  # "OCHK" + messages + checksum
                        if self.read(cont, 4) != b"OCHK":
                            raise _Bad(f"continuation at {cont} is not an OCHK block")
                        chunks.append((cont + 4, clen - 8))
                    else:
                        chunks.append((cont, clen))
                else:
                    yield mtype, data

    def message(self, mtype: int, data: bytes, path: str) -> None:
        if mtype == LINK:
            self.link(data, path)
        elif mtype == LINK_INFO:
            self.dense_links(data, path)
        elif mtype == SYMBOL_TABLE:
            tree, heap = self.uint(data, 0, self.osize), self.uint(data, self.osize, self.osize)
            self.btree(tree, self.local_heap(heap), path, 0)
        elif mtype == EXTERNAL_FILES:
            self.external_files(data, path)
        elif mtype == LAYOUT and len(data) >= 2 and data[0] == 4 and data[1] == 3:
            self.virtual(data, path)

    # -- root attributes (where Keras 2 keeps its model config) ----------------------------------
    def root_attributes(self, root: int) -> None:
        known = True
        for mtype, data in self.messages(root):
            if mtype == ATTRIBUTE_INFO:
                p = 2 + (2 if len(data) > 1 and data[1] & 1 else 0)
                known = known and self.undefined(self.uint(data, p, self.osize))  # else: dense storage
            elif mtype == ATTRIBUTE:
                name, value = self.attribute(data)
                if name in ROOT_ATTRIBUTES:
                    if value is None:
                        known = False
                    else:
                        self.out.root_attributes.append((name, value))
        self.out.root_attributes_known = known

    def attribute(self, data: bytes) -> tuple[str, bytes | None]:
        """(name, value) of an Attribute message; the value only for a string (fixed-length or
        variable-length in the global heap), else None."""
        version = data[0] if data else 0
        if version not in (1, 2, 3):
            raise _Bad(f"attribute message of version {version}")
        flags = data[1] if version > 1 else 0
        nsize, tsize, ssize = self.uint(data, 2, 2), self.uint(data, 4, 2), self.uint(data, 6, 2)
        p = 8 + (1 if version == 3 else 0)
        pad = (lambda n: (n + 7) & ~7) if version == 1 else (lambda n: n)
        name = data[p:p + nsize].split(b"\x00", 1)[0].decode("utf-8", "replace")
        dtype = data[p + pad(nsize):p + pad(nsize) + tsize]
        value_at = p + pad(nsize) + pad(tsize) + pad(ssize)
        if flags & 0x3 or len(dtype) < 8:  # a shared datatype or dataspace: not decoded here
            return name, None
        cls, length = dtype[0] & 0x0F, self.uint(dtype, 4, 4)
        if cls == 3:  # fixed-length string
            value = data[value_at:value_at + length]
            return name, value.split(b"\x00", 1)[0] if len(value) == length else None
        if cls == 9 and dtype[1] & 0x0F == 1:  # variable-length string: length, heap collection, index
            size = self.uint(data, value_at, 4)
            return name, self.global_heap_object(self.uint(data, value_at + 4, self.osize),
                                                 self.uint(data, value_at + 4 + self.osize, 4), size)
        return name, None

    def global_heap_object(self, addr: int, index: int, size: int) -> bytes:
        head = self.read(addr, 8 + self.lsize)
        if head[:4] != b"GCOL":
            raise _Bad(f"global heap collection at {addr} has no GCOL signature")
        end = self.uint(head, 8, self.lsize)
        if end > MAX_ATTRIBUTE:
            raise _Limit(f"global heap collection of {end} bytes")
        body = self.read(addr, end)
        p = 8 + self.lsize
        while p + 8 + self.lsize <= len(body):
            idx, osize = self.uint(body, p, 2), self.uint(body, p + 8, self.lsize)
            if idx == index:
                return body[p + 8 + self.lsize:p + 8 + self.lsize + min(osize, size)]
            if idx == 0:
                break
            p += 8 + self.lsize + ((osize + 7) & ~7)
        raise _Bad(f"object {index} missing from the global heap collection at {addr}")

    # -- groups ----------------------------------------------------------------------------------
    def local_heap(self, addr: int) -> int:
        head = self.read(addr, 8 + 2 * self.lsize + self.osize)
        if head[:4] != b"HEAP":
            raise _Bad(f"local heap at {addr} has no HEAP signature")
        return self.uint(head, 8 + 2 * self.lsize, self.osize)

    def once(self, addr: int) -> bool:
        if addr in self.nodes_seen:
            return False
        self.nodes_seen.add(addr)
        if self.budget is not None and len(self.nodes_seen) % 256 == 0:
            self.budget.tick("walking HDF5 groups")
        return True

    def btree(self, addr: int, heap_data: int, path: str, depth: int) -> None:
        if depth > MAX_TREE_DEPTH:
            raise _Limit("group B-tree deeper than any real file")
        if not self.once(addr):
            return
        head = self.read(addr, 8 + 2 * self.osize)
        if head[:4] != b"TREE" or head[4] != 0:
            raise _Bad(f"group B-tree node at {addr} is malformed")
        level, used = head[5], self.uint(head, 6, 2)
        body = self.read(addr + 8 + 2 * self.osize, used * (self.lsize + self.osize) + self.lsize)
        for i in range(used):
            child = self.uint(body, self.lsize + i * (self.lsize + self.osize), self.osize)
            if level > 0:
                self.btree(child, heap_data, path, depth + 1)
            else:
                self.symbol_node(child, heap_data, path)

    def symbol_node(self, addr: int, heap_data: int, path: str) -> None:
        if not self.once(addr):
            return
        head = self.read(addr, 8)
        if head[:4] != b"SNOD":
            raise _Bad(f"symbol table node at {addr} is malformed")
        n = self.uint(head, 6, 2)
        entry = 2 * self.osize + 24
        body = self.read(addr + 8, n * entry)
        for i in range(n):
            name_off = self.uint(body, i * entry, self.osize)
            obj = self.uint(body, i * entry + self.osize, self.osize)
            name = self.cstring(heap_data + name_off)
            self.queue.append((obj, path.rstrip("/") + "/" + name, False))

    def link(self, data: bytes, path: str) -> int:
        """Decode one Link message; queue hard links, report external ones. Returns its length."""
        if len(data) < 3 or data[0] != 1:
            raise _Bad("link message of unknown version")
        flags, p = data[1], 2
        ltype = 0
        if flags & 0x08:
            ltype, p = data[p], p + 1
        if flags & 0x04:
            p += 8
        if flags & 0x10:
            p += 1
        width = 1 << (flags & 3)
        nlen = self.uint(data, p, width)
        p += width
        if nlen == 0 or p + nlen > len(data):
            raise _Bad("link name runs past its message")
        name = data[p:p + nlen].decode("utf-8", "strict" if self.tentative else "replace")
        p += nlen
        child = path.rstrip("/") + "/" + name
        if ltype == 0:
            self.queue.append((self.uint(data, p, self.osize), child, self.tentative))
            return p + self.osize
        ilen = self.uint(data, p, 2)
        info = data[p + 2:p + 2 + ilen]
        if len(info) != ilen:
            raise _Bad("link value runs past its message")
        if ltype == EXTERNAL_LINK:
            parts = info[1:].split(b"\x00")
            target = parts[0].decode("utf-8", "replace")
            obj = parts[1].decode("utf-8", "replace") if len(parts) > 1 else ""
            sev = Severity.CRITICAL if _escapes(target) else Severity.HIGH
            self.problem("hdf5/external-link", sev,
                         f"{child} is a link into another file, {target!r} (object {obj!r}): a loader "
                         "that follows it reads that file", child, file=target, object=obj)
        elif ltype >= 65:
            self.problem("hdf5/external-link", Severity.MEDIUM,
                         f"{child} is a user-defined link (type {ltype}) that needs a plugin to resolve",
                         child, link_type=ltype)
        return p + 2 + ilen

    def dense_links(self, data: bytes, path: str) -> None:
        """Link Info message: with a fractal heap address the links are stored there (dense)."""
        p = 2 + (8 if len(data) > 1 and data[1] & 1 else 0)
        heap = self.uint(data, p, self.osize)
        if self.undefined(heap):
            return
        for block, length in self.heap_direct_blocks(heap):
            self.links_in_block(self.read(block, length), path)

    def heap_direct_blocks(self, addr: int) -> list[tuple[int, int]]:
        """(address, size) of the fractal heap's direct blocks (the managed objects live there)."""
        head = self.read(addr, 22 + 12 * self.lsize + 3 * self.osize)
        if head[:4] != b"FRHP":
            raise _Bad(f"fractal heap at {addr} has no FRHP signature")
        p = 14 + 10 * self.lsize + 2 * self.osize   # table width, after the counters of the header
        width = self.uint(head, p, 2)
        start_size = self.uint(head, p + 2, self.lsize)
        max_direct = self.uint(head, p + 2 + self.lsize, self.lsize)
        max_heap_bits = self.uint(head, p + 2 + 2 * self.lsize, 2)
        root = self.uint(head, p + 6 + 2 * self.lsize, self.osize)
        rows = self.uint(head, p + 6 + 2 * self.lsize + self.osize, 2)
        if self.uint(head, 7, 2):  # I/O filters on the heap: blocks are compressed
            raise _Limit("fractal heap with I/O filters")
        if self.undefined(root):
            return []
        self.heap_offset_bytes = (max_heap_bits + 7) // 8
        if rows == 0:
            return [(root, start_size)]
        out: list[tuple[int, int]] = []
        self.indirect(root, rows, width, start_size, max_direct, out, 0)
        return out

    def indirect(self, addr: int, rows: int, width: int, start: int, max_direct: int,
                 out: list[tuple[int, int]], depth: int) -> None:
        if depth > MAX_TREE_DEPTH or rows > 64 or width > 1024:
            raise _Limit("fractal heap indirect blocks too deep or wide")
        if not self.once(addr):
            return
        head = self.read(addr, 5 + self.osize + self.heap_offset_bytes)
        if head[:4] != b"FHIB":
            raise _Bad(f"fractal heap indirect block at {addr} is malformed")
        sizes = [start if r < 2 else start << (r - 1) for r in range(rows)]
        max_direct_rows = sum(1 for s in sizes if s <= max_direct)
        n = rows * width
        body = self.read(addr + len(head), n * self.osize)
        for i in range(n):
            child = self.uint(body, i * self.osize, self.osize)
            if self.undefined(child):
                continue
            row = i // width
            size = sizes[row]
            if row < max_direct_rows:
                out.append((child, size))
            else:  # spec: rows = log2(block size) - log2(starting size * width) + 1
                sub_rows = size.bit_length() - (start * width).bit_length() + 1
                self.indirect(child, sub_rows, width, start, max_direct, out, depth + 1)

    def links_in_block(self, block: bytes, path: str) -> None:
        """Managed objects of a dense group are Link messages packed one after another."""
        p = 5 + self.osize + self.heap_offset_bytes
        self.tentative = True   # found by a scan of the block, not by an index: may be a false start
        try:
            while p < len(block) - 4:
                if block[p] != 1 or block[p + 1] >= 0x20:
                    p += 1
                    continue
                try:
                    p += self.link(block[p:p + 2 * MAX_NAME], path)
                except (_Bad, UnicodeDecodeError):
                    p += 1
        finally:
            self.tentative = False

    # -- datasets --------------------------------------------------------------------------------
    def external_files(self, data: bytes, path: str) -> None:
        used = self.uint(data, 6, 2)
        heap = self.local_heap(self.uint(data, 8, self.osize))
        names = []
        for i in range(min(used, 1024)):
            off = self.uint(data, 8 + self.osize + i * 3 * self.lsize, self.lsize)
            names.append(self.cstring(heap + off))
        sev = Severity.CRITICAL if any(_escapes(n) for n in names) else Severity.HIGH
        self.problem("hdf5/external-storage", sev,
                     f"dataset {path} keeps its bytes in other files ({', '.join(map(repr, names[:4]))}): "
                     "a loader reads them into the weights", path, files=names[:64])

    def virtual(self, data: bytes, path: str) -> None:
        heap, index = self.uint(data, 2, self.osize), self.uint(data, 2 + self.osize, 4)
        sources: list[str] = []
        try:
            sources = self.vds_sources(heap, index)
        except _Bad:
            pass
        self.problem("hdf5/virtual-dataset", Severity.HIGH,
                     f"dataset {path} is virtual: its bytes are read from "
                     f"{', '.join(map(repr, sources[:4])) or 'other datasets'}", path, sources=sources[:64])

    def vds_sources(self, addr: int, index: int) -> list[str]:
        head = self.read(addr, 8 + self.lsize)
        if head[:4] != b"GCOL":
            raise _Bad("global heap collection without GCOL signature")
        size = self.uint(head, 8, self.lsize)
        coll = self.read(addr, min(size, MAX_CHUNK_BYTES))
        p = 8 + self.lsize
        while p + 8 + self.lsize <= len(coll):
            idx, osize = self.uint(coll, p, 2), self.uint(coll, p + 8, self.lsize)
            blob = coll[p + 8 + self.lsize: p + 8 + self.lsize + osize]
            if idx == index:
                # version, entry count, then per entry: source file NUL source dataset NUL selections
                return [blob[1 + self.lsize:].split(b"\x00", 1)[0].decode("utf-8", "replace")]
            if idx == 0:
                break
            p += 8 + self.lsize + ((osize + 7) & ~7)
        return []


def scan_hdf5(fh: IO[bytes], size: int, budget: Budget | None = None, where: str = "") -> Hdf5Scan:
    """Walk an HDF5 file's object headers from the root group; report what reaches outside it."""
    w = _Walker(fh, size, budget, where)
    try:
        w.run()
    except _Limit as exc:
        w.out.problems.append(Observation("hdf5/too-complex", Severity.MEDIUM,
                                          f"HDF5 structure not fully walked: {exc}", where or None))
    except (_Bad, struct.error, IndexError, ValueError) as exc:
        w.out.problems.append(Observation("hdf5/malformed", Severity.MEDIUM,
                                          f"HDF5 structure cannot be walked: {exc}", where or None))
    return w.out
