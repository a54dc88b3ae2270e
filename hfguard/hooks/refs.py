"""Find the Hub models a source file refers to: Python (AST), notebooks, YAML/JSON/TOML configs.
A Python script is known by its suffix or, whatever its name (`bin/train`), by its shebang line.

Only strings the source fixes count: constants, module-level constants (`MODEL = "org/m"`) used
later, and `+` / f-strings built only of those (`ORG + "/m"`, `f"{ORG}/m"`).
Local paths (`./models/x`, absolute paths, paths that exist on disk) are not Hub references.
A `# hfguard: ignore` comment on the line drops the reference; `# hfguard: ignore[rule, ...]`
drops only those rules' findings for it.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hfguard.sniff import MODEL_SUFFIXES

SHA_RE = re.compile(r"[0-9a-f]{40}")
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_RE = re.compile(rf"({_PART})/({_PART})")
_BARE_RE = re.compile(_PART)
_REV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "hf://")
# the Hub's own pages are not repos (names it reserves: no user or org can take them)
_NOT_REPOS = ("datasets", "spaces", "docs", "papers", "blog", "learn", "collections", "organizations",
              "settings", "join", "login", "pricing", "api", "tasks", "models", "posts", "changelog",
              "chat", "enterprise", "new", "new-dataset", "new-space", "terms-of-service", "privacy")
_HUB_URL_RE = re.compile(rf"https?://(?:www\.)?(?:huggingface|hf)\.co/(?!(?:{'|'.join(_NOT_REPOS)})/)"
                         rf"({_PART}/{_PART})(?:/(?:resolve|blob|tree)/([^/\s\"']+))?")
_IGNORE_RE = re.compile(r"#\s*hfguard:\s*ignore(?:\[([^\]]*)\])?")
_FILE_SUFFIXES = (*MODEL_SUFFIXES, ".json", ".py", ".txt", ".yaml", ".yml")

PYTHON_SUFFIXES = (".py", ".pyi", ".pyw")
NOTEBOOK_SUFFIXES = (".ipynb",)
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)
TOML_SUFFIXES = (".toml",)
SUPPORTED_SUFFIXES = PYTHON_SUFFIXES + NOTEBOOK_SUFFIXES + YAML_SUFFIXES + JSON_SUFFIXES + TOML_SUFFIXES
_PYTHON_SHEBANG = re.compile(r"#![^\n]*python")   # #!/usr/bin/env python3, #!/usr/bin/python -u


def python_shebang(head: str | bytes) -> bool:
    """Does the file start like a Python script (a shebang line naming python)?"""
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return bool(_PYTHON_SHEBANG.match(text[:256]))


def is_source(name: str, head: str | bytes) -> bool:
    """A file references are read from: by its suffix, or Python by its shebang whatever its name."""
    return name.lower().endswith(SUPPORTED_SUFFIXES) or python_shebang(head)

# Config keys whose value names a model to load (values must look like org/name).
CONFIG_KEYS = frozenset({
    "model_name_or_path", "model_id", "model_name", "base_model", "base_model_name_or_path",
    "pretrained_model_name_or_path", "tokenizer_name", "tokenizer_name_or_path", "model", "repo_id",
    "teacher_model", "reward_model", "ref_model", "embedding_model", "adapter_name_or_path",
    "peft_model_id",
})  # not "checkpoint", "pretrained", "encoder": their values are mostly local paths

ALL_RULES = "*"
MAX_TEXT = 32 << 20   # a source or config file larger than this is reported, not read


@dataclass(frozen=True)
class Reference:
    """One place in a source file that names a Hub model."""

    repo_id: str
    revision: str | None          # as written: a commit sha, a branch or tag, or None
    file: str
    line: int
    via: str = ""                 # what referenced it, e.g. "from_pretrained" or "key model_id"
    cell: int | None = None       # notebook cell (1-based); `line` is then within the cell
    filename: str | None = None   # hf_hub_download(filename=...)
    ignore: frozenset[str] = field(default_factory=frozenset)  # suppressed rules; "*" = all

    @property
    def pinned(self) -> bool:
        return bool(self.revision and SHA_RE.fullmatch(self.revision))

    @property
    def location(self) -> str:
        return f"cell {self.cell}, line {self.line}" if self.cell else f"line {self.line}"

    @property
    def spec(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id

    @property
    def anchor(self) -> str:
        """What findings about this reference are fingerprinted by instead of its line, so a
        baseline survives edits above it (`Finding.anchor`)."""
        return f"model {self.spec}"

    def suppresses(self, rule: str) -> bool:
        return ALL_RULES in self.ignore or rule in self.ignore


@dataclass
class Extraction:
    references: list[Reference] = field(default_factory=list)
    problems: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, why)
    files: int = 0                                                      # files read
    failures: list[tuple[str, str]] = field(default_factory=list)       # (file, why): reader crashed
    unread: list[tuple[str, str]] = field(default_factory=list)         # (file, why): not read at all

    def add(self, other: Extraction) -> None:
        self.files += 1
        self.references += other.references
        self.problems += other.problems
        self.failures += other.failures
        self.unread += other.unread


# -- strings ------------------------------------------------------------------------------------
def parse_spec(value: str, *, allow_bare: bool = False) -> tuple[str, str | None] | None:
    """`org/name`, `org/name@rev`, `hf-hub:org/name`, a Hub URL -> (repo_id, revision) or None."""
    value = value.strip()
    url = _HUB_URL_RE.match(value)
    if url:
        return url.group(1), url.group(2)
    if value.startswith("hf://"):
        return _hf_path(value[len("hf://"):])
    for prefix in _HUB_PREFIXES:
        if value.startswith(prefix):
            value = value[len(prefix):]
            allow_bare = False
            break
    repo, _, rev = value.partition("@")
    if rev and not _REV_RE.fullmatch(rev):
        return None
    if _REPO_RE.fullmatch(repo):
        if ".." in repo or "--" in repo:
            return None
        return repo, rev or None
    if allow_bare and _BARE_RE.fullmatch(repo) and not repo.lower().endswith(_FILE_SUFFIXES) \
            and not repo.isdigit():
        return repo, rev or None  # a canonical repo such as "gpt2"
    return None


def _hf_path(path: str) -> tuple[str, str | None] | None:
    """`org/name[@rev][/file]` of an fsspec `hf://` URL (HfFileSystem: the revision ends at the
    next '/', a '/' inside it is written %2F); datasets and spaces are not models."""
    org, _, rest = path.partition("/")
    name, _, _file = rest.partition("/")
    name, _, rev = name.partition("@")
    if org in ("datasets", "spaces") or not _REPO_RE.fullmatch(f"{org}/{name}") \
            or ".." in name or "--" in f"{org}/{name}":
        return None
    rev = unquote(rev)
    return f"{org}/{name}", (rev if rev and _REV_RE.fullmatch(rev) else None)


def is_local_path(value: str, base: Path | None) -> bool:
    if value.startswith(("./", "../", "/", "~", ".\\")) or "\\" in value or re.match(r"[A-Za-z]:", value):
        return True
    candidates = [Path(value)] + ([base / value] if base else [])
    try:
        return any(p.exists() for p in candidates)
    except OSError:
        return False


def _suppressions(line_text: str) -> frozenset[str]:
    m = _IGNORE_RE.search(line_text)
    if not m:
        return frozenset()
    if m.group(1) is None or not m.group(1).strip():
        return frozenset({ALL_RULES})
    return frozenset(r.strip() for r in m.group(1).split(",") if r.strip())


# -- Python ---------------------------------------------------------------------------------
# call name -> (positional indexes that may hold the model, keyword names that may hold it)
_CALLS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "from_pretrained": ((0, 1), ("pretrained_model_name_or_path", "model_id")),
    "pipeline": ((1,), ("model", "tokenizer", "feature_extractor", "image_processor")),
    "hf_hub_download": ((0,), ("repo_id",)),
    "snapshot_download": ((0,), ("repo_id",)),
    "SentenceTransformer": ((0,), ("model_name_or_path", "model_name")),
    "CrossEncoder": ((0,), ("model_name_or_path", "model_name")),
    "SparseEncoder": ((0,), ("model_name_or_path",)),
    "create_model": ((0,), ("model_name", "pretrained")),
    "create_model_and_transforms": ((0,), ("model_name", "pretrained")),
    "create_model_from_pretrained": ((0,), ("model_name", "pretrained")),
    "get_tokenizer": ((0,), ("model_name",)),
    "load_model": ((0,), ()),
}
# calls whose argument is a model name only with an explicit hf-hub: prefix (open_clip, timm)
_PREFIX_ONLY = {"create_model", "create_model_and_transforms", "create_model_from_pretrained",
                "get_tokenizer", "load_model"}
_NOT_MODELS = {"dataset", "space"}
# keywords that name a Hub model whatever the function (vLLM, PEFT, custom loaders); `model=` is
# left out: elsewhere it often names an API model ("openai/gpt-4o"), not a Hub repo
_MODEL_KWARGS = ("pretrained_model_name_or_path", "model_name_or_path", "model_id", "repo_id")
# ... but publishing to the Hub names a repo without loading it
_WRITE_CALLS = ("push_to_hub", "save", "create_", "upload_", "delete_", "update_", "add_", "merge_",
                "move_", "duplicate_", "request_", "set_", "super_squash", "whoami")


def fold_string(node: ast.expr, constants: dict[str, str], depth: int = 0) -> str | None:
    """The value of a string expression the source fixes: a constant, a known module constant, or
    `+` and f-strings of those (`ORG + "/m"`, `f"{ORG}/m"`); None for anything computed."""
    if depth > 50:
        return None
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = fold_string(node.left, constants, depth + 1)
        right = fold_string(node.right, constants, depth + 1) if left is not None else None
        return None if left is None or right is None else left + right
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if part.conversion not in (-1, ord("s")) or part.format_spec is not None:
                    return None
                part = part.value
            piece = fold_string(part, constants, depth + 1)
            if piece is None:
                return None
            parts.append(piece)
        return "".join(parts)
    return None


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


class _PythonScanner:
    def __init__(self, tree: ast.Module, lines: list[str], file: str, base: Path | None,
                 line_map: list[tuple[int | None, int]] | None = None) -> None:
        self.tree, self.lines, self.file, self.base = tree, lines, file, base
        self.line_map = line_map
        self.constants = self._module_constants()
        self.refs: list[Reference] = []
        self.seen: set[tuple[int, int]] = set()  # string nodes already reported via a call

    def _module_constants(self) -> dict[str, tuple[str, int]]:
        found: dict[str, set[tuple[str, int]]] = {}
        known: dict[str, str] = {}   # constants so far, for ones built of them (ORG + "/m")
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name):
                folded = fold_string(value, known)
                if folded is not None:
                    found.setdefault(target.id, set()).add((folded, value.lineno))
                    known[target.id] = folded
                else:
                    found.setdefault(target.id, set()).add(("", -1))  # reassigned to non-constant
        # a name bound to two different values is not a constant
        return {k: next(iter(v)) for k, v in found.items()
                if len({s for s, _ in v}) == 1 and next(iter(v))[1] > 0}

    def _string(self, node: ast.expr | None) -> tuple[str, int, ast.expr] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value, node.lineno, node
        if isinstance(node, ast.Name) and node.id in self.constants:
            value, line = self.constants[node.id]
            return value, line, node
        folded = fold_string(node, {k: v for k, (v, _) in self.constants.items()}) if node else None
        if node is None or folded is None:
            return None
        # its pieces are not read again as strings of their own
        self.seen.update((n.lineno, n.col_offset) for n in ast.walk(node) if isinstance(n, ast.Constant))
        return folded, node.lineno, node

    def _where(self, line: int) -> tuple[int | None, int]:
        if self.line_map and 0 < line <= len(self.line_map):
            return self.line_map[line - 1]
        return None, line

    def _ignore(self, *lines: int) -> frozenset[str]:
        out: set[str] = set()
        for n in set(lines):
            if 0 < n <= len(self.lines):
                out |= _suppressions(self.lines[n - 1])
        return frozenset(out)

    def _add(self, value: str, use_line: int, def_line: int, via: str, *, allow_bare: bool,
             revision: str | None = None, filename: str | None = None, end_line: int = 0) -> None:
        parsed = parse_spec(value, allow_bare=allow_bare)
        if parsed is None or is_local_path(value, self.base):
            return
        repo, rev = parsed
        cell, line = self._where(use_line)
        self.refs.append(Reference(
            repo_id=repo, revision=revision or rev, file=self.file, line=line, via=via, cell=cell,
            filename=filename, ignore=self._ignore(use_line, def_line, end_line or use_line)))

    def run(self) -> list[Reference]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                self._call(node)
        strings = {k: v for k, (v, _) in self.constants.items()}
        for node in ast.walk(self.tree):  # any other "hf-hub:org/m" string or Hub URL (outer nodes first)
            if not isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp):
                continue
            pieces = [(n.lineno, n.col_offset) for n in ast.walk(node) if isinstance(n, ast.Constant)]
            if not pieces or all(p in self.seen for p in pieces):
                continue
            value = fold_string(node, strings)
            if value is not None and (value.startswith(_HUB_PREFIXES) or _HUB_URL_RE.match(value)):
                self.seen.update(pieces)
                self._add(value, node.lineno, node.lineno, "string", allow_bare=False)
        return self.refs

    def _call(self, node: ast.Call) -> None:
        name = _call_name(node.func)
        positions: tuple[int, ...]
        keywords: tuple[str, ...]
        if name not in _CALLS:
            if name and not name.startswith(_WRITE_CALLS) \
                    and any(k.arg in _MODEL_KWARGS for k in node.keywords):
                positions, keywords = (), _MODEL_KWARGS
            else:
                return
        else:
            positions, keywords = _CALLS[name]
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        repo_type = self._string(kw.get("repo_type"))
        if repo_type and repo_type[0] in _NOT_MODELS:
            return
        rev = self._string(kw.get("revision"))
        revision = rev[0] if rev else None
        fname = self._string(kw.get("filename") or (node.args[1] if name == "hf_hub_download"
                                                     and len(node.args) > 1 else None))
        candidates: list[ast.expr] = [kw[k] for k in keywords if k in kw]
        for i in positions:
            if i < len(node.args):
                candidates.append(node.args[i])
        for cand in candidates:
            got = self._string(cand)
            if got is None:
                continue
            value, def_line, str_node = got
            if name in _PREFIX_ONLY and not value.startswith(_HUB_PREFIXES):
                continue
            if isinstance(str_node, ast.Constant):
                self.seen.add((str_node.lineno, str_node.col_offset))
            if name in ("SentenceTransformer", "SparseEncoder") and "/" not in value \
                    and not value.startswith(_HUB_PREFIXES) and not is_local_path(value, self.base):
                value = f"sentence-transformers/{value}"  # what sentence-transformers itself does
            self._add(value, node.lineno, def_line, name, allow_bare=name in _CALLS, revision=revision,
                      filename=fname[0] if fname else None,
                      end_line=getattr(cand, "end_lineno", 0) or 0)
            if name == "from_pretrained":
                break  # (model, "org/adapter") for PEFT; never two models from one call


def python_references(source: str, file: str, base: Path | None = None,
                      line_map: list[tuple[int | None, int]] | None = None) -> list[Reference]:
    """References in Python source. Raises SyntaxError when it does not parse."""
    tree = ast.parse(source, filename=file)
    return _PythonScanner(tree, source.splitlines(), file, base, line_map).run()


_FALLBACK_RE = re.compile(
    r"(from_pretrained|pipeline|hf_hub_download|snapshot_download|SentenceTransformer|CrossEncoder)"
    r"\s*\([^\"')]*?[\"']([^\"'\s]+)[\"']|[\"']((?:hf-hub:|hf_hub:|hf://)[^\"'\s]+)[\"']")


def regex_references(source: str, file: str, base: Path | None = None,
                     line_map: list[tuple[int | None, int]] | None = None) -> list[Reference]:
    """Best effort for source that does not parse (a notebook cell with shell syntax)."""
    refs = []
    for n, text in enumerate(source.splitlines(), 1):
        for m in _FALLBACK_RE.finditer(text):
            value = m.group(2) or m.group(3)
            parsed = parse_spec(value, allow_bare=bool(m.group(2)))
            if parsed is None or is_local_path(value, base):
                continue
            cell, line = line_map[n - 1] if line_map and n <= len(line_map) else (None, n)
            refs.append(Reference(repo_id=parsed[0], revision=parsed[1], file=file, line=line,
                                  via=m.group(1) or "string", cell=cell, ignore=_suppressions(text)))
    return refs


# -- notebooks --------------------------------------------------------------------------------
_MAGIC_RE = re.compile(r"^\s*[%!]|\?\s*$")


def notebook_references(text: str, file: str, base: Path | None = None) -> Extraction:
    out = Extraction()
    try:
        doc = json.loads(text)
        cells = [c for c in doc.get("cells", []) if isinstance(c, dict)]
    except (ValueError, AttributeError) as exc:
        out.problems.append((file, 1, f"not a readable notebook: {exc}"))
        return out
    line_map: list[tuple[int | None, int]] = []
    per_cell: list[tuple[str, list[tuple[int | None, int]]]] = []
    for i, cell in enumerate(cells, 1):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        if not isinstance(src, str) and not (isinstance(src, list) and all(isinstance(s, str) for s in src)):
            out.problems.append((file, 1, f"cell {i}: its source is not text"))
            continue
        src = "".join(src)
        # IPython magics and shell escapes are not Python: blank them, keep the numbering
        cell_lines = ["" if _MAGIC_RE.search(ln) else ln for ln in src.splitlines()]
        cell_map: list[tuple[int | None, int]] = [(i, n) for n in range(1, len(cell_lines) + 1)]
        if not cell_lines:
            continue  # an empty cell adds no line: keep the line map aligned
        per_cell.append(("\n".join(cell_lines), cell_map))
        line_map += cell_map
    # One module, so that constants defined in one cell are used in later ones; cells that do
    # not parse are blanked there and read with the regex fallback instead.
    good: list[str] = []
    for src, cell_map in per_cell:
        try:
            ast.parse(src)
            good.append(src)
        except SyntaxError as exc:
            good.append("\n".join("" for _ in cell_map))
            out.references += regex_references(src, file, base, cell_map)
            cell_no, line = cell_map[min((exc.lineno or 1), len(cell_map)) - 1] if cell_map else (None, 1)
            out.problems.append((file, line, f"cell {cell_no} does not parse as Python ({exc.msg})"))
    fallback = out.references
    try:
        out.references = python_references("\n".join(good), file, base, line_map) + fallback
    except SyntaxError:  # cells that parse alone but not together: read them one by one
        out.references = fallback + [r for src, cell_map in per_cell if src in good
                                     for r in python_references(src, file, base, cell_map)]
    out.references.sort(key=lambda r: (r.cell or 0, r.line))
    return out


# -- configs ----------------------------------------------------------------------------------
def _hub_string(value: str) -> bool:
    """A string that names the Hub whatever key holds it: `hf-hub:`, `hf://`, a Hub URL."""
    value = value.strip()
    return value.startswith(_HUB_PREFIXES) or bool(_HUB_URL_RE.match(value))


def _config_value(value: Any, key: str, line: int, file: str, lines: list[str],
                  base: Path | None, revision: str | None) -> Iterator[Reference]:
    if not isinstance(value, str):
        return
    parsed = parse_spec(value)
    if parsed is None or is_local_path(value, base):
        return
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    yield Reference(repo_id=parsed[0], revision=parsed[1] or revision, file=file, line=line,
                    via=f"key {key}", ignore=_suppressions(text))


def yaml_references(text: str, file: str, base: Path | None = None) -> list[Reference]:
    """YAML, with line numbers from the parser: the values of CONFIG_KEYS, and Hub URLs and
    `hf-hub:` / `hf://` names under any key (`checkpoint_url: https://huggingface.co/o/m/resolve/..`).
    Raises yaml.YAMLError."""
    import yaml

    lines = text.splitlines()
    refs: list[Reference] = []
    seen: set[int] = set()

    def walk(node: Any, key: str | None = None) -> None:
        if id(node) in seen:  # an alias: each node once (no "billion laughs" blow-up)
            return
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) and _hub_string(node.value):
            refs.extend(_config_value(node.value, key or "?", node.start_mark.line + 1, file, lines, base,
                                      None))
        elif isinstance(node, yaml.MappingNode):
            pairs = [(k.value if isinstance(k, yaml.ScalarNode) else None, v) for k, v in node.value]
            rev = next((v.value for k, v in pairs if k == "revision" and isinstance(v, yaml.ScalarNode)),
                       None)
            for key, value in pairs:
                if key in CONFIG_KEYS:
                    scalars = value.value if isinstance(value, yaml.SequenceNode) else [value]
                    for s in scalars:
                        if isinstance(s, yaml.ScalarNode) and id(s) not in seen:
                            seen.add(id(s))
                            refs.extend(_config_value(s.value, key, s.start_mark.line + 1, file,
                                                      lines, base, rev))
                walk(value, key)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, key)

    for doc in yaml.compose_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        walk(doc)
    return refs


def _find_line(lines: list[str], key: str, value: str) -> int:
    for n, text in enumerate(lines, 1):
        if key in text and value in text:
            return n
    return next((n for n, text in enumerate(lines, 1) if value in text), 1)


def mapping_references(doc: Any, text: str, file: str, base: Path | None = None) -> list[Reference]:
    """Parsed JSON/TOML without positions: lines are found by searching the text. As for YAML: the
    values of CONFIG_KEYS, and Hub URLs and `hf-hub:` / `hf://` names under any key."""
    lines = text.splitlines()
    refs: list[Reference] = []

    def walk(node: Any, key: str | None = None) -> None:
        if isinstance(node, str):
            if key not in CONFIG_KEYS and _hub_string(node):
                refs.extend(_config_value(node, key or "?", _find_line(lines, key or "", node), file,
                                          lines, base, None))
        elif isinstance(node, dict):
            rev = node.get("revision") if isinstance(node.get("revision"), str) else None
            for key, value in node.items():
                if key in CONFIG_KEYS:
                    for v in value if isinstance(value, list) else [value]:
                        if isinstance(v, str):
                            refs.extend(_config_value(v, key, _find_line(lines, key, v), file,
                                                      lines, base, rev))
                walk(value, key)
        elif isinstance(node, list):
            for item in node:
                walk(item, key)

    walk(doc)
    return refs


# -- files ------------------------------------------------------------------------------------
def file_references(path: Path, display: str | None = None, text: str | None = None) -> Extraction:
    """References in one file, by its suffix (`text`: its content, e.g. as staged in git's index).
    Unparsable input becomes a problem, never silence; a file not read at all (oversized,
    unreadable) is `unread`: missing evidence, since padding a file must not hide a reference."""
    display = display or path.as_posix()
    out = Extraction()
    if path.name == "hfguard.lock":
        return out
    if text is None:
        try:
            if path.stat().st_size > MAX_TEXT:
                out.unread.append((display, f"larger than {MAX_TEXT >> 20} MiB: not read"))
                return out
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            out.unread.append((display, f"cannot read: {exc}"))
            return out
    text = text.removeprefix("\ufeff")   # a UTF-8 BOM: Python, JSON and TOML readers would refuse it
    try:
        return _parse(text, display, path.parent, path.suffix.lower())
    except (RecursionError, MemoryError) as exc:  # hostile nesting
        out.problems.append((display, 1, f"too deeply nested to read ({type(exc).__name__})"))
        return out
    except Exception as exc:  # noqa: BLE001 - a reader's bug on hostile input: missing evidence
        out.failures.append((display, f"{type(exc).__name__}: {exc}"))   # (not a crash of the hook)
        return out


def _parse(text: str, display: str, base: Path, suffix: str) -> Extraction:
    out = Extraction()
    if suffix in PYTHON_SUFFIXES or (suffix not in SUPPORTED_SUFFIXES and python_shebang(text)):
        try:
            out.references = python_references(text, display, base)
        except (SyntaxError, ValueError) as exc:
            out.references = regex_references(text, display, base)
            out.problems.append((display, getattr(exc, "lineno", None) or 1,
                                 f"does not parse as Python: {exc}"))
    elif suffix in NOTEBOOK_SUFFIXES:
        out = notebook_references(text, display, base)
    elif suffix in JSON_SUFFIXES:
        try:  # the C parser: JSON files (tokenizers, vocabularies) can be large
            out.references = mapping_references(json.loads(text), text, display, base)
        except ValueError as exc:
            out.problems.append((display, getattr(exc, "lineno", 1), f"does not parse as JSON: {exc}"))
    elif suffix in YAML_SUFFIXES:
        import yaml

        try:
            out.references = yaml_references(text, display, base)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            out.problems.append((display, (mark.line + 1) if mark else 1,
                                 f"does not parse as YAML: {str(exc).splitlines()[0]}"))
    elif suffix in TOML_SUFFIXES:
        import tomllib

        try:
            out.references = mapping_references(tomllib.loads(text), text, display, base)
        except tomllib.TOMLDecodeError as exc:
            out.problems.append((display, 1, f"does not parse as TOML: {exc}"))
    return out


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(256)
    except OSError:
        return b""


def extract(paths: Iterable[str | Path]) -> Extraction:
    """References in every supported file among `paths` (others are skipped)."""
    out = Extraction()
    for p in paths:
        path = Path(p)
        if not path.is_file() or not is_source(path.name, b"" if path.suffix.lower() in SUPPORTED_SUFFIXES
                                                     else _head(path)):
            continue
        out.add(file_references(path, str(p)))
    return out
