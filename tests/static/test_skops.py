"""skops files (issue 12): schema.json names outside skops' default trusted set. Real files written by
skops.io.dump; skops' own get_untrusted_types is the reference for what it would refuse."""

from __future__ import annotations

import builtins
import json
import operator
import os
import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.skops import SkopsCheck
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target

X, Y = np.random.default_rng(0).random((20, 3)), np.array([0, 1] * 10)


def _scan(path):
    report = scan(local_target([str(path)]), Policy(), [SkopsCheck(), SerializationCheck()])
    return report, report.all_findings()


BENIGN = {
    "logreg": lambda: LogisticRegression().fit(X, Y),
    "tree": lambda: DecisionTreeClassifier(max_depth=3).fit(X, Y),
    "forest": lambda: RandomForestClassifier(n_estimators=3, max_depth=2).fit(X, Y),
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y),
    "ufunc": lambda: FunctionTransformer(np.log1p),
}


@pytest.mark.parametrize("kind", sorted(BENIGN))
def test_everyday_sklearn_models_pass(tmp_path, kind):
    path = tmp_path / f"{kind}.skops"
    sio.dump(BENIGN[kind](), path)
    report, found = _scan(path)
    assert report.verdict is Verdict.PASS, [(f.rule, f.message) for f in found]


@pytest.mark.parametrize("obj, name, severity", [
    (builtins.eval, "builtins.eval", Severity.CRITICAL),
    (FunctionTransformer(os.system), "posix.system", Severity.CRITICAL),
    (operator.methodcaller("system", "id"), "operator.methodcaller", Severity.HIGH),
    (operator.attrgetter("__globals__"), "operator.attrgetter", Severity.HIGH),
])
def test_untrusted_callables_block(tmp_path, obj, name, severity):
    path = tmp_path / "evil.skops"
    sio.dump({"model": LogisticRegression().fit(X, Y), "x": obj}, path)
    assert name in sio.get_untrusted_types(file=path)   # skops itself would refuse it by default
    report, found = _scan(path)
    hit = [f for f in found if f.evidence.get("type") == name]
    assert hit and hit[0].rule == "skops/dangerous-type" and hit[0].severity is severity
    assert report.verdict is Verdict.BLOCK


class Custom:
    def __init__(self) -> None:
        self.a = 1


def test_unknown_class_flags_like_skops_refuses_it(tmp_path):
    path = tmp_path / "custom.skops"
    sio.dump(Custom(), path)
    untrusted = sio.get_untrusted_types(file=path)
    report, found = _scan(path)
    assert {f.evidence["type"] for f in found} == set(untrusted)
    assert {f.rule for f in found} == {"skops/untrusted-type"} and report.verdict is Verdict.FLAG


def test_hand_edited_schema_reaching_os_system(tmp_path):
    """The published technique: rewrite a benign dump's schema so a FunctionNode names os.system."""
    path = tmp_path / "m.skops"
    sio.dump(FunctionTransformer(np.log1p), path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    schema = members["schema.json"].decode().replace('"log1p"', '"system"').replace('"numpy"', '"os"')
    members["schema.json"] = schema.encode()
    evil = tmp_path / "evil.skops"
    with zipfile.ZipFile(evil, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    report, found = _scan(evil)
    assert any(f.evidence.get("type") == "os.system" and f.severity is Severity.CRITICAL for f in found)
    assert report.verdict is Verdict.BLOCK


def test_broken_skops_files_are_findings(tmp_path):
    bad = tmp_path / "bad.skops"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("schema.json", "{not json")
    assert {f.rule for f in _scan(bad)[1]} == {"skops/bad-schema"}
    other = tmp_path / "other.zip"   # some other zip with a schema.json is not a skops dump
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("schema.json", json.dumps({"type": "object"}))
    assert _scan(other)[0].verdict is Verdict.PASS


def test_method_nodes(tmp_path):
    """A bound method is never trusted by skops; one that reaches a dunder attribute is a gadget."""
    path = tmp_path / "method.skops"
    sio.dump({"f": LogisticRegression().fit(X, Y).predict}, path)
    report, found = _scan(path)
    assert [(f.rule, f.severity) for f in found] == [("skops/untrusted-type", Severity.MEDIUM)]
    with zipfile.ZipFile(path) as zf:
        schema = zf.read("schema.json").decode().replace('"func": "predict"', '"func": "__reduce_ex__"')
    evil = tmp_path / "evil.skops"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("schema.json", schema)
    report, found = _scan(evil)
    assert any(f.rule == "skops/dangerous-type" and f.evidence.get("method") == "__reduce_ex__"
               for f in found)
    assert report.verdict is Verdict.BLOCK


def test_hostile_zips_are_read_as_skops_reads_them(tmp_path):
    """skops files are read with the bounded directory reader, not zipfile: of two schema.json
    entries the last is the one skops (zipfile) loads, so an evil one behind a benign one BLOCKs;
    100,001 entries overlapping one member are one finding; a lying size is refused as zipfile
    refuses it."""
    from testing.bombs import hand_zip

    benign = tmp_path / "benign.skops"
    sio.dump(FunctionTransformer(np.log1p), benign)
    with zipfile.ZipFile(benign) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    schema = dict(members)["schema.json"]
    evil_schema = schema.decode().replace('"log1p"', '"system"').replace('"numpy"', '"os"').encode()
    path = tmp_path / "m.skops"
    path.write_bytes(hand_zip(members))
    assert _scan(path)[0].verdict is Verdict.PASS
    path.write_bytes(hand_zip(members + [("schema.json", evil_schema)]))
    report, found = _scan(path)
    assert report.verdict is Verdict.BLOCK and any(f.evidence.get("type") == "os.system" for f in found)
    schema_first = [("schema.json", schema)] + [m for m in members if m[0] != "schema.json"]
    path.write_bytes(hand_zip(schema_first, aliases=100_001))   # the archive scanner says too many
    assert {f.rule for f in _scan(path)[1]} == {"skops/bad-schema", "archive/too-many-members"}
    path.write_bytes(hand_zip(members, declared={"schema.json": len(schema) - 5}))
    assert {f.rule for f in _scan(path)[1]} == {"skops/bad-schema"}
