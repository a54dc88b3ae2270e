"""A symbolic pickle machine: it decodes every opcode of protocols 0-5 and builds a tree of
symbolic values (globals, calls, persistent references, literals, containers). It never imports or
calls anything. Malformed or hostile input ends in an `Anomaly` with a byte offset, never a crash.

Memory and time are bounded: declared lengths are checked against the bytes left before anything
is read, large strings/bytes are skipped (kept as a `Blob`), and opcodes, memo, stack and mark
depth are capped (`Limits`).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import gc
import io
import lzma
import pickletools
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from hfguard.budget import Budget
from hfguard.static.pickle.peek import Prefixed, is_seekable

# -- STRING escapes ---------------------------------------------------------------------------
# the escapes pickle's STRING decoding (codecs.escape_decode) understands; any other backslash is
# kept as it is, and an octal escape past \377 is taken modulo 256, each with a DeprecationWarning
# that `python -W error` turns into an exception (a check crash on a harmless old pickle)
_ESCAPES = frozenset(b"\n\\'\"abfnrtvx")
_OCTAL = frozenset(b"01234567")
_ANY_ESCAPE = re.compile(rb"\\([0-7]{1,3}|.)", re.DOTALL)


def _quiet_escape(m: re.Match[bytes]) -> bytes:
    arg = m.group(1)
    if arg[0] in _ESCAPES:
        return m.group(0)
    if arg[0] in _OCTAL:
        return b"\\x%02x" % (int(arg, 8) & 0xFF)
    return b"\\" + m.group(0)   # unknown: the backslash stays


def string_escape_decode(data: bytes) -> bytes:
    """codecs.escape_decode(data)[0] as pickle's STRING opcode decodes it, without its warnings:
    the escapes it would warn about are first rewritten to ones that give the same bytes. A bad
    \\x escape or a trailing backslash still raises ValueError."""
    return codecs.escape_decode(_ANY_ESCAPE.sub(_quiet_escape, data))[0]


# -- symbolic values ---------------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class Global:
    """`module.name` as named in the stream (GLOBAL / INST / STACK_GLOBAL). `uses` collects how the
    stream uses it: "called" (REDUCE/NEWOBJ/OBJ/INST), "mutated" (BUILD/SETITEM/APPEND on it)."""

    module: str
    name: str
    index: int  # opcode index
    offset: int  # absolute byte offset of the opcode
    opcode: str
    uses: set[str] = field(default_factory=set)
    sources: tuple[str, ...] = ()  # where STACK_GLOBAL's strings came from (memo, escaped ...)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"Global({self.qualname})"


@dataclass(eq=False, slots=True)
class Call:
    """`func(*args)` as REDUCE / NEWOBJ / NEWOBJ_EX / OBJ / INST would perform it. BUILD state and
    SETITEM/APPEND content applied to the result are recorded, not performed."""

    func: Any
    args: Any
    kind: str
    index: int
    offset: int
    kwargs: Any = None
    state: Any = None
    items: list[tuple[Any, Any]] = field(default_factory=list)
    appends: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Call({self.func!r}, kind={self.kind})"


@dataclass(eq=False, slots=True)
class PersistentRef:
    pid: Any

    def __repr__(self) -> str:
        return f"PersistentRef({self.pid!r})"


@dataclass(eq=False, slots=True)
class Ext:
    """An EXT1/2/4 code: resolved through copyreg's extension registry at load time."""

    code: int


@dataclass(eq=False, slots=True)
class Blob:
    """A string or bytes value too large to keep: its kind, length and where it lies."""

    kind: str
    length: int
    offset: int


@dataclass(eq=False, slots=True)
class SymDict:
    items: list[tuple[Any, Any]] = field(default_factory=list)

    def get(self, key: Any, default: Any = None) -> Any:
        for k, v in self.items:
            if isinstance(k, str) and k == key:
                return v
        return default


@dataclass(eq=False, slots=True)
class SymSet:
    items: list[Any] = field(default_factory=list)
    frozen: bool = False


# -- results -----------------------------------------------------------------------------------
@dataclass
class Anomaly:
    rule: str  # pickle/malformed, pickle/truncated, pickle/limit-exceeded, ...
    message: str
    offset: int
    index: int
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class PickleResult:
    start: int
    end: int  # offset after the last byte consumed
    value: Any = None  # what STOP returned
    complete: bool = False  # reached STOP
    protocol: int = 0
    opcodes: int = 0
    globals: list[Global] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    persistent_ids: int = 0
    pids: list[Any] = field(default_factory=list)  # BINPERSID/PERSID ids (first 1M)
    calls: list[Call] = field(default_factory=list)  # every call, in order (first 1M)


@dataclass(frozen=True)
class Limits:
    max_opcodes: int = 2_000_000
    max_memo: int = 1_000_000
    max_stack: int = 1_000_000
    max_marks: int = 10_000
    max_line: int = 65_536
    max_globals: int = 100_000  # symbolic objects are 200-400 bytes: these bound the tree
    max_calls: int = 300_000
    keep_str: int = 65_536  # strings/bytes longer than this become a Blob
    keep_total: int = 32 << 20  # total bytes of kept strings; beyond it everything is a Blob
    max_bytes: int = 8 << 30  # bytes one pickle may span (its strings included)


