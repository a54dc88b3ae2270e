"""Runtime guard: vet a model when a library downloads or loads it, before any file is deserialised.

    import hfguard
    hfguard.guard()                 # from here on, in this process
    with hfguard.guard(): ...       # or only inside the block

It wraps `huggingface_hub.hf_hub_download` and `snapshot_download` (in huggingface_hub and in
every loaded module that imported those names, e.g. `transformers.utils.hub`, open_clip,
sentence-transformers), transformers' `cached_files` (which also serves pinned models from the
cache and loads local directories without calling the Hub) and `torch.load` of a file path
(open_clip's local checkpoints, user code). A Hub model is vetted through
`vet_reference` (repo + revision, resolved to a commit sha) and then fetched *at that sha*, so what
was vetted is what loads. A local directory, or a file served from the cache in offline mode, is
scanned statically. BLOCK raises `ModelBlocked`; ERROR raises too unless `on_error="warn"`; FLAG
warns. Verdicts are remembered per process.

Whole process from the environment, without .pth files: put in a `sitecustomize.py` on the path

    import hfguard.runtime.guard as g; g.enable_from_env()     # acts when HFGUARD_GUARD=1
"""

from __future__ import annotations

import functools
import importlib.abc
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

from hfguard.findings import Report, Verdict
from hfguard.policy import Policy
from hfguard.report.escape import safe

# (module that defines it, attribute): the functions the guard wraps
_HUB_TARGETS = (("huggingface_hub.file_download", "hf_hub_download"),
                ("huggingface_hub._snapshot_download", "snapshot_download"))
_TRANSFORMERS_HUB = "transformers.utils.hub"
_MARK = "__hfguard_original__"


class ModelBlocked(OSError):
    """A model was refused by the runtime guard; `report` and `findings` say why.

    An OSError, because loaders (transformers) let OSError through with its message but turn
    other exceptions into a generic "can't load" one."""

    def __init__(self, what: str, report: Report) -> None:
        self.report = report
        self.findings = report.all_findings()
        worst = "; ".join(f"{f.rule}: {f.message}" for f in self.findings[:5])
        super().__init__(safe(f"hfguard: {what} is {report.verdict}" + (f" ({worst})" if worst else "")))


class _State:
    def __init__(self) -> None:
        self.active = False
        self.policy: Policy | None = None
        self.on_error = "raise"
        self.vet: Callable[..., Report] | None = None
        self.verdicts: dict[tuple[str, str], Report] = {}       # per process: (repo, revision) -> report
        self.local: dict[tuple[str, float], Report] = {}         # (path, mtime) -> report
        self.vetted_paths: set[str] = set()   # files fetched at a commit the guard vetted on the Hub
        self.lock = threading.RLock()
        self.busy = threading.local()   # set while the guard itself talks to the Hub


_state = _State()


# -- decisions ---------------------------------------------------------------------------------
def _policy() -> Policy:
    if _state.policy is None:
        from hfguard.checks import load_checked_policy

        _state.policy = load_checked_policy()
    return _state.policy


def _decide(what: str, report: Report) -> None:
    if report.verdict is Verdict.BLOCK:
        raise ModelBlocked(what, report)
    if report.verdict is Verdict.ERROR:
        if _state.on_error == "raise":
            raise ModelBlocked(what, report)
        warnings.warn(safe(f"hfguard: {what} could not be vetted (ERROR); loading anyway (on_error=warn)"),
                      stacklevel=4)
    elif report.verdict is Verdict.FLAG:
        rules = ", ".join(sorted({f.rule for f in report.all_findings()}))
        warnings.warn(safe(f"hfguard: {what} is FLAGged ({rules})"), stacklevel=4)


def _vet_hub(repo_id: str, revision: str | None) -> str | None:
    """Vet repo@revision (once per process) and return the commit sha that was vetted."""
    key = (repo_id, revision or "main")  # the Hub's default branch: None and "main" are one key
    report = _state.verdicts.get(key)
    if report is None:
        # not under the lock: the vetting may use threads that download through the wrappers
        vet = _state.vet
        if vet is None:
            from hfguard.hooks.vet import vet_reference

            vet = vet_reference
        _state.busy.on = True
        try:
            report = vet(repo_id, revision, _policy())
        finally:
            _state.busy.on = False
        if report.verdict is not Verdict.ERROR:  # missing evidence is looked for again next time
            with _state.lock:
                _state.verdicts[key] = report
                if report.revision:
                    _state.verdicts.setdefault((repo_id, report.revision), report)
    _decide(f"{repo_id}@{report.revision or revision or 'main'}", report)
    return report.revision


