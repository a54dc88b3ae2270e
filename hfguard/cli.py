"""The `hfguard` command group: it only wires the commands of hfguard.commands together."""

from __future__ import annotations

import importlib
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
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001
        echo_error(f"{type(exc).__name__}: {exc}")
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    run()
