"""CelebA-Spoof (Zhang et al., ECCV 2020): 625k still images of 10,177 subjects, live and ten attack types.

Layout (the official release, intra-dataset protocol)::

    root/Data/{train,test}/<subject>/{live,spoof}/<name>.{jpg,png}
    root/Data/{train,test}/<subject>/{live,spoof}/<name>_BB.txt     "x y w h score" in a 224x224 frame
    root/metas/intra_test/{train,test}_label.json                  {"Data/train/<subject>/...": [44 ints]}

Each label list holds 40 CelebA attributes (0-39), then the spoof type (40: 0 live, 1 photo, 2 poster,
3 A4, 4 face mask, 5 upper-body mask, 6 region mask, 7 PC, 8 pad, 9 phone, 10 3D mask), the
illumination (41), the environment (42) and live/spoof (43: 0 live, 1 spoof). Labels come from index
43; attack types (for per-type APCER) are the readable names of index 40; samples also carry
``spoof_type``, ``illumination`` and ``environment``.

Faces: the recipe's detector crops each image; ``detector: {name: boxes}`` (or no detector) uses the
shipped boxes, scaled from the 224x224 frame to the image (x, w by width/224; y, h by height/224)
and clamped to it. Empty box files and degenerate boxes mean "no face" for that image: counted,
logged and skipped like a frame where a detector finds nothing.

Validation is a seeded, subject-disjoint share of the training subjects (``val_subjects``). ``limit``
keeps at most N images per split (a seeded sample, the same on every run), for prototyping.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import faceauth
from faceauth.data import LIVE, SPOOF, Splits, check_classes, dataset_root
from faceauth.errors import DataError, quote
from faceauth.faces import Box, CropCache
from faceauth.io.images import image_size
from faceauth.io.paths import inside
from faceauth.plugins.datasets.frames import (
    CropOptions,
    CroppedFaces,
    FrameSource,
    crop_all,
    crop_geometry_of,
    detector_settings,
    hold_out_subjects,
    open_fraction,
    report_missing,
    warn_shared_subjects,
)

__all__ = ["ATTACK_TYPES", "CelebASpoofOptions", "LabelEntry", "read_labels", "read_box",
           "load_celeba_spoof"]

log = logging.getLogger(__name__)

NUM_LABELS = 44
SPOOF_TYPE, ILLUMINATION, ENVIRONMENT, LIVENESS = 40, 41, 42, 43
# index 40 of a label list -> the attack type reported per type (0 is live)
ATTACK_TYPES = {1: "photo", 2: "poster", 3: "a4", 4: "face_mask", 5: "upper_body_mask", 6: "region_mask",
                7: "pc", 8: "pad", 9: "phone", 10: "3d_mask"}
BOX_FRAME = 224.0  # the shipped boxes are in a 224x224 frame whatever the image size
LAYOUT = "root/Data/{train,test}/<subject>/{live,spoof}/<name>.jpg and root/metas/intra_test/{train,test}_label.json"


def _positive_or_none(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name}: expected a positive number or null (no limit), got {value!r}")


@attrs.frozen(kw_only=True)
class CelebASpoofOptions(CropOptions):
    root: str = faceauth.schema.required("the folder holding Data/ and metas/")
    val_subjects: float = attrs.field(default=0.1, validator=open_fraction)  # share of training subjects
    seed: int = 0                  # draws the validation subjects and the `limit` sample
    limit: int | None = attrs.field(default=None, validator=_positive_or_none)  # at most N images per split


@attrs.frozen
class LabelEntry:
    """One line of a label file: the image path relative to root and the labels faceauth uses."""

    key: str
    subject: str
    label: int
    spoof_type: int
    illumination: int
    environment: int

    @property
    def attack_type(self) -> str:
        return "" if self.label == LIVE else ATTACK_TYPES.get(self.spoof_type, "unknown")


# --- label files -------------------------------------------------------------------------------------------


def _entry(path: Path, key: Any, value: Any) -> LabelEntry:
    where = f"{path}: entry {quote(key, 120)}"
    if not isinstance(value, list) or len(value) != NUM_LABELS or set(map(type, value)) != {int}:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise DataError(f"{where}: expected a list of {NUM_LABELS} integers, got {shown}")
    if not isinstance(key, str):
        raise DataError(f"{where}: expected a path like Data/train/<subject>/{{live,spoof}}/<name>.jpg")
    inside("data.root", key, where)
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != "Data" or parts[3] not in ("live", "spoof") or not parts[2]:
        raise DataError(f"{where}: expected a path like Data/train/<subject>/{{live,spoof}}/<name>.jpg")
    if value[LIVENESS] not in (LIVE, SPOOF):
        raise DataError(f"{where}: label[{LIVENESS}] (live 0 / spoof 1) must be 0 or 1, got {value[LIVENESS]}")
    if not 0 <= value[SPOOF_TYPE] <= max(ATTACK_TYPES):
        raise DataError(f"{where}: label[{SPOOF_TYPE}] (spoof type) must be 0 to {max(ATTACK_TYPES)}, "
                        f"got {value[SPOOF_TYPE]}")
    return LabelEntry(key, parts[2], value[LIVENESS], value[SPOOF_TYPE], value[ILLUMINATION], value[ENVIRONMENT])


def read_labels(path: Path) -> list[LabelEntry]:
    """The entries of a CelebA-Spoof label file, sorted by path; a DataError names the line or key at fault."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: label file not found (expected {LAYOUT})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read label file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object mapping image paths to lists of {NUM_LABELS} labels, "
                        f"got a {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: the label file lists no images")
    entries = sorted((_entry(path, key, value) for key, value in data.items()), key=lambda e: e.key)
    _warn_inconsistent(path, entries)
    return entries


