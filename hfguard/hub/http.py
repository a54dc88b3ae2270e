"""The one HTTP policy of every Hub request: a wall-clock deadline, one retry loop, credentials
only for the configured endpoint.

huggingface_hub's shared httpx2 client is given two event hooks (`configure_session`):
- request: per-request timeouts derived from the remaining deadline (connect, headers and each read
  never wait past it), refusal once it is spent, and `Authorization` removed from any request to a
  host other than the endpoint's (pagination `Link` headers, redirects, mirrors of another host).
- response: the body stream is wrapped so a server that trickles one byte a second is cut at the
  deadline, not only when one read stalls.
The deadline in force is a context variable: `with deadline.active():` around Hub work, also in
worker threads (context variables do not follow threads by themselves).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_DEADLINE = 60.0           # seconds for one `hfguard check` (metadata, listing, range reads)
DEFAULT_DOWNLOAD_DEADLINE = 900.0  # with --download: whole files come over the wire
MAX_BACKOFF = 8.0                 # seconds between two tries at most (unless Retry-After says more)
MAX_RETRY_AFTER = 120.0           # a longer Retry-After is not waited for
# bytes/s of a slow link: a default deadline grows by what a check must download at this rate
# (the weights and behavior tiers read whole weight files); the scan's --budget, which projects
# from the measured rate and gives up early, is what bounds a large model's time
SLOW_LINK_RATE = 10e6


class DeadlineExceeded(Exception):
    """The wall-clock deadline of a Hub operation is spent. Deliberately not an httpx error:
    huggingface_hub's own retry loops must not retry it."""

    rule = "hub/timeout"


class Deadline:
    """A point in wall-clock (monotonic) time after which no Hub request starts or continues."""

    def __init__(self, seconds: float | None, *, grows: bool = False) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + max(0.0, seconds)
        self.grows = grows and seconds is not None   # a default, not what the user chose

    def allow_download(self, nbytes: int) -> float:
        """A default deadline grows by `nbytes` at SLOW_LINK_RATE; returns the seconds added."""
        if not self.grows or self.end is None or self.seconds is None or nbytes <= 0:
            return 0.0
        extra = nbytes / SLOW_LINK_RATE
        self.end += extra
        self.seconds += extra
        return extra

    def remaining(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def check(self, what: str = "") -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"{what + ': ' if what else ''}the Hub deadline of {self.seconds:g}s "
                                   f"is spent (set --deadline or HFGUARD_HUB_DEADLINE for slow links)")

    @contextlib.contextmanager
    def active(self) -> Iterator[Deadline]:
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)


_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("hfguard_deadline", default=None)


def current() -> Deadline:
    """The deadline in force, or one that never ends (then only per-request timeouts apply)."""
    return _CURRENT.get() or Deadline(None)


def default_deadline(download: bool = False) -> float:
    """HFGUARD_HUB_DEADLINE (seconds), else 60 s (900 s with --download)."""
    env = os.environ.get("HFGUARD_HUB_DEADLINE")
    if env:
        return float(env)
    return DEFAULT_DOWNLOAD_DEADLINE if download else DEFAULT_DEADLINE


def grow_for_download(nbytes: int, what: str, progress: Callable[[str], None]) -> None:
    """Let the deadline in force (if a default) allow for downloading `nbytes` of `what`, and say so."""
    from hfguard.units import human_bytes

    deadline = current()
    if deadline.allow_download(nbytes):
        progress(f"Hub deadline now {deadline.seconds or 0:.0f}s: {what}, {human_bytes(nbytes)}, may be "
                 f"downloaded at {human_bytes(int(SLOW_LINK_RATE))}/s or faster (--deadline sets it)")


def check_deadline(seconds: float | None, download: bool = False) -> Deadline:
    """The deadline of one check: `seconds` (0 or less: none), else the default, which grows
    with what the check downloads (Deadline.allow_download); one the user chose never does."""
    chosen = seconds is not None or bool(os.environ.get("HFGUARD_HUB_DEADLINE"))
    s = default_deadline(download) if seconds is None else seconds
    return Deadline(s if s > 0 else None, grows=not chosen)


def operation_deadline(download: bool = False) -> Deadline:
    """The deadline in force (a check's), or, outside any, a fresh one for this one operation."""
    outer = current()
    return outer if outer.end is not None else Deadline(default_deadline(download))


# -- settings ---------------------------------------------------------------------------------------
def retry_settings() -> tuple[int, float]:
    """(attempts, first wait in seconds): bounded, overridable for tests and slow links."""
    attempts = int(os.environ.get("HFGUARD_HUB_RETRIES", "3"))
    wait = float(os.environ.get("HFGUARD_HUB_RETRY_WAIT", "1.0"))
    return max(1, attempts), max(0.0, wait)


