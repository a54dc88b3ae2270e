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
    code = ("import sys\nfrom hfguard.cli import run\nsys.argv = ['hfguard', 'scan', '-q', sys.argv[1]]\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('hfguard.commands.')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    assert "'hfguard.commands.scan'" in out and "'hfguard.commands.fleet'" not in out
