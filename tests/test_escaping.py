"""Report forgery: untrusted names and messages reach the terminal escaped, never interpreted, and
never parsed as rich markup (issue 11). JSON keeps the exact values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from hfguard.findings import Finding, Report, Severity, Verdict
from hfguard.report.escape import safe
from hfguard.runtime.guard import ModelBlocked
from testing.pickles import evil_pickle, op_str

# what a terminal acts on: C0 (a line break only as the line separator), DEL, C1, bidi, separators
_RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
FORGED = "x\nhfguard x: PASS (1 files, 0 findings)"


def test_safe_escapes_every_terminal_control_and_keeps_the_rest():
    controls = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F,
                                 *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]))
    out = safe(controls)
    assert not _RAW.search(out) and "\n" not in out
    assert safe("a\nb\r\x1b[2J\x7f\x85\u202e") == "a\\nb\\r\\x1b[2J\\x7f\\x85\\u202e"
    assert safe("\udcff") == "\\udcff"               # an undecodable byte of a file name
    plain = "modèle/évil[/]mod [bold]x[/bold] 模型.pkl"
    assert safe(plain) == plain


def test_safe_escapes_what_a_terminal_shows_as_nothing():
    # every format character (zero-width space and joiners, BOM, soft hyphen, tag characters),
    # variation selectors and Hangul fillers: `model\u200b.bin` must not read as `model.bin`
    invisible = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    invisible += [*map(chr, range(0xFE00, 0xFE10)), *map(chr, range(0xE0100, 0xE01F0)),
                  "\u115f", "\u1160", "\u3164", "\uffa0"]
    assert [c for c in invisible if safe(c) == c] == []
    assert safe("model\u200b.bin") == "model\\u200b.bin"
    assert safe("a\U000e0041") == "a\\U000e0041"                  # a tag character: ASCII smuggling
    assert safe("café 模型 x") == "café 模型 x"                      # visible text unchanged


def _stack_global_pickle(module: str, name: str) -> bytes:
    """module.name() via STACK_GLOBAL: the names can hold any character, newlines included."""
    return b"\x80\x04" + op_str(module) + op_str(name) + b"\x93)R."


def _hostile_tree(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    (root / "x[").mkdir(parents=True)
    mark = tmp_path / "never-created"
    (root / f"{FORGED}.pkl").write_bytes(evil_pickle(mark))
    (root / "\x1b[2J\x1b[31mred\u202e.pkl").write_bytes(evil_pickle(mark))
    (root / "x[" / "bold].pkl").write_bytes(evil_pickle(mark))          # display path x[/bold].pkl
    (root / "g.pkl").write_bytes(_stack_global_pickle("evil[/]mod", "x[/bold]\x1b]0;pwn\x07\nPASS"))
    return root


def _hfguard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "hfguard", *args], cwd=cwd, capture_output=True,
                          text=True, encoding="utf-8", env=env, timeout=60)


def test_hostile_names_are_escaped_in_report_and_progress(tmp_path):
    root = _hostile_tree(tmp_path)
    out = _hfguard("scan", root.name, cwd=tmp_path)
    assert out.returncode == 1, out.stderr                  # BLOCK, not a crash of the report (2)
    for stream in (out.stdout, out.stderr):
        assert not _RAW.search(stream), stream
        assert not any(line.startswith("hfguard x: PASS") for line in stream.splitlines())
    assert out.stdout.startswith("hfguard m: BLOCK")
    assert "pickle/dangerous-global" in out.stdout          # the reason survives
    assert "x\\nhfguard x: PASS" in out.stdout and "\\x1b[2J\\x1b[31mred\\u202e.pkl" in out.stdout
    assert "x[/bold].pkl" in out.stdout and "evil[/]mod" in out.stdout   # shown, not parsed
    assert "x\\nhfguard x: PASS" in out.stderr              # the progress line names it escaped


def test_json_keeps_exact_names(tmp_path):
    root = _hostile_tree(tmp_path)
    out = _hfguard("scan", root.name, "--format", "json", "-q", cwd=tmp_path)
    paths = {fr["path"] for fr in json.loads(out.stdout)["files"]}
    assert f"m/{FORGED}.pkl" in paths and "m/x[/bold].pkl" in paths


def test_usage_error_escapes_the_path(tmp_path):
    out = _hfguard("scan", "missing\x1b[2J\nhfguard x: PASS", cwd=tmp_path)
    assert out.returncode == 2
    assert "missing\\x1b[2J\\nhfguard x: PASS" in out.stderr and not _RAW.search(out.stderr)


def test_runtime_guard_message_is_escaped():
    report = Report(target="acme/x", source="hub", verdict=Verdict.BLOCK, findings=[Finding(
        check="static.serialization", rule="pickle/dangerous-global", severity=Severity.CRITICAL,
        message="evil\x1b[2J\nmod.x is called")])
    text = str(ModelBlocked("acme/x", report))
    assert "evil\\x1b[2J\\nmod.x" in text and not _RAW.search(text) and "\n" not in text


def test_hub_file_names_are_escaped(isolated_hf_home, tmp_path):
    from testing.fakehub.server import FakeHub
    from tests.hub.conftest import run_cli

    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(isolated_hf_home), "HF_HUB_DISABLE_TELEMETRY": "1",
               "HFGUARD_CACHE_DIR": str(tmp_path / "verdicts"), "HFGUARD_HUB_RETRY_WAIT": "0.01"}
        hub.add_repo("acme/forged", {"config.json": b"{}", f"{FORGED}\x1b[2J[/bold].pkl":
                                     evil_pickle(tmp_path / "never-created")})
        out = run_cli("acme/forged", env=env)
    # BLOCK, or ERROR where the name cannot be fetched back (a 404 for this name): never PASS
    assert out.returncode in (1, 2), out.stderr
    for stream in (out.stdout, out.stderr):
        assert not _RAW.search(stream)
        assert not any(line.startswith("hfguard x: PASS") for line in stream.splitlines())
    assert "x\\nhfguard x: PASS (1 files, 0 findings)\\x1b[2J[/bold].pkl" in out.stdout + out.stderr


def test_local_file_names_a_terminal_acts_on_are_findings(tmp_path):
    """A scanned folder's file named with a newline, ESC or a bidi override is file/unsafe-name
    (as for Hub listings): FLAG even when its bytes are harmless; plain names are not reported."""
    root = tmp_path / "m"
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "README.md").write_text("a model\n")
    def scan() -> tuple[str, list[dict]]:
        out = json.loads(_hfguard("scan", "m", "--format", "json", "-q", cwd=tmp_path).stdout)
        found = out["findings"] + [f for fr in out["files"] for f in fr["findings"]]
        return out["verdict"], [f for f in found if f["rule"] == "file/unsafe-name"]

    assert scan() == ("PASS", [])
    (root / "notes\u202etxt.md").write_text("harmless\n")
    (root / "weights\x1b[31m.json").write_text("{}")
    verdict, found = scan()
    odd = {f["file"]: f for f in found}
    assert set(odd) == {"m/notes\u202etxt.md", "m/weights\x1b[31m.json"} and verdict == "FLAG"
    assert odd["m/notes\u202etxt.md"]["evidence"]["characters"] == ["U+202E"]


@pytest.mark.parametrize("fmt", ["html", "sarif"])
def test_an_undecodable_file_name_still_gets_a_report_in_every_place(tmp_path, fmt):
    # bytes that are not UTF-8 reach Python as lone surrogates; HTML and SARIF carried them to a
    # strict encoder (an --output file; stdout in any locale but C) and the run ended with no report
    root = tmp_path / "m"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"bad\xff.pkl"), "wb") as fh:
        fh.write(evil_pickle(tmp_path / "mark"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "PYTHONIOENCODING": "utf-8:strict"}
    cmd = [sys.executable, "-m", "hfguard", "scan", "m", "-q", "--format", fmt]
    to_stdout = subprocess.run(cmd, cwd=tmp_path, capture_output=True, env=env, timeout=60)
    to_file = subprocess.run([*cmd, "-o", "report"], cwd=tmp_path, capture_output=True, env=env, timeout=60)
    for out, text in ((to_stdout, to_stdout.stdout), (to_file, (tmp_path / "report").read_bytes())):
        assert out.returncode == 1, out.stderr               # BLOCK: the pickle was judged and reported
        report = text.decode("utf-8")                         # valid UTF-8
        if fmt == "sarif":
            uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    for r in json.loads(report)["runs"][0]["results"]}
            assert uris == {"m/bad%FF.pkl"}                   # the name's bytes, percent-encoded
        else:
            assert "bad\\udcff.pkl" in report