def request_seconds() -> float:
    """The longest one request may wait for a connection or one read (HFGUARD_HUB_TIMEOUT)."""
    return float(os.environ.get("HFGUARD_HUB_TIMEOUT", "30"))


def request_timeout() -> Any:
    """httpx2 timeouts for one request: the per-request limit, cut to the remaining deadline."""
    import httpx2

    left = current().remaining()
    if left <= 0:
        current().check()
    seconds = min(request_seconds(), left)
    return httpx2.Timeout(seconds, connect=min(seconds, 10.0))


# -- the retry loop -------------------------------------------------------------------------------
class Retry(Exception):
    """Raised by one attempt: worth another try. `cause` is what to raise if none is left;
    `retry_after` what the server asked us to wait (429/503 `Retry-After`)."""

    def __init__(self, message: str, *, cause: BaseException | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_after = retry_after


def retry_after(headers: Any) -> float | None:
    """Seconds from a `Retry-After: N` header (an HTTP date is not honoured: None)."""
    value = (headers.get("Retry-After") if headers is not None else None) or ""
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None


def with_retries(attempt: Callable[[], T], *, what: str = "",
                 on_retry: Callable[[str], None] = lambda msg: None) -> T:
    """Run `attempt` until it returns, raises something other than Retry, or tries run out.

    Waits are exponential (bounded by MAX_BACKOFF) or what the server's Retry-After asks, and
    count against the deadline in force: a wait that would outlast it ends the loop at once.
    """
    attempts, wait = retry_settings()
    deadline = current()
    for n in range(attempts):
        deadline.check(what)
        try:
            return attempt()
        except Retry as exc:
            if n + 1 >= attempts:
                raise (exc.cause or exc) from None
            delay = min(wait * 2 ** n, MAX_BACKOFF)
            if exc.retry_after is not None:
                if exc.retry_after > MAX_RETRY_AFTER or exc.retry_after >= deadline.remaining():
                    raise DeadlineExceeded(
                        f"{what + ': ' if what else ''}{exc}; the server asks to retry after "
                        f"{exc.retry_after:g}s, past the deadline ({max(0.0, deadline.remaining()):.1f}s "
                        f"left)") from None
                delay = max(delay, exc.retry_after)
            if delay >= deadline.remaining():
                raise (exc.cause or exc) from None
            on_retry(f"{exc} — retrying in {delay:.1f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


# -- the session ----------------------------------------------------------------------------------
def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _origin(url: Any) -> tuple[str, str, int | None]:
    import httpx2

    u = httpx2.URL(str(url))
    return u.scheme, u.host, u.port


def same_origin_as_endpoint(url: Any) -> bool:
    return _origin(url) == _origin(endpoint())


def guard_request(request: Any) -> None:
    """Request hook: no token off the endpoint's host; timeouts within the deadline."""
    if "authorization" in request.headers and not same_origin_as_endpoint(request.url):
        del request.headers["authorization"]
    deadline = current()
    deadline.check(str(request.url.path))
    current_timeout = request.extensions.get("timeout") or {}
    limit = min(request_seconds(), deadline.remaining())
    # huggingface_hub passes timeout=None on some calls (the tree listing): httpx reads that as
    # "wait forever"; every value is bounded here, and never past the deadline
    bounded = {k: min(v, limit) if v is not None else limit for k, v in current_timeout.items()} or \
        request_timeout().as_dict()
    request.extensions = {**request.extensions, "timeout": bounded}


def _deadline_stream(inner: Any, deadline: Deadline, url: str) -> Any:
    """A response body that stops with DeadlineExceeded once the deadline is spent."""
    import httpx2

    class DeadlineStream(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for chunk in inner:
                deadline.check(f"{url}: reading the body")
                yield chunk

        def close(self) -> None:
            inner.close()

    return DeadlineStream()



def guard_response(response: Any) -> None:
    """Response hook: the body is read under the same deadline as the headers."""
    deadline = current()
    if deadline.end is not None:
        response.stream = _deadline_stream(response.stream, deadline, str(response.request.url.path))


def configure_session() -> None:
    """Install the hooks on huggingface_hub's shared client (idempotent)."""
    from huggingface_hub.utils import _http

    if getattr(_http._GLOBAL_CLIENT_FACTORY, "_hfguard", False):
        return

    def factory() -> Any:
        client = _http.default_client_factory()
        client.timeout = request_timeout()
        hooks = dict(client.event_hooks)
        client.event_hooks = {**hooks, "request": [*hooks.get("request", []), guard_request],
                              "response": [*hooks.get("response", []), guard_response]}
        return client

    factory._hfguard = True  # type: ignore[attr-defined]
    _http.set_client_factory(factory)
