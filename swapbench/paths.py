"""Where swapbench keeps caches (never inside the installed package)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$SWAPBENCH_CACHE`` or ``$XDG_CACHE_HOME/swapbench`` or ``~/.cache/swapbench``."""
    root = (os.environ.get("SWAPBENCH_CACHE")
            or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "swapbench")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
