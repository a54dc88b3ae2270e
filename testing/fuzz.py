"""The fuzzer shared by tests/test_fuzz.py (short profile, CI) and bench/fuzz.py (long profile):
hypothesis strategies that mutate a seed's bytes and its file name, and `run_one`, which scans the
result through the engine with the static tier (the CLI's path) and says what went wrong, if
anything. Mutations: bit flips, truncation, length/count fields overwritten with edge values,
spliced (repeated) regions, nesting in containers, names with control characters and markup.
"""

from __future__ import annotations

import gzip
import io
import re
import resource
import struct
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

from testing.fuzz_seeds import Seed

EDGE_VALUES = (0, 1, 7, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               1 << 40, (1 << 63) - 1, (1 << 64) - 1)
HOSTILE_NAMES = ("x\nhfguard x: PASS (1 files, 0 findings)", "\x1b[2J\x1b[31mred", "evil[/]mod",
                 "x[/bold]", "[bold red]fake[/]", "\u202eexe.txt", "del\x7f\x85c1", "tab\there", "plain")
MAX_PEAK_BYTES = 256 << 20   # a few-KB input must never raise the process' peak memory by more
BUDGET_SECONDS = 10.0        # the engine's per-check budget; hypothesis' deadline is the tighter bound
_RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """One mutation of `data`."""
    buf = bytearray(data)
    kind = draw(st.sampled_from(("flip", "truncate", "field", "splice", "nest")))
    if kind == "flip" and buf:
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del buf[draw(st.integers(0, max(0, len(buf) - 1))):]
    elif kind == "field" and buf:
        width = draw(st.sampled_from((1, 2, 4, 8)))
        pos = draw(st.integers(0, max(0, len(buf) - width)))
        value = draw(st.sampled_from(EDGE_VALUES)) & ((1 << (8 * width)) - 1)
        buf[pos:pos + width] = value.to_bytes(width, draw(st.sampled_from(("little", "big"))))
    elif kind == "splice" and buf:
        a = draw(st.integers(0, len(buf) - 1))
        b = draw(st.integers(a, min(len(buf), a + 256)))
        at = draw(st.integers(0, len(buf)))
        buf[at:at] = buf[a:b] * draw(st.integers(1, 50))
    elif kind == "nest":
        return nest(bytes(buf), draw(st.sampled_from(("gzip", "zip", "tar", "pickle-marks"))),
                    draw(st.integers(1, 3)))
    return bytes(buf)


def nest(data: bytes, how: str, depth: int) -> bytes:
    for _ in range(depth):
        if how == "gzip":
            data = gzip.compress(data)
        elif how == "zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("archive/data.pkl", data)
            data = buf.getvalue()
        elif how == "tar":
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tf:
                info = tarfile.TarInfo("data.pkl")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            data = buf.getvalue()
        else:   # deep pickle nesting: MARKs and empty lists before the real stream
            data = data[:2] + b"(]" * 5000 + data[2:] if data[:1] == b"\x80" else b"(" * 5000 + data
    return data


@st.composite
def mutated(draw: st.DrawFn, seed: Seed) -> tuple[bytes, str]:
    data = seed.data
    for _ in range(draw(st.integers(1, 3))):
        data = draw(mutation(data))
    return data, draw(st.sampled_from(HOSTILE_NAMES)) + seed.suffix


# Bugs the fuzzer found outside this area, each with its strict-xfail case in tests/test_fuzz.py
# (`deep_cases`); the CI property skips their inputs so that it keeps testing everything else.
@dataclass
class Outcome:
    verdict: str
    seconds: float
    peak_bytes: int
    problems: list[str] = field(default_factory=list)


def run_one(seed: Seed, data: bytes, name: str, folder: Path) -> Outcome:
    """Scan `data` saved as `folder/name` (static tier, engine path of the CLI), render the text
    report, and list every property it breaks."""
    from hfguard.checks import checks_for_tiers
    from hfguard.engine import scan
    from hfguard.findings import Verdict
    from hfguard.policy import Policy
    from hfguard.report.text import write_text
    from hfguard.target import local_target

    path = folder / name          # a "/" in a hostile name makes a folder: the display path keeps it
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    policy = Policy()
    rss_before = _max_rss()
    started = time.monotonic()
    try:
        report = scan(local_target([str(path)]), policy, checks_for_tiers(("static",)),
                      budget_seconds=BUDGET_SECONDS)
        out = io.StringIO()
        write_text(report, out, policy)
    finally:
        seconds = time.monotonic() - started
        path.unlink()
    # the process' high-water mark: it rises only when this example needed more than any before
    peak = _max_rss() - rss_before
    outcome = Outcome(str(report.verdict), seconds, peak)
    for f in report.all_findings():
        if f.rule in ("check/crashed", "check/out-of-memory"):
            outcome.problems.append(f"{f.rule}: {f.message}\n{f.evidence.get('traceback', '')}")
    if seed.malicious and report.verdict not in (Verdict.BLOCK, Verdict.ERROR) \
            and seed.payload_reachable is not None and seed.payload_reachable(data):
        outcome.problems.append(f"{report.verdict} on a mutated {seed.name} whose payload a loader "
                                f"still reaches: {sorted({f.rule for f in report.all_findings()})}")
    if _RAW.search(out.getvalue()):
        outcome.problems.append("raw control characters in the text report")
    if peak > MAX_PEAK_BYTES:
        outcome.problems.append(f"peak memory rose by {peak >> 20} MiB")
    return outcome


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux


# -- deep structures: each format's own way of nesting, far past any sane depth -----------------
def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def deep_gguf(depth: int) -> bytes:
    """One metadata value: an array of arrays of arrays ... `depth` deep (GGUF v3)."""
    key = b"deep.array"
    value = struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 4, 0)   # ARRAY of ..., then UINT32[0]
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<I", 9) + value)


def deep_onnx(depth: int) -> bytes:
    """If nodes whose then_branch graph holds another If node, `depth` deep (protobuf)."""
    graph = b""
    for _ in range(depth):
        attr = _field(1, b"then_branch") + _field(6, graph) + _varint(20 << 3) + _varint(5)
        graph = _field(1, _field(4, b"If") + _field(5, attr))
    return _varint(1 << 3) + _varint(8) + _field(7, graph)


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_cases(evil_pickle_bytes: bytes, evil_protocol0: bytes = b".") -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, file suffix)."""
    keras = io.BytesIO()
    with zipfile.ZipFile(keras, "w") as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", deep_json(100_000))
    header = ('{"a": ' + deep_json(100_000) + "}").encode()
    return {
        "pickle-marks": (nest(evil_pickle_bytes, "pickle-marks", 20), ".pkl"),
        # a protocol-0 pickle is text: 20,000 MARKs first, then the payload (pickle has no limit)
        "pickle0-marks": (b"(" * 20_000 + evil_protocol0, ".pkl"),
        "zip-in-zip": (nest(evil_pickle_bytes, "zip", 12), ".zip"),
        "gzip-in-gzip": (nest(evil_pickle_bytes, "gzip", 12), ".gz"),
        "tar-in-tar": (nest(evil_pickle_bytes, "tar", 12), ".tar"),
        "gguf-arrays": (deep_gguf(100_000), ".gguf"),
        "onnx-subgraphs": (deep_onnx(3000), ".onnx"),
        "keras-json": (keras.getvalue(), ".keras"),
        "safetensors-json": (struct.pack("<Q", len(header)) + header, ".safetensors"),
    }
