"""Where faceauth keeps generated data and caches: ``$FACEAUTH_CACHE``, else ``~/.cache/faceauth``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from faceauth.errors import DataError, FaceAuthError, quote

__all__ = ["FolderLocked", "TEMPORARY_SUFFIX", "atomic_folder", "atomic_link", "atomic_write", "write_text", "cache_dir", "folder_lock", "inside", "read_npz",
           "sweep_temporaries", "write_fault", "write_npz"]

TEMPORARY_SUFFIX = ".tmp"  # atomic_write's temporary files: .<name>.<random>.tmp


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

    It is written under a temporary name beside `path` (``handle.name``, ``.<name>.*.tmp``), then
    renamed over it: readers see the old file or the new one, never part of one, and a damaged file
    is simply replaced. A failed or interrupted block leaves nothing behind (a killed process leaves
    its temporary file, which `sweep_temporaries` removes). `durable` also syncs the data to disk
    before the rename (for checkpoints, which must survive a power cut). A failed write (a full or
    read-only disk) raises OSError with `path` itself as its filename and the system's reason.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        os.close(fd)
        with open(tmp, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; give the mode a plain open() would
        os.replace(tmp, path)
        if durable:  # the rename itself reaches the disk only with its folder
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        # an OSError, or a library's RuntimeError around one (torch.save); a FaceAuthError raised by the block stays
        cause = write_fault(exc) if isinstance(exc, (OSError, RuntimeError)) else None
        if cause is not None and cause.filename != str(path):
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from exc
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))


def write_fault(exc: BaseException) -> OSError | None:
    """The OSError (full disk, read-only folder, ...) behind `exc`, also when a library wrapped it
    (torch.save turns a failed write into RuntimeError "unexpected pos"); None when there is none."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files `atomic_write` left in `folder` and its subfolders when a process was
    killed mid-write (``.last.pt.*.tmp``, ...); returns them. Call it only while no one writes there."""
    found = [p for p in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return found


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (the file ``<folder>/.lock``, holding the holder's pid and host).

    The lock is the operating system's (``flock``), released when the block ends or the process dies,
    so the lock file of a process that was killed is simply taken over. A folder that another live
    process holds raises `FolderLocked`, whose message names that process.
    """
    path = Path(folder) / ".lock"
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read(200).strip() or "another process"
            raise FolderLocked(f"{folder}: in use by another run ({holder}); wait for it to finish, or give "
                               f"another run directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the file releases the lock


class FolderLocked(FaceAuthError):
    """A folder that `folder_lock` finds held by another live process."""


def inside(root: str | Path, relative: str, where: str) -> Path:
    """`root / relative` for a path a dataset's own files name (a label key, a list entry); a DataError naming
    `where` when it would leave `root`: an absolute path, a drive, or a `..` part. Nothing is resolved on disk."""
    parts = str(relative).replace("\\", "/").split("/")
    if str(relative).startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or not relative:
        raise DataError(f"{where}: {quote(relative, 120)} leaves the dataset root {root} (an absolute path or '..'); "
                        f"expected a path inside it")
    return Path(root) / relative


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
