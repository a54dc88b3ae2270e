"""Targets: the files to scan, where they came from, and how to read their bytes.

A TargetFile never hands out more than a seekable byte stream; checks that only need a header or
a zip's central directory seek and read just that, which is what makes remote range reads cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from hfguard.findings import Finding, Severity


class RandomAccessReader(io.RawIOBase):
    """A read-only, seekable stream over anything that can read `n` bytes at a position.

    Subclasses set `size` and implement `_read_at`; wrap in `io.BufferedReader` for small reads.
    """

    size: int = 0
    pos: int = 0

    def _read_at(self, pos: int, n: int) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self.pos)
        if n <= 0:
            return 0
        data = self._read_at(self.pos, n)
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        data = self._read_at(self.pos, max(0, self.size - self.pos)) if self.pos < self.size else b""
        self.pos += len(data)
        return data


@dataclass
class TargetFile:
    path: str                                  # display path: as given, joined with the inner path
    size: int
    opener: Callable[[], BinaryIO]             # a fresh seekable binary stream each call
    local_path: Path | None = None             # set when the bytes are already on disk
    expected_sha256: str | None = None         # e.g. the Hub's LFS sha256
    fetch: Callable[..., Path] | None = None   # full download, for tiers that need every byte;
                                               # fetch(scratch=folder): into a throwaway cache
    meta: dict[str, Any] = field(default_factory=dict)
    key: str | None = None                     # path relative to the repository or scan root
                                               # (finding fingerprints); None: `path` is one

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def open(self) -> BinaryIO:
        return self.opener()

    def head(self, n: int = 64) -> bytes:
        with self.open() as fh:
            return fh.read(n)

    def content_sha256(self, tick: Callable[[str], None] = lambda what: None) -> str:
        """The file's sha256: the Hub's LFS hash when listed, else hashed once and kept (known-bad
        lookups and signature manifests both ask; the bytes are read one time)."""
        if self.expected_sha256:
            return self.expected_sha256.lower()
        if "sha256" not in self.meta:
            h = hashlib.sha256()
            # read into one buffer: a third less time than a new bytes object per block
            buf = bytearray(max(1, min(self.size, 1 << 20)))
            view = memoryview(buf)
            with self.open() as fh:
                while n := fh.readinto(buf):  # type: ignore[attr-defined]  # files and streams have it
                    tick("hashing")
                    h.update(view[:n])
            self.meta["sha256"] = h.hexdigest()
        return str(self.meta["sha256"])

    def materialize(self) -> Path:
        """A local path holding all of the file's bytes (downloads remote files once)."""
        if self.local_path is None:
            if self.fetch is None:
                raise RuntimeError(f"{self.path}: no local copy and no way to fetch one")
            self.local_path = self.fetch()
        return self.local_path


@dataclass
class Target:
    name: str                          # what the user named: a path, or org/model
    source: str                        # "local" or "hub"
    files: list[TargetFile]
    revision: str | None = None        # pinned commit sha for Hub targets
    repo_id: str | None = None
    card: dict[str, Any] = field(default_factory=dict)   # model card metadata (base_model, tags)
    meta: dict[str, Any] = field(default_factory=dict)   # source-specific facts (Hub security status)

    @property
    def display(self) -> str:
        if self.repo_id and self.revision:
            return f"{self.repo_id}@{self.revision}"
        return self.name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def local_file(path: Path, display: str, key: str | None = None) -> TargetFile:
    try:
        st = path.stat()
    except OSError as exc:   # a dangling or looping link: reading it fails, the engine says so (ERROR)
        why = (f"symlink to {os.readlink(path)} that cannot be read ({exc.strerror})" if os.path.islink(path)
               else f"{exc.strerror or exc}")   # (islink: False, never an error, for a path too long)
        return TargetFile(path=display, size=0, opener=functools.partial(_fail, why),
                          local_path=path, key=key)
    if stat.S_ISDIR(st.st_mode):   # (walk_files yields a folder only when it cannot be listed)
        why = "a folder that cannot be listed: the files in it are not vetted"
        return TargetFile(path=display, size=0, opener=functools.partial(_fail, why), key=key)
    if not stat.S_ISREG(st.st_mode):
        # a FIFO would block the scan, a device has no fixed content: whatever a loader reads from
        # it is missing evidence (ERROR). Never opened, and no local path for a check to open.
        why = f"not a regular file ({_special_kind(st.st_mode)}): its content cannot be vetted"
        return TargetFile(path=display, size=0, opener=functools.partial(_fail, why), key=key)
    return TargetFile(path=display, size=st.st_size, opener=functools.partial(open_regular, path),
                      local_path=path, key=key)


def open_regular(path: Path) -> BinaryIO:
    """`open(path, "rb")` that refuses anything but a regular file, checked on the open file: a
    FIFO swapped in after the folder was listed raises OSError instead of blocking the scan."""
    fh = open(path, "rb", opener=_open_nonblocking)   # noqa: SIM115 - returned to the caller
    try:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({_special_kind(mode)}): its content cannot be vetted")
        if _NONBLOCK:
            os.set_blocking(fh.fileno(), True)
        return fh
    except BaseException:
        fh.close()
        raise


_NONBLOCK = getattr(os, "O_NONBLOCK", 0)   # (POSIX; Windows has no FIFOs to wait on)


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | _NONBLOCK)   # opening a FIFO does not wait for a writer


def _special_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))
    return next((what for test, what in kinds if test(mode)), "a special file")


def _fail(why: str) -> BinaryIO:
    raise OSError(why)


