"""`hfguard audit-identities MODEL --identities DIR`: does a CLIP model name these people from
their images (identity inference, IDIA)? Opt-in; see hfguard.behavior.idia."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from hfguard.commands.common import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, progress_printer


@click.command("audit-identities")
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--identities", required=True, type=click.Path(exists=True, file_okay=False),
              help="A folder with one sub-folder of images per person, named by the person's name.")
@click.option("--names", "names_file", type=click.Path(exists=True, dir_okay=False),
              help="Distractor names, one per line (more candidates make chance lower).")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="A person is inferred when their name wins on more than this share of their images.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def audit_identities(model: str, identities: str, names_file: str | None, threshold: float, device: str,
                     fmt: str, quiet: bool) -> None:
    """Does a CLIP model name these people from their images (identity inference)?

    Exit 1 when the model names at least one person far above chance, 0 when none, 2 on error."""
    from hfguard.behavior import idia
    from hfguard.behavior.clip_membership import image_norm, load_clip
    from hfguard.behavior.load import BehaviorUnavailable, describe, pick_device, require_deps

    progress = progress_printer(quiet)
    try:
        require_deps()
        people = idia.read_identities(Path(identities))
        md = describe(Path(model))
        if md.kind not in ("clip", "open_clip"):
            raise idia.AuditError(f"{model} is a {md.kind} model; identity inference needs a CLIP model")
        dev = pick_device(device)
        progress(f"audit-identities: loading {model} on {dev}")
        clip, tok = load_clip(md, dev)
        size = (clip.visual.image_size if hasattr(clip, "visual") and not hasattr(clip, "config")
                else clip.config.vision_config.image_size)
        size = int(size[0] if isinstance(size, tuple | list) else size)
        images = {name: idia.load_images(paths, size, image_norm(md.root)) for name, paths in people.items()}
        extra = Path(names_file).read_text(encoding="utf-8").splitlines() if names_file else []
        names = list(dict.fromkeys([*people, *(n.strip() for n in extra if n.strip())]))
        results = idia.audit(clip, tok, images, names, threshold=threshold, progress=progress)
    except (idia.AuditError, BehaviorUnavailable, OSError, ValueError) as exc:
        click.echo(f"hfguard: audit-identities: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    inferred = [r for r in results if r.inferred]
    if fmt == "json":
        click.echo(json.dumps({"model": model, "candidates": len(names), "threshold": threshold,
                               "identities": [{**r.__dict__, "rate": r.rate} for r in results]}, indent=2))
    else:
        click.echo(f"hfguard audit-identities {model}: {len(inferred)} of {len(results)} people named from "
                   f"their images (chance {1 / len(names):.1%}, {len(names)} candidate names)")
        for r in sorted(results, key=lambda r: -r.rate):
            mark = "INFERRED" if r.inferred else "        "
            name = repr(r.name)[1:-1]   # a folder name is data: control characters shown escaped
            click.echo(f"  {mark} {name:30} {r.correct:4}/{r.images:<4} {r.rate:6.1%}  "
                       f"baseline {r.baseline:.1%}  p={r.p_value:.2g}")
    sys.exit(EXIT_FAIL if inferred else EXIT_PASS)
