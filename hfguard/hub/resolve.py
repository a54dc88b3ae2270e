"""`org/model[@revision]` -> a pinned commit sha, its files, card metadata and the Hub's own facts.

Every read after resolution names the commit sha, never the branch: the bytes we vet are the bytes
a pinned load gets. With HF_HUB_OFFLINE=1 everything comes from the local HF cache instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfguard.hub.fetch import fetch_file
from hfguard.hub.http import (
    Deadline,
    DeadlineExceeded,
    Retry,
    configure_session,
    current,
    endpoint,
    operation_deadline,
    request_seconds,
    request_timeout,
    retry_after,
    with_retries,
)
from hfguard.hub.remote import BLOCK_SIZE, GATED_HINT, BlockCache, RangeReader, TransferStats
from hfguard.target import (
    Target,
    TargetFile,
    hf_cache_dir,
    local_file,
    local_target,
    offline_by_env,
    open_regular,
    unsafe_name_finding,
    walk_files,
)

SHA_RE = re.compile(r"[0-9a-f]{40}")
_LFS_SHA_RE = re.compile(r"[0-9a-f]{64}")
CARD_KEYS = ("base_model", "library_name", "tags", "license", "pipeline_tag", "datasets", "language")


class HubError(Exception):
    """Resolution failed; `rule` is a stable id for the report (hub/gated, hub/repo-not-found ...)."""

    def __init__(self, message: str, rule: str = "hub/unreachable") -> None:
        super().__init__(message)
        self.rule = rule


@dataclass
class HubFile:
    path: str
    size: int
    blob_id: str | None = None
    lfs_sha256: str | None = None
    security: dict[str, Any] | None = None
    local: Path | None = None       # offline: the cached snapshot file


@dataclass
class Resolved:
    repo_id: str
    requested: str | None           # what the user asked for (None: the default branch)
    sha: str
    files: list[HubFile]
    card: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# -- environment ----------------------------------------------------------------------------------
def parse_ref(spec: str) -> tuple[str, str | None]:
    """`org/model@rev` -> ("org/model", "rev"). Repo ids cannot contain '@'; revisions may hold '/'."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id, _, rev = spec.strip().partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(f"not a Hub model id: {spec!r} ({exc})", rule="hub/bad-reference") from None
    if "/" not in repo_id:
        raise HubError(f"not a Hub model id: {spec!r} (expected org/model[@revision])",
                       rule="hub/bad-reference")
    return repo_id, (rev or None)


def is_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode() or offline_by_env()


# -- one answer per scan ---------------------------------------------------------------------------
_MEMO: contextvars.ContextVar[dict[tuple[str, ...], Any] | None] = contextvars.ContextVar(
    "hfguard_hub_memo", default=None)


@contextlib.contextmanager
def scan_memo() -> Iterator[None]:
    """Within one scan, a repo's metadata and a commit's file listing are fetched once: a lineage
    hop, the weights tier's base diff and the behavior tier's reference that name the same model
    reuse the first answer. A nested scan (a hop vetted inside the check) joins the enclosing memo."""
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _once(key: tuple[str, ...], fetch: Callable[[], Any]) -> Any:
    """fetch(), or what it returned before in this scan (failures are not kept: a later ask retries)."""
    memo = _MEMO.get()
    if memo is None:
        return fetch()
    key = (endpoint(), *key)
    if key not in memo:
        memo[key] = fetch()
    return memo[key]


