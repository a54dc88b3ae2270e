"""A local HTTP server that speaks the part of the Hugging Face Hub API that `huggingface_hub` uses.

Tests build repos (files per revision), point the real client at `hub.url` through HF_ENDPOINT,
inject faults, and read `hub.log` to assert which requests were made and how many bytes were sent.

    with FakeHub() as hub:
        sha = hub.add_repo("org/model", {"model.safetensors": data, "config.json": b"{}"})
        hub.fail("/api/models/org/model", status=503, times=2)

Faults: an HTTP status (with extra `headers`, e.g. Retry-After), a `delay` before anything is sent
(a hanging server), `trickle` (headers at once, then one body byte every `trickle` seconds: never
a stalled read, never an end), a truncated body, an ignored Range header. `page_base` and
`redirect_base` send pagination links and LFS redirects to another server (a foreign host).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".gguf",
                ".pkl", ".pickle", ".npy", ".npz", ".joblib", ".keras", ".zip")
_CHUNK = 1 << 20


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Blob:
    """One file: bytes in memory, or a (possibly sparse, multi-GB) file on disk."""

    data: bytes | None = None
    path: Path | None = None
    lfs: bool = False
    claimed_sha256: str | None = None   # what the Hub says; differs from the content to fake tampering
    security: dict[str, Any] | None = None   # securityFileStatus of the tree listing
    # or bytes made on demand, reader(start, length), `length` of them (a 100 GB model in a bench
    # without 100 GB of disk: bench/bench_weights_shards.py --hub); fixed content, so hashed once
    reader: Callable[[int, int], bytes] | None = None
    length: int = 0
    _made_sha256: str | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        if self.reader is not None:
            return self.length
        return len(self.data) if self.data is not None else self.path.stat().st_size  # type: ignore[union-attr]

    def read(self, start: int, length: int) -> bytes:
        if self.reader is not None:
            return self.reader(start, max(0, min(length, self.length - start)))
        if self.data is not None:
            return self.data[start:start + length]
        with open(self.path, "rb") as fh:  # type: ignore[arg-type]
            fh.seek(start)
            return fh.read(length)

    def sha256(self) -> str:
        if self.claimed_sha256:
            return self.claimed_sha256
        if self._made_sha256 is not None:
            return self._made_sha256
        h = hashlib.sha256()
        for off in range(0, self.size, _CHUNK):
            h.update(self.read(off, _CHUNK))
        if self.reader is not None:
            self._made_sha256 = h.hexdigest()
        return h.hexdigest()

    def oid(self) -> str:
        """The git blob id: of the LFS pointer for LFS files, of the content otherwise."""
        if self.lfs:
            pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256()}\n"
                       f"size {self.size}\n").encode()
            return git_blob_sha1(pointer)
        return git_blob_sha1(self.read(0, self.size))


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)   # sha -> path -> blob
    refs: dict[str, str] = field(default_factory=dict)                   # branch/tag -> sha
    card: dict[str, Any] = field(default_factory=dict)
    gated: bool | str = False
    private: bool = False
    security: dict[str, Any] | None = None     # securityRepoStatus

    def sha_of(self, rev: str) -> str | None:
        if rev in self.commits:
            return rev
        return self.refs.get(rev)


@dataclass
class Fault:
    pattern: str            # regex searched in "METHOD /path"
    status: int | None = None
    times: int = 1          # -1: forever
    truncate: bool = False  # send half the body then close
    ignore_range: bool = False
    delay: float = 0.0
    error_code: str | None = None
    headers: dict[str, str] | None = None   # sent with `status` (e.g. {"Retry-After": "1"})
    trickle: float = 0.0    # seconds between body bytes after prompt headers


class FakeHub:
    def __init__(self, tokens: tuple[str, ...] = ("hf_good_token",), page_size: int = 50,
                 lfs_redirect: bool = False) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: list[Fault] = []
        self.log: list[dict[str, Any]] = []
        self.tokens = set(tokens)
        self.page_size = page_size
        self.lfs_redirect = lfs_redirect
        self.page_base: str | None = None       # pagination links point there (default: this server)
        self.redirect_base: str | None = None   # LFS redirects point there (default: this server)
        self.stopping = threading.Event()       # ends injected hangs and trickles at stop()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- building repos -------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes | Path | Blob], *, ref: str = "main",
                 card: dict[str, Any] | None = None, gated: bool | str = False, private: bool = False,
                 security: dict[str, Any] | None = None, tags: tuple[str, ...] = ()) -> str:
        """Add (or add a commit to) a repo; returns the commit sha that `ref` now points to."""
        repo = self.repos.setdefault(repo_id, Repo(repo_id))
        blobs = {p: self._blob(p, f) for p, f in files.items()}
        h = hashlib.sha1(repo_id.encode(), usedforsecurity=False)
        for p in sorted(blobs):
            h.update(p.encode() + b"\0" + blobs[p].oid().encode())
        sha = h.hexdigest()
        repo.commits[sha] = blobs
        repo.refs[ref] = sha
        for tag in tags:
            repo.refs[tag] = sha
        repo.card = card if card is not None else repo.card
        repo.gated, repo.private, repo.security = gated, private, security
        return sha

    @staticmethod
    def _blob(path: str, f: bytes | Path | Blob) -> Blob:
        if isinstance(f, Blob):
            return f
        blob = Blob(data=f) if isinstance(f, bytes) else Blob(path=f)
        blob.lfs = path.lower().endswith(LFS_SUFFIXES) or blob.size > 10_000
        return blob

    def fail(self, pattern: str, **kw: Any) -> Fault:
        fault = Fault(pattern=pattern, **kw)
        self.faults.append(fault)
        return fault

    # -- assertions -----------------------------------------------------------------------------
    def requests(self, pattern: str = "") -> list[dict[str, Any]]:
        return [r for r in self.log if re.search(pattern, f"{r['method']} {r['path']}")]

    def bytes_sent(self, pattern: str = "/resolve/") -> int:
        return sum(r["sent"] for r in self.requests(pattern))

    def _take_fault(self, line: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times != 0 and re.search(fault.pattern, line):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet; tests read hub.log instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- plumbing -------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.entry: dict[str, Any] = {"method": method, "path": path, "range": self.headers.get("Range"),
                                      "auth": self.headers.get("Authorization"), "status": None,
                                      "sent": 0, "t": time.monotonic()}
        with self.hub._lock:
            self.hub.log.append(self.entry)
        self.fault = self.hub._take_fault(f"{method} {path}")
        if self.fault and self.fault.delay and self.hub.stopping.wait(self.fault.delay):
            return
        if self.fault and self.fault.status:
            return self._error(self.fault.status, self.fault.error_code or "", "injected fault",
                               self.fault.headers)
        if self.fault and self.fault.trickle:
            return self._trickle(self.fault.trickle)
        try:
            if path.startswith("/api/models/"):
                self._api(method, path[len("/api/models/"):])
            elif path.startswith("/lfs-blobs/"):
                self._lfs_blob(method, path)
            else:
                self._resolve(method, path)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _trickle(self, every: float) -> None:
        """Prompt headers for a large body, then one byte every `every` seconds until stopped."""
        size = 1 << 20
        headers = {"Content-Length": str(size)}
        rng = re.fullmatch(r"bytes=(\d+)-(\d+)", (self.headers.get("Range") or "").strip())
        if rng:
            start, end = int(rng.group(1)), int(rng.group(2))
            size = end - start + 1
            headers = {"Content-Length": str(size), "Content-Range": f"bytes {start}-{end}/*"}
        self._send(206 if rng else 200, b"", headers, content_type="application/octet-stream")
        try:
            for _ in range(size):
                if self.hub.stopping.wait(every):
                    break
                self.entry["sent"] += 1
                self.wfile.write(b" ")
                self.wfile.flush()
        except OSError:
            pass   # the client hung up: what a deadline does
        self.close_connection = True

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.entry["sent"] += len(body)  # before the write: the client may look at the log first
            self.wfile.write(body)

    def _json(self, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._send(200, json.dumps(doc).encode(), headers)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        hdrs = dict(headers or {})
        if code:
            hdrs["X-Error-Code"] = code
        hdrs["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(), hdrs)

    def _authorized(self, repo: Repo) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.hub.tokens

    def _repo_or_404(self, repo_id: str, *, files: bool) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(repo)):
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if files and repo.gated and not self._authorized(repo):
            authed = bool(self.headers.get("Authorization"))
            self._error(403 if authed else 401, "GatedRepo",
                        "Access to this model is restricted. You must be authenticated and accept the terms.")
            return None
        return repo

    # -- /api/models/... ------------------------------------------------------------------------
    def _api(self, method: str, rest: str) -> None:
        m = re.fullmatch(r"([^/]+/[^/]+)(?:/(revision|tree|paths-info)/([^/]+)(?:/(.*))?)?", rest, re.S)
        if not m:
            return self._error(404, "", "unknown route")
        repo_id, kind, rev, sub = m.groups()
        repo = self._repo_or_404(repo_id, files=False)
        if repo is None:
            return
        sha = repo.sha_of(rev or "main")
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        blobs = repo.commits[sha]
        if kind is None or kind == "revision":
            return self._json(self._info(repo, sha, blobs))
        if kind == "tree":
            return self._tree(repo_id, sha, rev, blobs, sub or "")
        if kind == "paths-info" and method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            wanted = form.get("paths", [])
            expand = form.get("expand", ["false"])[-1].lower() == "true"
            return self._json([self._entry(p, b, expand, sha) for p, b in sorted(blobs.items())
                               if p in wanted])
        return self._error(405, "", "method not allowed")

    def _info(self, repo: Repo, sha: str, blobs: dict[str, Blob]) -> dict[str, Any]:
        card = repo.card
        doc: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": sha, "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
            "private": repo.private, "gated": repo.gated, "disabled": False, "downloads": 0, "likes": 0,
            "tags": list(card.get("tags", [])), "library_name": card.get("library_name"),
            "siblings": [{"rfilename": p} for p in sorted(blobs)],
            "cardData": card or None,
        }
        if self.query.get("securityStatus", "").lower() == "true":
            doc["securityRepoStatus"] = repo.security or {"scansDone": True, "filesWithIssues": []}
        return doc

    def _entry(self, path: str, blob: Blob, expand: bool, sha: str) -> dict[str, Any]:
        e: dict[str, Any] = {"type": "file", "oid": blob.oid(), "size": blob.size, "path": path}
        if blob.lfs:
            e["lfs"] = {"oid": blob.sha256(), "size": blob.size, "pointerSize": 134}
        if expand:
            e["lastCommit"] = {"id": sha, "title": "upload", "date": "2025-01-01T00:00:00.000Z"}
            e["securityFileStatus"] = blob.security or {"status": "safe", "avScan": {"virusFound": False},
                                                        "pickleImportScan": None}
        return e

    def _tree(self, repo_id: str, sha: str, rev: str, blobs: dict[str, Blob], sub: str) -> None:
        recursive = self.query.get("recursive", "false").lower() == "true"
        expand = self.query.get("expand", "false").lower() == "true"
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        entries: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for p, blob in sorted(blobs.items()):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": d})
            if recursive or len(parts) == 1:
                entries.append(self._entry(p, blob, expand, sha))
        cursor = int(self.query.get("cursor", "0"))
        page = entries[cursor:cursor + self.hub.page_size]
        headers = {}
        if cursor + self.hub.page_size < len(entries):
            nxt = (f"{self.hub.page_base or self.hub.url}/api/models/{repo_id}/tree/{quote(rev, safe='')}"
                   f"{'/' + quote(sub) if sub else ''}?recursive={str(recursive).lower()}"
                   f"&expand={str(expand).lower()}&cursor={cursor + self.hub.page_size}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(page, headers)

    # -- /{repo}/resolve/{rev}/{file} -----------------------------------------------------------
    def _resolve(self, method: str, path: str) -> None:
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path, re.S)
        if not m:
            return self._error(404, "", "unknown route")
        repo_id, rev, filename = m.groups()
        repo = self._repo_or_404(repo_id, files=True)
        if repo is None:
            return
        sha = repo.sha_of(rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        blob = repo.commits[sha].get(filename)
        if blob is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": sha})
        etag = blob.sha256() if blob.lfs else blob.oid()
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(blob.size)
            if self.hub.lfs_redirect:
                base = self.hub.redirect_base or self.hub.url
                headers["Location"] = f"{base}/lfs-blobs/{repo_id}/{sha}/{quote(filename)}"
                self.entry["status"] = 302
                return self._send(302, b"", headers)
        self._body(method, blob, headers)

    def _lfs_blob(self, method: str, path: str) -> None:
        m = re.fullmatch(r"/lfs-blobs/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)", path, re.S)
        repo = self.hub.repos.get(m.group(1)) if m else None
        blob = repo.commits.get(m.group(2), {}).get(m.group(3)) if (repo and m) else None
        if blob is None:
            return self._error(404, "", "no such blob")
        self._body(method, blob, {"ETag": f'"{blob.sha256()}"', "Accept-Ranges": "bytes"})

    def _body(self, method: str, blob: Blob, headers: dict[str, str]) -> None:
        size = blob.size
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        ignore = bool(self.fault and self.fault.ignore_range)
        if rng and not ignore:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= size:
                return self._error(416, "", "range not satisfiable", {"Content-Range": f"bytes */{size}"})
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        headers["Content-Length"] = str(length)
        self._send(status, b"", headers, content_type="application/octet-stream")
        if method == "HEAD":
            return
        limit = length // 2 if (self.fault and self.fault.truncate) else length
        off = start
        while off < start + limit:
            chunk = blob.read(off, min(_CHUNK, start + limit - off))
            self.entry["sent"] += len(chunk)  # before the write, as in _send
            self.wfile.write(chunk)
            off += len(chunk)
        if limit < length:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
