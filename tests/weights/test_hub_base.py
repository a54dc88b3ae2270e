"""The base model named on a Hub card is fetched through hfguard.hub (a local fake Hub server)."""

from __future__ import annotations

from tests.hub.conftest import hub, run_check  # noqa: F401 - the fake-Hub fixture


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_card_base_model_is_diffed_through_the_hub(hub, gpt2_models):  # noqa: F811
    hub.add_repo("honest-org/tiny-gpt2", _files(gpt2_models["base"]))
    hub.add_repo("look-alike/tiny-gpt2-chat", _files(gpt2_models["rome"]),
                 card={"base_model": "honest-org/tiny-gpt2"})
    code, report, _ = run_check("look-alike/tiny-gpt2-chat", "--tier", "weights", "--no-cache")
    found = {f["rule"]: f for f in report["findings"]}
    assert found["weights/surgical-edit"]["location"] == "transformer.h.1.mlp.c_proj.weight"
    assert found["weights/base-diff-summary"]["evidence"]["base"] == "honest-org/tiny-gpt2"
    assert report["verdict"] == "BLOCK" and code == 1


def test_explicit_hub_base_through_the_cli(hub, gpt2_models):  # noqa: F811
    hub.add_repo("honest-org/tiny-gpt2", _files(gpt2_models["base"]))
    hub.add_repo("someone/tuned", _files(gpt2_models["finetune"]))
    code, report, _ = run_check("someone/tuned", "--tier", "weights", "--no-cache",
                                "--base", "honest-org/tiny-gpt2")
    found = {f["rule"]: f for f in report["findings"]}
    assert found["weights/base-diff-summary"]["evidence"]["changed"] > 20
    assert "weights/surgical-edit" not in found and report["verdict"] == "PASS" and code == 0