def _scan_local(path: str) -> None:
    """Static scan of a local file or directory about to be loaded (once per path and mtime)."""
    p = Path(path)
    try:
        key = (str(p.resolve()), p.stat().st_mtime)
    except OSError:
        return  # nothing there: the loader will raise its own error
    with _state.lock:
        report = _state.local.get(key)
        if report is None:
            from hfguard.checks import checks_for_tiers
            from hfguard.engine import scan
            from hfguard.target import local_target

            policy = _policy()
            target = local_target([str(p)])
            report = scan(target, policy, checks_for_tiers(policy.tiers))
            _state.local[key] = report
        if p.is_dir():   # its files need no second scan when torch.load opens them unchanged
            for fr in report.files:
                try:
                    f = (p / fr.path[len(str(p)) + 1:]).resolve()
                    _state.local.setdefault((str(f), f.stat().st_mtime), report)
                except OSError:
                    continue
    _decide(str(p), report)


def _is_offline(kwargs: dict[str, Any]) -> bool:
    from hfguard.target import offline_by_env

    return bool(kwargs.get("local_files_only")) or offline_by_env()


# -- wrappers ----------------------------------------------------------------------------------
def _unguarded() -> bool:
    """Off, or called by the guard's own vetting: hfguard's Hub code (in any of its threads) or
    this thread while it vets."""
    if not _state.active or getattr(_state.busy, "on", False):
        return True
    caller = sys._getframe(2).f_globals.get("__name__", "")
    return caller.startswith("hfguard.") and not caller.startswith("hfguard.runtime.guard")