def walk_files(root: Path, boundary: Path | None = None) -> Iterator[tuple[Path, list[Finding]]]:
    """Every file under `root` with the findings its path itself calls for.

    Directory symlinks are not followed (no loops). File symlinks are (the HF cache is built of
    them); one whose target lies outside `boundary` (default: `root`) is reported with where it
    points, and still scanned. A dangling or looping link is yielded too: reading it fails, which
    is missing evidence (ERROR), never a silent skip; so are FIFOs, sockets and devices, and links
    to them (`local_file` never opens them): a model file that is one has no content to vet. A
    folder that cannot be listed (permissions, a path too long) is yielded itself: what it holds is
    missing evidence, where os.walk would silently leave it out.
    """
    inside = os.path.realpath(boundary or root)
    unlisted: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted.append):
        while unlisted:
            yield Path(unlisted.pop().filename), []
        dirnames[:] = sorted(d for d in dirnames if d not in (".git",))
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if not p.is_symlink():
                yield p, []
                continue
            real = os.path.realpath(p)
            outside = os.path.exists(real) and os.path.commonpath([inside, real]) != inside
            yield p, [_outside_finding(p, real, inside)] if outside else []
    yield from ((Path(exc.filename), []) for exc in unlisted)


def unsafe_name_finding(path: str, check: str) -> Finding | None:
    """A listed name no model file needs is hostile in itself: characters a terminal acts on
    (newline, ESC, bidi overrides: what hfguard.report.escape shows escaped), or a path that
    means another file (`..` or `.` segments, empty segments, a backslash, which Windows reads as
    a separator). `path`: relative to the repository or scanned folder. The file is still scanned
    (a Hub file read under its exact name: hub.resolve.file_url)."""
    from hfguard.report.escape import safe, unsafe_chars

    chars = sorted({f"U+{ord(c):04X}" for c in unsafe_chars(path)})
    segments = sorted({seg or "(empty)" for seg in path.split("/") if seg in ("", ".", "..")}
                      | ({"\\"} if "\\" in path else set()))
    if not chars and not segments:
        return None
    shown = safe(path)
    what = [f"control, bidi or invisible characters ({', '.join(chars)})"] if chars else []
    what += [f"path segments that name another file ({', '.join(segments)})"] if segments else []
    evidence: dict[str, object] = {"name": path}
    if chars:
        evidence["characters"] = chars
    if segments:
        evidence["segments"] = segments
    return Finding(check=check, rule="file/unsafe-name", severity=Severity.MEDIUM, file=path,
                   message=f"the file name {shown} holds {' and '.join(what)}: it can forge log lines, "
                           "display as another name or be read as another file", evidence=evidence)


def _outside_finding(link: Path, real: str, root: str) -> Finding:
    return Finding(check="engine", rule="file/symlink-outside-root", severity=Severity.MEDIUM,
                   message=f"symlink to {real}, outside the scanned folder {root}: what is scanned "
                           "here is whatever that path holds when the model is loaded",
                   evidence={"link": str(link), "target": real, "root": root})


def _key_root(path: Path) -> Path | None:
    """The enclosing git work tree, if any: fingerprints are relative to it."""
    for folder in [path, *path.parents]:
        if (folder / ".git").exists():
            return folder
    return None


def _key_base(scan_root: Path) -> Path:
    """What fingerprints are relative to: the enclosing git work tree, else the scan root."""
    root = Path(os.path.abspath(scan_root))
    return _key_root(root) or root


def _key(path: Path, base: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return absolute.as_posix()


def local_target(paths: list[str]) -> Target:
    """Files and directories (recursively) named on the command line."""
    files: list[TargetFile] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            base = _key_base(p)   # once per folder, not per file
            for f, found in walk_files(p):
                rel = f.relative_to(p).as_posix()
                if (odd := unsafe_name_finding(rel, check="engine")) is not None:
                    found = [*found, odd]
                file = local_file(f, f"{given.rstrip('/')}/{rel}", key=_key(f, base))
                file.meta["findings"] = [dataclasses.replace(x, file=file.path) for x in found]
                files.append(file)
        elif p.exists() or p.is_symlink():   # a dangling link or a FIFO named on the command line: ERROR
            files.append(local_file(p, given, key=_key(p, _key_base(p.parent))))
        else:
            raise FileNotFoundError(f"no such file or directory: {given}")
    return Target(name=" ".join(paths), source="local", files=files)


def offline_by_env() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, read without importing huggingface_hub (the
    pre-commit hook stays light)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face Hub cache: HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default.

    The one locator (scan of the cache, Hub checks, offline resolution, downloads). The environment
    is read at each call (huggingface_hub's constants are frozen at its import); the import is
    only needed for the default, so the hooks stay light when the variables are set.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cache_target(cache: Path | None = None) -> Target:
    """Every snapshot of every model in the local Hugging Face cache."""
    cache = cache or hf_cache_dir()
    files: list[TargetFile] = []
    if cache.is_dir():
        for repo_dir in sorted(cache.glob("models--*")):
            for snapshot in sorted((repo_dir / "snapshots").glob("*")):
                for f, found in walk_files(snapshot, boundary=cache):   # links to blobs/
                    rel = f.relative_to(cache).as_posix()
                    file = local_file(f, f"{cache}/{rel}", key=rel)
                    file.meta["findings"] = [dataclasses.replace(x, file=file.path) for x in found]
                    files.append(file)
    return Target(name=str(cache), source="local", files=files, meta={"hf_cache": True})
