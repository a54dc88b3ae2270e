"""static.mlflow: MLflow model folders, judged by their `MLmodel` file.

`mlflow.pyfunc.load_model` imports `flavors.python_function.loader_module` and calls its
`_load_pyfunc(data_path)`: a loader module outside `mlflow.*` is arbitrary code chosen by the model.
`code` folders are put on sys.path first; paths in the flavors must stay inside the model folder;
flavors serialized with pickle/cloudpickle unpickle their model file (which static.serialization
judges on its own). Nothing is imported; the YAML is read with the safe loader, bounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.problems import TooLarge, read_bounded
from hfguard.target import TargetFile

MAX_MLMODEL_BYTES = 1024 * 1024
_PATH_KEYS = ("data", "model_path", "pickled_model", "python_model", "code", "artifacts", "model_data",
              "saved_model_dir", "keras_model", "model_file")
_PICKLE_FORMATS = {"pickle", "cloudpickle"}
# loader modules whose import runs processes or code by name
_DANGEROUS_ROOTS = {"os", "posix", "nt", "subprocess", "builtins", "sys", "importlib", "runpy", "pty", "code",
                    "ctypes", "pickle", "marshal", "shutil", "socket", "webbrowser"}


def _escapes(p: str) -> bool:
    q = p.replace("\\", "/")
    return q.startswith(("/", "~")) or ".." in q.split("/") or (len(q) > 1 and q[1] == ":") or "://" in q


def _paths(value: Any, key: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (str, dict)):
                yield from _paths(v.get("path") if isinstance(v, dict) else v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value[:256]):
            if isinstance(v, str):
                yield f"{key}[{i}]", v


def mlmodel_problems(doc: Any) -> list[Observation]:
    if not isinstance(doc, dict) or not isinstance(doc.get("flavors"), dict):
        return [Observation("mlflow/bad-mlmodel", Severity.MEDIUM, "MLmodel has no flavors mapping")]
    out: list[Observation] = []
    for flavor, spec in doc["flavors"].items():
        if not isinstance(spec, dict):
            continue
        where = f"flavors.{flavor}"
        loader = spec.get("loader_module")
        if flavor == "python_function" and isinstance(loader, str) and not loader.startswith("mlflow."):
            dangerous = loader.split(".")[0] in _DANGEROUS_ROOTS
            out.append(Observation(
                "mlflow/loader-module", Severity.CRITICAL if dangerous else Severity.HIGH,
                f"pyfunc loader_module {loader!r} is outside mlflow: load_model imports it and calls its "
                "_load_pyfunc", f"{where}.loader_module", {"loader_module": loader}))
        for key in _PATH_KEYS:
            for k, p in _paths(spec.get(key), f"{where}.{key}"):
                if _escapes(p):
                    out.append(Observation("mlflow/path-escape", Severity.HIGH,
                                           f"{k} points outside the model folder: {p!r}", k, {"path": p}))
        if spec.get("code"):
            out.append(Observation("mlflow/model-code", Severity.MEDIUM,
                                   f"flavor {flavor} ships code ({spec['code']!r}) that loading puts on "
                                   "sys.path",
                                   f"{where}.code", {"code": str(spec["code"])[:200]}))
        fmt = spec.get("serialization_format")
        pickled = spec.get("pickled_model") or spec.get("python_model")
        if (isinstance(fmt, str) and fmt.lower() in _PICKLE_FORMATS) or spec.get("python_model"):
            out.append(Observation("mlflow/pickle-flavor", Severity.LOW,
                                   f"flavor {flavor} unpickles {pickled or 'its model file'} on load "
                                   f"({fmt or 'cloudpickle'}); the pickle itself is judged by "
                                   "static.serialization",
                                   where, {"serialization_format": fmt, "file": pickled}))
    return out


class MLflowCheck(Check):
    id = "static.mlflow"
    tier = "static"
    version = "1"
    description = "MLflow MLmodel: pyfunc loader modules outside mlflow, code paths, pickle flavors"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return file.name == "MLmodel"

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        import yaml  # MLmodel files only: other scans never import yaml

        try:
            doc = yaml.load(read_bounded(file, MAX_MLMODEL_BYTES), Loader=_safe_loader())  # noqa: S506
            problems = mlmodel_problems(doc)
        except (TooLarge, yaml.YAMLError, RecursionError, ValueError) as exc:
            problems = [Observation("mlflow/bad-mlmodel", Severity.MEDIUM,
                                    f"MLmodel not analysed: {str(exc)[:200]}")]
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Load only MLflow models whose flavors are mlflow's own; "
                                                  "review any code folder and pickled model first.")


def _safe_loader() -> type:
    """PyYAML's safe loader (libyaml's when present), imported when a file needs it."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)
