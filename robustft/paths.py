"""Where robustft keeps its cache and its runs."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ROBUSTFT_CACHE"
RUNS_ENV = "ROBUSTFT_RUNS_DIR"


def cache_dir() -> Path:
    """``$ROBUSTFT_CACHE``, else ``$XDG_CACHE_HOME/robustft``, else ``~/.cache/robustft``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "robustft"


def runs_dir() -> Path:
    """``$ROBUSTFT_RUNS_DIR``, else ``./runs``: where new runs go and where the ``latest`` pointer lives."""
    return Path(os.environ.get(RUNS_ENV) or "runs")
