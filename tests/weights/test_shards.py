"""Sharded models are one model: diffed by tensor name against a base sharded differently (or not
at all), shard by shard in bounded memory, with progress and a budget that names what it needs."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hfguard.budget import Budget, BudgetExceeded
from hfguard.checks import ScanContext
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.target import local_target
from hfguard.weights.check import DEFAULTS, WeightsAnomalies, WeightsBaseDiff
from hfguard.weights.defaults import DIFF_DEFAULTS
from hfguard.weights.diff import diff_checkpoints
from hfguard.weights.progress import ByteMeter, Work
from hfguard.weights.stats import backend_for
from hfguard.weights.tensors import checkpoints_of
from testing import weight_edits as we

INDEX = "model.safetensors.index.json"


def _scan(path: Path, base: Path | None = None, **kw):
    checks = [WeightsAnomalies(), WeightsBaseDiff()]
    return scan(local_target([str(path)]), Policy(tiers=("weights",)), checks,
                options={"base": str(base)} if base else {}, **kw)


def verdict(path: Path, base: Path | None = None) -> tuple[Verdict, list[tuple[str, str]]]:
    report = _scan(path, base)
    return report.verdict, sorted({(f.rule, f.file or "") for f in report.all_findings()
                                   if f.severity > Severity.INFO})


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> dict[str, Path]:
    return we.sharded_gpt2_with_rome(tmp_path_factory.mktemp("shards"))


def test_rome_edit_in_the_last_shard_is_blocked_against_a_single_file_base(gpt2):
    report = _scan(gpt2["rome"], gpt2["base"])
    assert report.verdict is Verdict.BLOCK
    [hit] = [f for f in report.all_findings() if f.rule == "weights/surgical-edit"]
    assert hit.location == gpt2["edited"] and hit.file == str(gpt2["rome"] / INDEX)
    summary = next(f for f in report.all_findings() if f.rule == "weights/base-diff-summary").evidence
    assert summary["changed"] == 1 and summary["compared"] > 50


def test_clean_resharded_copy_passes_both_ways(gpt2):
    assert verdict(gpt2["clean"], gpt2["base"]) == (Verdict.PASS, [])
    assert verdict(gpt2["base"], gpt2["clean"]) == (Verdict.PASS, [])   # a sharded base, one-file model


def _bin_shards(state: dict[str, np.ndarray], folder: Path, n: int = 3) -> Path:
    """pytorch_model-0000k-of-0000N.bin shards (torch zip) + their index, split unlike the others."""
    import torch

    names = list(state)
    weight_map = {}
    for k in range(n):
        shard = f"pytorch_model-{k + 1:05d}-of-{n:05d}.bin"
        torch.save({name: torch.from_numpy(state[name]) for name in names[k::n]}, folder / shard)
        weight_map.update(dict.fromkeys(names[k::n], shard))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder / "pytorch_model.bin.index.json"


def test_pytorch_bin_shards_are_diffed_by_name(gpt2, tmp_path):
    index = _bin_shards(gpt2["state"], tmp_path)   # read without unpickling (torch zip layout)
    shutil.copy(gpt2["base"] / "config.json", tmp_path / "config.json")
    v, rules = verdict(tmp_path, gpt2["base"])
    assert v is Verdict.BLOCK and ("weights/surgical-edit", str(index)) in rules


def test_edited_bin_shards_beside_clean_safetensors_shards_disagree(gpt2, tmp_path):
    folder = tmp_path / "two"
    shutil.copytree(gpt2["clean"], folder)
    index = _bin_shards(gpt2["state"], folder)
    v, rules = verdict(folder)
    assert v is Verdict.BLOCK and ("weights/inconsistent-copies", str(index)) in rules


def _broken(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    index = json.loads((dst / INDEX).read_text())
    change(dst, index["weight_map"])
    (dst / INDEX).write_text(json.dumps(index))
    return dst


def test_a_missing_shard_is_an_error_in_the_model_and_in_the_base(gpt2, tmp_path):
    gone = _broken(gpt2["clean"], tmp_path / "gone",
                   lambda d, wm: (d / "model-00003-of-00007.safetensors").unlink())
    v, rules = verdict(gone, gpt2["base"])
    assert v is Verdict.ERROR and ("weights/missing-shard", str(gone / INDEX)) in rules
    v, rules = verdict(gpt2["clean"], gone)   # the base is partial: the diff cannot vouch
    assert v is Verdict.ERROR and ("weights/missing-shard", f"base {gone}: {gone / INDEX}") in rules


@pytest.mark.parametrize("change", ["listed-but-absent", "present-but-unlisted"])
def test_index_and_shards_that_disagree_do_not_pass(gpt2, tmp_path, change):
    def edit(d: Path, wm: dict[str, str]) -> None:
        if change == "listed-but-absent":   # a loader would initialise it at random
            wm["transformer.h.0.mlp.c_fc.extra"] = "model-00002-of-00007.safetensors"
        else:                               # a loader may still load it from the shard
            del wm["transformer.h.5.mlp.c_fc.weight"]
    folder = _broken(gpt2["clean"], tmp_path / change, edit)
    v, rules = verdict(folder, gpt2["base"])
    assert v is Verdict.FLAG and ("weights/index-mismatch", str(folder / INDEX)) in rules


def _synthetic(root: Path, tensors: int = 64, rows: int = 256, shards: int = 8) -> tuple[Path, Path, int]:
    """A base in one file and a candidate of the same tensors in `shards` shards, three of them
    edited by a rank-one update; returns (base, candidate, bytes of the largest tensor)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    state = {f"model.layers.{i}.mlp.down_proj.weight": rng.standard_normal((rows, rows), np.float32)
             for i in range(tensors)}
    (root / "base").mkdir()
    save_file(state, str(root / "base" / "model.safetensors"))
    names = list(state)
    for n in names[-3:]:
        u, v = rng.standard_normal(rows), rng.standard_normal(rows)
        state[n] = state[n] + (0.3 * np.outer(u, v)).astype(np.float32)
    (root / "model").mkdir()
    weight_map = {}
    per = len(names) // shards
    for k in range(shards):
        shard = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = names[k * per:(k + 1) * per]
        save_file({n: state[n] for n in part}, str(root / "model" / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (root / "model" / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    return root / "base", root / "model", rows * rows * 4


def test_sharded_diff_holds_about_one_tensor_in_memory(tmp_path):
    base, model, largest = _synthetic(tmp_path)
    [ref], _ = checkpoints_of(local_target([str(base)]))
    [tgt], _ = checkpoints_of(local_target([str(model)]))
    total = sum(m.nbytes for m in tgt.tensors.values())
    th = {**DEFAULTS, **DIFF_DEFAULTS}
    be = backend_for("cpu")   # outside the trace: loading numba's kernels is not the diff's memory
    tracemalloc.start()
    try:
        res = diff_checkpoints(ref, tgt, be, th, Budget())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [d.name for d in res.deltas] == sorted(list(tgt.tensors)[-3:]) and res.compared == 64
    # the delta of one pair and its spectral temporaries (~3 tensors measured): never a shard (2 MiB
    # here) or the model (16 MiB)
    assert peak < 4 * largest, (peak, largest)
    assert peak < total / 16


def test_progress_names_shards_with_bytes_and_the_finish(gpt2):
    lines: list[str] = []
    target = local_target([str(gpt2["rome"])])
    ctx = ScanContext(policy=Policy(tiers=("weights",)), target=target, options={"base": str(gpt2["base"])},
                      progress=lines.append)
    list(WeightsBaseDiff().check_target(target, ctx))
    shards = list(we.shards_of(gpt2["rome"]))
    for k, shard in enumerate(shards, 1):   # every shard is announced as it is reached, in order
        assert any(f"shard {k}/{len(shards)} {shard}" in ln for ln in lines), (shard, lines)
    label = f"weights: diff {gpt2['rome'] / INDEX} vs {gpt2['base'] / 'model.safetensors'}"
    assert all(ln.startswith(label) for ln in lines), lines
    assert " MB in " in lines[-1]
    lines.clear()   # the statistics pass (tensors measured on a thread pool) reports the same way
    list(WeightsAnomalies().check_target(target, ctx))
    assert [k for k in range(1, len(shards) + 1) if any(f"shard {k}/{len(shards)} " in ln for ln in lines)] \
        == list(range(1, len(shards) + 1)), lines
    assert lines[-1].startswith(f"weights: {gpt2['rome'] / INDEX}: ") and " MB in " in lines[-1]


class Clock:
    """Scripted time: the meter reads the clock it is given."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_reports_rate_and_eta_and_names_the_budget_a_model_needs():
    clock, lines = Clock(), []
    work = {f"t{i}": Work(1_000_000_000, f"model-{i // 10 + 1:05d}-of-00010.safetensors") for i in range(100)}
    meter = ByteMeter("weights: big", 600, work, lines.append, clock=clock)
    for i in range(12):   # 1 GB per second
        meter.tick(f"reading t{i}", item=f"t{i}")
        clock.now += 1.0
    assert lines[-1] == ("weights: big: 10.00 GB of 100.00 GB (10%), "
                         "shard 2/10 model-00002-of-00010.safetensors, 1.00 GB/s, ETA 1m30s")
    clock = Clock()
    short = ByteMeter("weights: big", 60, work, lines.append, clock=clock)
    short.tick("reading t0", item="t0")
    clock.now = 0.9
    short.tick("reading t1", item="t1")   # 89 s to go at this rate, but under a second is not trusted
    clock.now = 2.0
    with pytest.raises(BudgetExceeded, match=r"2.00 GB of 100.00 GB read in 2.0s at 1.00 GB/s; the remaining "
                                             r"98.00 GB need ~98s more, beyond the 60s budget: "
                                             r"this model needs at least --budget 130"):
        short.tick("reading t2", item="t2")


def _streamed_pass(meter: ByteMeter, clock: Clock) -> None:
    """10 shards of 10 x 1 GB streamed from a Hub: the first shard's download (100 s) comes before
    its first item is read, its items then go fast; each later shard arrives (prefetched) 20 s
    after the one before: ~283 s in all."""
    for i in range(100):
        if i == 0:
            meter.tick("reading t0", item="t0")
            clock.now = 100.0   # the first shard downloading
        else:
            clock.now += 0.1 if i < 10 else 2.0
            meter.tick(f"reading t{i}", item=f"t{i}")


def test_a_streamed_pass_is_projected_from_whole_shards_not_from_the_first_download():
    """Measured from its first item, the pass above would look 1 GB in 100 s: ~2.5 hours for the
    rest, and a budget of 400 s given up at once. Over whole shards (the second's start to the
    latest's) it runs at 0.5 GB/s: it finishes within 400 s, and under 200 s it stops once that
    rate is known, naming a budget that would do."""
    work = {f"t{i}": Work(1_000_000_000, f"model-{i // 10 + 1:05d}-of-00010.safetensors") for i in range(100)}
    clock, lines = Clock(), []
    meter = ByteMeter("weights: hub", 400, work, lines.append, clock=clock, streamed=True)
    _streamed_pass(meter, clock)
    early = [ln for ln in lines if "shard 1/" in ln or "shard 2/" in ln]
    assert early and not any("ETA" in ln for ln in early), lines   # no rate from part of a shard
    assert lines[-1].endswith("99.00 GB of 100.00 GB (99%), shard 10/10 model-00010-of-00010.safetensors, "
                              "0.50 GB/s, ETA 2s"), lines
    clock = Clock()
    short = ByteMeter("weights: hub", 200, work, lines.append, clock=clock, streamed=True)
    with pytest.raises(BudgetExceeded, match=r"20.00 GB of 100.00 GB read in 123s at 0.50 GB/s; the "
                                             r"remaining 80.00 GB need ~160s more, beyond the 200s "
                                             r"budget: this model needs at least --budget 360"):
        _streamed_pass(short, clock)
    assert clock.now == pytest.approx(122.9)   # at the third shard's start: the first whole-shard rate
    clock = Clock()   # the same pass measured as a local one gives up on the first shard's download
    with pytest.raises(BudgetExceeded, match=r"needs at least --budget [0-9]{5}"):
        _streamed_pass(ByteMeter("weights: local", 400, work, lines.append, clock=clock), clock)
    assert clock.now < 102


def test_hostile_shard_names_are_escaped_on_the_progress_line():
    lines: list[str] = []
    work = {"a": Work(1, "a\x1b[2J.safetensors"), "b": Work(1, "b\nPASS.safetensors")}
    meter = ByteMeter("weights: x", 60, work, lines.append)
    meter.tick("reading a", item="a")
    meter.tick("reading b", item="b")
    assert lines and all("\x1b" not in ln and "\n" not in ln for ln in lines)
    assert "b\\nPASS.safetensors" in lines[-1]


def test_shards_without_an_index_are_one_model(gpt2, tmp_path):
    """Loaders that glob *.safetensors (vLLM, TGI) load unindexed shards as one model: judged as one."""
    folder = tmp_path / "noindex"
    shutil.copytree(gpt2["rome"], folder)
    (folder / INDEX).unlink()
    v, rules = verdict(folder, gpt2["base"])
    joined = str(folder / "model-*-of-00007.safetensors")
    assert v is Verdict.BLOCK and ("weights/surgical-edit", joined) in rules
    assert not any(r == "weights/base-tensors-removed" for r, _ in rules)   # not 7 fragments
    clean = tmp_path / "clean"
    shutil.copytree(gpt2["clean"], clean)
    (clean / INDEX).unlink()
    assert verdict(clean, gpt2["base"]) == (Verdict.PASS, [])
    (clean / "model-00004-of-00007.safetensors").unlink()
    v, rules = verdict(clean, gpt2["base"])
    assert v is Verdict.ERROR
    assert ("weights/missing-shard", str(clean / "model-*-of-00007.safetensors")) in rules


def test_a_tensor_in_two_unindexed_shards_is_reported(gpt2, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = tmp_path / "twice"
    shutil.copytree(gpt2["clean"], folder)
    (folder / INDEX).unlink()
    first = folder / "model-00001-of-00007.safetensors"
    state = load_file(str(first))
    state[gpt2["edited"]] = gpt2["state"][gpt2["edited"]]   # an edited copy of a tensor of the last shard
    save_file(state, str(first))
    report = _scan(folder, gpt2["base"])
    [dup] = {f.message: f for f in report.all_findings() if f.rule == "weights/duplicate-tensor"}.values()
    assert dup.location == gpt2["edited"] and report.verdict is Verdict.BLOCK   # the first copy is diffed


@pytest.mark.parametrize("shape", [(3000, 700), (40, 50), (5_000_000,)])
def test_equal_values_decides_on_every_entry_whatever_block_it_lies_in(shape):
    """Small first block, then 16 MiB blocks (large tensors) or the whole (small ones): a
    difference anywhere is found, NaNs in the same places and -0.0 against 0.0 are equal."""
    from hfguard.weights.shards import equal_values

    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(shape).astype(np.float32)
    w0.reshape(-1)[-7] = np.nan
    w0.reshape(-1)[5] = 0.0
    w1 = w0.copy()
    w1.reshape(-1)[5] = -0.0
    assert equal_values(w0, w1)
    for at in (0, 70_000 % w0.size, w0.size // 2, w0.size - 1):
        w2 = w1.copy()
        w2.reshape(-1)[at] += 1.0
        assert not equal_values(w0, w2), at
    w3 = w1.copy()
    w3.reshape(-1)[-7] = 1.0
    assert not equal_values(w0, w3)   # a NaN against a number
