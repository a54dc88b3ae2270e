"""Where hfguard keeps its own state (verdict cache, feeds): one answer for every module."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """HFGUARD_CACHE_DIR, else <HF_HOME>/hfguard, else <XDG_CACHE_HOME or ~/.cache>/hfguard."""
    if os.environ.get("HFGUARD_CACHE_DIR"):
        return Path(os.environ["HFGUARD_CACHE_DIR"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hfguard"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hfguard"
