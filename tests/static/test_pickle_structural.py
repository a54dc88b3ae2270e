"""Each structural rule of signatures/pickle_globals.yaml, provoked by a crafted file; and the
time budget: a scan that runs out of time is an ERROR, never a PASS."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

from hfguard import signatures
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy, policy_from_mapping
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target
from testing import pickles as fx


def _with_gap(zip_bytes: bytes, before: bytes, gap: bytes) -> bytes:
    """Insert `gap` before the local header of member `before`; fix the directory's offsets."""
    z = zipfile.ZipFile(io.BytesIO(zip_bytes))
    at = z.getinfo(before.decode()).header_offset
    data = bytearray(zip_bytes[:at] + gap + zip_bytes[at:])
    eocd = data.rindex(b"PK\x05\x06")
    cd_offset = struct.unpack("<I", data[eocd + 16 : eocd + 20])[0] + len(gap)
    data[eocd + 16 : eocd + 20] = struct.pack("<I", cd_offset)
    pos = cd_offset
    while data[pos : pos + 4] == b"PK\x01\x02":
        nlen, elen, clen = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        (hoff,) = struct.unpack("<I", data[pos + 42 : pos + 46])
        if hoff >= at:
            data[pos + 42 : pos + 46] = struct.pack("<I", hoff + len(gap))
        pos += 46 + nlen + elen + clen
    return bytes(data)


def _set_method(zip_bytes: bytes, method: int) -> bytes:
    data = bytearray(zip_bytes)
    for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        i = data.find(sig)
        while i >= 0:
            data[i + at : i + at + 2] = struct.pack("<H", method)
            i = data.find(sig, i + 4)
    return bytes(data)


def _bad_offset(zip_bytes: bytes) -> bytes:
    data = bytearray(zip_bytes)
    i = data.find(b"PK\x01\x02")
    data[i + 42 : i + 46] = struct.pack("<I", 0x7FFFFFF0)
    return bytes(data)


def _legacy_cut() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(64)}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()[:-100]


two = [
    ("archive/a.pkl", pickle.dumps({"a": 1}, protocol=2)),
    ("archive/b.pkl", pickle.dumps([2], protocol=2)),
]
CASES = {
    "pickle/out-of-band-buffer": (lambda: b"\x80\x05\x97\x98.", None),
    "pickle/multiple-pickles": (lambda: pickle.dumps(1, protocol=2) + pickle.dumps(2, protocol=2), None),
    "archive/too-many-members": (lambda: fx.zip_with(two), {"max-members": 1}),
    "archive/unsupported-compression": (lambda: _set_method(fx.zip_with(two), 99), None),
    "zip/out-of-bounds": (lambda: _bad_offset(fx.zip_with(two)), None),
    "zip/unlisted-data": (lambda: _with_gap(fx.zip_with(two), b"archive/b.pkl", b"\x00" * 100), None),
    "torch/legacy-layout": (_legacy_cut, None),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_structural_rule(tmp_path, rule):
    build, thresholds = CASES[rule]
    path = tmp_path / "f.bin"
    path.write_bytes(build())
    policy = (
        policy_from_mapping({"thresholds": {"static.serialization": thresholds}}) if thresholds else Policy()
    )
    report = scan(local_target([str(path)]), policy, [SerializationCheck()])
    found = [f for f in report.all_findings() if f.rule == rule]
    assert found, [f.to_dict() for f in report.all_findings()]
    expected = Severity.parse(signatures.load("pickle_globals")["structural"][rule]["severity"])
    assert found[0].severity is expected
    assert (report.verdict is Verdict.PASS) == (expected < Severity.MEDIUM)


def test_every_structural_rule_has_a_test():
    rules = set(signatures.load("pickle_globals")["structural"])
    text = "".join(p.read_text() for p in Path(__file__).parent.glob("test_pickle_*.py"))
    assert {r for r in rules if f'"{r}"' not in text} == set()


def test_running_out_of_time_is_an_error_not_a_pass(tmp_path):
    path = tmp_path / "slow.pkl"
    path.write_bytes(pickle.dumps(list(range(200_000)), protocol=4))
    report = scan(local_target([str(path)]), Policy(), [SerializationCheck()], budget_seconds=0.0)
    [f] = report.all_findings()
    assert f.rule == "check/timeout" and f.error and report.verdict is Verdict.ERROR


def test_mutated_containers_never_crash_the_check(mark):
    """Deterministic mutation fuzzing: every container, bytes flipped, cut and inserted. Whatever
    comes out, the check returns findings (never raises); no payload runs."""
    import random

    from hfguard.sniff import sniff
    from hfguard.static.pickle.check import scan_stream_findings

    torch = pytest.importorskip("torch")
    seeds = [
        fx.evil_pickle(mark, 4),
        fx.inst_payload(mark),
        fx.torch_zip_bytes({"w": torch.ones(3), "n": {"b": torch.zeros(2, dtype=torch.bfloat16)}}),
        fx.legacy_torch(fx.evil_pickle(mark, 2)),
        fx.old_torch_tar(),
        fx.npy_object([1, "x"]),
        fx.compress("gzip", fx.evil_pickle(mark, 4)),
        fx.zip_with([("a.npy", fx.npy_object([1]))], zipfile.ZIP_DEFLATED),
    ]
    rng = random.Random(20261123)
    check = SerializationCheck()
    for _ in range(400):
        d = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(d) + 1)
            r = rng.random()
            if r < 0.5 and i < len(d):
                d[i] = rng.randrange(256)
            elif r < 0.7:
                del d[i : i + rng.randint(1, 40)]
            elif r < 0.9:
                d[i:i] = rng.randbytes(rng.randint(1, 16))
            else:
                d = d[:i]
        data = bytes(d)
        findings = scan_stream_findings(
            check, io.BytesIO(data), len(data), sniff(data[:600], "", len(data)), "f"
        )
        assert all(f.rule and f.severity is not None for f in findings)


