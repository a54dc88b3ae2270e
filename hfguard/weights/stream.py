"""Remote weight shards (Hub targets and Hub bases) fetched one at a time as the passes read them.

A 100+ GB model is not downloaded before its first tensor is read: `checkpoints_of(target, stream)`
range-reads each shard's header only, and the tensors' `data_path` asks the stream for the file on
first read. The stream downloads that shard into its own scratch folder (never the user's HF cache:
a shard already there is read in place and never deleted), starts the next shard in the background
so downloading overlaps the analysis, and deletes a shard once more than `window` would be held
(a read may go one over rather than evict a shard the pass reads again). Peak disk: about
`window` (+1) times the largest shard per stream (a diff holds two: the model's and the base's).

Within a scan both weights checks share one stream per side (weights.session): the statistics pass
diffs each tensor against the base on its way, so each shard is fetched once per scan. Each pass
first tells the streams the order it reads tensors in (`plan_reads`), so a shard it still needs is
kept, the shard needed next is prefetched, and a base sharded differently (read in the model's
order: base shards 1, 2, 1, 2, 3 ...) is fetched once per shard too. With a pathological
interleaving (model tensors that alternate between more base shards than the window holds) a shard
is evicted and fetched again: a fallback that costs bandwidth, never a skipped tensor; every
re-fetch is said on the progress line and counted in `refetched`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfguard.report.escape import safe
from hfguard.weights.progress import duration, gb
from hfguard.weights.tensors import WeightsFormatError

WINDOW = 2   # shards held per stream: the one being read and the next one downloading
# A prefetch only evicts a shard unread for this long: analysis workers take tensors in file order,
# so one may still be about to read the last tensor of the previous shard when another starts the
# next; evicting it then would fetch it again. A read on demand evicts the least recently read.
GRACE_S = 1.0
FETCH_EVERY_S = 5.0   # how often a download in progress says its bytes, rate and ETA


@dataclass(eq=False)
class RemoteShard:
    stream: ShardStream
    tf: Any                          # the TargetFile (fetch(scratch=...) downloads it)
    index: int
    path: Path                       # what TensorMeta.path names (sorts in shard order); not a file
    local_path: Path | None = None   # the fetched bytes, while held
    owned: bool = False              # in the stream's scratch folder (deleted on release)
    future: Future[Path] | None = None
    last: int = 0                    # when last read (the stream's counter): the LRU order
    last_s: float = 0.0              # ... in seconds (time.monotonic)
    fetches: int = 0

    def local(self, tensor: str | None = None) -> Path:
        """The file, fetched if need be; `tensor`: the one about to be read (see ShardStream.plan)."""
        return self.stream.acquire(self, tensor)


@dataclass
class ShardStream:
    """The remote shards of one model, about `window` on disk at once (see the module docstring)."""

    label: str = "weights"
    progress: Callable[[str], None] = lambda msg: None
    window: int = WINDOW
    shards: list[RemoteShard] = field(default_factory=list)
    # (what, shard name, bytes found under the scratch folder right after): fetched / released
    events: list[tuple[str, str, int]] = field(default_factory=list)
    refetched: int = 0
    peak_bytes: int = 0    # the most bytes found under the scratch folder at a fetch or release
    peak_shards: int = 0   # the most shards held at once (HF-cache ones included)

    def __post_init__(self) -> None:
        self.window = max(1, self.window)
        self._root: Path | None = None
        self._lock = threading.RLock()
        self._clock = 0
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, dict[str, int]] = {}   # shard -> its tensors the pass has yet to read
        self._reading: dict[int, tuple[int, str]] = {}   # thread -> the (shard, tensor) it reads

    def __enter__(self) -> ShardStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root(self) -> Path:
        if self._closed:   # a folder made now would never be deleted
            raise RuntimeError(f"{self.label}: shard stream read after it was closed")
        if self._root is None:   # created on the first remote shard: local targets never touch disk
            self._root = Path(tempfile.mkdtemp(prefix="hfguard-shards-"))
        return self._root

    def add(self, tf: Any) -> RemoteShard:
        with self._lock:
            i = len(self.shards)
            plain = re.sub(r"[^\w.-]", "_", tf.name)   # a hostile name never becomes a path here
            shard = RemoteShard(self, tf, i, self.root / "pending" / f"{i:05d}-{plain}")
            self.shards.append(shard)
            return shard

    def plan(self, metas: Iterable[Any]) -> None:
        """The order the coming pass reads tensors in (TensorMetas; those of other streams are
        ignored). A shard the pass has yet to read tensors of is not evicted for a prefetch, nor for
        a read while a shard with none left can go (then the one needed last goes: Belady's rule),
        and the prefetch fetches the shard needed next. So a base sharded unlike the model, read in
        the model's order (base shards 1, 2, 1, 2, 3 ... or 1, 4, 1, 2, 3, 4), is fetched once per
        shard whatever the time between reads, as long as the window (+1) holds the shards in use
        at once. A tensor counts as read once the thread reading it asks for another one."""
        with self._lock:
            self._ahead, self._reading = {}, {}
            for pos, m in enumerate(metas):
                if m.shard is not None and m.shard.stream is self:
                    self._ahead.setdefault(m.shard.index, {}).setdefault(m.name, pos)

    def _next_read(self, shard: RemoteShard) -> int | None:
        """Where the plan reads this shard next (None: not again)."""
        return min(self._ahead.get(shard.index, {}).values(), default=None)

    def acquire(self, shard: RemoteShard, tensor: str | None = None) -> Path:
        """The shard's local file, fetched (or awaited, if prefetching) when not held."""
        with self._lock:
            if tensor is not None:   # a tensor is read once its thread asks for another one
                now, before = (shard.index, tensor), self._reading.get(threading.get_ident())
                if before is not None and before != now:
                    self._ahead.get(before[0], {}).pop(before[1], None)
                self._reading[threading.get_ident()] = now
            self._clock += 1
            shard.last, shard.last_s = self._clock, time.monotonic()
            if shard.local_path is not None:
                self._prefetch_after(shard)
                return shard.local_path
            fut = shard.future
            inline = fut is None
            if fut is None:
                self._make_room(keep=shard)
                fut = shard.future = Future()
        if inline:
            self._fetch(shard, fut)
        path = fut.result()
        with self._lock:
            if shard.local_path is not None:
                self._prefetch_after(shard)
        return path

    def _prefetch_after(self, shard: RemoteShard) -> None:
        """Start downloading the next shard while this one is read, if the window has room
        without evicting `shard`, a shard read within GRACE_S or one the plan reads again (window
        1: no prefetch). Tried at every read. The next shard: the plan's next one not held, else
        the one after `shard`, unless fetched before (not guessed at again)."""
        waiting = [s for s in self.shards if s.local_path is None and s.future is None
                   and self._next_read(s) is not None]
        if waiting:
            nxt = min(waiting, key=lambda s: self._next_read(s) or 0)
        elif self._ahead or shard.index + 1 >= len(self.shards):
            return
        else:
            nxt = self.shards[shard.index + 1]
            if nxt.local_path is not None or nxt.future is not None or nxt.fetches:
                return
        if not self._make_room(keep=shard, also=nxt):
            return
        nxt.future = Future()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="hfguard-prefetch")
        self._pool.submit(self._fetch, nxt, nxt.future)

    def _make_room(self, keep: RemoteShard, also: RemoteShard | None = None) -> bool:
        """Release least recently read shards until one more fits; False if only shards being
        downloaded or `keep` are held (then nothing is started: the caller waits or skips)."""
        recent = time.monotonic() - GRACE_S
        while True:
            held = [s for s in self.shards if s.local_path is not None or s.future is not None]
            if len([s for s in held if s is not also]) < self.window:
                return True
            free = [s for s in held if s is not keep and s is not also and s.local_path is not None
                    and (also is None or (s.last_s < recent and self._next_read(s) is None))]
            if not free:
                return also is None   # a read always proceeds (one over the window at worst)
            victim = min(free, key=self._eviction_order)
            if also is None and len(held) == self.window and self._next_read(victim) is not None:
                return True   # a read goes one over the window rather than evict a shard read again
            self._release(victim)

    def _eviction_order(self, s: RemoteShard) -> tuple[bool, int, int]:
        """Shards the plan is done with first (least recently read first), then the one it needs last."""
        nxt = self._next_read(s)
        return nxt is not None, -(nxt or 0), s.last

    def _fetch(self, shard: RemoteShard, fut: Future[Path]) -> None:
        n, name = len(self.shards), shard.tf.name
        with self._lock:
            again = shard.fetches > 0
            shard.fetches += 1
            self.refetched += again
        what = "fetching again (shards interleaved beyond the window)" if again else "fetching"
        self.progress(f"{safe(self.label)}: {what} shard {shard.index + 1}/{n} {safe(name)} "
                      f"({gb(shard.tf.size)})…")
        started = time.monotonic()
        folder = self.root / f"{shard.index:05d}"
        done = threading.Event()
        reporter = threading.Thread(target=self._say_download, args=(shard, folder, started, done),
                                    daemon=True, name="hfguard-fetch-progress")
        reporter.start()
        try:
            path = Path(shard.tf.fetch(scratch=folder))
        except Exception as exc:  # noqa: BLE001 - the pass reports the shard unreadable (ERROR)
            with self._lock:
                shard.future = None
            fut.set_exception(WeightsFormatError(f"{shard.tf.path}: download failed: {exc}"))
            return
        finally:
            done.set()
            reporter.join()   # its last line comes before "fetched in", not after
        spent = time.monotonic() - started
        with self._lock:
            shard.local_path = path
            shard.owned = _inside(path, self.root)
            self._event("fetched", shard)
        rate = f", {gb(shard.tf.size / spent)}/s" if spent > 0 else ""
        self.progress(f"{safe(self.label)}: shard {shard.index + 1}/{n} {safe(name)} fetched in "
                      f"{duration(spent)}{rate}" + ("" if shard.owned else " (from the HF cache)"))
        fut.set_result(path)

    def _say_download(self, shard: RemoteShard, folder: Path, started: float, done: threading.Event) -> None:
        """Every FETCH_EVERY_S until `done`: the bytes of the shard downloaded so far (the partial
        file in its scratch folder), the rate and the ETA. The pass's own meter has nothing to say
        while it waits for a shard: a single 10+ GB file was minutes of silence."""
        total, n = shard.tf.size, len(self.shards)
        while not done.wait(FETCH_EVERY_S):
            got, spent = _bytes_under(folder), time.monotonic() - started
            rate = got / spent if spent > 0 else 0.0
            eta = f", ETA {duration((total - got) / rate)}" if rate > 0 and total and got < total else ""
            of = f" of {gb(total)}" if total else ""
            self.progress(f"{safe(self.label)}: shard {shard.index + 1}/{n} {safe(shard.tf.name)}: "
                          f"{gb(got)}{of} fetched, {gb(rate)}/s{eta}")

    def _release(self, shard: RemoteShard) -> None:
        """Forget the shard's file; delete it only if it lies in our scratch folder. A reader that
        still maps it keeps its pages (POSIX unlink); a later read fetches it again."""
        if shard.owned and self._root is not None:
            shutil.rmtree(self._root / f"{shard.index:05d}", ignore_errors=True)
        shard.local_path, shard.future, shard.owned = None, None, False
        self._event("released", shard)

    def _event(self, what: str, shard: RemoteShard) -> None:
        held = _bytes_under(self._root) if self._root is not None else 0
        self.peak_bytes = max(self.peak_bytes, held)
        self.peak_shards = max(self.peak_shards, sum(s.local_path is not None for s in self.shards))
        self.events.append((what, shard.tf.name, held))

    def close(self) -> None:
        """Wait for a prefetch in flight, then delete the scratch folder (and every shard in it)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            self._closed = True
            for s in self.shards:
                if s.local_path is not None:
                    self._release(s)
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None
        fetched = sum(s.fetches for s in self.shards)
        if fetched:
            self.progress(f"{safe(self.label)}: {fetched} shard downloads, at most {self.peak_shards} of "
                          f"{len(self.shards)} shards held at once ({gb(self.peak_bytes)} on disk at most)")
        if self.refetched:
            self.progress(f"{safe(self.label)}: {self.refetched} shard(s) fetched more than once: the "
                          f"model's tensor order interleaves more than {self.window} shards")


def plan_reads(metas: Iterable[Any]) -> None:
    """Tell each stream the tensors `metas` lie in the order the coming pass reads them in
    (ShardStream.plan); local tensors are skipped."""
    by_stream: dict[int, tuple[ShardStream, list[Any]]] = {}
    for m in metas:
        if m.shard is not None:
            by_stream.setdefault(id(m.shard.stream), (m.shard.stream, []))[1].append(m)
    for stream, ordered in by_stream.values():
        stream.plan(ordered)


def _inside(path: Path, root: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, top]) == top


def _bytes_under(root: Path) -> int:
    """Bytes of the regular files under `root` (links not followed: an HF-style cache links
    snapshots to blobs), partial downloads included."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(dirpath, f)):
                total += st.st_size
    return total