# -- online ---------------------------------------------------------------------------------------
def translate(exc: BaseException, repo_id: str, rev: str | None) -> HubError:
    """Client exceptions -> one clear sentence and a rule id."""
    import httpx2
    from huggingface_hub import errors

    where = f"{repo_id}@{rev}" if rev else repo_id
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, DeadlineExceeded):
        return HubError(f"{where}: {exc}", rule="hub/timeout")
    if isinstance(exc, errors.GatedRepoError):
        return HubError(f"{where}: {GATED_HINT}", rule="hub/gated")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{where}: revision {rev!r} not found", rule="hub/revision-not-found")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"{where}: repository not found (if it is private or gated: set HF_TOKEN)",
                        rule="hub/repo-not-found")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubError(f"{where}: offline mode is enabled (HF_HUB_OFFLINE)", rule="hub/offline")
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            return HubError(f"{where}: HTTP {status}: {GATED_HINT}", rule="hub/gated")
        if status == 404:
            return HubError(f"{where}: not found (HTTP 404)", rule="hub/repo-not-found")
        if status == 429:   # still limited after the retry loop waited what Retry-After asked
            return HubError(f"{where}: rate-limited by the Hub (HTTP 429) after every retry",
                            rule="hub/rate-limited")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return HubError(f"{where}: the Hub answered HTTP {status}: {first}", rule="hub/server-error")
    if isinstance(exc, httpx2.TimeoutException):
        return HubError(f"{where}: the Hub did not answer in time ({type(exc).__name__})", rule="hub/timeout")
    if isinstance(exc, httpx2.HTTPError | OSError):
        return HubError(f"{where}: cannot reach the Hub at {endpoint()}: {type(exc).__name__}: {exc}",
                        rule="hub/unreachable")
    return HubError(f"{where}: {type(exc).__name__}: {exc}", rule="hub/unreachable")


