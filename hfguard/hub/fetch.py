"""Full downloads into the standard Hugging Face cache, pinned to a commit and verified by us.

`hf_hub_download(..., revision=<sha>)` reuses and populates the cache that `from_pretrained` reads;
we then hash the bytes ourselves against the Hub's LFS sha256 (or the git blob id for small files),
and a mismatch removes the tampered copy from the cache so nothing loads it later.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hfguard.hub.http import DeadlineExceeded, configure_session, request_timeout
from hfguard.hub.remote import GATED_HINT, HubReadError, TransferStats
from hfguard.target import open_regular


class IntegrityError(HubReadError):
    def __init__(self, message: str, evidence: dict[str, object]) -> None:
        super().__init__(message, rule="provenance/hash-mismatch")
        self.evidence = evidence


def digest(path: Path, *, git_blob: bool = False) -> str:
    """sha256 of the content, or the git blob sha1 (what the Hub's `oid` is for non-LFS files)."""
    h = hashlib.sha1(usedforsecurity=False) if git_blob else hashlib.sha256()
    if git_blob:
        h.update(b"blob %d\0" % path.stat().st_size)
    with open_regular(path) as fh:   # a FIFO or device in the cache raises, never blocks
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, name: str, *, sha256: str | None, blob_id: str | None, size: int | None) -> None:
    """Raise IntegrityError when the bytes on disk are not the ones the Hub vouches for."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise IntegrityError(f"{name}: {actual_size} bytes on disk, the Hub lists {size} (truncated or "
                             f"replaced download)", {"expected_size": size, "actual_size": actual_size})
    if sha256:
        actual = digest(path)
        if actual != sha256.lower():
            raise IntegrityError(f"{name}: sha256 {actual} does not match the Hub's LFS sha256 {sha256}",
                                 {"expected_sha256": sha256, "actual_sha256": actual})
    elif blob_id:
        actual = digest(path, git_blob=True)
        if actual != blob_id.lower():
            raise IntegrityError(f"{name}: git blob id {actual} does not match the Hub's {blob_id}",
                                 {"expected_blob_id": blob_id, "actual_blob_id": actual})


def evict(path: Path) -> None:
    """Drop a tampered file from the HF cache: the snapshot link and the blob it points to."""
    try:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
    except OSError:
        pass


def fetch_file(repo_id: str, filename: str, sha: str, *, sha256: str | None, blob_id: str | None,
               size: int | None, token: str | bool | None, endpoint: str, cache_dir: Path,
               stats: TransferStats) -> Path:
    """Download one file of a pinned commit into the HF cache and verify it; returns its path."""
    import httpx2
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    configure_session()
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=sha)
    try:
        local = Path(hf_hub_download(repo_id, filename, revision=sha, token=token, endpoint=endpoint,
                                     cache_dir=cache_dir, etag_timeout=request_timeout().read))
    except DeadlineExceeded as exc:
        raise HubReadError(f"{filename}: download stopped: {exc}", rule="hub/timeout") from None
    except GatedRepoError as exc:
        raise HubReadError(f"{filename}: {GATED_HINT}", rule="hub/gated") from exc
    except RepositoryNotFoundError as exc:
        raise HubReadError(f"{filename}: repository not found ({GATED_HINT})", rule="hub/gated") from exc
    except (HfHubHTTPError, LocalEntryNotFoundError, httpx2.HTTPError, OSError) as exc:
        raise HubReadError(f"{filename}: download failed: {type(exc).__name__}: {_first_line(exc)}",
                           rule="hub/download-failed") from exc
    if not (isinstance(cached, str) and Path(cached).exists()):
        stats.add(local.stat().st_size)
        stats.downloaded_files += 1
    try:
        verify(local, filename, sha256=sha256, blob_id=blob_id, size=size)
    except IntegrityError:
        evict(local)
        raise
    return local


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
