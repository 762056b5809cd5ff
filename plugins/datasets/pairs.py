"""Face-verification protocols: LFW ``pairs.txt``, insightface ``.bin`` packs and generated pairs.

Every reader returns a `faceauth.data.Verification`: a dataset of images (decoded when read), an
(N, 2) array of indices into it and an (N,) same-person flag per pair, in the order the source
lists them (LFW's ten folds stay contiguous).

``pairs.txt`` (LFW, also CALFW/CPLFW style lists)::

    10 300                      optional header: folds, pairs of each kind per fold
    Abel_Pacheco 1 4            genuine: one name, two image numbers
    Abdel_Madi_Shabneh 1 Dean_Barker 1      impostor: name, number, name, number

The image of ``name n`` is ``root/name/name_{n:04d}.jpg``. Only existence is checked when the
list is read; images are decoded when the verification set is evaluated.

insightface ``.bin`` packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``) are a pickle of
``(bins, issame_list)``: 2 x N encoded images (consecutive per pair) and N booleans. They are
read with an unpickler that builds no class or function at all (``find_class`` refuses
everything), so a pack cannot run code; Python 2 era packs (str payloads) are read as bytes.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceauth.data import Verification, dataset_root, read_image
from faceauth.errors import DataError, quote
from faceauth.io import images
from faceauth.io.paths import atomic_write, inside

__all__ = ["ImageFiles", "EncodedImages", "read_lfw_pairs", "read_bin", "write_bin", "generate_pairs",
           "decode_image"]


# --- image datasets -----------------------------------------------------------------------------


class ImageFiles:
    """Images by file path, decoded on access (``{"image", "path"}``)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        return {"image": read_image(path), "path": path}


def decode_image(data: bytes, where: str):
    """Decode encoded image bytes to a PIL RGB image; failure is a DataError naming `where`."""
    return images.decode_image(io.BytesIO(data), where)


class EncodedImages:
    """Images held as encoded bytes (a ``.bin`` pack), decoded on access (``{"image"}``)."""

    def __init__(self, blobs: Sequence[bytes], source: str):
        self.blobs = blobs
        self.source = source

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": decode_image(self.blobs[index], f"{self.source}: image {index}")}


# --- LFW pairs.txt ------------------------------------------------------------------------------


_PAIR_FORMS = "expected 'name n1 n2' (same person) or 'name1 n1 name2 n2' (different people)"


def _image_number(token: str, where: str, line: str) -> int:
    try:
        number = int(token)
    except ValueError:
        number = -1
    if number < 0:
        raise DataError(f"{where}: image number {token!r} is not a non-negative integer ({_PAIR_FORMS}, got {line!r})")
    return number


def read_lfw_pairs(pairs_file: str | Path, root: str | Path, name: str | None = None,
                   key: str = "data.lfw_root") -> Verification:
    """Read an LFW-style ``pairs.txt`` whose images live under ``root/<name>/<name>_<n:04d>.jpg``.

    A header line (``folds pairs_per_fold`` or a single count) is optional; when present, the number
    of pairs must match it. A malformed line or a missing image raises DataError with the line
    number and, for images, the path.
    """
    pairs_file = Path(pairs_file).expanduser()
    try:
        text = pairs_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{pairs_file}: cannot read pairs list ({exc})") from None
    root = dataset_root(root, key, f"the folder of {pairs_file.name}'s images, root/<name>/<name>_0001.jpg")

    index: dict[str, int] = {}
    paths: list[str] = []
    known_dirs: dict[str, set[str] | None] = {}

    def image(person: str, number: int, where: str) -> int:
        filename = f"{person}_{number:04d}.jpg"
        if "/" in person or "\\" in person:
            raise DataError(f"{where}: person {quote(person, 80)} is not a folder name under {root}")
        path = inside(root, f"{person}/{filename}", where)
        key = str(path)
        if key in index:
            return index[key]
        if person not in known_dirs:  # one listing per person instead of one stat per image
            try:
                known_dirs[person] = set(os.listdir(root / person))
            except OSError:
                known_dirs[person] = None
        files = known_dirs[person]
        if files is None or filename not in files:
            raise DataError(f"{where}: image {path} does not exist")
        index[key] = len(paths)
        paths.append(key)
        return index[key]

    pairs: list[tuple[int, int]] = []
    same: list[bool] = []
    expected: int | None = None
    header_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split()
        where = f"{pairs_file}:{number}"
        if not pairs and expected is None and all(f.isdigit() for f in fields) and len(fields) in (1, 2):
            # header: "folds pairs_per_fold" (LFW View 2) or a single count (View 1)
            counts = [int(f) for f in fields]
            expected = 2 * counts[0] * (counts[1] if len(counts) == 2 else 1)
            header_line = number
            continue
        if len(fields) == 3:
            person, a, b = fields
            pairs.append((image(person, _image_number(a, where, line), where),
                          image(person, _image_number(b, where, line), where)))
            same.append(True)
        elif len(fields) == 4:
            first, a, second, b = fields
            pairs.append((image(first, _image_number(a, where, line), where),
                          image(second, _image_number(b, where, line), where)))
            same.append(False)
        else:
            raise DataError(f"{where}: {_PAIR_FORMS}, got {line!r}")
    if not pairs:
        raise DataError(f"{pairs_file}: no pairs listed ({_PAIR_FORMS}, one per line)")
    if expected is not None and expected != len(pairs):
        raise DataError(f"{pairs_file}: the header on line {header_line} announces {expected} pairs, "
                        f"but the file lists {len(pairs)} (truncated or concatenated file?)")
    return Verification(name=name or pairs_file.stem, images=ImageFiles(paths),
                        pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2), is_same=np.asarray(same, dtype=bool))


