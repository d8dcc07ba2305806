"""Where descentlab keeps what it can rebuild: generated data sets and the compiled parameter check."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DESCENTLAB_CACHE"


def default_cache_dir() -> Path:
    """``$DESCENTLAB_CACHE``, else ``$XDG_CACHE_HOME/descentlab``, else ``~/.cache/descentlab``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "descentlab"