def _wrap_download(original: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _unguarded():
            return original(*args, **kwargs)
        repo_id = kwargs.get("repo_id", args[0] if args else None)
        if kwargs.get("repo_type") not in (None, "model") or not isinstance(repo_id, str) \
                or kwargs.get("dry_run"):
            return original(*args, **kwargs)
        if _is_offline(kwargs):
            # no Hub to ask: scan what the cache serves before handing it over
            result = original(*args, **kwargs)
            if isinstance(result, str | os.PathLike):
                _scan_local(os.fspath(result))
            return result
        sha = _vet_hub(repo_id, kwargs.get("revision"))
        if sha:
            kwargs["revision"] = sha  # fetch exactly the commit that was vetted
        result = original(*args, **kwargs)
        _remember(result)
        return result

    functools.update_wrapper(wrapper, original)  # name, docs, signature (via __wrapped__)
    setattr(wrapper, _MARK, original)
    return wrapper


def _wrap_cached_files(original: Callable[..., Any]) -> Callable[..., Any]:
    def cached_files(path_or_repo_id: Any, *args: Any, **kwargs: Any) -> Any:
        if _unguarded():
            return original(path_or_repo_id, *args, **kwargs)
        name = os.fspath(path_or_repo_id) if isinstance(path_or_repo_id, str | os.PathLike) else None
        if name and os.path.isdir(name):
            _scan_local(name)
        elif name and kwargs.get("repo_type") in (None, "model") and not _is_offline(kwargs):
            sha = _vet_hub(name, kwargs.get("revision"))
            if sha:
                kwargs["revision"] = sha
        result = original(path_or_repo_id, *args, **kwargs)
        if name and not os.path.isdir(name):
            for f in result or ():
                if f and _is_offline(kwargs):
                    _scan_local(f)
                elif f:
                    _remember(f)
        return result

    functools.update_wrapper(cached_files, original)
    setattr(cached_files, _MARK, original)
    return cached_files


def _remember(path: Any) -> None:
    if isinstance(path, str | os.PathLike):
        with _state.lock:
            _state.vetted_paths.add(os.path.realpath(path))


def _wrap_torch_load(original: Callable[..., Any]) -> Callable[..., Any]:
    """torch.load of a file path (open_clip checkpoints, user code): scanned first, unless it is a
    file the guard already vetted on the Hub (a local file scanned before, with the same mtime, is
    a cache hit in `_scan_local`)."""

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        if not _unguarded() and isinstance(f, str | os.PathLike) \
                and os.path.realpath(f) not in _state.vetted_paths:
            _scan_local(os.fspath(f))
        return original(f, *args, **kwargs)

    functools.update_wrapper(load, original)
    setattr(load, _MARK, original)
    return load


# -- patching ----------------------------------------------------------------------------------
def _replace_everywhere(original: Any, wrapper: Any) -> None:
    """Rebind `original` in every loaded module that holds it (names imported with `from`)."""
    for name, mod in list(sys.modules.items()):
        if name == "hfguard" or name.startswith("hfguard."):
            continue  # hfguard's own Hub code talks to the Hub unguarded
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for attr, value in list(d.items()):
            if value is original:
                d[attr] = wrapper


def _patch_hub() -> None:
    import importlib

    for module_name, attr in _HUB_TARGETS:
        mod = importlib.import_module(module_name)
        current = getattr(mod, attr)
        if hasattr(current, _MARK):
            continue
        _replace_everywhere(current, _wrap_download(current))
    import huggingface_hub  # the lazy top-level names resolve through the modules above

    for _, attr in _HUB_TARGETS:
        value = getattr(huggingface_hub, attr)
        if not hasattr(value, _MARK):
            _replace_everywhere(value, _wrap_download(value))


def _patch_transformers(mod: ModuleType) -> None:
    current = getattr(mod, "cached_files", None)
    if current is None or hasattr(current, _MARK):
        return
    _replace_everywhere(current, _wrap_cached_files(current))


def _patch_torch(mod: ModuleType) -> None:
    current = getattr(mod, "load", None)
    if current is None or hasattr(current, _MARK):
        return
    _replace_everywhere(current, _wrap_torch_load(current))


# modules patched when they are (or once they get) imported
_WATCH: dict[str, Callable[[ModuleType], None]] = {_TRANSFORMERS_HUB: _patch_transformers,
                                                   "torch": _patch_torch}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches transformers' hub helpers and torch.load when imported after guard()."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _WATCH:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                loader = spec.loader
                run = loader.exec_module

                def exec_module(module: ModuleType, _run: Any = run) -> None:
                    _run(module)
                    if _state.active:
                        _WATCH[fullname](module)

                loader.exec_module = exec_module  # type: ignore[method-assign]
                return spec
        return None


_finder = _AfterImport()


def _enable() -> None:
    with _state.lock:
        if _state.active:
            return
        _state.active = True
        _patch_hub()
        for name, patch in _WATCH.items():
            if name in sys.modules:
                patch(sys.modules[name])
        if any(name not in sys.modules for name in _WATCH) and _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def _disable() -> None:
    with _state.lock:
        # every wrapper, including those that modules imported after guard() took from huggingface_hub
        for mod in list(sys.modules.values()):
            d = getattr(mod, "__dict__", None)
            if isinstance(d, dict):
                for attr, value in list(d.items()):
                    if type(value) is FunctionType and _MARK in value.__dict__:
                        d[attr] = value.__dict__[_MARK]
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _state.active = False


class Guard:
    """What `guard()` returns: a context manager that disables the guard on exit, if it enabled it."""

    def __init__(self, enabled_here: bool) -> None:
        self.enabled_here = enabled_here

    @property
    def active(self) -> bool:
        return _state.active

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled_here:
            _disable()


def guard(enable: bool = True, *, policy: Policy | None = None, on_error: str = "raise",
          vet: Callable[..., Report] | None = None, forget: bool = False) -> Guard:
    """Turn the runtime guard on (idempotent) or off (`enable=False`).

    `policy`: default the nearest [tool.hfguard] / hfguard.toml. `on_error`: "raise" (default) or
    "warn" when a model cannot be vetted. `vet(repo_id, revision, policy) -> Report` replaces the
    Hub vetting (default `hfguard.hooks.vet.vet_reference`). `forget` drops remembered verdicts.
    """
    if on_error not in ("raise", "warn"):
        raise ValueError("on_error must be 'raise' or 'warn'")
    if not enable:
        _disable()
        return Guard(False)
    with _state.lock:
        was_active = _state.active
        if policy is not None:
            _state.policy = policy
        _state.on_error = on_error
        _state.vet = vet
        if forget or policy is not None:
            _state.verdicts.clear()
            _state.local.clear()
            _state.vetted_paths.clear()
        _enable()
    return Guard(not was_active)


def enable_from_env() -> Guard | None:
    """For sitecustomize.py: enable the guard when HFGUARD_GUARD=1 (HFGUARD_GUARD_ON_ERROR=warn)."""
    if os.environ.get("HFGUARD_GUARD", "").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    return guard(on_error=os.environ.get("HFGUARD_GUARD_ON_ERROR", "raise"))


def is_active() -> bool:
    return _state.active
