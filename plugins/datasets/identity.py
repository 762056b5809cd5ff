"""The `identity_folder` layout: face-recognition training data, one folder per person.

Layout (CASIA-WebFace, VGGFace2, LFW and most extracted face sets)::

    root/<identity>/*.jpg            (also .png, .bmp, ... and sub-folders of an identity)

Identities are the folder names, sorted; hidden folders (``.name``) are skipped. Building the
index lists files only (one directory scan per identity, no image is opened), so it scales to
millions of files; an unreadable image stops the run with its path when it is read. The index
is held in numpy arrays rather than per-file Python objects (identity names once, then one
fixed-width bytes array of file names below them and an int32 owner per file), which keeps memory
small and lets DataLoader workers share it without copy-on-access growth.

The scan is cached in one ``.npz`` file under ``cache_dir("index")``, keyed by the root's resolved
path, so a later build of an unchanged tree lists no identity folder. It is reused while every
folder the scan listed (the root, each identity folder, each of their sub-folders) has the same
modification and status-change times (``st_mtime_ns``, ``st_ctime_ns``) as when it was listed:
adding, removing or renaming a file or folder changes its parent folder's mtime, and forging an
mtime back (``tar``, ``rsync -a``, ``touch -d``) changes the ctime. Checking costs one listing of
the root and one ``stat`` per identity folder and sub-folder, never a listing of one. A scan is
not stored when a folder it listed was modified less than 2 s before the scan began (a change in
the same timestamp tick would go unseen), so a tree written moments ago is listed again next
time. A cache that cannot be read, fails its CRC or does not match is ignored and rewritten;
writes are atomic (a temporary file, then a rename). File systems whose folder times do not
change when a file is added (some object-store mounts) need ``index_cache: false``, which lists
every time.

Validation is identity-disjoint: a seeded share of the identities (``val_identities``) is held
out of training and becomes a `Verification` of generated pairs (balanced genuine/impostor, see
`faceauth.plugins.datasets.pairs.generate_pairs`). Training labels are the positions of the
remaining identities in sorted order, and `Splits.classes` names them. A test protocol comes from
an LFW ``pairs.txt`` (``lfw_pairs``) or insightface ``.bin`` packs (``verification``).

Unaligned photos can be aligned when read: ``landmarks`` names a CSV of ``path,x1,y1,...,x5,y5``
rows (path relative to root; eyes, nose, mouth corners), and each image is warped onto the
ArcFace template at ``align_size`` pixels (`faceauth.faces.align`). Without a CSV, a recipe detector that
finds landmarks (``detector: {name: mtcnn, weights: DIR}``) gives them, detected once and cached
(`faceauth.plugins.datasets.detected_landmarks`); images without a face are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import faceauth
from faceauth.data import IMAGE_SUFFIXES, Splits, Verification, dataset_root, read_image
from faceauth.errors import DataError
from faceauth.io.paths import cache_dir, read_npz, write_npz
from faceauth.plugins.datasets.pairs import generate_pairs, read_bin, read_lfw_pairs

__all__ = ["IdentityIndex", "IdentityImages", "index_identity_folder", "hold_out_identities", "read_landmarks",
           "load_identity_folder", "external_verification", "IdentityFolderOptions"]

LAYOUT = "root/<identity>/*.jpg"
_INDEX_VERSION = 1
# A scan is cached only when every folder it listed is older than this (timestamp ticks are
# 1-10 ms on Linux file systems, 1-2 s on some others; the margin also absorbs small clock skew
# between a network file server and this machine).
log = logging.getLogger(__name__)

_RACY_NS = 2_000_000_000


@attrs.frozen(eq=False)
class IdentityIndex:
    """The files of an identity-folder tree: ``root/names[owner[i]]/files[i]`` is image i."""

    root: Path
    names: tuple[str, ...]
    owner: np.ndarray   # (N,) int32: index into `names`
    files: np.ndarray   # (N,) bytes ('S'): path below the identity folder, os.fsencode'd
    from_cache: bool = False

    def counts(self) -> np.ndarray:
        return np.bincount(self.owner, minlength=len(self.names))


class IdentityImages:
    """Images of some identities of an `IdentityIndex`, decoded on access.

    Items are ``{"image": PIL RGB, "label": int, "path": str}``; `labels` is the (N,) int64 array of
    the labels, for samplers and pair generation.
    """

    def __init__(self, index: IdentityIndex, positions: np.ndarray, labels: np.ndarray,
                 landmarks: np.ndarray | None = None, align_size: int = 112):
        self.root = os.fspath(index.root)
        self.names = index.names
        self.owner = index.owner[positions]
        self.files = index.files[positions]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.landmarks = None if landmarks is None else landmarks[positions]
        self.align_size = align_size

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.names[self.owner[index]], os.fsdecode(self.files[index]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.path(index)
        image = read_image(path)
        if self.landmarks is not None:
            from faceauth.faces.align import align_five_point

            image = align_five_point(image, self.landmarks[index], self.align_size)
        return {"image": image, "label": int(self.labels[index]), "path": path}


def read_landmarks(csv_path: str | Path, index: IdentityIndex) -> np.ndarray:
    """(N, 5, 2) float32 landmarks of every indexed image from ``path,x1,y1,...,x5,y5`` rows.

    Paths are relative to the dataset root (``identity/file.jpg``); a header row is allowed, rows
    for files not in the index are ignored, and an indexed image without a row is a DataError.
    """
    import csv

    csv_path = Path(csv_path).expanduser()
    position = {f"{index.names[o]}/{os.fsdecode(f)}".replace(os.sep, "/"): i
                for i, (o, f) in enumerate(zip(index.owner.tolist(), index.files.tolist()))}
    points = np.full((len(position), 5, 2), np.nan, dtype=np.float32)
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), start=1):
                if not row or (number == 1 and row[0].strip().lower() in ("path", "file", "image", "filename")):
                    continue
                try:
                    if len(row) != 11:
                        raise ValueError
                    values = np.array([float(v) for v in row[1:]], dtype=np.float32).reshape(5, 2)
                except ValueError:
                    raise DataError(f"{csv_path}:{number}: expected 'path,x1,y1,...,x5,y5' (11 fields), "
                                    f"got {','.join(row)[:120]!r}") from None
                found = position.get(row[0].strip().replace("\\", "/"))
                if found is not None:
                    points[found] = values
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read landmarks ({exc})") from None
    missing = np.flatnonzero(np.isnan(points).any(axis=(1, 2)))
    if len(missing):
        first = int(missing[0])
        path = index.root / index.names[index.owner[first]] / os.fsdecode(index.files[first])
        raise DataError(f"{csv_path}: no landmarks for {len(missing)} of {len(points)} images, e.g. {path}")
    return points


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_mtime_ns, st.st_ctime_ns


def _images_below(folder: str, prefix: str = "", subdirs: list[tuple[str, tuple[int, int]]] | None = None
                  ) -> list[str]:
    """Image files below `folder` (relative, sorted, sub-folders included), from directory listings only.

    Each sub-folder is appended to `subdirs` as (path relative to `folder`, its stamp taken before
    it is listed).
    """
    found: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{folder}: cannot list identity folder ({exc.strerror})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if subdirs is not None:
                try:
                    subdirs.append((prefix + entry.name, _stamp(entry.stat())))
                except OSError as exc:
                    raise DataError(f"{entry.path}: cannot list identity folder ({exc.strerror})") from None
            found.extend(_images_below(entry.path, prefix + entry.name + os.sep, subdirs))
        elif entry.name.lower().endswith(IMAGE_SUFFIXES):
            found.append(prefix + entry.name)
    return found


@attrs.frozen(eq=False)
class _Scan:
    """Every non-hidden folder below the root with its images (none dropped by `min_images`), and
    the stamps that tell whether the tree has changed since."""

    names: np.ndarray       # (I,) 'S': identity folder names, os.fsencode'd, sorted
    counts: np.ndarray      # (I,) int64: images of each identity, in `files` order
    files: np.ndarray       # (N,) 'S': paths below the identity folders
    stamps: np.ndarray      # (1 + I, 2) int64: (mtime_ns, ctime_ns) of the root, then of each identity
    subdirs: np.ndarray     # (S,) 'S': sub-folders of identity folders, relative to the root
    sub_stamps: np.ndarray  # (S, 2) int64
    loose: int              # images directly in the root (for the error message only)
    from_cache: bool = False


def _scan(root: Path, key: str) -> tuple[_Scan, bool]:
    """List the tree; also whether the listing may be cached (no folder changed too recently)."""
    started = time.time_ns()
    try:
        stamps = [_stamp(os.stat(root))]
        top = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{key}: cannot list {root} ({exc.strerror})") from None
    names: list[bytes] = []
    counts: list[int] = []
    chunks: list[np.ndarray] = []  # one array per identity: no per-file Python object outlives its folder
    subdirs: list[tuple[str, tuple[int, int]]] = []
    loose = 0
    for entry in top:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            loose += entry.name.lower().endswith(IMAGE_SUFFIXES)
            continue
        try:
            stamps.append(_stamp(entry.stat()))
        except OSError as exc:
            raise DataError(f"{entry.path}: cannot list identity folder ({exc.strerror})") from None
        below: list[tuple[str, tuple[int, int]]] = []
        found = _images_below(entry.path, "", below)
        subdirs.extend((entry.name + os.sep + path, stamp) for path, stamp in below)
        names.append(os.fsencode(entry.name))
        counts.append(len(found))
        if found:  # one fsencode per folder: a name holds no NUL
            chunks.append(np.array(os.fsencode("\0".join(found)).split(b"\0")))
    scan = _Scan(names=np.array(names, dtype=np.bytes_).reshape(-1), counts=np.array(counts, dtype=np.int64),
                 files=np.concatenate(chunks) if chunks else np.zeros(0, dtype="S1"),
                 stamps=np.array(stamps, dtype=np.int64).reshape(-1, 2),
                 subdirs=np.array([os.fsencode(p) for p, _ in subdirs], dtype=np.bytes_).reshape(-1),
                 sub_stamps=np.array([s for _, s in subdirs], dtype=np.int64).reshape(-1, 2), loose=loose)
    # Any change after a folder was listed gives it an mtime of at least `started` less one tick, so
    # only folders modified just before the scan could change again unseen (ctime is only a check
    # against mtimes set back, which is why it is not tested here).
    newest = max(int(scan.stamps[:, 0].max()), int(scan.sub_stamps[:, 0].max(initial=0)))
    return scan, newest < started - _RACY_NS


def _cache_path(root: Path) -> Path:
    facts = f"{root.resolve()}\n{','.join(IMAGE_SUFFIXES)}\nv{_INDEX_VERSION}"
    return cache_dir("index", f"identity-{hashlib.sha256(facts.encode()).hexdigest()[:32]}.npz")


def _unchanged(root: Path, names: np.ndarray, stamps: np.ndarray, subdirs: np.ndarray,
               sub_stamps: np.ndarray) -> bool:
    """Whether every folder a cached scan listed still has its stamps: a root listing and stats, no more."""
    try:
        if _stamp(os.stat(root)) != tuple(stamps[0].tolist()):
            return False
        with os.scandir(root) as entries:
            current = sorted((e.name, _stamp(e.stat())) for e in entries
                             if not e.name.startswith(".") and e.is_dir())
        if [os.fsencode(name) for name, _ in current] != names.tolist():
            return False
        if not np.array_equal(np.array([s for _, s in current], dtype=np.int64).reshape(-1, 2), stamps[1:]):
            return False
        return all(_stamp(os.stat(os.path.join(root, os.fsdecode(path)))) == tuple(stamp)
                   for path, stamp in zip(subdirs.tolist(), sub_stamps.tolist()))
    except OSError:
        return False


def _load_cached(path: Path, root: Path) -> _Scan | None:
    stored = read_npz(path)  # None when missing or damaged (the zip's CRC catches flipped bytes)
    try:
        if stored is None or stored["version"].item() != _INDEX_VERSION:
            return None
        names, counts, files = stored["names"], stored["counts"], stored["files"]
        stamps, subdirs, sub_stamps = stored["stamps"], stored["subdirs"], stored["sub_stamps"]
        loose = int(stored["loose"].item())
    except (KeyError, ValueError, TypeError):  # from another version
        return None
    if (names.ndim != 1 or names.dtype.kind != "S" or counts.shape != names.shape or counts.dtype.kind != "i"
            or files.ndim != 1 or files.dtype.kind != "S" or (counts < 0).any() or int(counts.sum()) != len(files)
            or stamps.shape != (len(names) + 1, 2) or subdirs.ndim != 1 or sub_stamps.shape != (len(subdirs), 2)
            or not _unchanged(root, names, stamps, subdirs, sub_stamps)):
        return None
    return _Scan(names=names, counts=counts, files=files, stamps=stamps, subdirs=subdirs, sub_stamps=sub_stamps,
                 loose=loose, from_cache=True)


def _store_cached(path: Path, scan: _Scan) -> None:
    with contextlib.suppress(OSError):  # a read-only or full cache only costs the next build a rescan
        write_npz(path, {"version": np.int64(_INDEX_VERSION), "names": scan.names, "counts": scan.counts,
                         "files": scan.files, "stamps": scan.stamps, "subdirs": scan.subdirs,
                         "sub_stamps": scan.sub_stamps, "loose": np.int64(scan.loose)})


def index_identity_folder(root: str | Path, min_images: int = 1, key: str = "data.root", *,
                          use_cache: bool = True) -> IdentityIndex:
    """List ``root/<identity>/*`` images; identities with fewer than `min_images` are left out.

    With `use_cache`, an unchanged tree's listing comes from the cache (see the module docstring).
    """
    root = dataset_root(root, key, LAYOUT)
    scan = None
    if use_cache:
        cache = _cache_path(root)
        scan = _load_cached(cache, root)
    if scan is None:
        scan, storable = _scan(root, key)
        if use_cache and storable and len(scan.names):
            _store_cached(cache, scan)
    keep = scan.counts >= max(min_images, 1)
    if not keep.any():
        hint = f"; it holds {scan.loose} images directly, which have no identity folder" if scan.loose else ""
        need = f" with at least {min_images} images each" if min_images > 1 else ""
        raise DataError(f"{key}: {root} has no identity folders{need} (expected {LAYOUT}){hint}")
    kept = np.flatnonzero(keep)
    files = scan.files if keep.all() else scan.files[np.repeat(keep, scan.counts)]
    return IdentityIndex(root=root, names=tuple(os.fsdecode(n) for n in scan.names[kept].tolist()),
                         owner=np.repeat(np.arange(len(kept), dtype=np.int32), scan.counts[kept]),
                         files=files, from_cache=scan.from_cache)


def hold_out_identities(counts: np.ndarray, fraction: float, seed: int, where: str,
                        option: str = "val_identities") -> np.ndarray:
    """Which identities (indices) to hold out for validation: ``round(fraction * N)``, seeded.

    Held-out identities are drawn among those with two or more images (genuine pairs need two).
    A DataError names `where` when the split leaves too few identities on either side.
    """
    total = len(counts)
    if fraction <= 0:
        return np.zeros(0, dtype=np.int64)
    wanted = int(fraction * total + 0.5)
    if wanted < 2:
        raise DataError(f"{where}: {option}={fraction:g} of {total} identities holds out {wanted}; validation "
                        f"pairs need at least 2 held-out identities (raise {option}, or set it to 0 for none)")
    if total - wanted < 2:
        raise DataError(f"{where}: {option}={fraction:g} of {total} identities leaves {total - wanted} for "
                        "training; training needs at least 2 identities")
    eligible = np.flatnonzero(counts >= 2)
    if len(eligible) < wanted:
        raise DataError(f"{where}: {wanted} held-out identities wanted, but only {len(eligible)} identities have "
                        f"the 2 or more images a genuine pair needs (lower {option})")
    rng = np.random.default_rng([seed, 0x1D])
    return np.sort(rng.choice(eligible, size=wanted, replace=False))


def held_out_verification(images: Any, identities: int, pairs_per_identity: int, seed: int,
                          where: str) -> Verification:
    """Validation pairs (half genuine, half impostor) among the images of the held-out identities."""
    try:
        pairs, is_same = generate_pairs(images.labels, pairs_per_identity * identities, seed)
    except DataError as exc:
        raise DataError(f"{where}: held-out identities: {str(exc).split(': ', 1)[-1]} "
                        "(lower pairs_per_identity or raise val_identities)") from None
    return Verification(name="val", images=images, pairs=pairs, is_same=is_same)


def external_verification(lfw_pairs: str | None, lfw_root: str | None, packs: list[str] | tuple[str, ...]
                          ) -> dict[str, Verification]:
    """The named test protocols of a recipe: an LFW pairs list and/or insightface .bin packs, in that order."""
    sets: dict[str, Verification] = {}
    read: list[tuple[str, Verification]] = []
    if lfw_pairs is not None:
        if lfw_root is None:
            raise DataError("data.lfw_pairs: needs the folder of the listed images (data.lfw_root)")
        read.append((lfw_pairs, read_lfw_pairs(lfw_pairs, lfw_root)))
    read += [(pack, read_bin(pack)) for pack in packs]
    for source, found in read:
        if len(found.pairs) < 2:
            raise DataError(f"{source}: {len(found.pairs)} pair(s); a verification protocol needs at least 2 "
                            f"(its accuracy is measured over folds of the pairs)")
        name = found.name if found.name not in sets else f"{found.name}-{len(sets)}"
        sets[name] = attrs.evolve(found, name=name)
    return sets


def load_identity_folder(root: str | Path, *, val_identities: float = 0.1, pairs_per_identity: int = 20,
                         min_images: int = 1, seed: int = 0, lfw_pairs: str | None = None,
                         lfw_root: str | None = None, verification: list[str] | tuple[str, ...] = (),
                         landmarks: str | None = None, align_size: int = 112, key: str = "data.root",
                         use_cache: bool = True, detector: Any = None) -> Splits:
    index = index_identity_folder(root, min_images, key, use_cache=use_cache)
    points = read_landmarks(landmarks, index) if landmarks is not None else None
    if points is None and detector is not None:
        points = _detected_landmarks(index, detector)
    counts = index.counts()
    where = f"{key}: {index.root}"
    if len(index.names) < 2:
        raise DataError(f"{where} has {len(index.names)} identity folder(s) with at least {max(min_images, 1)} images; "
                        "training needs at least 2")
    held = hold_out_identities(counts, val_identities, seed, where)
    is_held = np.zeros(len(index.names), dtype=bool)
    is_held[held] = True
    train_ids = np.flatnonzero(~is_held)
    relabel = np.full(len(index.names), -1, dtype=np.int64)
    relabel[train_ids] = np.arange(len(train_ids))
    relabel[held] = np.arange(len(held))
    has_face = np.ones(len(index.owner), dtype=bool) if points is None else ~np.isnan(points).any(axis=(1, 2))
    train_pos = np.flatnonzero(~is_held[index.owner] & has_face)
    train = IdentityImages(index, train_pos, relabel[index.owner[train_pos]], points, align_size)

    val = None
    if len(held):
        val_pos = np.flatnonzero(is_held[index.owner] & has_face)
        images = IdentityImages(index, val_pos, relabel[index.owner[val_pos]], points, align_size)
        val = held_out_verification(images, len(held), pairs_per_identity, seed, where)

    external = external_verification(lfw_pairs, lfw_root if lfw_root is not None else os.fspath(index.root),
                                     verification)
    test, *more = external.values() or [None]
    classes = tuple(index.names[i] for i in train_ids)
    info = {"task": "identity", "num_identities": len(classes), "num_images": len(train),
            "root": str(index.root), "val_identities": len(held), "val_pairs": 0 if val is None else len(val.pairs),
            "verification": {name: len(v.pairs) for name, v in external.items()}, "index_from_cache": index.from_cache}
    return Splits(train=train, val=val, test=test, classes=classes, info=info, more_tests={v.name: v for v in more})


def _detected_landmarks(index: IdentityIndex, detector: Any) -> np.ndarray:
    from faceauth.plugins.datasets.detected_landmarks import detect_landmarks
    from faceauth.plugins.datasets.frames import detector_settings

    paths = [os.path.join(index.root, index.names[o], os.fsdecode(f))
             for o, f in zip(index.owner.tolist(), index.files.tolist())]
    points = detect_landmarks(paths, detector, detector_settings(detector), index.root)
    faceless = np.flatnonzero(np.isnan(points).any(axis=(1, 2)))
    if len(faceless):
        log.warning("identity_folder: no face found in %d of %d images; left out (e.g. %s)", len(faceless),
                    len(paths), paths[int(faceless[0])])
    return points


@attrs.frozen
class IdentityFolderOptions:
    root: str = faceauth.schema.required(f"the folder laid out as {LAYOUT}")
    # share of the identities held out (identity-disjoint) for validation pairs; 0: no validation
    val_identities: float = attrs.field(default=0.1, validator=faceauth.schema.fraction)
    # validation pairs per held-out identity (half genuine, half impostor)
    pairs_per_identity: int = attrs.field(default=20, validator=faceauth.schema.positive)
    min_images: int = attrs.field(default=1, validator=faceauth.schema.positive)
    seed: int = 0
    lfw_pairs: str | None = None      # an LFW pairs.txt: the test protocol
    lfw_root: str | None = None       # the folder its images are in (default: root)
    verification: list[str] = attrs.field(factory=list)  # insightface .bin packs (lfw.bin, cfp_fp.bin, ...)
    # a CSV of "path,x1,y1,...,x5,y5" (path relative to root): images are aligned to the ArcFace template
    landmarks: str | None = None
    align_size: int = attrs.field(default=112, validator=faceauth.schema.positive)
    # false: list every identity folder on each build (for file systems whose folder times do not
    # change when a file is added, such as some object-store mounts)
    index_cache: bool = True


def build_identity_folder(options: IdentityFolderOptions, detector: Any = None) -> Splits:
    return load_identity_folder(
        options.root, val_identities=options.val_identities, pairs_per_identity=options.pairs_per_identity,
        min_images=options.min_images, seed=options.seed, lfw_pairs=options.lfw_pairs, lfw_root=options.lfw_root,
        verification=options.verification, landmarks=options.landmarks, align_size=options.align_size,
        use_cache=options.index_cache, detector=detector)