def _warn_inconsistent(path: Path, entries: Sequence[LabelEntry]) -> None:
    """Entries whose folder (live/spoof) or spoof type disagrees with label[43], which is what is used."""
    odd = [e.key for e in entries
           if e.key.split("/")[3] != ("live" if e.label == LIVE else "spoof") or (e.label == LIVE) != (e.spoof_type == 0)]
    if odd:
        log.warning("%s: %d entries whose folder or spoof type (label[%d]) disagrees with label[%d], which is "
                    "used (e.g. %s)", path, len(odd), SPOOF_TYPE, LIVENESS, ", ".join(odd[:3]))


# --- boxes -------------------------------------------------------------------------------------------------


def read_box(path: Path, width: int, height: int) -> tuple[Box | None, str]:
    """The face box of a ``_BB.txt`` file in pixels of a `width` x `height` image, and what was found.

    The status is "ok", "negative" (a corner left of or above the image: clamped), "outside" (past
    the right or bottom edge: clamped), "degenerate" (no area left: no face), "empty" or "missing"
    (no box: no face). A line that is not 4 or 5 numbers is a DataError naming the file and line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read box file ({exc})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        return None, "empty"
    number, line = lines[0]
    fields = line.split()
    try:
        values = [float(field) for field in fields]
    except ValueError:
        values = []
    if len(fields) not in (4, 5) or len(values) != len(fields) or not all(map(math.isfinite, values)):
        raise DataError(f"{path}: line {number}: expected 'x y w h score' (numbers in the 224x224 frame), got {line!r}")
    x, y, w, h = values[:4]
    sx, sy = width / BOX_FRAME, height / BOX_FRAME
    box = Box(x * sx, y * sy, w * sx, h * sy, values[4] if len(values) == 5 else 1.0)
    clamped = box.clamp(width, height)
    if w <= 0 or h <= 0 or clamped is None:
        return None, "degenerate"
    if box.x < 0 or box.y < 0:
        return clamped, "negative"
    if box.x + box.w > width or box.y + box.h > height:
        return clamped, "outside"
    return box, "ok"


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header (nothing is decoded); None when the file does not exist."""
    try:
        return image_size(path)
    except FileNotFoundError:
        return None


# --- the dataset -------------------------------------------------------------------------------------------


class CelebASpoofFaces(CroppedFaces):
    """`CroppedFaces` whose samples also carry CelebA-Spoof's spoof type, illumination and environment."""

    def __init__(self, faces: CroppedFaces, extras: dict[str, tuple[int, int, int]]):
        super().__init__(faces.sources, faces.cache)
        self.extras = extras

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = super().__getitem__(index)
        sample["spoof_type"], sample["illumination"], sample["environment"] = self.extras[sample["path"]]
        return sample


def _limited(entries: list[LabelEntry], limit: int | None, seed: int, split: str) -> list[LabelEntry]:
    if limit is None or len(entries) <= limit:
        return entries
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    return [entries[i] for i in np.sort(rng.choice(len(entries), size=limit, replace=False))]


