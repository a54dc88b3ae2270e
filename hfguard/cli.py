"""The `hfguard` command group: it only wires the commands of hfguard.commands together."""

from __future__ import annotations

import atexit
import importlib
import os
import sys

import click

from hfguard import __version__
from hfguard.commands.common import EXIT_ERROR, echo_error

# command name -> "module:attribute" in hfguard.commands. A command's module is imported when that
# command runs (or `--help` lists them all): a scan does not pay for the imports of the others.
COMMANDS: dict[str, str] = {
    "scan": "scan:scan",
    "check": "check:check",
    "hook": "hook:hook",
    "lock": "lock:lock",
    "install-hooks": "install_hooks:install_hooks",
    "checks": "checks:list_checks",
    "env": "env:env",
    "rules": "rules:list_rules",
    "fleet": "fleet:fleet",
    "signatures": "signatures:signatures",
    "audit-identities": "audit_identities:audit_identities",
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[cmd_name].partition(":")
        return getattr(importlib.import_module(f"hfguard.commands.{module}"), attr)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hfguard")
def main() -> None:
    """Vet pre-trained models before anything loads them: PASS, FLAG or BLOCK — and why."""


def run() -> None:
    """Console entry point: an unexpected failure is exit 2 with a message, never a pass."""
    try:
        main(standalone_mode=True)
    except SystemExit as done:
        _exit_now(done.code)
        raise
    except Exception as exc:  # noqa: BLE001
        echo_error(f"{type(exc).__name__}: {exc}")
        sys.exit(EXIT_ERROR)


def _exit_now(code: object) -> None:
    """End the process without the interpreter's teardown (freeing every module and object: ~10%
    of a small scan's run), when nothing asked to run at exit: no atexit callback (logging,
    weakref finalizers, temporary folders, multiprocessing and Ray register one), no other
    thread. The report is written and the streams are flushed first; otherwise return."""
    threading = sys.modules.get("threading")   # (no thread was started if it was never imported)
    if not (code is None or isinstance(code, int)) or atexit._ncallbacks() \
            or (threading is not None and threading.active_count() > 1):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # a closed or broken stream: the ordinary exit reports it
    os._exit(code or 0)


if __name__ == "__main__":
    run()
