"""The `ijb` dataset: the IJB-B and IJB-C 1:1 template-verification protocols, as distributed.

Layout (the release of the protocols with loose crops; ``p`` is ``ijbb`` or ``ijbc``)::

    root/loose_crop/<image>.jpg                  one face per image, loosely cropped
    root/meta/p_name_5pts_score.txt              image x1 y1 x2 y2 ... x5 y5 detector_score
    root/meta/p_face_tid_mid.txt                 image template_id media_id
    root/meta/p_template_pair_label.txt          template_id_1 template_id_2 label   (1: same person)

Fields are separated by spaces, one row per line, no header. The five landmarks are left eye,
right eye, nose, left and right mouth corner in the loose crop's pixels; each face is warped onto
the 112x112 ArcFace template when read (`faceauth.faces.align`). Faces are joined to their landmark row
by image name, and only the faces of templates that some pair names are kept.

The protocol is a `faceauth.data.TemplateVerification` returned as the test split, named after the
protocol (``ijbc``), so an embedding run reports it as ``test_ijbc`` when it is the recipe's
``test_data``, and ``faceauth-eval --ijb ROOT`` measures a checkpoint or an exported model on it.
How faces are pooled into templates (``detector_score``, ``norm_score``) is carried in the record.

Reading checks everything before any face is embedded: a malformed line (named by file and line),
a landmark row whose image is missing, a face without a landmark row, a pair naming a template that
has no faces, and a template whose faces all have detector score 0 (nothing to pool) are
DataErrors. The pair list (15.7M lines for IJB-C) is parsed by numpy's C reader.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

import faceauth
from faceauth.data import Splits, TemplateVerification, dataset_root, read_image
from faceauth.errors import DataError

__all__ = ["PROTOCOLS", "IJBOptions", "LooseCrops", "meta_files", "load_ijb", "build_ijb"]

PROTOCOLS = ("ijbb", "ijbc")
LAYOUT = "root/loose_crop/<image>.jpg and root/meta/<ijbb|ijbc>_{name_5pts_score,face_tid_mid,template_pair_label}.txt"
_LANDMARK_FORM = "image x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 detector_score"
_FACE_FORM = "image template_id media_id"
_PAIR_FORM = "template_id_1 template_id_2 label"


class LooseCrops:
    """The faces of a protocol: loose crops read and aligned on access (``{"image", "path"}``)."""

    def __init__(self, folder: str | Path, names: np.ndarray, landmarks: np.ndarray, size: int = 112):
        self.folder = os.fspath(folder)
        self.names = names            # (N,) 'S': image names below the folder, os.fsencode'd
        self.landmarks = landmarks    # (N, 5, 2) float32
        self.size = size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from faceauth.faces.align import align_five_point

        path = os.path.join(self.folder, os.fsdecode(self.names[index]))
        return {"image": align_five_point(read_image(path), self.landmarks[index], self.size), "path": path}


def meta_files(root: str | Path, protocol: str | None, key: str = "data.root") -> tuple[str, dict[str, Path]]:
    """The protocol's name and its three meta files; `protocol` None picks the one root/meta holds."""
    meta = dataset_root(root, key, LAYOUT) / "meta"
    found = [p for p in PROTOCOLS if (meta / f"{p}_face_tid_mid.txt").is_file()]
    if protocol is None:
        if len(found) != 1:
            what = "both" if found else "neither"
            raise DataError(f"{key}: {meta} holds {what} of ijbb_face_tid_mid.txt and ijbc_face_tid_mid.txt; "
                            f"{'name one with data.protocol' if found else 'expected the IJB-B or IJB-C meta files'}")
        protocol = found[0]
    kinds = ("name_5pts_score", "face_tid_mid", "template_pair_label")
    files = {kind: meta / f"{protocol}_{kind}.txt" for kind in kinds}
    for path in files.values():
        if not path.is_file():
            raise DataError(f"{key}: {path} not found (an IJB release holds loose_crop/ and meta/{protocol}_*.txt)")
    return protocol, files


