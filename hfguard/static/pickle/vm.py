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
import lzma
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from hfguard.budget import Budget
from hfguard.static.pickle.peek import Prefixed, is_seekable


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


# opcode byte -> name (protocols 0-5)
OPCODES: dict[int, str] = {
    ord(k): v
    for k, v in {
        "(": "MARK",
        ".": "STOP",
        "0": "POP",
        "1": "POP_MARK",
        "2": "DUP",
        "F": "FLOAT",
        "I": "INT",
        "J": "BININT",
        "K": "BININT1",
        "L": "LONG",
        "M": "BININT2",
        "N": "NONE",
        "P": "PERSID",
        "Q": "BINPERSID",
        "R": "REDUCE",
        "S": "STRING",
        "T": "BINSTRING",
        "U": "SHORT_BINSTRING",
        "V": "UNICODE",
        "X": "BINUNICODE",
        "a": "APPEND",
        "b": "BUILD",
        "c": "GLOBAL",
        "d": "DICT",
        "}": "EMPTY_DICT",
        "e": "APPENDS",
        "g": "GET",
        "h": "BINGET",
        "i": "INST",
        "j": "LONG_BINGET",
        "l": "LIST",
        "]": "EMPTY_LIST",
        "o": "OBJ",
        "p": "PUT",
        "q": "BINPUT",
        "r": "LONG_BINPUT",
        "s": "SETITEM",
        "t": "TUPLE",
        ")": "EMPTY_TUPLE",
        "u": "SETITEMS",
        "G": "BINFLOAT",
        "\x80": "PROTO",
        "\x81": "NEWOBJ",
        "\x82": "EXT1",
        "\x83": "EXT2",
        "\x84": "EXT4",
        "\x85": "TUPLE1",
        "\x86": "TUPLE2",
        "\x87": "TUPLE3",
        "\x88": "NEWTRUE",
        "\x89": "NEWFALSE",
        "\x8a": "LONG1",
        "\x8b": "LONG4",
        "B": "BINBYTES",
        "C": "SHORT_BINBYTES",
        "\x8c": "SHORT_BINUNICODE",
        "\x8d": "BINUNICODE8",
        "\x8e": "BINBYTES8",
        "\x8f": "EMPTY_SET",
        "\x90": "ADDITEMS",
        "\x91": "FROZENSET",
        "\x92": "NEWOBJ_EX",
        "\x93": "STACK_GLOBAL",
        "\x94": "MEMOIZE",
        "\x95": "FRAME",
        "\x96": "BYTEARRAY8",
        "\x97": "NEXT_BUFFER",
        "\x98": "READONLY_BUFFER",
    }.items()
}

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

# opcodes decoded inline by the main loop: BINGET BINPUT MEMOIZE MARK EMPTY_DICT EMPTY_LIST
# EMPTY_TUPLE NONE BININT1
_FAST = frozenset(b"hq\x94(}])NK")

BuildHook = Callable[[Any, "Reader"], Any]


