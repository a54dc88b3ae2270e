"""Second payloads: a deserialiser the pickle calls with a bytes literal gets those bytes, which are
scanned as a file of their own (one level deeper, within the depth bound).

`torch.storage._load_from_bytes` is what plain `pickle.dumps` of a torch tensor writes (the
storage's `torch.save` bytes): it is judged by that scan (a `Delegation`), so a clean nested
checkpoint is benign and a malicious one blocks. Every other loader stays a finding of its own.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable
from typing import IO, Any

from hfguard import sniff as sn
from hfguard.static.pickle.containers.common import Delegation, Scanner, join
from hfguard.static.pickle.peek import is_seekable
from hfguard.static.pickle.streams import open_slice
from hfguard.static.pickle.vm import Blob, Call, Global, PickleResult
from hfguard.static.pickle.zipdir import is_torch_zip

EMBEDDED_LOADERS = {
    "pickle.loads",
    "_pickle.loads",
    "dill.loads",
    "cloudpickle.loads",
    "torch.storage._load_from_bytes",
    "joblib.numpy_pickle.loads",
    "numpy.loads",
}
# loaders judged by their argument: torch.load(BytesIO(b)) of a torch checkpoint
JUDGED_BY_CONTENT = {"torch.storage._load_from_bytes"}


BlobOpener = Callable[[Blob], "IO[bytes] | None"]


def scan_embedded(sc: Scanner, results: list[PickleResult], where: str, open_blob: BlobOpener) -> None:
    """`open_blob` gives a stream over a bytes argument too large for the VM to keep (or None)."""
    for r in results:
        for call in r.calls:
            if not (isinstance(call.func, Global) and call.func.qualname in EMBEDDED_LOADERS):
                continue
            args = call.args if isinstance(call.args, tuple) else ()
            stream, size = _argument(sc, args[0] if args else None, open_blob)
            judged = call.func.qualname in JUDGED_BY_CONTENT
            sites, observations = len(sc.sites), len(sc.observations)
            if stream is not None:
                fmt = sn.sniff(stream.read(600))
                stream.seek(0)
                judged = judged and _torch_checkpoint(stream, size, fmt)
                inner = join(where, f"<embedded@{call.offset}>")
                sc.scan(stream, size, fmt, inner, sc.depth + 1)
            if call.func.qualname in JUDGED_BY_CONTENT:
                sc.delegations.append(
                    Delegation(
                        id(call.func),
                        range(sites, len(sc.sites)),
                        range(observations, len(sc.observations)),
                        judged and stream is not None,
                    )
                )


def _argument(sc: Scanner, arg: Any, open_blob: BlobOpener) -> tuple[IO[bytes] | None, int]:
    """The bytes a loader receives: a bytes literal, a large one read from the stream, or (pickle
    protocol < 3) `_codecs.encode(text, "latin1")`."""
    if isinstance(arg, bytes):
        return io.BytesIO(arg), len(arg)
    if isinstance(arg, Blob) and arg.kind == "bytes":
        stream = open_blob(arg)
        return stream, arg.length
    if not (
        isinstance(arg, Call)
        and isinstance(arg.func, Global)
        and arg.func.qualname in ("_codecs.encode", "codecs.encode")
        and isinstance(arg.args, tuple)
        and len(arg.args) == 2
        and arg.args[1] in ("latin1", "latin-1")
    ):
        return None, 0
    text = arg.args[0]
    if isinstance(text, str):
        try:
            data = text.encode("latin-1")
        except UnicodeEncodeError:
            return None, 0
        return io.BytesIO(data), len(data)
    if isinstance(text, Blob) and text.kind == "str":
        utf8 = open_blob(text)
        return (None, 0) if utf8 is None else _latin1_of_utf8(sc, utf8)
    return None, 0


def _latin1_of_utf8(sc: Scanner, utf8: IO[bytes]) -> tuple[IO[bytes] | None, int]:
    """A large BINUNICODE text re-encoded to the latin-1 bytes it stands for, spooled (bounded)."""
    import tempfile  # (rare: most scans never import it)

    out = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115 - returned to the caller
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := utf8.read(1 << 20):
            out.write(decoder.decode(chunk).encode("latin-1"))
            sc.budget.tick("re-encoding an embedded argument")
        out.write(decoder.decode(b"", final=True).encode("latin-1"))
    except (UnicodeDecodeError, UnicodeEncodeError):
        out.close()
        return None, 0
    size = out.tell()
    out.seek(0)
    return out, size


def blob_opener(fh: IO[bytes], base: int) -> BlobOpener:
    """Blobs of a pickle read from `fh` (positioned at absolute offset `base`), if `fh` seeks."""
    start = fh.tell() if is_seekable(fh) else None

    def open_blob(blob: Blob) -> IO[bytes] | None:
        if start is None:
            return None
        return open_slice(fh, start + blob.offset - base, blob.length)

    return open_blob


def _torch_checkpoint(stream: IO[bytes], size: int, fmt: str) -> bool:
    if fmt == sn.TORCH_LEGACY:
        return True
    found = fmt == sn.ZIP and is_torch_zip(stream, size)
    stream.seek(0)
    return found
