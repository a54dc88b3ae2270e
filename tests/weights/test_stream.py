"""ShardStream: remote shards fetched as the passes read them, at most a window on disk, deleted
after; a base sharded so that the model's order interleaves its shards is re-fetched, never skipped.

The "remote" files here are TargetFiles without a local copy whose fetch copies the real file into
the folder it is given (what hub.resolve's fetcher does with a download), so every read of a tensor
goes through the stream."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hfguard.budget import Budget
from hfguard.target import Target, TargetFile, local_file, local_target
from hfguard.weights.check import DEFAULTS
from hfguard.weights.defaults import DIFF_DEFAULTS
from hfguard.weights.diff import diff_checkpoints
from hfguard.weights.progress import ByteMeter, Work
from hfguard.weights.shards import model_checkpoints
from hfguard.weights.stats import backend_for
from hfguard.weights.stream import ShardStream
from hfguard.weights.tensors import WeightsFormatError
from tests.weights.test_shards import _bin_shards, gpt2  # noqa: F401 - the module fixture

TH = {**DEFAULTS, **DIFF_DEFAULTS}


def remote(folder: Path, fetched: list[str], cached: Path | None = None, fail: str = "") -> Target:
    """The folder as a remote target: headers read through open(), bytes only through fetch().
    `cached`: a folder standing for the user's HF cache, whose files are handed out in place."""

    def file(p: Path) -> TargetFile:
        def fetch(scratch: Path | None = None) -> Path:
            fetched.append(p.name)
            if p.name == fail:
                raise OSError("connection reset")
            if cached is not None:
                return cached / p.name
            assert scratch is not None
            scratch.mkdir(parents=True)
            return Path(shutil.copy(p, scratch / p.name))

        return TargetFile(path=p.name, size=p.stat().st_size, opener=lambda: open(p, "rb"), fetch=fetch)

    weights = (".safetensors", ".bin")   # index and config files: small, downloaded as before
    return Target(name=folder.name, source="hub",
                  files=[file(p) if p.name.endswith(weights) else local_file(p, p.name)
                         for p in sorted(folder.iterdir()) if p.is_file()])


def test_shards_are_fetched_once_each_in_order_and_at_most_the_window_is_held(gpt2):  # noqa: F811
    fetched: list[str] = []
    lines: list[str] = []
    [ref], _ = model_checkpoints(local_target([str(gpt2["base"])]))
    with ShardStream("weights", lines.append) as stream:
        [tgt], _ = model_checkpoints(remote(gpt2["rome"], fetched), stream)
        assert fetched == []   # headers by range reads: nothing downloaded before the pass
        res = diff_checkpoints(ref, tgt, backend_for("cpu"), TH, Budget())
        scratch = stream.root
        largest = max(s.tf.size for s in stream.shards)
        assert stream.peak_shards <= 2 and stream.peak_bytes <= 2 * largest, stream.events
        assert stream.refetched == 0
    assert [d.name for d in res.deltas] == [gpt2["edited"]]
    shards = sorted(n for n in os.listdir(gpt2["rome"]) if n.startswith("model-"))
    assert fetched == shards   # each once, in file order
    released = [name for what, name, _ in stream.events if what == "released"]
    assert released == shards   # the window slid: each deleted after its tensors were read
    assert not scratch.exists()
    assert any("fetched in" in ln for ln in lines)


def test_a_download_in_progress_says_its_bytes_rate_and_eta(tmp_path, monkeypatch):
    """A single large file is fetched before the pass reads anything, so the pass's meter has no
    rate to show: the stream says the partial download's bytes, rate and ETA while it lasts."""
    import time

    from hfguard.weights import stream as stream_module

    monkeypatch.setattr(stream_module, "FETCH_EVERY_S", 0.02)   # several lines per write, even under load
    size = 8 << 20

    def fetch(scratch: Path | None = None) -> Path:   # as hf_hub_download writes: a growing .incomplete
        assert scratch is not None
        part = scratch / "blobs" / "abc.incomplete"
        part.parent.mkdir(parents=True)
        with open(part, "wb") as fh:
            for _ in range(8):
                fh.write(b"\0" * (1 << 20))
                fh.flush()
                time.sleep(0.05)
        return part.rename(scratch / "model.safetensors")

    lines: list[str] = []
    with ShardStream("weights", lines.append) as stream:
        shard = stream.add(TargetFile(path="model.safetensors", size=size, opener=lambda: None, fetch=fetch))
        assert shard.local().stat().st_size == size
        time.sleep(0.15)   # the reporter stopped with the download
        said = [ln for ln in lines if " fetched, " in ln]
        assert said and all(ln.startswith("weights: shard 1/1 model.safetensors: ") for ln in said), lines
        assert any(" of 8.4 MB fetched, " in ln and "/s, ETA " in ln for ln in said), said
        assert lines[-1].startswith("weights: shard 1/1 model.safetensors fetched in ")


