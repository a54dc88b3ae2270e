"""Identity inference: a tiny CLIP trained on some people's named photos names them from new photos;
people it never saw stay at chance."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from hfguard.cli import main  # noqa: E402
from testing import identities  # noqa: E402
from testing.organisms import char_tokenizer, save  # noqa: E402


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("idia")
    names = identities.people(8, seed=3)
    members, outsiders = names[:4], names[4:]
    tok = char_tokenizer()
    model = save(identities.clip_that_knows(members, tok), tok, tmp / "clip")
    folder = identities.write_identities(tmp / "people", names, per_person=10, seed=7)   # new photos
    return model, folder, members, outsiders


def test_people_in_the_training_data_are_named_and_others_are_not(audited):
    model, folder, members, outsiders = audited
    result = CliRunner().invoke(main, ["audit-identities", str(model), "--identities", str(folder),
                                       "--format", "json", "-q", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    by_name = {r["name"]: r for r in doc["identities"]}
    assert doc["candidates"] == 8
    assert all(by_name[m]["inferred"] and by_name[m]["p_value"] < 1e-3 for m in members)
    assert not any(by_name[o]["inferred"] for o in outsiders)


def test_only_outsiders_exit_0_and_bad_input_exit_2(audited, tmp_path):
    model, folder, members, outsiders = audited
    only = tmp_path / "outsiders"
    for o in outsiders:
        (only / o.replace(" ", "_")).mkdir(parents=True)
        for p in (folder / o.replace(" ", "_")).iterdir():
            (only / o.replace(" ", "_") / p.name).write_bytes(p.read_bytes())
    result = CliRunner().invoke(main, ["audit-identities", str(model), "--identities", str(only), "-q",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "0 of 4 people" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["audit-identities", str(model), "--identities", str(empty), "-q"])
    assert result.exit_code == 2 and "at least two people" in result.output