class VMStop(Exception):
    """Ends decoding with an anomaly (also raised by build hooks)."""

    def __init__(self, rule: str, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.rule, self.message, self.evidence = rule, message, evidence


# opcode byte -> name, from the standard library's own opcode table (protocols 0-5)
OPCODES: dict[int, str] = {ord(op.code.encode("latin-1")): op.name for op in pickletools.opcodes}

# length-prefixed string/bytes opcodes: name -> (length bytes, struct format, value kind)
_SIZED = {
    "BINSTRING": (4, "<i", "str8"),
    "SHORT_BINSTRING": (1, "<B", "str8"),
    "BINUNICODE": (4, "<I", "str"),
    "SHORT_BINUNICODE": (1, "<B", "str"),
    "BINUNICODE8": (8, "<Q", "str"),
    "BINBYTES": (4, "<I", "bytes"),
    "SHORT_BINBYTES": (1, "<B", "bytes"),
    "BINBYTES8": (8, "<Q", "bytes"),
    "BYTEARRAY8": (8, "<Q", "bytes"),
}

# opcodes decoded inline by the main loop (the ones real pickles are mostly made of, without a
# call): BINGET BINPUT MEMOIZE MARK EMPTY_DICT EMPTY_LIST EMPTY_TUPLE NONE BININT1. STOP and FRAME
# are also decoded there (they change the loop's own state); every other opcode has a handler in
# `HANDLERS`.
_FAST = frozenset(b"hq\x94(}])NK")
_INLINE = frozenset({"BINGET", "BINPUT", "MEMOIZE", "MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE",
                     "NONE", "BININT1", "STOP", "FRAME"})
# opcodes the main loop decodes on their ordinary path (a seekable plain Reader for those that
# read arguments): strings, ints, floats, memo puts and gets, dict/tuple building. Anything out of
# the ordinary (a short read, a limit, a bad value, an unusual target) rewinds what it read and
# runs the opcode's handler, which stays the reference decoding and reports the anomaly.
_TRY = frozenset(b"\x8cXrMJG\x88\x89su\x85\x86\x87gpIaVFd")
_STOP, _FRAME = ord("."), 0x95
_NO_FRAME = 1 << 62  # frame end when no frame is open: past any reachable position

BuildHook = Callable[[Any, "Reader"], Any]


class Reader:
    """Reads the stream, keeps the absolute offset, and refuses lengths the bytes left can't hold."""

    def __init__(
        self, fh: IO[bytes], base: int = 0, size: int | None = None, budget: Budget | None = None
    ) -> None:
        self.fh, self.base, self.size, self.pos = fh, base, size, 0
        self.budget = budget
        self._seekable = size is not None and is_seekable(fh)

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.pos

    def _check(self, n: int, what: str) -> None:
        left = self.remaining()
        if n < 0:
            raise VMStop("pickle/malformed", f"negative length {n} for {what}", length=n)
        if left is not None and n > left:
            raise VMStop(
                "pickle/truncated",
                f"{what} declares {n} bytes but only {left} remain",
                declared=n,
                remaining=left,
            )

    def read(self, n: int, what: str = "data") -> bytes:
        if n < 0 or (self.size is not None and n > self.size - self.pos):
            self._check(n, what)
        data = self.fh.read(n)
        self.pos += len(data)
        if len(data) < n:
            raise VMStop(
                "pickle/truncated",
                f"stream ends inside {what} ({len(data)} of {n} bytes)",
                declared=n,
                got=len(data),
            )
        return data

    def peek1(self) -> bytes:
        if self.remaining() == 0:
            return b""
        b = self.fh.read(1)
        if b:
            if self._seekable:
                self.fh.seek(-1, 1)
            else:
                self._pushback(b)
        return b

    def _pushback(self, b: bytes) -> None:
        fh = self.fh
        self.fh = Prefixed(b, fh)  # type: ignore[assignment]  # a RawIOBase reads as IO[bytes]

    def skip(self, n: int, what: str = "data") -> None:
        self._check(n, what)
        if self._seekable:
            self.fh.seek(n, 1)
            self.pos += n
            return
        while n > 0:
            chunk = self.fh.read(min(n, 1 << 20))
            if not chunk:
                raise VMStop("pickle/truncated", f"stream ends inside {what}", missing=n)
            n -= len(chunk)
            self.pos += len(chunk)
            if self.budget is not None:
                self.budget.tick("skipping data")

    # hooks of the C-file reading model (CFileReader); the linear reader reads on
    def read_into(self, n: int, what: str) -> bytes:
        """bytes payloads, which the C unpickler copies contiguously across its buffer's end"""
        return self.read(n, what)

    def align(self, n: int) -> None:
        """before a string payload that is skipped rather than read"""

    def load_frame(self, n: int) -> None:
        """a FRAME of n bytes was decoded"""

    def readline(self, limit: int, what: str) -> bytes:
        line = self.fh.readline(limit + 1)
        self.pos += len(line)
        if not line.endswith(b"\n"):
            if len(line) > limit:
                # what and how the line starts: lets a quiet scan tell a pickle argument from text
                raise VMStop("pickle/limit-exceeded", f"{what} line longer than {limit} bytes", limit=limit,
                             what=what, line_head=line[:64].decode("latin-1"))
            raise VMStop("pickle/truncated", f"stream ends inside {what} line")
        return line[:-1]


class CFileReader(Reader):
    """The C unpickler reading a file without peek() (io.BytesIO, what torch.load hands it for a zip
    member): FRAME reads the frame into its buffer; a fixed-size read or a line that does not fit
    in what is left of the buffer is read afresh from the file, which is past the buffer, so the
    bytes left in the buffer are dropped (bytes payloads alone continue contiguously). A frame that
    lies about its length thus makes it decode different opcodes from the linear reading
    (CPython gh-154848, fickling's test_frame_boundary_divergence). Over bytes in memory."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        super().__init__(io.BytesIO(data), base=base, size=len(data))
        self.data = data
        self.buffer_end: int | None = None  # r.pos where the C unpickler's buffer ends
        self.dropped = 0  # reads that dropped the rest of the buffer

    def read(self, n: int, what: str = "data") -> bytes:
        self.align(n)
        return super().read(n, what)

    def read_into(self, n: int, what: str) -> bytes:
        if self.buffer_end is not None and self.pos + n >= self.buffer_end:
            self.buffer_end = None  # the rest comes straight from the file
        return super().read(n, what)

    def align(self, n: int) -> None:
        end = self.buffer_end
        if end is None:
            return
        if self.pos + n > end:
            self._drop(end)

    def _drop(self, end: int) -> None:
        if self.pos < end:
            self.dropped += 1
            super().skip(end - self.pos, "dropped buffer")
        self.buffer_end = None

    def readline(self, limit: int, what: str) -> bytes:
        end = self.buffer_end
        if end is not None and self.data.find(b"\n", self.pos, end) < 0:
            self._drop(end)
        return super().readline(limit, what)

    def load_frame(self, n: int) -> None:
        end = self.buffer_end
        if end is not None and end - self.pos >= n:
            return  # already buffered: the buffer keeps its end
        if end is not None:
            self._drop(end)
        self.buffer_end = self.pos + n


def _dotted(module: str, name: str) -> tuple[str, str]:
    """Python 2 names that the unpickler maps to Python 3 (``__builtin__.eval`` -> builtins.eval)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _module_class(value: Any) -> Any:
    """torch's legacy format saves a whole nn.Module's class as the persistent id
    ('module', cls, source_file, source), and its loader's persistent_load returns cls: calling
    that reference calls the named global (judged as such), not an unknown value. Other loaders
    (zip checkpoints, plain pickle.load) refuse such an id, so reading it this way hides nothing."""
    if isinstance(value, PersistentRef):
        pid = value.pid
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module" and isinstance(pid[1], Global):
            return pid[1]
    return value


class PickleVM:
    """Interprets one pickle symbolically. Use `run_one` (one pickle) or `scan_stream` (all)."""

    def __init__(
        self, limits: Limits | None = None, budget: Budget | None = None, build_hook: BuildHook | None = None
    ) -> None:
        self.limits = limits or Limits()
        self.budget = budget
        self.build_hook = build_hook

    # -- one pickle ------------------------------------------------------------------------------
    def run_one(self, r: Reader) -> PickleResult:
        res = PickleResult(start=r.offset, end=r.offset)
        self._res = res
        self._stack: list[Any] = []
        self._marks: list[int] = []
        self._memo: dict[int, Any] = {}
        self._kept = 0
        self._index = 0
        self._op_offset = r.offset
        self._str_source: dict[int, str] = {}  # id(str value) -> how it was made (evidence)
        self._frame_kinds: set[str] = set()
        self._frame_past_eof = False
        self._frame_base = r.base
        self._data_at = -1  # where the last build hook's data began
        gc_was_on = gc.isenabled()
        gc.disable()  # a symbolic tree is millions of young objects: collections only cost time here
        try:
            self._loop(r, res)
        except VMStop as stop:
            res.anomalies.append(
                Anomaly(stop.rule, stop.message, self._op_offset, self._index, stop.evidence)
            )
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            # the stream under the pickle broke (bad compressed data, I/O error)
            res.anomalies.append(
                Anomaly("archive/malformed", f"cannot read the stream: {exc}", self._op_offset, self._index)
            )
        except (MemoryError, RecursionError) as exc:
            res.anomalies.append(
                Anomaly(
                    "pickle/limit-exceeded",
                    f"{type(exc).__name__} while decoding",
                    self._op_offset,
                    self._index,
                )
            )
        finally:
            if gc_was_on:
                gc.enable()
        res.end = r.offset
        res.opcodes = self._index
        return res

    def _loop(self, r: Reader, res: PickleResult) -> None:
        lim = self.limits
        stack, marks, memo = self._stack, self._marks, self._memo
        max_end = r.pos + lim.max_bytes
        read_fh = r.fh  # whose `read` is bound below
        read, table = read_fh.read, _DISPATCH
        str_source = self._str_source
        index = self._index
        frame_end = _NO_FRAME  # r.pos where the open protocol-4 frame ends
        # `_TRY` opcodes that read are decoded inline only from a plain seekable Reader (which
        # can rewind a read for the handler); the C-file model's readers always use the handlers
        fast = type(r) is Reader and r._seekable
        size = r.size if r.size is not None else 0
        keep_str, keep_total, max_line = lim.keep_str, lim.keep_total, lim.max_line
        fast_ops, try_ops = _FAST, _TRY
        # protocol-0 lines are decoded inline from a buffering stream's look-ahead (a file, a member)
        peek = read_fh.peek if fast and isinstance(read_fh, io.BufferedReader) else None
        base = r.base
        pos = rp = r.pos  # where the current opcode starts; where decoding stands (r.pos, kept local)
        check_at = index  # next opcode index at which the bounds are checked
        # self._index / self._op_offset (what anomalies, globals and calls record) are only
        # written before a handler runs and when the loop ends: the inline opcodes skip the stores
        try:
            while True:
                if index >= check_at:  # the bounds, every 4096 opcodes or when one can be reached
                    depth = len(stack)
                    r.pos = rp
                    self._check_bounds(r, index, depth, max_end)
                    check_at = index + min(4096, lim.max_opcodes - index, lim.max_stack - depth + 1)
                    if r.fh is not read_fh:  # a non-seekable peek swapped the stream
                        read_fh = r.fh
                        read = read_fh.read
                if rp >= frame_end:  # the frame is used up (or the last opcode ran past its end)
                    self._index, self._op_offset = index, base + pos
                    frame_end = self._frame_closed(rp, frame_end)
                pos = rp
                code = read(1)
                if not code:
                    raise VMStop("pickle/truncated", "stream ends without STOP")
                rp = pos + 1
                c = code[0]
                index += 1
                if c in fast_ops:
                    if c == 0x68 or c == 0x71:  # BINGET / BINPUT
                        arg = read(1)
                        if not arg:
                            raise VMStop("pickle/truncated", f"stream ends inside {OPCODES[c]}")
                        rp += 1
                        key = arg[0]
                        if c == 0x68:
                            if key not in memo:
                                raise VMStop(
                                    "pickle/malformed",
                                    f"BINGET of memo key {key} that was never stored",
                                    key=key,
                                )
                            value = memo[key]
                            if type(value) is str and id(value) not in str_source:
                                str_source[id(value)] = "memo"
                            stack.append(value)
                            continue
                    elif c == 0x94:  # MEMOIZE
                        key = len(memo)
                    else:
                        if c == 0x28:  # MARK
                            if len(marks) >= lim.max_marks:
                                self._push_mark(marks, len(stack))  # raises the limit
                            marks.append(len(stack))
                        elif c == 0x7D:  # EMPTY_DICT
                            stack.append(SymDict())
                        elif c == 0x5D:  # EMPTY_LIST
                            stack.append([])
                        elif c == 0x29:  # EMPTY_TUPLE
                            stack.append(())
                        elif c == 0x4E:  # NONE
                            stack.append(None)
                        elif c == 0x4B:  # BININT1
                            arg = read(1)
                            if not arg:
                                raise VMStop("pickle/truncated", "stream ends inside BININT1")
                            rp += 1
                            stack.append(arg[0])
                        continue
                    # BINPUT / MEMOIZE store the top of the stack
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise VMStop("pickle/malformed", "stack underflow")
                    if key not in memo and len(memo) >= lim.max_memo:
                        raise VMStop(
                            "pickle/limit-exceeded",
                            f"memo larger than {lim.max_memo}",
                            limit=lim.max_memo,
                            limit_name="max_memo",
                        )
                    memo[key] = stack[-1]
                    continue
                if c in try_ops:
                    got = 0  # bytes an inline decoding read before it handed over to the handler
                    if c == 0x8C or c == 0x58:  # SHORT_BINUNICODE / BINUNICODE
                        nl = 1 if c == 0x8C else 4
                        p = rp
                        if fast and nl <= size - p:
                            raw = read(nl)
                            got = len(raw)
                            if got == nl:
                                n = raw[0] if nl == 1 else int.from_bytes(raw, "little")
                                if n <= size - p - nl and n <= keep_str and self._kept + n <= keep_total:
                                    # past here the payload is read: its anomalies are raised here, as
                                    # `_sized` words them, rather than read again by the handler
                                    data = read(n)
                                    rp = p + nl + len(data)
                                    if len(data) < n:
                                        raise VMStop("pickle/truncated", f"stream ends inside {OPCODES[c]} "
                                                     f"({len(data)} of {n} bytes)", declared=n, got=len(data))
                                    try:
                                        stack.append(data.decode("utf-8", "surrogatepass"))
                                    except UnicodeDecodeError:
                                        raise VMStop("pickle/malformed",
                                                     f"undecodable {OPCODES[c]}: {data[:40]!r}") from None
                                    self._kept += n
                                    continue
                    elif c == 0x73:  # SETITEM onto a dict
                        if len(stack) - (marks[-1] if marks else 0) >= 3 and type(stack[-3]) is SymDict:
                            v = stack.pop()
                            k = stack.pop()
                            stack[-1].items.append((k, v))
                            continue
                    elif c == 0x75:  # SETITEMS onto a dict
                        if marks:
                            i = marks[-1]
                            if (len(stack) - i) % 2 == 0 and i > (marks[-2] if len(marks) > 1 else 0) \
                                    and type(stack[i - 1]) is SymDict:
                                marks.pop()
                                items = stack[i:]
                                del stack[i:]
                                stack[-1].items.extend(zip(items[::2], items[1::2], strict=True))
                                continue
                    elif c in b"rMJG":  # LONG_BINPUT, BININT2, BININT, BINFLOAT
                        nl = 2 if c == 0x4D else 8 if c == 0x47 else 4
                        p = rp
                        if fast and nl <= size - p:
                            raw = read(nl)
                            got = len(raw)
                            if got == nl:
                                if c == 0x72:  # as `_put` words its anomalies (never read twice)
                                    key = int.from_bytes(raw, "little")
                                    rp = p + nl
                                    if key not in memo and len(memo) >= lim.max_memo:
                                        raise VMStop("pickle/limit-exceeded",
                                                     f"memo larger than {lim.max_memo}",
                                                     limit=lim.max_memo, limit_name="max_memo")
                                    if len(stack) <= (marks[-1] if marks else 0):
                                        raise VMStop("pickle/malformed", "stack underflow")
                                    memo[key] = stack[-1]
                                    continue
                                else:
                                    stack.append(_BINFLOAT(raw)[0] if c == 0x47 else
                                                 int.from_bytes(raw, "little", signed=c == 0x4A))
                                    rp = p + nl
                                    continue
                    elif c == 0x88 or c == 0x89:  # NEWTRUE / NEWFALSE
                        stack.append(c == 0x88)
                        continue
                    elif c == 0x85 or c == 0x86 or c == 0x87:  # TUPLE1 / TUPLE2 / TUPLE3
                        n = c - 0x84
                        if len(stack) - (marks[-1] if marks else 0) >= n:
                            items = stack[-n:]
                            del stack[-n:]
                            stack.append(tuple(items))
                            continue
                    elif c == 0x61:  # APPEND onto a list
                        if len(stack) - (marks[-1] if marks else 0) >= 2 and type(stack[-2]) is list:
                            v = stack.pop()
                            stack[-1].append(v)
                            continue
                    elif c == 0x64:  # DICT of the items above the mark
                        if marks and (len(stack) - marks[-1]) % 2 == 0:
                            m = marks.pop()
                            items = stack[m:]
                            del stack[m:]
                            stack.append(SymDict(list(zip(items[::2], items[1::2], strict=True))))
                            continue
                    elif peek is not None:  # GET / PUT / INT / UNICODE / FLOAT: a line (protocol 0)
                        # looked at in the stream's buffer, consumed only when it decodes: a line the
                        # handler has to judge is never read twice
                        head = peek(max_line + 1)
                        j = head.find(b"\n", 0, max_line + 1)
                        if j >= 0:
                            text = head[:j]
                            try:
                                if c == 0x56:
                                    value = text.decode("raw-unicode-escape")
                                elif c == 0x46:
                                    value = float(text)
                                elif c == 0x49 and (text == b"00" or text == b"01"):
                                    value = text == b"01"
                                elif c == 0x49 and not text.startswith(b"0"):
                                    value = int(text, 0)
                                else:
                                    value = int(text)
                            except (UnicodeDecodeError, ValueError):
                                value = None
                            done = False
                            if value is not None:
                                if c == 0x56 or c == 0x46 or c == 0x49:
                                    if c == 0x56:
                                        escaped = b"\\" in text
                                        str_source[id(value)] = "escaped-unicode" if escaped else "unicode"
                                    stack.append(value)
                                    done = True
                                elif c == 0x67:
                                    if value in memo:
                                        v = memo[value]
                                        if type(v) is str and id(v) not in str_source:
                                            str_source[id(v)] = "memo"
                                        stack.append(v)
                                        done = True
                                elif value >= 0 and (value in memo or len(memo) < lim.max_memo) \
                                        and len(stack) > (marks[-1] if marks else 0):
                                    memo[value] = stack[-1]
                                    done = True
                            if done:
                                read(j + 1)
                                rp += j + 1
                                continue
                    if got:
                        read_fh.seek(-got, 1)  # the handler decodes it again and reports the anomaly
                self._index, self._op_offset = index, base + pos
                r.pos, rp = rp, -1  # the handler reads through the Reader
                handler = table[c]
                if handler is not None:
                    handler(self, r, stack)
                elif c == _STOP:
                    res.value = self._pop()
                    res.complete = True
                    if frame_end != _NO_FRAME:
                        self._frame_at_stop(r.pos, frame_end)
                    return
                elif c == _FRAME:
                    frame_end = self._frame(r, res, frame_end)
                else:
                    raise VMStop("pickle/malformed", f"unknown opcode 0x{c:02x}", opcode=f"0x{c:02x}")
                rp = r.pos
        finally:
            if rp >= 0:
                r.pos = rp
            self._index, self._op_offset = index, base + pos

    def _check_bounds(self, r: Reader, index: int, depth: int, max_end: int) -> None:
        # the stack grows by at most one an opcode, so checking it when the limit can next be
        # reached is exact
        lim = self.limits
        if index >= lim.max_opcodes:
            raise VMStop(
                "pickle/limit-exceeded",
                f"more than {lim.max_opcodes} opcodes",
                limit=lim.max_opcodes,
                limit_name="max_opcodes",
            )
        if depth > lim.max_stack:
            raise VMStop(
                "pickle/limit-exceeded",
                f"stack deeper than {lim.max_stack}",
                limit=lim.max_stack,
                limit_name="max_stack",
            )
        if r.pos > max_end:
            raise VMStop(
                "pickle/limit-exceeded",
                f"pickle spans more than {lim.max_bytes} bytes",
                limit=lim.max_bytes,
                limit_name="max_bytes",
            )
        if self.budget is not None:
            self.budget.tick("decoding pickle")

    # -- framing (protocol 4+) -------------------------------------------------------------------
    # Frames only announce how many bytes follow: the C unpickler (pickle.load) reads ahead that
    # many bytes and then decodes the bytes linearly, ignoring frame ends; the pure-Python one
    # (pickle._Unpickler, which joblib uses) rejects an opcode that straddles a frame end or a
    # FRAME inside an unfinished frame, but runs a frame that extends past the end of the file.
    # So the VM decodes linearly (the union of what either executes) and reports any frame that a
    # real pickler would not write as pickle/frame-anomaly (once per kind and pickle).
    def _frame(self, r: Reader, res: PickleResult, frame_end: int) -> int:
        (n,) = struct.unpack("<Q", r.read(8, "FRAME"))
        here = r.pos
        if frame_end != _NO_FRAME and here - 9 < frame_end:
            self._frame_anomaly(
                "nested", f"FRAME inside a frame with {frame_end - here + 9} bytes still unread",
                frame_left=frame_end - here + 9,
            )
        if res.protocol < 4:
            self._frame_anomaly(
                "protocol", f"FRAME in a protocol-{res.protocol} pickle", protocol=res.protocol
            )
        left = r.remaining()
        if left is not None and n > left:
            self._frame_past_eof = True
            self._frame_anomaly(
                "past-end", f"FRAME declares {n} bytes but only {left} remain", declared=n, remaining=left
            )
        r.load_frame(n)
        return here + n

    def _frame_closed(self, pos: int, frame_end: int) -> int:
        # joblib ends the frame after an array wrapper's BUILD and writes the array bytes outside
        # any frame: data a build hook read from the frame's end on is not a straddling opcode
        if pos > frame_end and self._data_at < frame_end:
            self._frame_anomaly(
                "straddle",
                f"an opcode runs {pos - frame_end} bytes past the end of its frame",
                frame_end=self._frame_base + frame_end,
            )
        return _NO_FRAME

    def _frame_at_stop(self, pos: int, frame_end: int) -> None:
        if pos < frame_end and not self._frame_past_eof:
            self._frame_anomaly(
                "unread", f"STOP with {frame_end - pos} bytes of its frame unread", frame_left=frame_end - pos
            )

    def _frame_anomaly(self, kind: str, message: str, **evidence: Any) -> None:
        if kind in self._frame_kinds:
            return
        self._frame_kinds.add(kind)
        self._res.anomalies.append(
            Anomaly("pickle/frame-anomaly", message, self._op_offset, self._index, {"kind": kind, **evidence})
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _pop(self) -> Any:
        floor = self._marks[-1] if self._marks else 0
        if len(self._stack) <= floor:
            raise VMStop("pickle/malformed", "stack underflow")
        return self._stack.pop()

    def _top(self) -> Any:
        floor = self._marks[-1] if self._marks else 0
        if len(self._stack) <= floor:
            raise VMStop("pickle/malformed", "stack underflow")
        return self._stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self._marks:
            raise VMStop("pickle/malformed", "no MARK on the stack")
        i = self._marks.pop()
        items = self._stack[i:]
        del self._stack[i:]
        return items

    def _int_line(self, r: Reader, what: str) -> int:
        line = r.readline(self.limits.max_line, what)
        try:
            return int(line)
        except ValueError:
            raise VMStop("pickle/malformed", f"bad integer in {what}: {line[:40]!r}") from None

    def _text(self, raw: bytes, what: str, codec: str = "utf-8") -> str:
        try:
            # as the unpickler does: lone surrogates are legal in pickled str
            return raw.decode(codec, "surrogatepass") if codec == "utf-8" else raw.decode(codec)
        except UnicodeDecodeError:
            raise VMStop("pickle/malformed", f"undecodable {what}: {raw[:40]!r}") from None

    def _push_mark(self, marks: list[int], depth: int) -> None:
        if len(marks) >= self.limits.max_marks:
            raise VMStop("pickle/limit-exceeded", f"more than {self.limits.max_marks} nested MARKs",
                         limit=self.limits.max_marks, limit_name="max_marks")
        marks.append(depth)

    def _sized(self, r: Reader, name: str) -> Any:
        nlen, fmt, kind = _SIZED[name]
        (n,) = struct.unpack(fmt, r.read(nlen, name))
        if kind != "bytes":
            r.align(n)
        at = r.offset
        if n > self.limits.keep_str or self._kept + n > self.limits.keep_total:
            r.skip(n, name)
            return Blob(kind, n, at)
        raw = r.read_into(n, name)
        self._kept += n
        if kind == "bytes":
            return raw
        value = self._text(raw, name, "utf-8" if kind == "str" else "latin-1")
        if kind == "str8":
            self._str_source[id(value)] = "binstring"
        return value

    def _global(self, module: Any, name: Any, opcode: str, sources: tuple[str, ...] = ()) -> Global:
        res = self._res
        if not (isinstance(module, str) and isinstance(name, str)):
            res.anomalies.append(
                Anomaly(
                    "pickle/non-string-global",
                    f"{opcode} with non-string module/name ({type(module).__name__}, {type(name).__name__})",
                    self._op_offset,
                    self._index,
                    {"module": _describe(module), "name": _describe(name)},
                )
            )
            module, name = _describe(module), _describe(name)
        if len(res.globals) >= self.limits.max_globals:
            raise VMStop(
                "pickle/limit-exceeded",
                f"more than {self.limits.max_globals} globals",
                limit=self.limits.max_globals,
                limit_name="max_globals",
            )
        module, name = _dotted(module, name)
        g = Global(module, name, self._index, self._op_offset, opcode, sources=sources)
        res.globals.append(g)
        return g

    def _call(self, func: Any, args: Any, kind: str, kwargs: Any = None) -> Call:
        func = _module_class(func)
        if isinstance(func, Global):
            func.uses.add("called")
        elif not isinstance(func, Ext):  # an EXT code is already reported as such
            self._res.anomalies.append(
                Anomaly(
                    "pickle/indirect-call",
                    f"{kind.upper()} calls a value that is not a named global ({_describe(func)})",
                    self._op_offset,
                    self._index,
                    {"callee": _describe(func)},
                )
            )
        call = Call(func, args, kind, self._index, self._op_offset, kwargs=kwargs)
        if len(self._res.calls) >= self.limits.max_calls:
            raise VMStop(
                "pickle/limit-exceeded",
                f"more than {self.limits.max_calls} calls",
                limit=self.limits.max_calls,
                limit_name="max_calls",
            )
        self._res.calls.append(call)
        return call

    def _mutate(self, target: Any, how: str) -> bool:
        """True when `target` is something a real unpickler could mutate symbolically."""
        if isinstance(target, Global):
            target.uses.add("mutated")
            self._res.anomalies.append(
                Anomaly(
                    "pickle/global-mutation",
                    f"{how} modifies the global {target.qualname} itself",
                    self._op_offset,
                    self._index,
                    {"global": target.qualname, "via": how},
                )
            )
            return False
        return True

    # -- the opcodes: one handler per opcode, `HANDLERS` maps opcode names to them ----------------
    def _op_proto(self, r: Reader, stack: list[Any]) -> None:
        (proto,) = r.read(1, "PROTO")
        if proto > 5:
            raise VMStop("pickle/malformed", f"unsupported protocol {proto}", protocol=proto)
        self._res.protocol = proto

    def _op_binint(self, r: Reader, stack: list[Any]) -> None:
        stack.append(struct.unpack("<i", r.read(4, "BININT"))[0])

    def _op_binint2(self, r: Reader, stack: list[Any]) -> None:
        stack.append(struct.unpack("<H", r.read(2, "BININT2"))[0])

    def _op_int(self, r: Reader, stack: list[Any]) -> None:
        line = r.readline(self.limits.max_line, "INT")
        if line in (b"00", b"01"):
            stack.append(line == b"01")
            return
        try:
            stack.append(int(line, 0) if not line.startswith(b"0") else int(line))
        except ValueError:
            raise VMStop("pickle/malformed", f"bad INT {line[:40]!r}") from None

    def _op_long(self, r: Reader, stack: list[Any]) -> None:
        line = r.readline(self.limits.max_line, "LONG").rstrip(b"L")
        try:
            stack.append(int(line))
        except ValueError:
            raise VMStop("pickle/malformed", f"bad LONG {line[:40]!r}") from None

    def _op_long1(self, r: Reader, stack: list[Any]) -> None:
        self._long(r, stack, r.read(1, "LONG1")[0], "LONG1")

    def _op_long4(self, r: Reader, stack: list[Any]) -> None:
        self._long(r, stack, struct.unpack("<i", r.read(4, "LONG4"))[0], "LONG4")

    def _op_float(self, r: Reader, stack: list[Any]) -> None:
        line = r.readline(self.limits.max_line, "FLOAT")
        try:
            stack.append(float(line))
        except ValueError:
            raise VMStop("pickle/malformed", f"bad FLOAT {line[:40]!r}") from None

    def _op_binfloat(self, r: Reader, stack: list[Any]) -> None:
        stack.append(struct.unpack(">d", r.read(8, "BINFLOAT"))[0])

    def _op_newtrue(self, r: Reader, stack: list[Any]) -> None:
        stack.append(True)

    def _op_newfalse(self, r: Reader, stack: list[Any]) -> None:
        stack.append(False)

    def _op_string(self, r: Reader, stack: list[Any]) -> None:
        line = r.readline(self.limits.max_line, "STRING")
        if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
            raise VMStop("pickle/malformed", "STRING argument is not quoted")
        try:
            raw = string_escape_decode(line[1:-1])
        except ValueError:
            raise VMStop("pickle/malformed", "bad escape in STRING") from None
        value = raw.decode("latin-1")
        self._str_source[id(value)] = "escaped-string" if b"\\" in line else "string"
        stack.append(value)

    def _op_unicode(self, r: Reader, stack: list[Any]) -> None:
        line = r.readline(self.limits.max_line, "UNICODE")
        value = self._text(line, "UNICODE", "raw-unicode-escape")
        self._str_source[id(value)] = "escaped-unicode" if b"\\" in line else "unicode"
        stack.append(value)

    def _op_append(self, r: Reader, stack: list[Any]) -> None:
        v = self._pop()
        self._extend(self._top(), [v], "APPEND")

    def _op_appends(self, r: Reader, stack: list[Any]) -> None:
        items = self._pop_mark()
        self._extend(self._top(), items, "APPENDS")

    def _op_list(self, r: Reader, stack: list[Any]) -> None:
        stack.append(self._pop_mark())

    def _op_tuple(self, r: Reader, stack: list[Any]) -> None:
        stack.append(tuple(self._pop_mark()))

    def _op_tuple1(self, r: Reader, stack: list[Any]) -> None:
        stack.append((self._pop(),))

    def _op_tuple2(self, r: Reader, stack: list[Any]) -> None:
        b = self._pop()
        stack.append((self._pop(), b))

    def _op_tuple3(self, r: Reader, stack: list[Any]) -> None:
        c = self._pop()
        b = self._pop()
        stack.append((self._pop(), b, c))

    def _op_dict(self, r: Reader, stack: list[Any]) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise VMStop("pickle/malformed", "DICT with an odd number of items")
        stack.append(SymDict(list(zip(items[::2], items[1::2], strict=True))))

    def _op_setitem(self, r: Reader, stack: list[Any]) -> None:
        v = self._pop()
        k = self._pop()
        self._setitems(self._top(), [(k, v)], "SETITEM")

    def _op_setitems(self, r: Reader, stack: list[Any]) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise VMStop("pickle/malformed", "SETITEMS with an odd number of items")
        self._setitems(self._top(), list(zip(items[::2], items[1::2], strict=True)), "SETITEMS")

    def _op_empty_set(self, r: Reader, stack: list[Any]) -> None:
        stack.append(SymSet())

    def _op_additems(self, r: Reader, stack: list[Any]) -> None:
        items = self._pop_mark()
        target = self._top()
        if isinstance(target, SymSet) and not target.frozen:
            target.items.extend(items)
        elif isinstance(target, Call):
            target.appends.extend(items)
        elif self._mutate(target, "ADDITEMS"):
            raise VMStop("pickle/malformed", f"ADDITEMS on {_describe(target)}")

    def _op_frozenset(self, r: Reader, stack: list[Any]) -> None:
        stack.append(SymSet(self._pop_mark(), frozen=True))

    def _op_pop(self, r: Reader, stack: list[Any]) -> None:
        marks = self._marks
        if marks and len(stack) == marks[-1]:
            marks.pop()  # the unpickler pops the mark when the current frame is empty
        else:
            self._pop()

    def _op_pop_mark(self, r: Reader, stack: list[Any]) -> None:
        self._pop_mark()

    def _op_dup(self, r: Reader, stack: list[Any]) -> None:
        stack.append(self._top())

    def _op_get(self, r: Reader, stack: list[Any]) -> None:
        self._get(stack, self._int_line(r, "GET"), "GET")

    def _op_long_binget(self, r: Reader, stack: list[Any]) -> None:
        self._get(stack, struct.unpack("<I", r.read(4, "LONG_BINGET"))[0], "LONG_BINGET")

    def _op_put(self, r: Reader, stack: list[Any]) -> None:
        self._put(self._int_line(r, "PUT"))

    def _op_long_binput(self, r: Reader, stack: list[Any]) -> None:
        self._put(struct.unpack("<I", r.read(4, "LONG_BINPUT"))[0])

    def _op_global(self, r: Reader, stack: list[Any]) -> None:
        max_line = self.limits.max_line
        module = self._text(r.readline(max_line, "GLOBAL module"), "GLOBAL module")
        qual = self._text(r.readline(max_line, "GLOBAL name"), "GLOBAL name")
        stack.append(self._global(module, qual, "GLOBAL"))

    def _op_stack_global(self, r: Reader, stack: list[Any]) -> None:
        qual = self._pop()
        module = self._pop()
        sources = tuple(self._str_source.get(id(v), "literal") for v in (module, qual) if isinstance(v, str))
        stack.append(self._global(module, qual, "STACK_GLOBAL", sources))

    def _op_inst(self, r: Reader, stack: list[Any]) -> None:
        max_line = self.limits.max_line
        module = self._text(r.readline(max_line, "INST module"), "INST module")
        qual = self._text(r.readline(max_line, "INST name"), "INST name")
        args = tuple(self._pop_mark())
        stack.append(self._call(self._global(module, qual, "INST"), args, "inst"))

    def _op_obj(self, r: Reader, stack: list[Any]) -> None:
        items = self._pop_mark()
        if not items:
            raise VMStop("pickle/malformed", "OBJ without a class")
        stack.append(self._call(items[0], tuple(items[1:]), "obj"))

    def _op_reduce(self, r: Reader, stack: list[Any]) -> None:
        args = self._pop()
        func = self._pop()
        stack.append(self._call(func, args, "reduce"))

    def _op_newobj(self, r: Reader, stack: list[Any]) -> None:
        args = self._pop()
        cls = self._pop()
        stack.append(self._call(cls, args, "newobj"))

    def _op_newobj_ex(self, r: Reader, stack: list[Any]) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        stack.append(self._call(cls, args, "newobj_ex", kwargs))

    def _op_build(self, r: Reader, stack: list[Any]) -> None:
        state = self._pop()
        obj = self._top()
        if isinstance(obj, Call):
            obj.state = state
            if self.build_hook is not None:
                before = r.pos
                replacement = self.build_hook(obj, r)
                if r.pos != before:  # the hook read data that follows BUILD (joblib arrays)
                    self._data_at = before
                if replacement is not None:
                    stack[-1] = replacement
        elif self._mutate(obj, "BUILD"):
            raise VMStop("pickle/malformed", f"BUILD on {_describe(obj)}")

    def _op_ext1(self, r: Reader, stack: list[Any]) -> None:
        self._ext(stack, r.read(1, "EXT1")[0], "EXT1")

    def _op_ext2(self, r: Reader, stack: list[Any]) -> None:
        self._ext(stack, struct.unpack("<H", r.read(2, "EXT2"))[0], "EXT2")

    def _op_ext4(self, r: Reader, stack: list[Any]) -> None:
        self._ext(stack, struct.unpack("<i", r.read(4, "EXT4"))[0], "EXT4")

    def _op_persid(self, r: Reader, stack: list[Any]) -> None:
        self._persid(self._text(r.readline(self.limits.max_line, "PERSID"), "PERSID", "ascii"))

    def _op_binpersid(self, r: Reader, stack: list[Any]) -> None:
        self._persid(self._pop())

    def _op_next_buffer(self, r: Reader, stack: list[Any]) -> None:
        self._res.anomalies.append(
            Anomaly(
                "pickle/out-of-band-buffer",
                "NEXT_BUFFER needs out-of-band buffers the loader supplies",
                self._op_offset,
                self._index,
            )
        )
        stack.append(Blob("buffer", 0, r.offset))

    def _op_readonly_buffer(self, r: Reader, stack: list[Any]) -> None:
        self._top()

    def _long(self, r: Reader, stack: list[Any], n: int, name: str) -> None:
        if n > self.limits.keep_str:
            r.align(n)
            at = r.offset
            r.skip(n, name)
            stack.append(Blob("long", n, at))
        else:
            stack.append(int.from_bytes(r.read(n, name), "little", signed=True))

    def _get(self, stack: list[Any], key: int, name: str) -> None:
        memo = self._memo
        if key not in memo:
            raise VMStop("pickle/malformed", f"{name} of memo key {key} that was never stored", key=key)
        value = memo[key]
        if isinstance(value, str) and id(value) not in self._str_source:
            self._str_source[id(value)] = "memo"
        stack.append(value)

    def _put(self, key: int) -> None:
        memo = self._memo
        if key < 0:
            raise VMStop("pickle/malformed", f"negative memo key {key}")
        max_memo = self.limits.max_memo
        if key not in memo and len(memo) >= max_memo:
            raise VMStop(
                "pickle/limit-exceeded", f"memo larger than {max_memo}", limit=max_memo, limit_name="max_memo"
            )
        memo[key] = self._top()

    def _ext(self, stack: list[Any], code: int, name: str) -> None:
        self._res.anomalies.append(
            Anomaly(
                "pickle/unknown-extension",
                f"{name} code {code}: resolved through copyreg's extension registry at load time, "
                "which hides the imported name",
                self._op_offset,
                self._index,
                {"code": code},
            )
        )
        stack.append(Ext(code))

    def _persid(self, pid: Any) -> None:
        self._res.persistent_ids += 1
        if len(self._res.pids) < 1_000_000:
            self._res.pids.append(pid)
        self._stack.append(PersistentRef(pid))

    def _extend(self, target: Any, items: list[Any], how: str) -> None:
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, Call):
            target.appends.extend(items)
        elif self._mutate(target, how):
            raise VMStop("pickle/malformed", f"{how} on {_describe(target)}")

    def _setitems(self, target: Any, pairs: list[tuple[Any, Any]], how: str) -> None:
        if isinstance(target, SymDict | Call):
            target.items.extend(pairs)
        elif self._mutate(target, how):
            raise VMStop("pickle/malformed", f"{how} on {_describe(target)}")


Handler = Callable[[PickleVM, Reader, list[Any]], None]


def _sized_handler(name: str) -> Handler:
    def handler(vm: PickleVM, r: Reader, stack: list[Any]) -> None:
        stack.append(vm._sized(r, name))

    return handler


_BINFLOAT = struct.Struct(">d").unpack


# opcode name -> handler, checked against the standard library's opcode list: an opcode that a
# new protocol adds, or one left out here, fails at import rather than decoding as "unknown".
HANDLERS: dict[str, Handler] = {
    op.name: _sized_handler(op.name) if op.name in _SIZED else getattr(PickleVM, f"_op_{op.name.lower()}")
    for op in pickletools.opcodes
    if op.name not in _INLINE
}
_missing = {op.name for op in pickletools.opcodes if op.proto <= 5} - HANDLERS.keys() - _INLINE
if _missing or set(OPCODES[c] for c in _FAST) | {"STOP", "FRAME"} != _INLINE:
    raise ImportError(f"pickle VM: opcodes without a handler: {sorted(_missing)}")
# opcode byte -> handler (None: decoded inline by the loop, or not an opcode)
_DISPATCH: list[Handler | None] = [None] * 256
for _code, _name in OPCODES.items():
    _DISPATCH[_code] = HANDLERS.get(_name)


def _describe(value: Any) -> str:
    if isinstance(value, Global):
        return value.qualname
    if isinstance(value, Call):
        return f"result of calling {_describe(value.func)}"
    if isinstance(value, str):
        return value if len(value) < 200 else value[:200] + "..."
    return type(value).__name__


def scan_stream(r: Reader, vm: PickleVM, max_pickles: int = 64) -> tuple[list[PickleResult], Anomaly | None]:
    """Every pickle in the stream, one after another (pickle.load reads only the first, but code
    that loads repeatedly - torch's legacy format, joblib, a crafted loader - reads the rest).

    Returns the pickles and, when bytes follow the last one that do not parse as a pickle, a
    ``pickle/trailing-data`` anomaly.
    """
    results: list[PickleResult] = []
    while True:
        res = vm.run_one(r)
        if any(a.rule == "pickle/frame-anomaly" and a.evidence["kind"] in _DIVERGENT for a in res.anomalies):
            _c_file_pass(r, vm, res)
        if results and not res.complete and not res.globals:
            # what follows the last good pickle is not a (complete) pickle: data hidden behind it
            trailing = Anomaly(
                "pickle/trailing-data",
                "bytes after the end of the pickle do not parse as another pickle",
                res.start,
                0,
                {"parse_error": res.anomalies[0].message if res.anomalies else ""},
            )
            return results, trailing
        results.append(res)
        if not res.complete or r.remaining() == 0 or not r.peek1():
            return results, None
        if len(results) >= max_pickles:
            return results, Anomaly(
                "pickle/limit-exceeded",
                f"more than {max_pickles} pickles in one stream",
                r.offset,
                0,
                {"limit": max_pickles, "limit_name": "max_pickles"},
            )


_DIVERGENT = ("straddle", "nested")  # frame lies after which the C unpickler reads other opcodes
MAX_C_FILE_PASS = 64 << 20  # bytes re-read for the second decoding


def _c_file_pass(r: Reader, vm: PickleVM, res: PickleResult) -> None:
    """Decode the pickle again as the C unpickler reading a file does (CFileReader) and add the
    globals and calls only that reading reaches, with an anomaly naming them. Needs a seekable
    stream (a file, a stored zip member); other streams keep the linear reading and its anomaly."""
    start = res.start - r.base
    if not r._seekable or r.size is None or r.size - start > MAX_C_FILE_PASS:
        return
    back = r.pos - start
    try:
        r.fh.seek(-back, 1)
        data = r.fh.read(r.size - start)
        r.fh.seek(back - len(data), 1)  # back to where the linear reading stopped
    except (OSError, ValueError):
        return
    other = PickleVM(vm.limits, vm.budget).run_one(CFileReader(data, base=res.start))
    seen = {g.qualname for g in res.globals}
    extra = [g for g in other.globals if g.qualname not in seen]
    if not extra:
        return
    extra_ids = {id(g) for g in extra}
    res.globals.extend(extra)
    res.calls.extend(c for c in other.calls if id(c.func) in extra_ids)
    names = sorted({g.qualname for g in extra})
    res.anomalies.append(
        Anomaly(
            "pickle/frame-anomaly",
            "the C unpickler reading this from a file decodes other opcodes past the lying frame "
            f"and imports {', '.join(names[:10])}",
            extra[0].offset,
            extra[0].index,
            {"kind": "divergent", "globals": names[:100]},
        )
    )
