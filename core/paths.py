"""Where faceauth keeps generated data and caches: ``$FACEAUTH_CACHE``, else ``~/.cache/faceauth``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("FACEAUTH_CACHE") or Path.home() / ".cache" / "faceauth")
    return root.joinpath(*parts)