def _classified(call: Callable[[], Any]) -> Callable[[], Any]:
    """`call` as one attempt of the retry loop: 5xx / 408 / 429 / timeouts / network errors are
    worth another try (after the server's Retry-After, if any); anything else fails at once."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    def attempt() -> Any:
        try:
            return call()
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (408, 429) or status >= 500:
                raise Retry(f"HTTP {status}", cause=exc,
                            retry_after=retry_after(exc.response.headers)) from exc
            raise
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise Retry(f"{type(exc).__name__}: {exc}", cause=exc) from exc

    return attempt


def with_retry(call: Callable[[], Any], repo_id: str, rev: str | None,
               progress: Callable[[str], None] = lambda m: None) -> Any:
    """`call` under the one Hub retry loop (hfguard.hub.http.with_retries); failures -> HubError."""
    where = f"{repo_id}@{rev}" if rev else repo_id
    try:
        return with_retries(_classified(call), what=where, on_retry=lambda m: progress(f"{where}: {m}"))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a HubError
        raise translate(exc, repo_id, rev) from exc


def resolve(spec: str, *, token: str | bool | None = None, with_files: bool = True,
            progress: Callable[[str], None] = lambda m: None) -> Resolved:
    """Pin `spec` to a commit sha (and list its files unless `with_files` is False), within the
    deadline in force (a check's), or one of its own."""
    repo_id, rev = parse_ref(spec)
    if is_offline():
        return resolve_offline(repo_id, rev)
    with operation_deadline().active():
        return _resolve_online(repo_id, rev, token=token, with_files=with_files, progress=progress)


def _resolve_online(repo_id: str, rev: str | None, *, token: str | bool | None, with_files: bool,
                    progress: Callable[[str], None]) -> Resolved:
    from huggingface_hub import HfApi

    configure_session()
    api = HfApi(endpoint=endpoint(), token=token)
    timeout = request_seconds()   # the session hook cuts it to the deadline
    progress(f"resolving {repo_id}@{rev or 'main'} on {endpoint()}…")
    info = _once(("info", repo_id, rev or ""), lambda: with_retry(
        lambda: api.model_info(repo_id, revision=rev, securityStatus=True, timeout=timeout),
        repo_id, rev, progress))
    sha = str(info.sha or "")
    if not SHA_RE.fullmatch(sha):
        raise HubError(f"{repo_id}@{rev or 'main'}: the Hub returned no commit sha ({sha!r})",
                       rule="hub/bad-response")
    if rev and SHA_RE.fullmatch(rev) and rev != sha:
        raise HubError(f"{repo_id}: asked for commit {rev}, the Hub answered {sha}", rule="hub/bad-response")
    card = _card_from_info(info)
    meta = {
        "requested_revision": rev,
        "endpoint": endpoint(),
        "gated": info.gated,
        "private": info.private,
        "disabled": getattr(info, "disabled", None),
        "library_name": info.library_name,
        "tags": info.tags or [],
        "security_repo_status": info.security_repo_status,
        "offline": False,
    }
    resolved = Resolved(repo_id=repo_id, requested=rev, sha=sha, files=[], card=card, meta=meta)
    if with_files:
        list_files(resolved, token=token, progress=progress)
    return resolved


def list_files(resolved: Resolved, *, token: str | bool | None = None,
               progress: Callable[[str], None] = lambda m: None) -> None:
    """Sizes, git oids, LFS sha256 and the Hub's per-file scan status, at the pinned commit."""
    if resolved.meta.get("offline"):
        return
    progress(f"{resolved.repo_id}@{resolved.requested or 'main'} -> {resolved.sha}; listing files…")
    set_files(resolved, hub_files(resolved.repo_id, resolved.sha, token=token, progress=progress))


def hub_files(repo_id: str, sha: str, *, token: str | bool | None = None,
              progress: Callable[[str], None] = lambda m: None) -> list[HubFile]:
    """The files of commit `sha`, sorted by path."""
    entries = _once(("tree", repo_id, sha), lambda: list_tree(repo_id, sha, token=token, progress=progress))
    files = [_hub_file(entry) for entry in entries if entry.get("type") == "file"]
    return sorted(files, key=lambda f: f.path)


def set_files(resolved: Resolved, files: list[HubFile]) -> None:
    resolved.files = files
    resolved.meta["file_security"] = {f.path: f.security for f in files if f.security}


def list_tree(repo_id: str, sha: str, *, token: str | bool | None = None,
              progress: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:
    """Every entry of the recursive tree listing at `sha`, page by page (`Link: rel="next"`),
    each page under the one retry loop and the deadline in force (huggingface_hub's own
    pagination would retry on its own, past any deadline)."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    configure_session()
    headers = build_hf_headers(token=token)   # the session strips it for any other host
    url: str | None = f"{endpoint()}/api/models/{repo_id}/tree/{sha}"
    params: dict[str, str] | None = {"recursive": "true", "expand": "true"}
    entries: list[dict[str, Any]] = []
    while url is not None:
        def page(url: str = url, params: dict[str, str] | None = params) -> Any:
            r = get_session().get(url, headers=headers, params=params, timeout=request_timeout())
            hf_raise_for_status(r)
            return r

        r = with_retry(page, repo_id, sha, progress)
        try:
            doc = r.json()
        except ValueError as exc:
            raise HubError(f"{repo_id}@{sha}: the file listing is not JSON ({exc})",
                           rule="hub/bad-response") from None
        if not isinstance(doc, list):
            raise HubError(f"{repo_id}@{sha}: the file listing is not a list", rule="hub/bad-response")
        entries += [e for e in doc if isinstance(e, dict)]
        url, params = r.links.get("next", {}).get("url"), None
    return entries


def _hub_file(entry: dict[str, Any]) -> HubFile:
    from huggingface_hub.hf_api import RepoFile

    try:
        f = RepoFile(**entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise HubError(f"a file listing entry is malformed: {type(exc).__name__}: {exc}",
                       rule="hub/bad-response") from None
    sec = f.security
    return HubFile(path=f.path, size=int(f.size), blob_id=f.blob_id,
                   lfs_sha256=f.lfs.sha256 if f.lfs else None,
                   security={"status": sec.status, "av_scan": sec.av_scan,
                             "pickle_import_scan": sec.pickle_import_scan} if sec else None)


def _card_from_info(info: Any) -> dict[str, Any]:
    data = info.card_data.to_dict() if info.card_data is not None else {}
    card = {k: data[k] for k in CARD_KEYS if data.get(k) is not None}
    if "library_name" not in card and info.library_name:
        card["library_name"] = info.library_name
    return card


# -- offline --------------------------------------------------------------------------------------
def cached_sha(repo_id: str, rev: str | None) -> str | None:
    """The commit a ref points to in the local HF cache (refs/<rev>), or the sha itself if cached."""
    folder = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    rev = rev or "main"
    if SHA_RE.fullmatch(rev):
        return rev if (folder / "snapshots" / rev).is_dir() else None
    if (ref := _ref_file(folder, rev)) is None:
        return None
    try:
        with open_regular(ref) as fh:   # never a FIFO or a device: they block
            sha = fh.read(128).decode("utf-8", "replace").strip()
    except OSError:
        return None
    return sha if SHA_RE.fullmatch(sha) and (folder / "snapshots" / sha).is_dir() else None


def _ref_file(folder: Path, rev: str) -> Path | None:
    """refs/<rev> of a cached repo; None for a revision that would name a file outside refs/ (it
    may come from a committed file, and a hostile endpoint may answer for any revision)."""
    return None if rev.startswith("/") or ".." in rev.split("/") else folder / "refs" / rev


def record_ref(resolved: Resolved) -> None:
    """Note branch/tag -> sha in the HF cache (as huggingface_hub does) so offline runs find it."""
    rev = resolved.requested or "main"
    snapshot_root = hf_cache_dir() / ("models--" + resolved.repo_id.replace("/", "--"))
    if SHA_RE.fullmatch(rev) or not (snapshot_root / "snapshots" / resolved.sha).is_dir():
        return
    if (ref := _ref_file(snapshot_root, rev)) is None:
        return
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(resolved.sha, encoding="utf-8")
    except OSError:
        pass  # a read-only cache only costs the offline shortcut


def resolve_offline(repo_id: str, rev: str | None) -> Resolved:
    sha = cached_sha(repo_id, rev)
    if sha is None:
        raise HubError(f"{repo_id}@{rev or 'main'} is not in the local Hugging Face cache "
                       f"({hf_cache_dir()}) and offline mode is on (HF_HUB_OFFLINE=1): nothing to check",
                       rule="hub/offline-not-cached")
    snapshot = hf_cache_dir() / ("models--" + repo_id.replace("/", "--")) / "snapshots" / sha
    files = []
    # every entry, not only readable regular files: a dangling link, a FIFO or a device where a
    # file belongs is missing evidence (local_file makes it an ERROR), never silently left out
    for path, _ in walk_files(snapshot):
        blob = path.resolve().name
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        files.append(HubFile(path=path.relative_to(snapshot).as_posix(), size=size,
                             blob_id=blob if SHA_RE.fullmatch(blob) else None,
                             lfs_sha256=blob if _LFS_SHA_RE.fullmatch(blob) else None, local=path))
    card = _card_from_readme(snapshot / "README.md")
    meta = {"requested_revision": rev, "offline": True, "snapshot": str(snapshot)}
    return Resolved(repo_id=repo_id, requested=rev, sha=sha, files=files, card=card, meta=meta)


def _card_from_readme(path: Path) -> dict[str, Any]:
    """YAML front matter of a model card (bounded; a bad card is simply no metadata)."""
    import yaml

    try:
        with open_regular(path) as fh:   # a FIFO named README.md must not block the check
            text = fh.read(800_000).decode("utf-8", "replace")[:200_000]
    except OSError:
        return {}
    m = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", text, re.S)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError:
        return {}
    return {k: data[k] for k in CARD_KEYS if isinstance(data, dict) and data.get(k) is not None}


# -- the Target -----------------------------------------------------------------------------------
def hub_target(resolved: Resolved, *, stats: TransferStats, token: str | bool | None = None,
               on_fetch_error: Callable[[Exception, HubFile], None] | None = None,
               deadline: Deadline | None = None) -> Target:
    """TargetFiles that read by HTTP Range (opener) and download + verify in full (fetch).

    `deadline` (default: the one in force) bounds every read and download, also from the
    engine's worker threads; without one, each read and download gets its own."""
    deadline = deadline or current()
    from huggingface_hub.utils import build_hf_headers

    files: list[TargetFile] = []
    headers = {} if resolved.meta.get("offline") else build_hf_headers(token=token)
    for hf in resolved.files:
        if hf.local is not None:
            tf = local_file(hf.local, hf.path)
            tf.expected_sha256 = hf.lfs_sha256
        else:
            url = file_url(resolved.repo_id, hf.path, resolved.sha)
            tf = TargetFile(path=hf.path, size=hf.size, opener=lambda: None,  # type: ignore[arg-type,return-value]
                            expected_sha256=hf.lfs_sha256)
            tf.opener = _opener(tf, BlockCache(url, hf.size, headers=headers, stats=stats, name=hf.path,
                                                  deadline=deadline))
            tf.fetch = _fetcher(resolved, hf, stats, token, on_fetch_error, deadline)
        tf.meta.update({"blob_id": hf.blob_id, "lfs": hf.lfs_sha256 is not None,
                        "hub_security": hf.security})
        if (odd := unsafe_name_finding(hf.path, check="hub")) is not None:
            tf.meta["findings"] = [odd]
        files.append(tf)
    meta = dict(resolved.meta)
    return Target(name=display_name(resolved.repo_id, resolved.requested), source="hub", files=files,
                  revision=resolved.sha, repo_id=resolved.repo_id, card=dict(resolved.card), meta=meta)


def file_url(repo_id: str, path: str, sha: str) -> str:
    """The URL of exactly the listed file at `sha`: hf_hub_url percent-encodes the name, and here
    its '.' and '..' segments too, which URL normalisation would otherwise fold into another file's
    address (`sub/../model.bin` -> `model.bin`, `../x` -> outside the commit)."""
    from urllib.parse import quote

    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo_id, path, revision=sha, endpoint=endpoint())
    quoted = quote(path)   # the tail hf_hub_url appended
    if not url.endswith(quoted):
        return url
    segments = [seg.replace(".", "%2E") if seg in (".", "..") else seg for seg in quoted.split("/")]
    return url[:len(url) - len(quoted)] + "/".join(segments)


def display_name(repo_id: str, requested: str | None) -> str:
    """What the user asked for; the pinned sha is reported separately (Report.revision)."""
    return repo_id if not requested or SHA_RE.fullmatch(requested) else f"{repo_id}@{requested}"


def _opener(tf: TargetFile, cache: BlockCache) -> Callable[[], Any]:
    # once a file has been downloaded in full, read the verified local copy instead of the network;
    # range reads are buffered a block at a time: parsers read headers a few bytes at a call
    def open_() -> Any:
        if tf.local_path is not None:
            return open(tf.local_path, "rb")
        return io.BufferedReader(RangeReader(cache), BLOCK_SIZE)

    return open_


def _fetcher(resolved: Resolved, hf: HubFile, stats: TransferStats, token: str | bool | None,
             on_error: Callable[[Exception, HubFile], None] | None,
             deadline: Deadline) -> Callable[..., Path]:
    def fetch(scratch: Path | None = None) -> Path:
        """Into the HF cache; with `scratch`, into that folder (a throwaway cache the caller
        deletes: hfguard.weights.stream) unless the HF cache already holds the file."""
        from huggingface_hub import try_to_load_from_cache

        cache_dir = hf_cache_dir()
        if scratch is not None:
            cached = try_to_load_from_cache(resolved.repo_id, hf.path, cache_dir=cache_dir,
                                            revision=resolved.sha)
            if not (isinstance(cached, str) and Path(cached).exists()):
                cache_dir = scratch
        try:
            with (deadline if deadline.end is not None else operation_deadline(download=True)).active():
                return fetch_file(resolved.repo_id, hf.path, resolved.sha, sha256=hf.lfs_sha256,
                                  blob_id=hf.blob_id, size=hf.size, token=token, endpoint=endpoint(),
                                  cache_dir=cache_dir, stats=stats)
        except Exception as exc:
            if on_error is not None:
                on_error(exc, hf)
            raise

    return fetch


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


class ModelSpecError(Exception):
    """A model named on the command line (--base, --reference) could not be resolved."""


def resolve_model(spec: str) -> Target:
    """A local path, or a Hub id `org/name[@rev]` (`hf-hub:` prefix allowed) pinned to its commit
    sha through hfguard.hub; files are range-read or downloaded and verified on demand."""
    p = Path(spec).expanduser()
    if p.exists():
        return local_target([str(p)])
    spec = spec.removeprefix("hf-hub:")
    if not HUB_ID.fullmatch(spec):
        raise ModelSpecError(f"{spec!r} is neither an existing path nor a Hub id (org/name[@rev])")
    try:
        return hub_target(resolve(spec), stats=TransferStats())
    except Exception as exc:  # noqa: BLE001 - any Hub failure is a finding, not a crash
        raise ModelSpecError(f"{spec!r} could not be resolved: {type(exc).__name__}: {exc}") from None
