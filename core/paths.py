"""Where faceauth keeps generated data and caches: ``$FACEAUTH_CACHE``, else ``~/.cache/faceauth``."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cache_dir", "atomic_folder"]


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("FACEAUTH_CACHE") or Path.home() / ".cache" / "faceauth")
    return root.joinpath(*parts)


@contextlib.contextmanager
def atomic_folder(root: str | Path) -> Iterator[Path]:
    """A temporary folder beside `root` that becomes `root` when the block ends without error.

    Readers never see a half-written `root`; a failed or interrupted block leaves nothing behind.
    Raises FileExistsError when `root` exists already, or when another process finished it first.
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crashed run that had our pid
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.replace(tmp, root)
        except OSError as err:
            raise FileExistsError(root) if root.exists() else err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