class Reader:
    """Reads the stream, keeps the absolute offset, and refuses lengths the bytes left can't hold."""

    def __init__(
        self, fh: BinaryIO, base: int = 0, size: int | None = None, budget: Budget | None = None
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
        self.fh = Prefixed(b, fh)  # type: ignore[assignment]

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

    def readline(self, limit: int, what: str) -> bytes:
        line = self.fh.readline(limit + 1)
        self.pos += len(line)
        if not line.endswith(b"\n"):
            if len(line) > limit:
                raise VMStop("pickle/limit-exceeded", f"{what} line longer than {limit} bytes", limit=limit)
            raise VMStop("pickle/truncated", f"stream ends inside {what} line")
        return line[:-1]


def _dotted(module: str, name: str) -> tuple[str, str]:
    """Python 2 names that the unpickler maps to Python 3 (``__builtin__.eval`` -> builtins.eval)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


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
        max_opcodes, max_stack, max_end = lim.max_opcodes, lim.max_stack, r.pos + lim.max_bytes
        read, opcodes, sized, op = r.fh.read, OPCODES, _SIZED, self._op
        str_source = self._str_source
        index = self._index
        while True:
            if index >= max_opcodes:
                raise VMStop(
                    "pickle/limit-exceeded",
                    f"more than {max_opcodes} opcodes",
                    limit=max_opcodes,
                    limit_name="max_opcodes",
                )
            if index & 0xFFF == 0:  # the costlier bounds, every 4096 opcodes
                if r.pos > max_end:
                    raise VMStop(
                        "pickle/limit-exceeded",
                        f"pickle spans more than {lim.max_bytes} bytes",
                        limit=lim.max_bytes,
                        limit_name="max_bytes",
                    )
                if self.budget is not None:
                    self.budget.tick("decoding pickle")
                if r.fh is not read.__self__:  # a non-seekable peek swapped the stream
                    read = r.fh.read
            self._op_offset = r.base + r.pos
            code = read(1)
            if not code:
                raise VMStop("pickle/truncated", "stream ends without STOP")
            r.pos += 1
            name = opcodes.get(code[0])
            if name is None:
                raise VMStop("pickle/malformed", f"unknown opcode 0x{code[0]:02x}", opcode=f"0x{code[0]:02x}")
            index += 1
            self._index = index
            if len(stack) > max_stack:
                raise VMStop(
                    "pickle/limit-exceeded",
                    f"stack deeper than {max_stack}",
                    limit=max_stack,
                    limit_name="max_stack",
                )
            c = code[0]
            if c in _FAST:  # the opcodes real pickles are made of, without a call
                floor = marks[-1] if marks else 0
                if c == 0x68 or c == 0x71:  # BINGET / BINPUT
                    arg = read(1)
                    if not arg:
                        raise VMStop("pickle/truncated", f"stream ends inside {name}")
                    r.pos += 1
                    key = arg[0]
                    if c == 0x68:
                        if key not in memo:
                            raise VMStop(
                                "pickle/malformed", f"BINGET of memo key {key} that was never stored", key=key
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
                        self._push_mark(marks, len(stack))
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
                        r.pos += 1
                        stack.append(arg[0])
                    continue
                # BINPUT / MEMOIZE store the top of the stack
                if len(stack) <= floor:
                    raise VMStop("pickle/malformed", "stack underflow")
                if key not in memo and len(memo) >= lim.max_memo:
                    raise VMStop(
                        "pickle/limit-exceeded",
                        f"memo larger than {lim.max_memo}",
                        limit=lim.max_memo,
                        limit_name="max_memo",
                    )
                memo[key] = stack[-1]
            elif name in sized:
                stack.append(self._sized(r, name))
            elif name == "STOP":
                res.value = self._pop()
                res.complete = True
                return
            else:
                op(name, r, res, stack, marks, memo)

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
        at = r.offset
        if n > self.limits.keep_str or self._kept + n > self.limits.keep_total:
            r.skip(n, name)
            return Blob(kind, n, at)
        raw = r.read(n, name)
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

    # -- the opcodes -------------------------------------------------------------------------------
    def _op(
        self,
        name: str,
        r: Reader,
        res: PickleResult,
        stack: list[Any],
        marks: list[int],
        memo: dict[int, Any],
    ) -> None:
        # _loop handles _FAST and _SIZED opcodes and STOP itself; everything else comes here
        lim = self.limits
        push = stack.append
        if name == "PROTO":
            (proto,) = r.read(1, "PROTO")
            if proto > 5:
                raise VMStop("pickle/malformed", f"unsupported protocol {proto}", protocol=proto)
            res.protocol = proto
        elif name == "FRAME":
            (n,) = struct.unpack("<Q", r.read(8, "FRAME"))
            r._check(n, "FRAME")   # a frame longer than the bytes left is a truncation
        elif name in ("BININT", "BININT2"):
            n, fmt = {"BININT": (4, "<i"), "BININT2": (2, "<H")}[name]
            push(struct.unpack(fmt, r.read(n, name))[0])
        elif name == "INT":
            line = r.readline(lim.max_line, "INT")
            if line in (b"00", b"01"):
                push(line == b"01")
            else:
                try:
                    push(int(line, 0) if not line.startswith(b"0") else int(line))
                except ValueError:
                    raise VMStop("pickle/malformed", f"bad INT {line[:40]!r}") from None
        elif name == "LONG":
            line = r.readline(lim.max_line, "LONG").rstrip(b"L")
            try:
                push(int(line))
            except ValueError:
                raise VMStop("pickle/malformed", f"bad LONG {line[:40]!r}") from None
        elif name in ("LONG1", "LONG4"):
            nlen, fmt = (1, "<B") if name == "LONG1" else (4, "<i")
            (n,) = struct.unpack(fmt, r.read(nlen, name))
            if n > lim.keep_str:
                at = r.offset
                r.skip(n, name)
                push(Blob("long", n, at))
            else:
                push(int.from_bytes(r.read(n, name), "little", signed=True))
        elif name == "FLOAT":
            line = r.readline(lim.max_line, "FLOAT")
            try:
                push(float(line))
            except ValueError:
                raise VMStop("pickle/malformed", f"bad FLOAT {line[:40]!r}") from None
        elif name == "BINFLOAT":
            push(struct.unpack(">d", r.read(8, name))[0])
        elif name in ("NEWTRUE", "NEWFALSE"):
            push(name == "NEWTRUE")
        elif name == "STRING":
            line = r.readline(lim.max_line, "STRING")
            if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
                raise VMStop("pickle/malformed", "STRING argument is not quoted")
            try:
                raw = codecs.escape_decode(line[1:-1])[0]
            except ValueError:
                raise VMStop("pickle/malformed", "bad escape in STRING") from None
            value = raw.decode("latin-1")
            self._str_source[id(value)] = "escaped-string" if b"\\" in line else "string"
            push(value)
        elif name == "UNICODE":
            line = r.readline(lim.max_line, "UNICODE")
            value = self._text(line, "UNICODE", "raw-unicode-escape")
            self._str_source[id(value)] = "escaped-unicode" if b"\\" in line else "unicode"
            push(value)
        elif name == "APPEND":
            v = self._pop()
            self._extend(self._top(), [v], name)
        elif name == "APPENDS":
            items = self._pop_mark()
            self._extend(self._top(), items, name)
        elif name == "LIST":
            push(self._pop_mark())
        elif name == "TUPLE":
            push(tuple(self._pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [self._pop() for _ in range(n)]
            push(tuple(reversed(items)))
        elif name == "DICT":
            items = self._pop_mark()
            if len(items) % 2:
                raise VMStop("pickle/malformed", "DICT with an odd number of items")
            push(SymDict(list(zip(items[::2], items[1::2], strict=True))))
        elif name == "SETITEM":
            v = self._pop()
            k = self._pop()
            self._setitems(self._top(), [(k, v)], name)
        elif name == "SETITEMS":
            items = self._pop_mark()
            if len(items) % 2:
                raise VMStop("pickle/malformed", "SETITEMS with an odd number of items")
            self._setitems(self._top(), list(zip(items[::2], items[1::2], strict=True)), name)
        elif name == "EMPTY_SET":
            push(SymSet())
        elif name == "ADDITEMS":
            items = self._pop_mark()
            target = self._top()
            if isinstance(target, SymSet) and not target.frozen:
                target.items.extend(items)
            elif isinstance(target, Call):
                target.appends.extend(items)
            elif self._mutate(target, "ADDITEMS"):
                raise VMStop("pickle/malformed", f"ADDITEMS on {_describe(target)}")
        elif name == "FROZENSET":
            push(SymSet(self._pop_mark(), frozen=True))
        elif name == "POP":
            if marks and len(stack) == marks[-1]:
                marks.pop()  # the unpickler pops the mark when the current frame is empty
            else:
                self._pop()
        elif name == "POP_MARK":
            self._pop_mark()
        elif name == "DUP":
            push(self._top())
        elif name in ("GET", "LONG_BINGET"):
            key = self._int_line(r, "GET") if name == "GET" else struct.unpack("<I", r.read(4, name))[0]
            if key not in memo:
                raise VMStop("pickle/malformed", f"{name} of memo key {key} that was never stored", key=key)
            value = memo[key]
            if isinstance(value, str) and id(value) not in self._str_source:
                self._str_source[id(value)] = "memo"
            push(value)
        elif name in ("PUT", "LONG_BINPUT"):
            key = self._int_line(r, "PUT") if name == "PUT" else struct.unpack("<I", r.read(4, name))[0]
            if key < 0:
                raise VMStop("pickle/malformed", f"negative memo key {key}")
            if key not in memo and len(memo) >= lim.max_memo:
                raise VMStop(
                    "pickle/limit-exceeded",
                    f"memo larger than {lim.max_memo}",
                    limit=lim.max_memo,
                    limit_name="max_memo",
                )
            memo[key] = self._top()
        elif name == "GLOBAL":
            module = self._text(r.readline(lim.max_line, "GLOBAL module"), "GLOBAL module")
            qual = self._text(r.readline(lim.max_line, "GLOBAL name"), "GLOBAL name")
            push(self._global(module, qual, name))
        elif name == "STACK_GLOBAL":
            qual = self._pop()
            module = self._pop()
            sources = tuple(
                self._str_source.get(id(v), "literal") for v in (module, qual) if isinstance(v, str)
            )
            push(self._global(module, qual, name, sources))
        elif name == "INST":
            module = self._text(r.readline(lim.max_line, "INST module"), "INST module")
            qual = self._text(r.readline(lim.max_line, "INST name"), "INST name")
            args = tuple(self._pop_mark())
            push(self._call(self._global(module, qual, name), args, "inst"))
        elif name == "OBJ":
            items = self._pop_mark()
            if not items:
                raise VMStop("pickle/malformed", "OBJ without a class")
            push(self._call(items[0], tuple(items[1:]), "obj"))
        elif name == "REDUCE":
            args = self._pop()
            func = self._pop()
            push(self._call(func, args, "reduce"))
        elif name == "NEWOBJ":
            args = self._pop()
            cls = self._pop()
            push(self._call(cls, args, "newobj"))
        elif name == "NEWOBJ_EX":
            kwargs = self._pop()
            args = self._pop()
            cls = self._pop()
            push(self._call(cls, args, "newobj_ex", kwargs))
        elif name == "BUILD":
            state = self._pop()
            obj = self._top()
            if isinstance(obj, Call):
                obj.state = state
                if self.build_hook is not None:
                    replacement = self.build_hook(obj, r)
                    if replacement is not None:
                        stack[-1] = replacement
            elif self._mutate(obj, "BUILD"):
                raise VMStop("pickle/malformed", f"BUILD on {_describe(obj)}")
        elif name in ("EXT1", "EXT2", "EXT4"):
            n, fmt = {"EXT1": (1, "<B"), "EXT2": (2, "<H"), "EXT4": (4, "<i")}[name]
            (code,) = struct.unpack(fmt, r.read(n, name))
            res.anomalies.append(
                Anomaly(
                    "pickle/unknown-extension",
                    f"{name} code {code}: resolved through copyreg's extension registry at load time, "
                    "which hides the imported name",
                    self._op_offset,
                    self._index,
                    {"code": code},
                )
            )
            push(Ext(code))
        elif name == "PERSID":
            pid = self._text(r.readline(lim.max_line, "PERSID"), "PERSID", "ascii")
            self._persid(pid)
        elif name == "BINPERSID":
            self._persid(self._pop())
        elif name == "NEXT_BUFFER":
            res.anomalies.append(
                Anomaly(
                    "pickle/out-of-band-buffer",
                    "NEXT_BUFFER needs out-of-band buffers the loader supplies",
                    self._op_offset,
                    self._index,
                )
            )
            push(Blob("buffer", 0, r.offset))
        elif name == "READONLY_BUFFER":
            self._top()
        else:  # pragma: no cover - every name in OPCODES is handled above
            raise VMStop("pickle/malformed", f"unhandled opcode {name}")

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