def _rows(path: Path, fields: int, form: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line; another number of fields is a DataError."""
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                tokens = line.split()
                if not tokens:
                    continue
                if len(tokens) != fields:
                    raise DataError(f"{path}:{number}: expected '{form}' ({fields} fields), got {line.strip()[:160]!r}")
                yield number, tokens
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def _read_landmarks(path: Path) -> tuple[dict[str, int], np.ndarray, np.ndarray, list[int]]:
    """Row of each image, (N, 5, 2) landmarks, (N,) detector scores and the line of each row."""
    row_of: dict[str, int] = {}
    values: list[list[float]] = []
    lines: list[int] = []
    for number, tokens in _rows(path, 12, _LANDMARK_FORM):
        try:
            numbers = [float(t) for t in tokens[1:]]
        except ValueError:
            numbers = [float("nan")]
        if not np.isfinite(numbers).all() or numbers[-1] < 0:
            raise DataError(f"{path}:{number}: expected '{_LANDMARK_FORM}' with finite coordinates and a score "
                            f">= 0, got {' '.join(tokens)[:160]!r}")
        if tokens[0] in row_of:
            raise DataError(f"{path}:{number}: image {tokens[0]} is listed twice (first on line "
                            f"{lines[row_of[tokens[0]]]})")
        row_of[tokens[0]] = len(values)
        values.append(numbers)
        lines.append(number)
    table = np.asarray(values, dtype=np.float32).reshape(-1, 11)
    return row_of, table[:, :10].reshape(-1, 5, 2), table[:, 10], lines


def _read_faces(path: Path) -> tuple[list[str], np.ndarray, list[int]]:
    """Image names, an (N, 2) int64 array of (template id, media id) and the line of each row."""
    names: list[str] = []
    ids: list[tuple[int, int]] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    for number, (name, template, media) in _rows(path, 3, _FACE_FORM):
        try:
            ids.append((int(template), int(media)))
        except ValueError:
            raise DataError(f"{path}:{number}: expected '{_FACE_FORM}' with integer ids, "
                            f"got {f'{name} {template} {media}'[:160]!r}") from None
        if name in seen:
            raise DataError(f"{path}:{number}: image {name} is listed twice (first on line {seen[name]})")
        seen[name] = number
        names.append(name)
        lines.append(number)
    return names, np.asarray(ids, dtype=np.int64).reshape(-1, 2), lines


def _line_of_row(path: Path, row: int) -> int:
    """The line number of the `row`-th (0-based) non-blank line, for messages about numpy-parsed files."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                if row == 0:
                    return number
                row -= 1
    return number


def _read_pairs(path: Path) -> np.ndarray:
    """(P, 3) int64 rows of (template 1, template 2, label), parsed in C; a bad line is found and named."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file warns; it is reported below
            table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except ValueError as exc:
        for number, tokens in _rows(path, 3, _PAIR_FORM):  # the slow path only runs to name the culprit
            if not all(t.lstrip("+-").isdigit() for t in tokens):
                raise DataError(f"{path}:{number}: expected '{_PAIR_FORM}' with integer fields, "
                                f"got {' '.join(tokens)[:160]!r}") from None
        raise DataError(f"{path}: not a template pair list ({exc})") from None
    if table.size == 0:
        raise DataError(f"{path}: no pairs listed (expected '{_PAIR_FORM}' lines)")
    if table.shape[1] != 3:
        raise DataError(f"{path}:{_line_of_row(path, 0)}: expected '{_PAIR_FORM}' (3 fields), got {table.shape[1]}")
    bad = np.flatnonzero((table[:, 2] != 0) & (table[:, 2] != 1))
    if len(bad):
        raise DataError(f"{path}:{_line_of_row(path, int(bad[0]))}: label {int(table[bad[0], 2])} is not 0 or 1 "
                        f"(expected '{_PAIR_FORM}')")
    return table


def _images_on_disk(folder: Path, key: str) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError as exc:
        raise DataError(f"{key}: cannot list {folder} ({exc.strerror}); an IJB release holds the images in "
                        f"loose_crop/") from None


def load_ijb(root: str | Path, protocol: str | None = None, *, detector_score: bool = True, norm_score: bool = True,
             align_size: int = 112, key: str = "data.root") -> Splits:
    root = dataset_root(root, key, LAYOUT)
    protocol, files = meta_files(root, protocol, key)
    pairs = _read_pairs(files["template_pair_label"])
    names, ids, face_lines = _read_faces(files["face_tid_mid"])
    row_of, points, scores, landmark_lines = _read_landmarks(files["name_5pts_score"])

    folder = root / "loose_crop"
    on_disk = _images_on_disk(folder, key)
    for name, row in row_of.items():
        if name not in on_disk and not (folder / name).is_file():
            raise DataError(f"{files['name_5pts_score']}:{landmark_lines[row]}: image {folder / name} does not exist")

    template_ids = np.unique(ids[:, 0])
    used = np.unique(pairs[:, :2])
    unknown = np.flatnonzero(~np.isin(pairs[:, :2], template_ids).all(axis=1))
    if len(unknown):
        first = int(unknown[0])
        missing = [t for t in pairs[first, :2].tolist() if t not in set(template_ids.tolist())]
        raise DataError(f"{files['template_pair_label']}:{_line_of_row(files['template_pair_label'], first)}: "
                        f"template {missing[0]} has no faces in {files['face_tid_mid'].name}")
    template_ids = used  # templates no pair names are not embedded
    keep = np.flatnonzero(np.isin(ids[:, 0], template_ids))
    rows = np.empty(len(keep), dtype=np.int64)
    for position, face in enumerate(keep.tolist()):
        row = row_of.get(names[face])
        if row is None:
            raise DataError(f"{files['face_tid_mid']}:{face_lines[face]}: image {names[face]} has no row in "
                            f"{files['name_5pts_score'].name} (expected '{_LANDMARK_FORM}')")
        rows[position] = row
    face_template = np.searchsorted(template_ids, ids[keep, 0])
    face_score = scores[rows]
    if detector_score:
        weight = np.bincount(face_template, weights=face_score, minlength=len(template_ids))
        empty = np.flatnonzero(weight <= 0)
        if len(empty):
            raise DataError(f"{files['face_tid_mid']}: template {int(template_ids[empty[0]])} has no face with a "
                            f"detector score above 0, so it has no feature (data.detector_score: false weighs "
                            f"faces equally)")

    images = LooseCrops(folder, np.array([os.fsencode(names[f]) for f in keep.tolist()], dtype=np.bytes_),
                        points[rows], align_size)
    test = TemplateVerification(
        name=protocol, images=images, face_template=face_template, face_media=ids[keep, 1],
        face_score=face_score, template_ids=template_ids,
        pairs=np.searchsorted(template_ids, pairs[:, :2]), is_same=pairs[:, 2].astype(bool),
        detector_score=detector_score, norm_score=norm_score)
    info = {"task": "template_verification", "protocol": protocol, "root": str(root), "faces": len(keep),
            "templates": len(template_ids), "media": len(np.unique(ids[keep], axis=0)), "pairs": len(pairs),
            "genuine_pairs": int(test.is_same.sum())}
    return Splits(train=None, val=None, test=test, classes=(), info=info)


@attrs.frozen
class IJBOptions:
    root: str = faceauth.schema.required(f"the folder laid out as {LAYOUT}")
    protocol: Literal["ijbb", "ijbc"] | None = None  # None: the one whose meta files root/meta holds
    detector_score: bool = True   # weigh each face by its detector score before pooling (the field's default)
    norm_score: bool = True       # keep each face embedding's norm as a quality weight (the field's default)
    align_size: int = attrs.field(default=112, validator=faceauth.schema.positive)


def build_ijb(options: IJBOptions) -> Splits:
    return load_ijb(options.root, options.protocol, detector_score=options.detector_score,
                    norm_score=options.norm_score, align_size=options.align_size)

