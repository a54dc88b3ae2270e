"""Range reads: byte-exact against the content, cached in blocks, bounded on misbehaving servers."""

from __future__ import annotations

import io
import random
import zipfile

import pytest

from hfguard.hub.remote import BlockCache, HubReadError, RangeReader, TransferStats
from testing.fakehub.builders import torch_zip_bytes


def reader(hub, repo: str, sha: str, name: str, size: int, **kw) -> tuple[BlockCache, TransferStats]:
    stats = TransferStats()
    url = f"{hub.url}/{repo}/resolve/{sha}/{name}"
    return BlockCache(url, size, headers={}, stats=stats, name=name, **kw), stats


def test_random_seeks_and_reads_match_the_bytes(hub):
    data = random.Random(0).randbytes(300_000)
    sha = hub.add_repo("acme/r", {"blob.bin": data})
    cache, stats = reader(hub, "acme/r", sha, "blob.bin", len(data), block_size=4096, max_blocks=8)
    fh = RangeReader(cache)
    rng = random.Random(1)
    for _ in range(200):
        off, n = rng.randrange(len(data) + 10), rng.randrange(20_000)
        fh.seek(off)
        assert fh.read(n) == data[off:off + n]
    fh.seek(-10, io.SEEK_END)
    assert fh.read() == data[-10:] and fh.tell() == len(data)
    fh.seek(0)
    fh.read(1)
    assert len(cache.blocks) <= 8   # the LRU keeps memory bounded
    assert stats.bytes == hub.bytes_sent() and stats.requests == len(hub.requests("GET .*/resolve/"))


def test_blocks_are_shared_between_streams_and_reads_coalesce(hub):
    data = bytes(range(256)) * 4096
    sha = hub.add_repo("acme/r", {"blob.bin": data})
    cache, stats = reader(hub, "acme/r", sha, "blob.bin", len(data), block_size=1024)
    assert RangeReader(cache).read(10 * 1024) == data[:10 * 1024]
    assert stats.requests == 1 and stats.bytes == 10 * 1024   # ten blocks in one request
    second = RangeReader(cache)
    second.seek(2048)
    assert second.read(100) == data[2048:2148]
    assert stats.requests == 1   # already cached


def test_zipfile_reads_only_the_central_directory_and_one_member(hub):
    model = torch_zip_bytes(b"\x80\x02}q\x00.", padding=2 << 20)
    sha = hub.add_repo("acme/r", {"pytorch_model.bin": model})
    cache, stats = reader(hub, "acme/r", sha, "pytorch_model.bin", len(model))
    with zipfile.ZipFile(RangeReader(cache)) as zf:
        assert zf.read("archive/data.pkl") == b"\x80\x02}q\x00."
    assert stats.bytes < len(model) / 8


def test_size_disagreement_416_and_404_are_errors(hub):
    sha = hub.add_repo("acme/r", {"blob.bin": b"x" * 100})
    cache, _ = reader(hub, "acme/r", sha, "blob.bin", 1000)   # the listing claims more than is served
    with pytest.raises(HubReadError) as info:
        RangeReader(cache).read(10)
    assert info.value.rule == "hub/size-mismatch"
    fh = RangeReader(cache)
    fh.seek(500)
    with pytest.raises(HubReadError):
        fh.read(10)
    cache, _ = reader(hub, "acme/r", sha, "nope.bin", 10)
    with pytest.raises(HubReadError, match="404") as info:
        RangeReader(cache).read(1)
    assert info.value.rule == "hub/not-found"


def test_small_file_on_a_server_ignoring_range_is_read_once(hub):
    data = b"y" * 50_000
    sha = hub.add_repo("acme/r", {"blob.bin": data})
    hub.fail("GET /acme/r/resolve/", ignore_range=True, times=-1)
    cache, stats = reader(hub, "acme/r", sha, "blob.bin", len(data), block_size=1024)
    fh = RangeReader(cache)
    fh.seek(30_000)
    assert fh.read(10) == data[30_000:30_010]
    fh.seek(0)
    assert fh.read(5) == data[:5]
    assert stats.requests == 1 and stats.bytes == len(data)


def test_paths_info_speaks_the_hub_shape(hub):
    from huggingface_hub import HfApi

    data = b"z" * 20_000
    sha = hub.add_repo("acme/r", {"big.safetensors": data, "small.json": b"{}"})
    infos = {i.path: i for i in HfApi(endpoint=hub.url).get_paths_info(
        "acme/r", ["big.safetensors", "small.json"], revision=sha, expand=True)}
    assert infos["big.safetensors"].lfs.size == len(data) and infos["small.json"].lfs is None
    assert infos["big.safetensors"].security.status == "safe"