def _sources(root: Path, entries: Sequence[LabelEntry], label_file: Path, boxes: Counter,
             extras: dict[str, tuple[int, int, int]]) -> list[FrameSource]:
    """The sources of the entries whose image exists, with their scaled boxes as hints (counted in `boxes`)."""
    sources, missing = [], []
    for entry in entries:
        path = root / entry.key
        size = _image_size(path)
        if size is None:
            missing.append(entry.key)
            continue
        hint, status = read_box(path.with_name(f"{path.stem}_BB.txt"), *size)
        boxes[status] += 1
        sources.append(FrameSource(str(path), None, entry.label, entry.attack_type, entry.subject, hint))
        extras[sources[-1].source_id] = (entry.spoof_type, entry.illumination, entry.environment)
    report_missing(missing, len(entries), str(label_file),
                   f" under {root} (is data.root the folder that holds Data/ and metas/?)")
    return sources


def _counts(entries: Iterable[Any]) -> dict[str, int]:
    labels = Counter(e.label for e in entries)
    return {"live": labels[LIVE], "spoof": labels[SPOOF]}


def load_celeba_spoof(root: str | Path, *, val_subjects: float = 0.1, seed: int = 0, limit: int | None = None,
                      crop: CropOptions = CropOptions(), detector: Any = None, key: str = "data.root") -> Splits:
    root = dataset_root(root, key, LAYOUT)
    if not (root / "Data").is_dir():
        raise DataError(f"{key}: {root} has no Data/ folder (expected {LAYOUT})")
    label_files = {split: root / "metas" / "intra_test" / f"{split}_label.json" for split in ("train", "test")}
    train_all, test_all = read_labels(label_files["train"]), read_labels(label_files["test"])
    warn_shared_subjects("celeba_spoof", (e.subject for e in train_all), (e.subject for e in test_all))

    classes_of: dict[str, set[int]] = {}
    for entry in train_all:
        classes_of.setdefault(entry.subject, set()).add(entry.label)
    held = hold_out_subjects(classes_of, val_subjects, seed, f"{label_files['train']}")
    chosen = {"train": [e for e in train_all if e.subject not in held],
              "val": [e for e in train_all if e.subject in held], "test": test_all}
    chosen = {split: _limited(entries, limit, seed, split) for split, entries in chosen.items()}

    cache = CropCache("celeba_spoof", detector_settings(detector), detector, crop_geometry_of(crop))
    boxes: Counter = Counter()
    extras: dict[str, tuple[int, int, int]] = {}
    sources = {split: _sources(root, entries, label_files["test" if split == "test" else "train"], boxes, extras)
               for split, entries in chosen.items()}
    _log_boxes(boxes)
    splits, no_face = {}, {}
    for split, listed in sources.items():
        check_classes(split, [s.label for s in listed], ("live", "spoof"), f"celeba_spoof {split}")
        faces, report = crop_all(listed, cache, f"celeba_spoof {split}")
        check_classes(split, faces.labels, ("live", "spoof"), f"celeba_spoof {split} (after face detection)")
        splits[split], no_face[split] = CelebASpoofFaces(faces, extras), len(report.no_face)
    counts = {split: _counts(faces.sources) for split, faces in splits.items()}
    log.info("celeba_spoof: %s; %d validation subjects held out of %d",
             "; ".join(f"{split} {sum(c.values())} (live {c['live']}, spoof {c['spoof']})" for split, c in counts.items()),
             len(held), len(classes_of))
    info = {"task": "liveness", "dataset": "celeba_spoof", "root": str(root), "counts": counts,
            "boxes": dict(boxes), "no_face": no_face, "val_subjects": sorted(held)}
    return Splits(train=splits["train"], val=splits["val"], test=splits["test"], classes=("live", "spoof"), info=info)


def _log_boxes(boxes: Counter) -> None:
    total = sum(boxes.values())
    if not total:
        return
    log.info("celeba_spoof: %d face boxes: %d inside the image, %d negative (clamped), %d past the edge (clamped), "
             "%d degenerate, %d empty files, %d missing files (degenerate, empty and missing mean no face)",
             total, boxes["ok"], boxes["negative"], boxes["outside"], boxes["degenerate"], boxes["empty"],
             boxes["missing"])


def build(options: CelebASpoofOptions, detector: Any = None) -> Splits:
    return load_celeba_spoof(options.root, val_subjects=options.val_subjects, seed=options.seed, limit=options.limit,
                             crop=CropOptions(options.crop_scale, options.crop_size, options.crop_align), detector=detector)
