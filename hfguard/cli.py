"""The `hfguard` command group: it only wires the commands of hfguard.commands together."""

from __future__ import annotations

import sys

import click

from hfguard import __version__
from hfguard.commands import (
    audit_identities,
    check,
    checks,
    env,
    fleet,
    hook,
    install_hooks,
    lock,
    rules,
    scan,
    signatures,
)
from hfguard.commands.common import EXIT_ERROR


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hfguard")
def main() -> None:
    """Vet pre-trained models before anything loads them: PASS, FLAG or BLOCK — and why."""


for _command in (scan.scan, check.check, hook.hook, lock.lock, install_hooks.install_hooks,
                 checks.list_checks, env.env, rules.list_rules, fleet.fleet,
                 signatures.signatures, audit_identities.audit_identities):
    main.add_command(_command)

def run() -> None:
    """Console entry point: an unexpected failure is exit 2 with a message, never a pass."""
    try:
        main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001
        click.echo(f"hfguard: error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    run()
