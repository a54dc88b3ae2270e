"""Second payloads: a deserialiser the pickle calls with a bytes literal gets those bytes, which are
scanned as a file of their own (one level deeper, within the depth bound)."""

from __future__ import annotations

import io

from hfguard import sniff as sn
from hfguard.static.pickle.containers.common import Scanner, join
from hfguard.static.pickle.vm import Global, PickleResult

EMBEDDED_LOADERS = {
    "pickle.loads",
    "_pickle.loads",
    "dill.loads",
    "cloudpickle.loads",
    "torch.storage._load_from_bytes",
    "joblib.numpy_pickle.loads",
    "numpy.loads",
}


def scan_embedded(sc: Scanner, results: list[PickleResult], where: str) -> None:
    for r in results:
        for call in r.calls:
            if not (isinstance(call.func, Global) and call.func.qualname in EMBEDDED_LOADERS):
                continue
            args = call.args if isinstance(call.args, tuple) else ()
            if args and isinstance(args[0], bytes):
                data = args[0]
                inner = join(where, f"<embedded@{call.offset}>")
                sc.scan(io.BytesIO(data), len(data), sn.sniff(data[:600]), inner, sc.depth + 1)  # type: ignore[arg-type]
