"""Unpack every pickle-bearing container into pickle streams for the symbolic VM.

One module per container kind, chosen by the dispatcher in `scanner.py`:
  torch_zip   zip archives (PyTorch zip checkpoints, .npz, nested zips) and their consistency
  legacy      PyTorch legacy stacked pickles + raw storages; pre-1.0 tar record streams
  tar         tar archives, members sniffed by content
  npy         numpy .npy object arrays
  joblib      joblib's interleaved arrays and its old "ZF" format
  compressed  gzip/bz2/xz/lzma/zlib wrappers; archives hfguard cannot open
  embedded    bytes handed to a nested deserialiser (pickle.loads, torch.storage._load_from_bytes)
Archives nested in archives are followed up to a depth bound. Only what is needed is read; nothing
is executed or unpickled.
"""

from hfguard.static.pickle.containers.common import (
    SCANNED_FORMATS,
    PickleSite,
    ScanConfig,
    looks_like_pickle,
    may_be_pickle,
    member_location,
)
from hfguard.static.pickle.containers.scanner import ContainerScanner

__all__ = [
    "SCANNED_FORMATS",
    "ContainerScanner",
    "PickleSite",
    "ScanConfig",
    "looks_like_pickle",
    "may_be_pickle",
    "member_location",
]