# --- insightface .bin packs ---------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _NoClassesUnpickler(pickle.Unpickler):
    """Builds only what pickle opcodes build by themselves (bytes, str, lists, tuples, bools, numbers)."""

    def find_class(self, module: str, name: str) -> Any:
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r}")


def read_bin(path: str | Path, name: str | None = None) -> Verification:
    """Read an insightface verification pack without running any code from it."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            loaded = _NoClassesUnpickler(f, encoding="bytes").load()
    except _Refused as refused:
        hint = ("; Python 3 stores bytes this way at pickle protocol 0-2: re-save the pack with protocol 4"
                if refused.what == "_codecs.encode" else "")
        raise DataError(f"{path}: refused type {refused.what} (a verification .bin holds only a list of image "
                        f"bytes and a list of booleans; it was not loaded{hint})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read verification pack ({exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a verification pack ({type(exc).__name__}: {exc})") from None

    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise DataError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(loaded).__name__}")
    bins, issame = loaded
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple)):
        raise DataError(f"{path}: expected (list of image bytes, list of booleans), got "
                        f"({type(bins).__name__}, {type(issame).__name__})")
    for i, blob in enumerate(bins):
        if not isinstance(blob, (bytes, bytearray)):
            raise DataError(f"{path}: image {i} is a {type(blob).__name__}, expected encoded image bytes")
    for i, flag in enumerate(issame):
        if not isinstance(flag, (bool, int)) or flag not in (0, 1):
            raise DataError(f"{path}: issame_list[{i}] is {flag!r}, expected a boolean")
    if len(bins) != 2 * len(issame):
        raise DataError(f"{path}: {len(bins)} images for {len(issame)} pairs; expected two images per pair")
    if not issame:
        raise DataError(f"{path}: the pack holds no pairs")
    pairs = np.arange(len(bins), dtype=np.int64).reshape(-1, 2)
    return Verification(name=name or path.stem, images=EncodedImages(bins, str(path)), pairs=pairs,
                        is_same=np.asarray([bool(x) for x in issame], dtype=bool))


def write_bin(path: str | Path, jpeg_bytes_list: Iterable[bytes], issame: Iterable[bool]) -> Path:
    """Write a verification pack in insightface's format (2 images per pair, consecutive)."""
    blobs = [bytes(b) for b in jpeg_bytes_list]
    flags = [bool(x) for x in issame]
    if len(blobs) != 2 * len(flags):
        raise ValueError(f"{len(blobs)} images for {len(flags)} pairs; expected two per pair")
    path = Path(path)
    with atomic_write(path) as handle:
        pickle.dump((blobs, flags), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


# --- generated pairs ----------------------------------------------------------------------------


def _distinct(rng: np.random.Generator, draw, needed: int, possible: int, enumerate_all, bound: int) -> np.ndarray:
    """`needed` distinct unordered pairs of ints below `bound`: enumerate a small space, else rejection-sample."""
    if needed == 0:
        return np.zeros((0, 2), np.int64)
    if possible <= max(4 * needed, 4096):
        every = enumerate_all()
        return every[rng.choice(len(every), size=needed, replace=False)]
    chosen = np.zeros((0, 2), np.int64)
    while len(chosen) < needed:  # at most a quarter of the space is wanted, so most draws are new
        merged = np.concatenate([chosen, np.sort(draw(2 * (needed - len(chosen)) + 16), axis=1)])
        _, first = np.unique(merged[:, 0] * bound + merged[:, 1], return_index=True)
        chosen = merged[np.sort(first)][:needed]
    return chosen


def generate_pairs(labels: Sequence[int] | np.ndarray, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced verification pairs from identity labels: ``count // 2`` genuine and as many impostor pairs.

    Returns ``(pairs, is_same)``: an (N, 2) int64 array of indices into `labels` and an (N,) bool
    array, genuine and impostor alternating so that any contiguous fold is balanced. Genuine pairs
    are spread evenly over the identities with two or more images; impostor pairs draw two distinct
    identities, then one image of each. No pair repeats. Deterministic for a given seed. Raises
    DataError when the labels cannot give that many distinct pairs.
    """
    labels = np.asarray(labels).ravel()
    half = int(count) // 2
    if half < 1:
        raise DataError(f"verification pairs: count must be at least 2, got {count}")
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    ids, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    if len(ids) < 2:
        raise DataError(f"verification pairs: need at least 2 identities, got {len(ids)}")
    groups = [order[s:s + k] for s, k in zip(starts, sizes)]

    # genuine: an even share per eligible identity, capped by what each can give, leftovers to the others
    eligible = [g for g in rng.permutation(len(groups)).tolist() if sizes[g] >= 2]
    capacity = {g: int(sizes[g]) * (int(sizes[g]) - 1) // 2 for g in eligible}
    total_possible = sum(capacity.values())
    if total_possible < half:
        raise DataError(f"verification pairs: {half} genuine pairs wanted, but the identities with two or more "
                        f"images ({len(eligible)}) allow only {total_possible} distinct ones")
    quota = dict.fromkeys(eligible, 0)
    remaining, open_ids = half, list(eligible)
    while remaining:
        share, extra = divmod(remaining, len(open_ids))
        for position, g in enumerate(open_ids):
            quota[g] += min(share + (position < extra), capacity[g] - quota[g])
        remaining = half - sum(quota.values())
        open_ids = [g for g in open_ids if quota[g] < capacity[g]]
    genuine = []
    for g in eligible:
        if not quota[g]:
            continue
        members, k = groups[g], int(sizes[g])

        def draw(m, k=k):
            i = rng.integers(0, k, m)
            j = rng.integers(0, k - 1, m)
            return np.stack([i, j + (j >= i)], axis=1)

        local = _distinct(rng, draw, quota[g], capacity[g], lambda k=k: np.stack(np.triu_indices(k, 1), axis=1), k)
        genuine.append(members[local])
    genuine = np.concatenate(genuine)

    # impostor: two different identities, one image each
    n = len(labels)
    impostor_possible = (n * n - int((sizes.astype(np.int64) ** 2).sum())) // 2
    if impostor_possible < half:
        raise DataError(f"verification pairs: {half} impostor pairs wanted, only {impostor_possible} possible")

    def draw_impostor(m):
        a = rng.integers(0, len(groups), m)
        b = rng.integers(0, len(groups) - 1, m)
        b = b + (b >= a)
        pick = lambda which: starts[which] + (rng.random(m) * sizes[which]).astype(np.int64)  # noqa: E731
        return np.stack([pick(a), pick(b)], axis=1)  # positions in `order`

    def every_impostor():  # each image with every image of a later identity (positions sorted by identity)
        blocks = []
        for s, k in zip(starts.tolist(), sizes.tolist()):
            later = np.arange(s + k, n)
            blocks.append(np.stack([np.repeat(np.arange(s, s + k), len(later)), np.tile(later, k)], axis=1))
        return np.concatenate(blocks)

    impostor = order[_distinct(rng, draw_impostor, half, impostor_possible, every_impostor, n)]

    genuine = genuine[rng.permutation(half)]
    impostor = impostor[rng.permutation(half)]
    # random order within each pair, so neither side is always the lower index
    for block in (genuine, impostor):
        flip = rng.random(half) < 0.5
        block[flip] = block[flip][:, ::-1]
    pairs = np.empty((2 * half, 2), np.int64)
    pairs[0::2], pairs[1::2] = genuine, impostor
    is_same = np.zeros(2 * half, bool)
    is_same[0::2] = True
    return pairs, is_same
