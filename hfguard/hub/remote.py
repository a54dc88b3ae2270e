"""Seekable read-only files over HTTP Range requests, with a block cache and a byte counter.

Static checks seek to a safetensors header or a zip's central directory and read only that; this
is what makes `hfguard check` on a multi-GB repo cost kilobytes. Every request goes through
`huggingface_hub`'s own HTTP session (proxies, user agent, offline switch) with the Hub token.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from hfguard.hub.http import (
    Deadline,
    DeadlineExceeded,
    Retry,
    configure_session,
    operation_deadline,
    request_timeout,
    retry_after,
    with_retries,
)
from hfguard.target import RandomAccessReader

BLOCK_SIZE = 64 * 1024
MAX_BLOCKS = 256                  # 16 MiB of cached blocks per file
FULL_BODY_LIMIT = 16 * 1024 * 1024  # a server that ignores Range may send us at most this much
GATED_HINT = "gated or private — accept the terms on the model page and set HF_TOKEN"


class HubReadError(OSError):
    """A remote read failed for good (after bounded retries). `rule` names the reason."""

    def __init__(self, message: str, rule: str = "hub/read-failed") -> None:
        super().__init__(message)
        self.rule = rule


@dataclass
class TransferStats:
    """Bytes and requests that actually went over the wire, for the report."""

    bytes: int = 0
    requests: int = 0
    downloaded_files: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, n: int, requests: int = 0) -> None:
        with self.lock:
            self.bytes += n
            self.requests += requests


class BlockCache:
    """The fetched blocks of one remote file, shared by every stream opened on it."""

    def __init__(self, url: str, size: int, *, headers: dict[str, str], stats: TransferStats,
                 name: str = "", block_size: int = BLOCK_SIZE, max_blocks: int = MAX_BLOCKS,
                 deadline: Deadline | None = None) -> None:
        self.url, self.size, self.headers, self.stats = url, size, headers, stats
        # the check's deadline (reads run in the engine's worker threads); None: one per read
        self.deadline = deadline
        self.name = name or url
        self.block_size, self.max_blocks = block_size, max_blocks
        self.blocks: OrderedDict[int, bytes] = OrderedDict()
        self.whole: bytes | None = None   # set when a server ignored Range on a small file
        self.lock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        with self.lock:
            if self.whole is not None:
                return self.whole[offset:end]
            first, last = offset // self.block_size, (end - 1) // self.block_size
            missing = [i for i in range(first, last + 1) if i not in self.blocks]
            fetched: dict[int, bytes] = {}
            # one request per run of consecutive missing blocks
            for run in _runs(missing):
                if self.whole is not None:
                    break
                fetched.update(self._fetch_blocks(run[0], run[-1]))
            if self.whole is not None:
                return self.whole[offset:end]
            parts = []
            for i in range(first, last + 1):
                block = fetched.get(i) or self.blocks[i]
                self.blocks[i] = block
                self.blocks.move_to_end(i)
                parts.append(block)
            while len(self.blocks) > max(self.max_blocks, last - first + 1):
                self.blocks.popitem(last=False)
            data = b"".join(parts)
            start = offset - first * self.block_size
            return data[start:start + (end - offset)]

    def _fetch_blocks(self, first: int, last: int) -> dict[int, bytes]:
        start = first * self.block_size
        stop = min((last + 1) * self.block_size, self.size)
        data = self._get_range(start, stop)
        if self.whole is not None:
            return {}
        return {i: data[(i - first) * self.block_size:(i - first + 1) * self.block_size]
                for i in range(first, last + 1)}

    def _get_range(self, start: int, stop: int) -> bytes:
        from huggingface_hub.errors import OfflineModeIsEnabled

        what = f"{self.name}: reading bytes {start}-{stop - 1}"
        configure_session()
        try:
            outer = self.deadline if self.deadline is not None and self.deadline.end is not None else None
            with (outer or operation_deadline()).active():
                return with_retries(lambda: self._try_range(start, stop), what=what)
        except Retry as exc:
            raise HubReadError(f"{what} failed: {exc}", rule="hub/read-failed") from None
        except DeadlineExceeded as exc:
            raise HubReadError(str(exc), rule="hub/timeout") from None
        except OfflineModeIsEnabled:
            raise HubReadError(f"{self.name}: offline mode is enabled (HF_HUB_OFFLINE)",
                               rule="hub/offline") from None

    def _try_range(self, start: int, stop: int) -> bytes:
        """One request; Retry for what another try may fix (5xx, 408/429, timeouts, short bodies)."""
        import httpx2
        from huggingface_hub.utils import get_session

        headers = {**self.headers, "Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity"}
        try:
            with get_session().stream("GET", self.url, headers=headers, timeout=request_timeout()) as resp:
                self.stats.add(0, requests=1)
                status = resp.status_code
                if status == 206:
                    total = _range_total(resp)
                    if total is not None and total != self.size:
                        raise HubReadError(f"{self.name}: the server has {total} bytes, the Hub listed "
                                           f"{self.size}: the file changed or the listing lies",
                                           rule="hub/size-mismatch")
                    got = _bounded_body(resp, stop - start, self.stats)
                    if len(got) == stop - start and _range_start(resp) == start:
                        return got
                    raise Retry(f"truncated or misplaced range: asked {stop - start} bytes at {start}, "
                                f"got {len(got)} ({resp.headers.get('Content-Range')})")
                if status == 200:
                    return self._ignored_range(resp, start, stop)
                if status in (401, 403):
                    raise HubReadError(f"{self.name}: HTTP {status}: {GATED_HINT}", rule="hub/gated")
                if status == 404:
                    raise HubReadError(f"{self.name}: HTTP 404: file or revision not found on the Hub",
                                       rule="hub/not-found")
                if status in (408, 429) or status >= 500:
                    raise Retry(f"HTTP {status}", retry_after=retry_after(resp.headers))
                raise HubReadError(f"{self.name}: HTTP {status}", rule="hub/read-failed")
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise Retry(f"{type(exc).__name__}: {exc}") from exc
        except httpx2.HTTPError as exc:   # redirects loops, bad URLs...: not worth a retry
            raise HubReadError(f"{self.name}: {type(exc).__name__}: {exc}", rule="hub/read-failed") from exc

    def _ignored_range(self, resp: Any, start: int, stop: int) -> bytes:
        """The server sent the whole file: keep it only if small, otherwise hang up at once."""
        if self.size > FULL_BODY_LIMIT:
            raise HubReadError(
                f"{self.name}: the server ignored the Range header and started sending all "
                f"{self.size} bytes; refusing to download it whole for a static check "
                f"(use --download to fetch and verify it in full)", rule="hub/range-ignored")
        body = _bounded_body(resp, self.size, self.stats)
        if len(body) != self.size:
            raise HubReadError(f"{self.name}: truncated body: {len(body)} of {self.size} bytes",
                               rule="hub/read-failed")
        self.whole = body
        return body[start:stop]


def _bounded_body(resp: Any, limit: int, stats: TransferStats) -> bytes:
    """Read at most `limit` bytes of a streamed body, counting them; stop early (hang up) after."""
    buf = bytearray()
    for chunk in resp.iter_raw():
        take = chunk[:limit - len(buf)]
        buf += take
        stats.add(len(chunk))
        if len(buf) >= limit:
            break
    return bytes(buf)


def _range_start(resp: Any) -> int | None:
    cr = resp.headers.get("Content-Range", "")
    try:
        return int(cr.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _range_total(resp: Any) -> int | None:
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _runs(indices: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


class RangeReader(RandomAccessReader):
    """A seekable, read-only stream over a `BlockCache` (one position per stream)."""

    def __init__(self, cache: BlockCache) -> None:
        super().__init__()
        self.cache, self.size, self.name = cache, cache.size, cache.name

    def _read_at(self, pos: int, n: int) -> bytes:
        return self.cache.read(pos, n)
