"""static.diffusers: diffusers `model_index.json` components and pipelines that need repository code.

Each component is `[library, class]`; `DiffusionPipeline.from_pretrained` imports `library` and
calls `class.from_pretrained`. Libraries other than diffusers/transformers (and diffusers' own
pipeline modules) are code: a `library.py` shipped in the repository (custom component, loaded with
trust_remote_code), or a third-party package. A `_class_name` given as `[module, class]` is a
custom pipeline file. The .py files themselves are analysed by static.custom_code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.problems import TooLarge, load_json_bounded
from hfguard.target import TargetFile

MAX_INDEX_BYTES = 1024 * 1024
_KNOWN = {"diffusers", "transformers", "onnxruntime", "onnxruntime.training", "optimum", "peft",
          "sentence_transformers", "open_clip", "timm", "torch"}
_DANGEROUS = {"os", "posix", "nt", "subprocess", "builtins", "sys", "importlib", "runpy", "pty", "code",
              "ctypes", "pickle", "marshal", "shutil", "socket"}
_PIPELINE_MODULE = re.compile(r"[a-z][a-z0-9_]*")   # diffusers.pipelines.<name> (stable_diffusion ...)


def index_problems(doc: Any, repo_files: set[str]) -> list[Observation]:
    if not isinstance(doc, dict):
        return [Observation("diffusers/bad-index", Severity.MEDIUM, "model_index.json is not an object")]
    out: list[Observation] = []
    cls = doc.get("_class_name")
    if isinstance(cls, list):
        out.append(Observation("diffusers/custom-pipeline", Severity.MEDIUM,
                               f"custom pipeline {cls!r}: loading runs the repository's pipeline code",
                               "_class_name", {"pipeline": [str(c) for c in cls[:2]]}))
    for key, val in doc.items():
        if key.startswith("_") or not isinstance(val, list) or len(val) != 2:
            continue
        library, name = val
        if library is None or not isinstance(library, str):
            continue
        root = library.split(".")[0]
        # diffusers takes a custom component from <component>/<library>.py (the component's own
        # folder, pipeline_utils._get_custom_components_and_folders); a custom pipeline from the root
        local = (f"{key}/{library}.py" in repo_files
                 or f"{library.replace('.', '/')}.py" in repo_files)
        if root in _DANGEROUS:
            out.append(Observation("diffusers/custom-component", Severity.HIGH,
                                   f"component {key} is loaded from {library}.{name}", key,
                                   {"library": library, "class": str(name)}))
        elif local or (library not in _KNOWN and not _PIPELINE_MODULE.fullmatch(library)):
            out.append(Observation("diffusers/custom-component", Severity.MEDIUM,
                                   f"component {key} is {library}.{name}, code "
                                   f"{'shipped in the repository' if local else 'from outside diffusers'}",
                                   key, {"library": library, "class": str(name), "in_repo": local}))
    return out


class DiffusersCheck(Check):
    id = "static.diffusers"
    tier = "static"
    version = "1"
    description = "diffusers model_index.json: components and pipelines that need code outside diffusers"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return file.name == "model_index.json"

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        base = file.path[: -len(file.name)]
        repo_files = {f.path[len(base):] for f in ctx.target.files if f.path.startswith(base)}
        try:
            problems = index_problems(load_json_bounded(file, MAX_INDEX_BYTES), repo_files)
        except (TooLarge, ValueError) as exc:
            problems = [Observation("diffusers/bad-index", Severity.MEDIUM,
                                    f"model_index.json not analysed: {str(exc)[:200]}")]
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Load without trust_remote_code / custom_pipeline, or "
                                                  "review the component code first.")