def _claims(tmp_path: Path, files: dict[str, bytes]) -> dict[str, str]:
    """file name -> the format-mismatch message the provenance check gives it ("" for none)."""
    from hfguard.static.provenance import ProvenanceCheck

    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    report = scan(local_target([str(tmp_path)]), Policy(), [ProvenanceCheck()])
    mismatches = [f for f in report.all_findings() if f.rule == "provenance/format-mismatch"]
    found = {Path(f.file).name: f.message for f in mismatches}
    return {name: found.get(name, "") for name in files}


def test_model_extension_with_other_content_is_a_format_mismatch(tmp_path):
    text = b"this is not a model, just a README that was renamed\n"
    claims = _claims(
        tmp_path,
        {
            "pytorch_model.bin": text,
            "model.pt": text,
            "weights.pth": b'{"not": "a checkpoint"}',
            "last.ckpt": text,
            "clf.pkl": text,
            "model.joblib": text,
            "gguf.pt": b"GGUF\x03\x00\x00\x00" + bytes(64),
        },
    )
    assert all("but the content is" in m for m in claims.values()), claims
    assert "content is gguf" in claims["gguf.pt"]


def test_model_extensions_with_their_own_formats_are_not_mismatches(tmp_path):
    torch = pytest.importorskip("torch")
    legacy = io.BytesIO()
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    claims = _claims(
        tmp_path,
        {
            "pytorch_model.bin": fx.torch_zip_bytes({"w": torch.ones(2)}),
            "legacy.pt": legacy.getvalue(),
            "proto0.pkl": pickle.dumps({"a": [1, 2], "b": "text"}, protocol=0),  # printable: a text pickle
            "proto4.pickle": pickle.dumps({"a": 1}, protocol=4),
            "model.joblib": fx.compress("zlib", pickle.dumps({"a": 1})),  # compressed joblib
            "weights.bin": bytes(range(256)) * 4,  # .bin is generic: ONNX external data, OpenVINO ...
        },
    )
    assert not any(claims.values()), claims


def test_quiet_text_path_reports_pickles_that_only_a_limit_stopped(tmp_path):
    """pickle.load has no MARK, opcode or line limit: a protocol-0 payload behind 20,000 MARKs or
    behind a 70 KiB STRING argument runs. A file that looks like text must not PASS for it; text
    and a binary header read as a line opcode still do."""
    import pickle
    import subprocess
    import sys

    payload = b"cos\nsystem\n(S'echo x'\ntR."
    cases = {"marks.txt": b"(" * 20_000 + payload,
             "long_string.txt": b"S'" + b"a" * 70_000 + b"'\np0\n0" + payload,
             "long_unicode.txt": b"V" + b"x" * 70_000 + b"\np0\n0" + payload}
    for name, data in cases.items():
        # the same streams with a harmless tail load in CPython: the payload would be reached
        assert pickle.loads(data.replace(payload, b"N.")) is None
        (tmp_path / name).write_bytes(data)
    benign = {"prose.txt": b"Plain text " * 10_000 + b"\n",
              "put_header.dat": b"p" + b"{\"__metadata__\": {}}" * 4000}
    for name, data in benign.items():
        (tmp_path / name).write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "hfguard", "scan", str(tmp_path), "--format", "json", "-q"],
                         capture_output=True, text=True)
    import json

    doc = json.loads(out.stdout)
    verdicts = {fr["path"].rsplit("/", 1)[1]: fr["verdict"] for fr in doc["files"]}
    assert all(verdicts[n] == "BLOCK" for n in cases), verdicts
    assert all(verdicts[n] == "PASS" for n in benign), verdicts
