"""Small shared pieces of the format checks: bounded reads of JSON documents from a TargetFile, and
the git-lfs pointer observation."""

from __future__ import annotations

import json
from typing import Any

from hfguard.findings import Observation, Severity
from hfguard.target import TargetFile


class TooLarge(ValueError):
    pass


def read_bounded(file: TargetFile, limit: int) -> bytes:
    """All of a file's bytes, refusing files above `limit` (the size may lie: read limit + 1)."""
    if file.size > limit:
        raise TooLarge(f"{file.size} bytes is above the {limit}-byte limit")
    with file.open() as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"more than {limit} bytes")
    return data


def load_json_bounded(file: TargetFile, limit: int) -> Any:
    """Parse a JSON file of at most `limit` bytes; ValueError (or TooLarge) when it is not JSON."""
    data = read_bounded(file, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


def lfs_pointer_problem(file: TargetFile, area: str) -> Observation | None:
    """A git-lfs pointer where the weights should be (a clone without `git lfs pull`): the bytes to
    vet are not here, which is missing evidence, not a malformed file."""
    if file.size > 1024 or not file.head(len(LFS_POINTER_PREFIX)).startswith(LFS_POINTER_PREFIX):
        return None
    return Observation(f"{area}/lfs-pointer", Severity.MEDIUM,
                       "git-lfs pointer instead of the file's content (run `git lfs pull`); not vetted")