def test_a_base_whose_shards_interleave_beyond_the_window_is_refetched_not_skipped(gpt2, tmp_path):  # noqa: F811
    """Round-robin .bin shards (tensor k in shard k mod 4): the model's order asks for base shards
    1, 2, 3, 4, 1, 2... A window of 2 (a read may go one over it rather than evict a shard read
    again: 3) cannot hold them; they are fetched again and the diff is whole."""
    folder = tmp_path / "base"
    folder.mkdir()
    _bin_shards({k: v for k, v in gpt2["state"].items()}, folder, 4)   # edited state: the base has the edit
    fetched: list[str] = []
    lines: list[str] = []
    [tgt], _ = model_checkpoints(local_target([str(gpt2["clean"])]))
    with ShardStream("weights: base", lines.append) as stream:
        [ref], _ = model_checkpoints(remote(folder, fetched), stream)
        res = diff_checkpoints(ref, tgt, backend_for("cpu"), TH, Budget())
        assert stream.peak_shards <= 3
    assert stream.refetched > 0 and len(fetched) > 4
    [local_ref], _ = model_checkpoints(local_target([str(folder)]))
    assert res.compared == diff_checkpoints(local_ref, tgt, backend_for("cpu"), TH, Budget()).compared > 50
    assert [d.name for d in res.deltas] == [gpt2["edited"]]   # every tensor compared, the edit found
    assert any("fetching again" in ln for ln in lines) and any("more than once" in ln for ln in lines)


def test_files_from_the_hf_cache_are_read_in_place_and_never_deleted(gpt2, tmp_path):  # noqa: F811
    cache = tmp_path / "hf-cache"
    shutil.copytree(gpt2["clean"], cache)
    before = sorted(os.listdir(cache))
    fetched: list[str] = []
    with ShardStream(window=1) as stream:
        [tgt], _ = model_checkpoints(remote(gpt2["clean"], fetched, cached=cache), stream)
        for name in tgt.tensors:
            tgt.load(name)
        assert stream.peak_shards == 1
    assert sorted(os.listdir(cache)) == before
    assert len(fetched) == len([n for n in before if n.startswith("model-")])


def test_a_shard_that_cannot_be_fetched_is_an_error_not_a_skip(gpt2):  # noqa: F811
    fetched: list[str] = []
    [ref], _ = model_checkpoints(local_target([str(gpt2["base"])]))
    with ShardStream() as stream:
        [tgt], _ = model_checkpoints(remote(gpt2["rome"], fetched, fail="model-00003-of-00007.safetensors"),
                                     stream)
        with pytest.raises(WeightsFormatError, match="model-00003-of-00007.safetensors: download failed"):
            diff_checkpoints(ref, tgt, backend_for("cpu"), TH, Budget())


def test_the_meter_counts_the_item_it_is_told_and_never_parses_the_message():
    lines: list[str] = []
    meter = ByteMeter("w", 60, {"a b": Work(10, "f"), "b": Work(5, "f")}, lines.append)
    meter.tick("reading b")          # a message naming a tensor is not a start
    meter.tick("reading a b", item="a b")   # a name with a space: counted whole
    meter.tick("measuring a b", item="a b")  # the same item again: counted once
    meter.tick("reading b", item="b")
    assert (meter.done, meter.started_bytes) == (10, 15)


def test_the_next_shard_downloads_while_this_one_is_read(gpt2):  # noqa: F811
    fetched: list[str] = []
    with ShardStream(window=3) as stream:
        [tgt], _ = model_checkpoints(remote(gpt2["clean"], fetched), stream)
        first = next(m for m in tgt.float_tensors())
        tgt.load(first.name)   # a read of shard 1 starts shard 2 in the background
        nxt = stream.shards[1]
        assert nxt.future is not None and nxt.future.result() == nxt.local_path
        assert fetched == ["model-00001-of-00007.safetensors", "model-00002-of-00007.safetensors"]
        assert stream.shards[2].future is None   # one ahead, not the whole model


def test_a_base_sharded_unlike_the_model_is_fetched_once_per_shard_however_slow_the_reads(
        gpt2, tmp_path, monkeypatch):  # noqa: F811
    """The base in 4 shards of ~350 KB, the model in 7 of ~200 KB: the model's order reads base
    shards 1, 2, 1, 2, 3, 4. With reads slower than the prefetch's grace (none here), the pass's
    plan keeps shard 1 until its last tensor was read instead of evicting it for a prefetch and
    fetching it again; each side's shards are fetched once, in order, and the diff is the local one."""
    from hfguard.weights import stream as stream_module
    from testing import weight_edits as we

    monkeypatch.setattr(stream_module, "GRACE_S", 0.0)
    folder = tmp_path / "base"
    we.build("gpt2", 0).save_pretrained(folder, max_shard_size="350KB")   # seeded: gpt2["base"]'s weights
    fetched_model: list[str] = []
    fetched_base: list[str] = []
    with ShardStream("m") as ours, ShardStream("b") as theirs:
        [tgt], _ = model_checkpoints(remote(gpt2["rome"], fetched_model), ours)
        [ref], _ = model_checkpoints(remote(folder, fetched_base), theirs)
        order = [ref.tensors[n].shard.index for n in sorted(ref.tensors, key=lambda n: (
            str(tgt.tensors[n].path), tgt.tensors[n].offset))]
        assert [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k][:4] == [0, 1, 0, 1]
        res = diff_checkpoints(ref, tgt, backend_for("cpu"), TH, Budget())
        assert theirs.peak_shards <= 2 and ours.peak_shards <= 2
        assert fetched_base == sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
        assert fetched_model == sorted(n for n in os.listdir(gpt2["rome"]) if n.endswith(".safetensors"))
        [local], _ = model_checkpoints(local_target([str(folder)]))
        assert res == diff_checkpoints(local, tgt, backend_for("cpu"), TH, Budget())
    assert [d.name for d in res.deltas] == [gpt2["edited"]]
