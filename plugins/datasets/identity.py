"""The `identity_folder` layout: face-recognition training data, one folder per person.

Layout (CASIA-WebFace, VGGFace2, LFW and most extracted face sets)::

    root/<identity>/*.jpg            (also .png, .bmp, ... and sub-folders of an identity)

Identities are the folder names, sorted; hidden folders (``.name``) are skipped. Building the
index lists files only (one directory scan per identity, no image is opened), so it scales to
millions of files; an unreadable image stops the run with its path when it is read. The index
is held in numpy arrays rather than per-file Python objects, which keeps memory small and lets
DataLoader workers share it without copy-on-access growth.

Validation is identity-disjoint: a seeded share of the identities (``val_identities``) is held
out of training and becomes a `Verification` of generated pairs (balanced genuine/impostor, see
`faceauth.plugins.datasets.pairs.generate_pairs`). Training labels are the positions of the
remaining identities in sorted order, and `Splits.classes` names them. A test protocol comes from
an LFW ``pairs.txt`` (``lfw_pairs``) or insightface ``.bin`` packs (``verification``).

Unaligned photos can be aligned when read: ``landmarks`` names a CSV of ``path,x1,y1,...,x5,y5``
rows (path relative to root; eyes, nose, mouth corners), and each image is warped onto the
ArcFace template at ``align_size`` pixels (`faceauth.align`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import faceauth
from faceauth.components import Dataset
from faceauth.data import IMAGE_SUFFIXES, Splits, Verification, read_image
from faceauth.errors import DataError
from faceauth.plugins.datasets.pairs import generate_pairs, read_bin, read_lfw_pairs

__all__ = ["IdentityIndex", "IdentityImages", "index_identity_folder", "hold_out_identities", "read_landmarks",
           "load_identity_folder", "external_verification", "IdentityFolderOptions", "faceauth_datasets"]

LAYOUT = "root/<identity>/*.jpg"


@attrs.frozen(eq=False)
class IdentityIndex:
    """The files of an identity-folder tree: ``root/names[owner[i]]/files[i]`` is image i."""

    root: Path
    names: tuple[str, ...]
    owner: np.ndarray   # (N,) int32: index into `names`
    files: np.ndarray   # (N,) bytes ('S'): path below the identity folder, os.fsencode'd

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
            from faceauth.align import align_five_point

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


def _images_below(folder: str, prefix: str = "") -> list[str]:
    """Image files below `folder` (relative, sorted, sub-folders included), from directory listings only."""
    found: list[str] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{folder}: cannot list identity folder ({exc.strerror})") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend(_images_below(entry.path, prefix + entry.name + os.sep))
        elif entry.name.lower().endswith(IMAGE_SUFFIXES):
            found.append(prefix + entry.name)
    return found


def index_identity_folder(root: str | Path, min_images: int = 1, key: str = "data.root") -> IdentityIndex:
    """List ``root/<identity>/*`` images; identities with fewer than `min_images` are left out."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{key}: {root} is not a directory (expected {LAYOUT})")
    try:
        top = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"{key}: cannot list {root} ({exc.strerror})") from None
    names: list[str] = []
    owner: list[np.ndarray] = []
    files: list[str] = []
    loose = 0
    for entry in top:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            loose += entry.name.lower().endswith(IMAGE_SUFFIXES)
            continue
        found = _images_below(entry.path)
        if len(found) < max(min_images, 1):
            continue
        owner.append(np.full(len(found), len(names), dtype=np.int32))
        names.append(entry.name)
        files.extend(found)
    if not names:
        hint = f"; it holds {loose} images directly, which have no identity folder" if loose else ""
        need = f" with at least {min_images} images each" if min_images > 1 else ""
        raise DataError(f"{key}: {root} has no identity folders{need} (expected {LAYOUT}){hint}")
    return IdentityIndex(root=root, names=tuple(names), owner=np.concatenate(owner),
                         files=np.array([os.fsencode(f) for f in files]))


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


def external_verification(lfw_pairs: str | None, lfw_root: str | None, packs: list[str] | tuple[str, ...]
                          ) -> dict[str, Verification]:
    """The named test protocols of a recipe: an LFW pairs list and/or insightface .bin packs, in that order."""
    sets: dict[str, Verification] = {}
    if lfw_pairs is not None:
        if lfw_root is None:
            raise DataError("data.lfw_pairs: needs the folder of the listed images (data.lfw_root)")
        found = read_lfw_pairs(lfw_pairs, lfw_root)
        sets[found.name] = found
    for pack in packs:
        found = read_bin(pack)
        name = found.name if found.name not in sets else f"{found.name}-{len(sets)}"
        sets[name] = attrs.evolve(found, name=name)
    return sets


def load_identity_folder(root: str | Path, *, val_identities: float = 0.1, pairs_per_identity: int = 20,
                         min_images: int = 1, seed: int = 0, lfw_pairs: str | None = None,
                         lfw_root: str | None = None, verification: list[str] | tuple[str, ...] = (),
                         landmarks: str | None = None, align_size: int = 112, key: str = "data.root") -> Splits:
    index = index_identity_folder(root, min_images, key)
    points = read_landmarks(landmarks, index) if landmarks is not None else None
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
    train_pos = np.flatnonzero(~is_held[index.owner])
    train = IdentityImages(index, train_pos, relabel[index.owner[train_pos]], points, align_size)

    val = None
    if len(held):
        val_pos = np.flatnonzero(is_held[index.owner])
        images = IdentityImages(index, val_pos, relabel[index.owner[val_pos]], points, align_size)
        try:
            pairs, is_same = generate_pairs(images.labels, pairs_per_identity * len(held), seed)
        except DataError as exc:
            raise DataError(f"{where}: held-out identities: {str(exc).split(': ', 1)[-1]} "
                            "(lower pairs_per_identity or raise val_identities)") from None
        val = Verification(name="val", images=images, pairs=pairs, is_same=is_same)

    external = external_verification(lfw_pairs, lfw_root if lfw_root is not None else os.fspath(index.root),
                                     verification)
    test = next(iter(external.values()), None)
    classes = tuple(index.names[i] for i in train_ids)
    info = {"task": "identity", "num_identities": len(classes), "num_images": len(train),
            "root": str(index.root), "val_identities": len(held), "val_pairs": 0 if val is None else len(val.pairs),
            "verification": external}
    return Splits(train=train, val=val, test=test, classes=classes, info=info)


@attrs.frozen
class IdentityFolderOptions:
    root: str
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


def build_identity_folder(options: IdentityFolderOptions) -> Splits:
    return load_identity_folder(
        options.root, val_identities=options.val_identities, pairs_per_identity=options.pairs_per_identity,
        min_images=options.min_images, seed=options.seed, lfw_pairs=options.lfw_pairs, lfw_root=options.lfw_root,
        verification=options.verification, landmarks=options.landmarks, align_size=options.align_size)


def datasets() -> list[Dataset]:
    return [
        Dataset(name="identity_folder", build=build_identity_folder, options=IdentityFolderOptions,
                description="root/<identity>/*.jpg (CASIA-WebFace, VGGFace2, LFW); held-out identities validate"),
    ]
