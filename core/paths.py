"""Where faceauth keeps generated data and caches: ``$FACEAUTH_CACHE``, else ``~/.cache/faceauth``."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["atomic_folder", "atomic_link", "atomic_write", "cache_dir", "read_npz", "write_npz"]


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


_UMASK = _umask()


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


@contextlib.contextmanager
def atomic_write(path: str | Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file open for writing that becomes `path` when the block ends without error.

    It is written under a temporary name beside `path` (``handle.name``), then renamed over it:
    readers see the old file or the new one, never part of one, and a damaged file is simply
    replaced. A failed or interrupted block leaves nothing behind. `durable` also syncs the data
    to disk before the rename (for checkpoints, which must survive a power cut).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; give the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:  # the rename itself reaches the disk only with its folder
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def atomic_link(source: str | Path, path: str | Path) -> Path:
    """Make `path` the same file as `source`, atomically: a hard link under a temporary name renamed
    over `path` (readers see the old file or the new one), or a durable copy where the file system has
    no hard links. Replacing `source` later leaves `path` as it was."""
    source, path = Path(source), Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        with atomic_write(path, durable=True) as handle, open(source, "rb") as original:
            shutil.copyfileobj(original, handle, 1 << 20)
        return path
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` into one uncompressed .npz file at `path`, atomically.

    The file is written under a temporary name beside `path`, then renamed over it: readers see the
    old file or the new one, never part of one, and a damaged file is simply replaced. A failed
    write (a read-only or full disk: OSError) leaves nothing behind.
    """
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def read_npz(path: str | Path) -> dict[str, np.ndarray] | None:
    """Every array of the .npz file at `path`, read whole; None when it is missing, not an .npz, or damaged.

    Reading every member whole lets the zip's CRC catch flipped bytes, so a caller can treat None
    as "build it again" (and `write_npz` the result). Checking what the arrays hold is the caller's.
    """
    try:
        with open(path, "rb") as handle:  # opened here: np.load leaks its own file when the zip is damaged
            loaded = np.load(handle, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                return None
            with loaded:
                return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, MemoryError, zipfile.BadZipFile):
        return None
