"""File names a Hub listing may hold that no model needs (a newline, an escape sequence, a bidi
override): each is a file/unsafe-name finding, and the file is still vetted, requested under its
exact name (percent-encoded), by range reads and by a verified download."""

from __future__ import annotations

from click.testing import CliRunner

from testing.fakehub.builders import os_system_pickle
from tests.hub.conftest import run_check

NAMES = {"model\n.bin": "U+000A", "a\x1b[31m.pkl": "U+001B", "weights\u202egnp.pt": "U+202E"}


def _repo(hub) -> str:
    files = {name: os_system_pickle("echo pwned") for name in NAMES} | {"config.json": b"{}"}
    return hub.add_repo("acme/odd", files)


def _by_file(report: dict) -> dict[str, dict[str, dict]]:
    return {fr["path"]: {f["rule"]: f for f in fr["findings"]} for fr in report["files"]}


def test_control_characters_in_names_are_reported_and_the_files_still_vetted(hub):
    sha = _repo(hub)
    code, report, _ = run_check(f"acme/odd@{sha}", "-q")
    files = _by_file(report)
    for name, char in NAMES.items():
        found = files[name]
        assert "pickle/dangerous-global" in found, found     # read and scanned, not a 404 ERROR
        assert found["file/unsafe-name"]["evidence"] == {"name": name, "characters": [char]}
        assert any(r["path"].endswith(f"/resolve/{sha}/{name}") for r in hub.requests())
    assert "file/unsafe-name" not in files["config.json"]
    assert report["verdict"] == "BLOCK" and code == 1


def test_download_of_a_hostile_name_is_verified_and_the_text_report_escapes_it(hub):
    from hfguard.cli import main

    sha = _repo(hub)
    res = CliRunner().invoke(main, ["check", f"acme/odd@{sha}", "--download", "--no-cache", "-q"])
    assert res.exit_code == 1, res.output
    assert "hub/" not in res.output                  # every download found and verified
    assert "model\\n.bin" in res.output and "a\\x1b[31m.pkl" in res.output
    assert "\x1b" not in res.output and "\u202e" not in res.output and "model\n.bin" not in res.output


def test_a_dot_dot_name_is_read_as_itself_not_as_the_sibling_it_normalises_to(hub):
    """`sub/../model.bin` must not be fetched as `model.bin`: here that sibling is a benign pickle
    of the same size, which a normalised URL would have scanned in the hostile file's place."""
    import pickle

    evil = os_system_pickle("echo pwned")
    benign = next(b for k in range(len(evil)) if len(b := pickle.dumps("a" * k, protocol=2)) == len(evil))
    sha = hub.add_repo("acme/dots", {"sub/../model.bin": evil, "model.bin": benign, "config.json": b"{}"})
    code, report, _ = run_check(f"acme/dots@{sha}", "-q")
    files = _by_file(report)
    assert "pickle/dangerous-global" in files["sub/../model.bin"], files
    assert files["sub/../model.bin"]["file/unsafe-name"]["evidence"]["segments"] == [".."]
    assert not {"pickle/dangerous-global", "file/unsafe-name"} & set(files["model.bin"])
    assert report["verdict"] == "BLOCK" and code == 1
