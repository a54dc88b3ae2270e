"""`hfguard signatures update|sign`: signed updates of the known-bad feed (see hfguard.feeds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hfguard.commands.common import EXIT_ERROR


@click.group("signatures")
def signatures() -> None:
    """Signed updates of the known-bad feed (repos and file hashes)."""


@signatures.command("update")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Trusted public key (PEM) of the feed's publisher; repeatable. Default: the policy's "
                   "trusted-signers keys.")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False))
def update(bundle: str, keys: tuple[str, ...], policy_path: str | None) -> None:
    """Verify BUNDLE offline and merge its known-bad entries into the installed feed."""
    from hfguard.feeds import FeedError, feed_dir, install, verify
    from hfguard.policy import PolicyError, load_policy

    pems = [Path(k).read_bytes() for k in keys]
    if not pems:
        try:
            policy = load_policy(Path(policy_path) if policy_path else None)
        except PolicyError as exc:
            raise click.UsageError(str(exc)) from None
        pems = [s.pem for s in policy.signing.trusted_signers if s.kind == "key"]
    try:
        doc, signer = verify(Path(bundle).read_bytes(), pems)
        added = install(doc, signer)
    except (FeedError, ImportError, ValueError) as exc:
        click.echo(f"hfguard: feed not installed: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"hfguard: feed signed by {signer} installed in {feed_dir()}: {added['repos']} new repos, "
               f"{added['files']} new file hashes")


@signatures.command("sign")
@click.argument("feed", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "private_key", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Private key (PEM, EC or Ed25519).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, writable=True))
def sign_feed(feed: str, private_key: str, output: str) -> None:
    """Sign FEED (YAML or JSON: repos / files entries with reason and source) into a bundle."""
    import yaml

    from hfguard.feeds import FeedError, sign

    try:
        doc = yaml.safe_load(Path(feed).read_text(encoding="utf-8"))
        envelope = sign(doc, Path(private_key).read_bytes())
    except (FeedError, yaml.YAMLError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    Path(output).write_text(json.dumps(envelope, indent=2) + "\n", encoding="utf-8")
    click.echo(f"hfguard: signed {feed} -> {output}")
