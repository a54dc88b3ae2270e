"""static.nemo: NeMo `.nemo` archives whose config instantiates arbitrary callables.

A `.nemo` file is a tar (sometimes gzipped) of `model_config.yaml`, `model_weights.ckpt` and
artifacts. NeMo's restore_from passes the config to `hydra.utils.instantiate`, which imports and
calls every `_target_` it names with the neighbouring keys as arguments: `_target_: os.system`
runs a command at load. Targets are judged against signatures/hydra.yaml. The checkpoint pickles
in the archive are judged by static.serialization (it opens tar members); this check reads only the
config. The YAML is parsed with the safe loader and walked without recursion.
"""

from __future__ import annotations

import fnmatch
import functools
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

from hfguard import signatures
from hfguard import sniff as fmts
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.hydra_interp import resolve
from hfguard.static.formats.nemo_io import io_json_problems, is_io_json
from hfguard.static.problems import TooLarge, lfs_pointer_problem, load_json_bounded, read_bounded
from hfguard.target import TargetFile

MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_NODES = 1_000_000
CONFIG_NAMES = ("model_config.yaml", "model_config.yml")


@functools.cache
def _rules() -> dict[str, Any]:
    return signatures.load("hydra")


def hydra_targets(doc: Any, budget: Budget | None = None) -> Iterator[tuple[str, Any]]:
    """(path, value) of every `_target_` key (see `hydra_nodes`)."""
    for path, value, _node, _keys in hydra_nodes(doc, budget):
        yield path, value


def hydra_nodes(doc: Any, budget: Budget | None = None
                ) -> Iterator[tuple[str, Any, dict[Any, Any], tuple[Any, ...]]]:
    """(path, target, the mapping holding it, its key path) of every `_target_` key. Iterative, and
    each shared node (a YAML alias) walked once, so deep nesting and alias bombs stay bounded."""
    stack: list[tuple[Any, str, tuple[Any, ...]]] = [(doc, "", ())]
    seen: set[int] = set()
    nodes = 0
    while stack:
        node, path, keys = stack.pop()
        if isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(f"config has more than {MAX_NODES} nodes")
        if budget is not None and nodes % 4096 == 0:
            budget.tick("walking a Hydra config")
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "_target_":
                    yield (f"{path}._target_" if path else "_target_"), v, node, keys
                else:
                    stack.append((v, f"{path}.{k}" if path else str(k), (*keys, k)))
        elif isinstance(node, list):
            stack += [(v, f"{path}[{i}]", (*keys, i)) for i, v in enumerate(node)]


def config_problems(text: bytes, where: str, budget: Budget | None = None) -> list[Observation]:
    import yaml  # NeMo configs only: other scans never import yaml

    try:
        doc = yaml.load(text, Loader=_safe_loader())  # noqa: S506 - the safe loader (C or Python)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        return [Observation("nemo/bad-config", Severity.MEDIUM,
                            f"config is not plain YAML: {str(exc)[:200]}", where)]
    rules = _rules()
    allowed, denied = set(rules["allowed_roots"]), rules["denied"]
    out: list[Observation] = []
    try:
        targets = list(hydra_nodes(doc, budget))
    except ValueError as exc:
        return [Observation("nemo/bad-config", Severity.MEDIUM, str(exc), where)]
    for path, target, node, keys in targets:
        loc = f"{where}:{path}"
        if not isinstance(target, str):
            out.append(Observation("nemo/hydra-target", Severity.MEDIUM,
                                   f"_target_ is not a dotted name: {str(target)[:100]!r}", loc))
            continue
        shown = target
        if "${" in target:  # instantiate resolves the config first: judge what the target becomes
            resolved = resolve(doc, keys, target)
            if resolved is None:
                out.append(Observation("nemo/hydra-target", Severity.MEDIUM,
                                       f"_target_ {target!r} is an interpolation not resolvable from the "
                                       "file; loading imports and calls whatever it becomes",
                                       loc, {"target": target}))
                continue
            shown, target = f"{target!r} (resolves to {resolved!r})", resolved
        else:
            shown = repr(target)
        out += _judge(target, shown, loc, allowed, denied)
        flag = node.get("trust_remote_code")
        if flag and not isinstance(flag, (dict, list)):  # any truthy value: "false" is a true string
            out.append(Observation("nemo/hydra-target", Severity.HIGH,
                                   f"_target_ {shown} is called with trust_remote_code=True: it downloads "
                                   "and runs a repository's code while the model loads",
                                   loc, {"target": target, "trust_remote_code": True}))
    return out


def judge_target(target: str, shown: str, loc: str, allowed: set[str]) -> list[Observation]:
    """A dotted callable a config makes NeMo import and call (Hydra `_target_`, fiddle pyref)."""
    return _judge(target, shown, loc, allowed, _rules()["denied"])


