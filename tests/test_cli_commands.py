"""The command group imports a command's module only when that command runs (hfguard.cli.COMMANDS):
every name there must resolve to the command of that name, and a scan must not import the others."""

from __future__ import annotations

import subprocess
import sys

import click

from hfguard.cli import COMMANDS, main


def test_every_listed_command_resolves_to_a_command_of_that_name():
    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
    assert main.get_command(ctx, "no-such-command") is None


def test_a_scan_imports_only_its_own_command(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    code = ("import sys\nfrom hfguard.cli import main\n"
            "try:\n    main(['scan', '-q', sys.argv[1]])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('hfguard.commands.')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    assert "'hfguard.commands.scan'" in out and "'hfguard.commands.fleet'" not in out


def _cli(args: list[str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = (f"import sys\n{prelude}\nfrom hfguard.cli import run\n"
            "sys.argv = ['hfguard', *sys.argv[1:]]\nrun()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_the_process_ends_without_teardown_only_after_the_report_is_out(tmp_path):
    import json

    from testing.pickles import evil_pickle

    (tmp_path / "model.pkl").write_bytes(evil_pickle(tmp_path / "pwned"))
    out = _cli(["scan", "-q", "--format", "json", str(tmp_path)])
    assert out.returncode == 1 and json.loads(out.stdout)["verdict"] == "BLOCK"   # all of it, flushed
    report = tmp_path / "report.json"
    out = _cli(["scan", "-q", "--format", "json", "--fail-on", "never", "-o", str(report), str(tmp_path)])
    assert out.returncode == 0 and json.loads(report.read_text())["verdict"] == "BLOCK"
    assert _cli(["scan", "--no-such-option"]).returncode == 2
    # stdout that is not a terminal gets the report in one write: the same text as --output
    for fmt in ("text", "sarif"):
        piped = _cli(["scan", "-q", "--format", fmt, str(tmp_path / "model.pkl")]).stdout
        _cli(["scan", "-q", "--format", fmt, "-o", str(tmp_path / f"r.{fmt}"), str(tmp_path / "model.pkl")])
        assert piped == (tmp_path / f"r.{fmt}").read_text() and "model.pkl" in piped
    assert not (tmp_path / "pwned").exists()


def test_what_asked_to_run_at_exit_still_runs(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    prelude = "import atexit\natexit.register(lambda: print('atexit ran'))"
    out = _cli(["scan", "-q", "--format", "json", str(tmp_path)], prelude)
    assert out.returncode == 0 and out.stdout.rstrip().endswith("atexit ran")
