"""Thresholds: declared by each check (THRESHOLDS), keyed by check id or a shared section, validated
when the policy is read; a wrong key or type is a usage error (exit 2) that names the valid ones."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hfguard.checks import available_checks, threshold_declarations
from hfguard.cli import main
from testing.pickles import evil_pickle

ROOT = Path(__file__).resolve().parents[1]


def _scan(tmp_path: Path, policy: str, model: Path | None = None):
    (tmp_path / "hfguard.toml").write_text(policy)
    if model is None:
        model = tmp_path / "model"
        model.mkdir(exist_ok=True)
        (model / "pytorch_model.bin").write_bytes(evil_pickle(tmp_path / "pwned"))
    return CliRunner().invoke(main, ["scan", str(model), "--policy", str(tmp_path / "hfguard.toml"),
                                     "--format", "json", "-q"])


def test_a_declared_threshold_changes_what_the_check_does(tmp_path):
    res = _scan(tmp_path, '[thresholds."static.serialization"]\nmax-opcodes = 5\n')
    rules = {f["rule"] for fr in json.loads(res.stdout)["files"] for f in fr["findings"]}
    assert "pickle/limit-exceeded" in rules
    res = _scan(tmp_path, "")
    rules = {f["rule"] for fr in json.loads(res.stdout)["files"] for f in fr["findings"]}
    assert "pickle/limit-exceeded" not in rules and "pickle/dangerous-global" in rules


def test_shared_sections_weights_and_behavior_stay_valid(tmp_path):
    # an integer where the default is a float is fine: TOML writes 8 for 8.0
    res = _scan(tmp_path, "[thresholds.weights]\nrobust-z = 8\nsurgical-max-tensors = 2\n"
                          "[thresholds.behavior]\nhomoglyph-z = 5.0\ncanaries = 64\n")
    assert res.exit_code == 1, res.output  # the evil pickle still blocks: the policy was accepted


@pytest.mark.parametrize("policy, named, valid", [
    ('[thresholds."static.pickle"]\nmax-opcodes = 5\n', "'static.pickle'", "'static.serialization'"),
    ('[thresholds."static.serialization"]\nmax-opcode = 5\n', "'max-opcode'", "max-opcodes"),
    ("[thresholds.weights]\nrobustz = 5.0\n", "'robustz'", "robust-z-high"),
])
def test_unknown_section_or_key_is_a_usage_error_naming_the_valid_ones(tmp_path, policy, named, valid):
    res = _scan(tmp_path, policy)
    assert res.exit_code == 2, res.output
    assert "Usage" in res.output and named in res.output and valid in res.output


@pytest.mark.parametrize("policy, expected", [
    ('[thresholds."static.serialization"]\nmax-opcodes = "many"\n', "must be an integer"),
    ('[thresholds."static.serialization"]\nmax-opcodes = 1.5e6\n', "must be an integer"),
    ('[thresholds."static.keras"]\nuse-h5py = 1\n', "must be a boolean"),
    ("[thresholds.weights]\nrobust-z = true\n", "must be a number"),
    ("[thresholds]\nweights = 3\n", "must be a table"),
])
def test_mistyped_threshold_is_a_usage_error(tmp_path, policy, expected):
    res = _scan(tmp_path, policy)
    assert res.exit_code == 2 and expected in res.output, res.output


def test_pyproject_policy_is_validated_too(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.hfguard.thresholds."static.safetensors"]\nmax-bytes = 1\n')
    (tmp_path / "m.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["scan", "m.safetensors", "-q"])
    assert res.exit_code == 2 and "'max-bytes'" in res.output and "max-header-bytes" in res.output


def _threshold_names_read_in_source() -> set[str]:
    """Names the code reads: ctx.threshold(section, "name", ...), self.th(ctx, "name"), th("name")."""
    names: set[str] = set()
    for path in (ROOT / "hfguard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            position = {"threshold": 1, "th": -1, "t": 0}.get(fn)
            if position is None or len(node.args) <= max(position, -position - 1):
                continue
            arg = node.args[position]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
    return names


def test_every_threshold_the_code_reads_is_declared():
    declared = {name for section in threshold_declarations().values() for name in section}
    read = _threshold_names_read_in_source()
    assert {"max-opcodes", "use-h5py", "min-probe-texts"} <= read  # the scan sees the real reads
    assert read - declared == set()


def test_declarations_have_plain_types_and_known_sections():
    sections = {c.threshold_section or c.id for c in available_checks()}
    assert {"static.serialization", "static.safetensors", "static.keras", "static.custom_code",
            "weights", "behavior"} <= sections
    for section, values in threshold_declarations().items():
        for name, default in values.items():
            assert type(default) in (bool, int, float, str), (section, name)


# -- every policy key's type: a wrong one is a usage error naming the key, never a traceback ----------
_VALUES = {"string": '"x"', "integer": "3", "float": "1.5", "boolean": "true",
           "datetime": "1979-05-27T07:32:00Z", "strings": '["static"]', "integers": "[1, 2]",
           "table": "{ a = 1 }", "tables": "[{ a = 1 }]"}
_ACCEPTS = {  # the TOML kinds each key takes (everything else must be refused)
    "block-at": {"string"}, "flag-at": {"string"}, "fail-on": {"string"},
    "tiers": {"strings"}, "allow": {"strings"}, "deny": {"strings"}, "ignore-rules": {"strings"},
    "baseline": {"strings"}, "severity": set(), "thresholds": set(), "require-signature": {"boolean"},
    "trusted-signers": set(),   # a list of { key = PATH } tables: { a = 1 } entries are wrong too
}
_WRONG = [(key, kind) for key, ok in _ACCEPTS.items() for kind in _VALUES if kind not in ok]
# nested values: a per-rule severity override, a trusted signer's path, a threshold section
_NESTED = [(f'severity."pickle/unknown-global" = {v}', 'severity."pickle/unknown-global"')
           for k, v in _VALUES.items() if k != "string"] + \
          [(f"trusted-signers = [{{ key = {v} }}]", "trusted-signers") for k, v in _VALUES.items()
           if k != "string"] + \
          [(f'thresholds."static.serialization" = {v}', "thresholds") for k, v in _VALUES.items()
           if k != "table"]


def _usage_error(tmp_path: Path, policy: str, key: str, name: str = "hfguard.toml") -> None:
    (tmp_path / name).write_text(policy)
    res = CliRunner().invoke(main, ["scan", str(tmp_path), "--policy", str(tmp_path / name), "-q"])
    assert isinstance(res.exception, SystemExit), res.exception   # not a traceback
    assert res.exit_code == 2 and "Error" in res.output and key in res.output, res.output


@pytest.mark.parametrize("key, kind", _WRONG)
def test_every_policy_key_refuses_every_wrong_type(tmp_path, key, kind):
    _usage_error(tmp_path, f"{key} = {_VALUES[kind]}\n", key)


@pytest.mark.parametrize("line, key", _NESTED)
def test_nested_policy_values_refuse_wrong_types(tmp_path, line, key):
    _usage_error(tmp_path, line + "\n", key)


def test_pyproject_policy_with_a_list_severity_is_a_usage_error(tmp_path):
    _usage_error(tmp_path, '[tool.hfguard.severity]\n"pickle/unknown-global" = ["high"]\n',
                 'severity."pickle/unknown-global"', name="pyproject.toml")
    _usage_error(tmp_path, "[tool]\nhfguard = 3\n", "must be a table", name="pyproject.toml")


def test_well_typed_policy_is_still_accepted(tmp_path):
    (tmp_path / "hfguard.toml").write_text(
        'block-at = "critical"\nflag-at = "low"\nfail-on = "block"\ntiers = ["static"]\nallow = ["acme/*"]\n'
        'deny = []\nignore-rules = ["pickle/unknown-global"]\nbaseline = []\nrequire-signature = false\n'
        'trusted-signers = []\n[severity]\n"pickle/dangerous-global" = "medium"\n'
        '[thresholds."static.serialization"]\nmax-opcodes = 100000\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "pytorch_model.bin").write_bytes(evil_pickle(tmp_path / "pwned"))
    res = CliRunner().invoke(main, ["scan", str(model), "--policy", str(tmp_path / "hfguard.toml"),
                                    "--format", "json", "-q"])
    # the override turns the dangerous global into a medium finding: below block-at = critical
    assert res.exit_code == 0 and json.loads(res.stdout)["verdict"] == "FLAG", res.output


@pytest.mark.parametrize("policy, key, hint", [
    ('[severity]\n"pickle/dangerous-globl" = "low"\n', "pickle/dangerous-globl", "pickle/dangerous-global"),
    ('ignore-rules = ["weights/surgical-edits"]\n', "weights/surgical-edits", "weights/surgical-edit"),
])
def test_a_mistyped_rule_id_is_a_usage_error_with_the_nearest_ids(tmp_path, policy, key, hint):
    """An override or ignore for a rule id hfguard does not have would silently change nothing."""
    _usage_error(tmp_path, policy, key)
    res = CliRunner().invoke(main, ["scan", str(tmp_path), "--policy", str(tmp_path / "hfguard.toml"), "-q"])
    assert f"did you mean {hint}" in res.output


def test_rule_ids_of_plugin_prefixes_are_taken_as_they_are(tmp_path):
    policy = 'ignore-rules = ["acme/house-rule"]\n[severity]\n"acme/x" = "low"\n'
    (tmp_path / "hfguard.toml").write_text(policy)
    res = CliRunner().invoke(main, ["scan", str(tmp_path), "--policy", str(tmp_path / "hfguard.toml"), "-q"])
    assert res.exit_code == 0, res.output