def _judge(target: str, shown: str, loc: str, allowed: set[str], denied: list[str]) -> list[Observation]:
    # hydra's _locate imports the longest module prefix, then walks attributes: every suffix of
    # the path is what some module re-exports (nemo.utils.subprocess.run is subprocess.run)
    parts = target.strip().split(".")
    suffixes = [".".join(parts[i:]) for i in range(len(parts))]
    pattern = next((p for p in denied for sfx in suffixes if fnmatch.fnmatchcase(sfx, p)), None)
    if pattern is not None:
        return [Observation("nemo/hydra-target", Severity.CRITICAL,
                            f"_target_ {shown} is called while the model loads (hydra instantiate)",
                            loc, {"target": target, "pattern": pattern})]
    if target.split(".")[0] not in allowed:
        return [Observation("nemo/hydra-target", Severity.MEDIUM,
                            f"_target_ {shown} is outside the usual NeMo ecosystem; loading "
                            "imports and calls it", loc, {"target": target})]
    return []


def _tar_config(file: TargetFile, budget: Budget) -> list[Observation]:
    out: list[Observation] = []
    configs = 0
    names: set[str] = set()
    with file.open() as fh:
        try:
            with tarfile.open(fileobj=fh, mode="r:*") as tf:
                for n, member in enumerate(tf):
                    budget.tick("listing a .nemo archive")
                    if n >= MAX_MEMBERS:
                        out.append(Observation("nemo/bad-archive", Severity.MEDIUM,
                                               f"more than {MAX_MEMBERS} members; the rest not read"))
                        break
                    if not member.isfile():
                        continue
                    norm = "/".join(p for p in member.name.split("/") if p not in ("", "."))
                    if norm in names:  # NeMo extracts in order: the last copy wins, a reader sees the first
                        out.append(Observation("nemo/duplicate-member", Severity.HIGH,
                                               f"member {norm!r} appears twice: the copy NeMo restores is "
                                               "not the one a first-match reader sees", member.name))
                    names.add(norm)
                    if norm.rsplit("/", 1)[-1] not in CONFIG_NAMES:
                        continue
                    configs += 1
                    if member.size > MAX_CONFIG_BYTES:
                        out.append(Observation("nemo/bad-config", Severity.MEDIUM,
                                               f"{member.size}-byte config not analysed", member.name))
                        continue
                    extracted = tf.extractfile(member)
                    if extracted is not None:
                        out += config_problems(extracted.read(MAX_CONFIG_BYTES), member.name, budget)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            out.append(Observation("nemo/bad-archive", Severity.HIGH, f"unreadable .nemo archive: {exc}"))
            return out
    if configs == 0 and file.name.lower().endswith(".nemo"):
        out.append(Observation("nemo/bad-archive", Severity.MEDIUM,
                               ".nemo archive without model_config.yaml: not what NeMo writes"))
    return out


def _nemo2_context(file: TargetFile) -> bool:
    """NeMo 2 checkpoints keep the model's Hydra-style config as context/model.yaml."""
    return file.path.replace("\\", "/").lower().endswith("context/model.yaml")


class NemoCheck(Check):
    id = "static.nemo"
    tier = "static"
    version = "1"
    description = "NeMo .nemo archives and model_config.yaml: Hydra _target_ callables run at load"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        name = file.name.lower()
        return (name.endswith(".nemo") or name in CONFIG_NAMES or _nemo2_context(file)
                or is_io_json(file.path) or (fmt == fmts.TAR and name.endswith(".tar")))

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        budget = ctx.budget()
        name = file.name.lower()
        if is_io_json(file.path):
            try:
                doc = load_json_bounded(file, MAX_CONFIG_BYTES)
            except (TooLarge, ValueError) as exc:
                problems = [Observation("nemo/bad-config", Severity.MEDIUM, f"io.json not analysed: {exc}")]
            else:
                problems = io_json_problems(doc, judge_target, set(_rules()["allowed_roots"]), budget)
        elif name in CONFIG_NAMES or _nemo2_context(file):
            try:
                problems = config_problems(read_bounded(file, MAX_CONFIG_BYTES), file.name, budget)
            except TooLarge as exc:
                problems = [Observation("nemo/bad-config", Severity.MEDIUM, f"config not analysed: {exc}")]
        elif fmt in (fmts.TAR, fmts.GZIP):
            problems = _tar_config(file, budget)
        elif (pointer := lfs_pointer_problem(file, "nemo")) is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        else:
            problems = [Observation("nemo/bad-archive", Severity.HIGH,
                                    f"named .nemo but the content is {fmt}, not a tar archive")]
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Do not restore this model; review every _target_ "
                                                  "in its model_config.yaml.")


def _safe_loader() -> type:
    """PyYAML's safe loader (libyaml's when present), imported when a file needs it."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)
