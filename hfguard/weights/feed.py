"""Tensors fed to a torch backend (CUDA, or torch-cpu for tests): widened on a loader thread into
pinned host buffers, consecutive small tensors packed into one buffer so that they travel in one
copy, and copied on a side stream while the previous batch is measured on the default stream.

Two buffers alternate: the loader fills one while the consumer reads the other, so a host view
stays valid until the consumer asks for the batch after next. torch is imported only here.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from hfguard.weights.stats import Backend
from hfguard.weights.tensors import TensorMeta, load_tensor

BATCH = 1 << 24   # float32 entries per buffer at least (64 MiB): small tensors share one copy


def batches(metas: list[TensorMeta], cap: int) -> list[list[TensorMeta]]:
    """Consecutive tensors (file order: reads stay sequential) packed up to `cap` entries each;
    a tensor larger than `cap` travels alone."""
    out: list[list[TensorMeta]] = []
    size = cap + 1
    for m in metas:
        if size + m.numel > cap:
            out.append([])
            size = 0
        out[-1].append(m)
        size += m.numel
    return out


def device_feed(metas: list[TensorMeta], be: Backend) -> Iterator[tuple[TensorMeta, np.ndarray, Any]]:
    """(meta, host float32 view, backend tensor) per tensor, in order. The host view lives in a
    reused buffer: copy what must outlive the next step of the iteration."""
    import torch

    cuda = be.name == "cuda"
    groups = batches(metas, max(BATCH, max((m.numel for m in metas), default=0)))
    if not groups:
        return
    cap = max(sum(m.numel for m in g) for g in groups)
    bufs = [torch.empty(cap, dtype=torch.float32, pin_memory=cuda) for _ in range(2)]
    copied: list[Any] = [None, None]    # per buffer: the event of its last copy to the device
    stream = torch.cuda.Stream() if cuda else None

    def stage(i: int) -> tuple[list[tuple[TensorMeta, np.ndarray, int]], Any, Any]:
        buf = bufs[i % 2]
        if copied[i % 2] is not None:
            copied[i % 2].synchronize()   # its previous batch has left for the device
        host = buf.numpy()
        views, off = [], 0
        for m in groups[i]:
            out = host[off:off + m.numel]
            if m.mapped_as_is:   # float32 in the file: copied from the map
                np.copyto(out.reshape(m.shape), load_tensor(m, copy=False))
            else:                # widened straight into the buffer
                load_tensor(m, copy=False, out=out)
            views.append((m, out.reshape(m.shape), off))
            off += m.numel
        if not cuda:
            return views, buf[:off], None
        with torch.cuda.stream(stream):
            dev = buf[:off].to("cuda", non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
        copied[i % 2] = done
        return views, dev, done

    pool = ThreadPoolExecutor(1, thread_name_prefix="hfguard-feed")
    try:
        nxt = pool.submit(stage, 0)
        for i in range(len(groups)):
            views, dev, done = nxt.result()
            if i + 1 < len(groups):
                nxt = pool.submit(stage, i + 1)   # overlaps with the measuring of this batch
            if done is not None:
                current = torch.cuda.current_stream()
                current.wait_event(done)
                dev.record_stream(current)        # allocated on the side stream, used here
            for m, view, off in views:
                yield m, view, dev[off:off + m.numel].view(m.shape)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
