"""CASIA-FASD (CASIA Face Anti-Spoofing Database): liveness from short videos, cropped to the face.

Layout (as the database is distributed)::

    root/train_release/<1..20>/{1,2,HR_1,3,4,HR_2,5,6,HR_3,7,8,HR_4}.avi
    root/test_release/<1..30>/...
    root/face-locations/<train_release|test_release>/<subject>/<stem>.face     optional

The file stem says what a video shows (the mapping bob.pad.face's ``casiafasd.py`` uses): ``1``,
``2``, ``HR_1`` live (normal, low, high quality); ``3``, ``4``, ``HR_2`` warped photo; ``5``, ``6``,
``HR_3`` cut photo; ``7``, ``8``, ``HR_4`` video replay. The 20 training and 30 test subjects are 50
different people, so subjects are named ``train:<n>`` and ``test:<n>``. Validation is a seeded,
subject-disjoint share of train_release (CASIA has no development set).

CASIA ships no face boxes: faces come from the recipe's ``detector`` (e.g. ``haar``), or from
``.face`` files (``frame x y w h`` per row, frame indices from 0, frames without a row have no face)
when ``root/face-locations/`` exists. The shared code for such video datasets (face files, frame
counts cached beside the crops, the build pass) is in this module too; `replay_attack` uses it. The
validation draw, detector settings and shared-subject warning are celeba_spoof's, as nuaa's are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

import faceauth
from faceauth import video as fa_video
from faceauth.components import Dataset
from faceauth.data import LIVE, SPOOF, Splits, check_classes
from faceauth.errors import DataError
from faceauth.faces import Box, CropCache
from faceauth.paths import cache_dir
from faceauth.plugins.datasets.frames import (CropOptions, FrameSource, crop_all, detector_settings, hold_out_subjects, open_fraction,
                                              warn_shared_subjects)

__all__ = ["CasiaFasdOptions", "build", "datasets", "VideoOptions", "VideoFile", "read_face_file", "FrameCounts",
           "build_video_splits", "video_root", "videos_under", "CLASSES", "FACE_DIR", "STEMS"]

log = logging.getLogger(__name__)

CLASSES = ("live", "spoof")
FACE_DIR = "face-locations"

STEMS = {"1": "", "2": "", "HR_1": "",
         "3": "warped_photo", "4": "warped_photo", "HR_2": "warped_photo",
         "5": "cut_photo", "6": "cut_photo", "HR_3": "cut_photo",
         "7": "video_replay", "8": "video_replay", "HR_4": "video_replay"}


@attrs.frozen(kw_only=True)
class VideoOptions(CropOptions):
    """Options every video liveness dataset shares (plus the crop options it inherits)."""

    root: str
    frames_per_video: int = attrs.field(default=10, validator=faceauth.schema.positive)
    frame_stride: int | None = attrs.field(default=None, validator=faceauth.schema.positive)  # None: spread evenly
    on_bad_video: Literal["skip", "error"] = "skip"


@attrs.frozen(kw_only=True)
class CasiaFasdOptions(VideoOptions):
    val_subjects: float = attrs.field(default=0.2, validator=open_fraction)  # share of train_release subjects
    seed: int = 0


# ---- shared by the video datasets -------------------------------------------------------------

@attrs.frozen
class VideoFile:
    """One video of a dataset, before its frames are chosen."""

    path: Path
    label: int
    attack_type: str
    subject: str
    face_file: Path | None  # where its face boxes would be (None: the dataset has none)


def read_face_file(path: Path) -> dict[int, Box]:
    """{frame: box} from rows ``frame x y w h`` (Replay-Attack's face-locations format).

    A frame without a row has no face; so has a row of zero width or height (detector failures are
    written so in some files). An empty file means no frame has a face.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read face-location file ({exc})") from None
    boxes: dict[int, Box] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = [f for f in re.split(r"[\s,;]+", line.strip()) if f]
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError
            frame, (x, y, w, h) = int(fields[0]), (float(v) for v in fields[1:])
            if frame < 0 or not all(math.isfinite(v) for v in (x, y, w, h)):
                raise ValueError
        except ValueError:
            raise DataError(f"{path}, line {number}: expected 'frame x y width height' (a frame index >= 0 and "
                            f"four numbers), got {line.strip()!r}") from None
        if w > 0 and h > 0:
            boxes[frame] = Box(x, y, w, h)
    return boxes


class FrameCounts:
    """Frames per video, counted by decoding once and remembered in the crop cache.

    Entries are keyed by path and checked against the file's size and modification time; a video
    that cannot be decoded is remembered too, so a cached build opens no video at all. A new OpenCV
    version starts afresh (its decoder may count differently).
    """

    def __init__(self, dataset: str, root: Path):
        import cv2

        key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        self.path = cache_dir("crops", f"{dataset}-frame-counts-{key}.json")
        self.opencv = cv2.__version__
        self.videos: dict[str, Any] = {}
        self.decoded = 0
        self.changed: list[str] = []  # videos whose file differs from the one counted before
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            if stored.get("opencv") == self.opencv and isinstance(stored.get("videos"), dict):
                self.videos = stored["videos"]
        except (OSError, ValueError, AttributeError):
            pass  # absent or damaged: count again

    def get(self, path: Path) -> int:
        """The frame count of `path`; a DataError naming it when it cannot be decoded."""
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns]
        entry = self.videos.get(str(path))
        if not (isinstance(entry, dict) and entry.get("signature") == signature):
            if isinstance(entry, dict):
                self.changed.append(str(path))
            self.decoded += 1
            try:
                entry = {"signature": signature, "frames": fa_video.frame_count(path)}
            except DataError as exc:
                entry = {"signature": signature, "error": str(exc)}
            self.videos[str(path)] = entry
        if "error" in entry:
            raise DataError(entry["error"])
        return int(entry["frames"])

    def save(self) -> None:
        if not self.decoded:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"opencv": self.opencv, "videos": self.videos}, handle)
        os.replace(tmp, self.path)


def _frame_sources(videos: Sequence[VideoFile], counts: FrameCounts, options: VideoOptions,
                   skipped: list[str]) -> list[FrameSource]:
    """The sampled frames of `videos`; undecodable videos are skipped (named) or stop the build."""
    sources = []
    for video in videos:
        try:
            total = counts.get(video.path)
        except DataError as exc:
            if options.on_bad_video == "error":
                raise
            log.warning("skipped: %s", exc)
            skipped.append(str(video.path))
            continue
        boxes = read_face_file(video.face_file) if video.face_file is not None and video.face_file.is_file() else {}
        for index in fa_video.sample_indices(total, options.frames_per_video, options.frame_stride):
            sources.append(FrameSource(str(video.path), index, video.label, video.attack_type, video.subject,
                                       hint=boxes.get(index)))
    return sources


def build_video_splits(name: str, root: Path, videos: dict[str, list[VideoFile]], options: VideoOptions,
                       detector: Any, info: dict[str, Any]) -> Splits:
    """Count, sample and crop the videos of each split ("train", "val", "test") into `Splits`.

    Face boxes come from the detector, with the dataset's face files as hints when there are any,
    or from the face files alone when the recipe names no detector.
    """
    face_files = [v.face_file for split in videos.values() for v in split if v.face_file is not None]
    hints = (root / FACE_DIR).is_dir()
    if detector is None and not hints:
        raise DataError(f"{name}: {root} has no {FACE_DIR}/ folder of face boxes, so faces must be detected: "
                        f"set detector.name in the recipe (e.g. detector: {{name: haar}})")
    if hints:
        missing = [f for f in face_files if not f.is_file()]
        if missing:
            log.warning("%s: %d of %d videos have no face-location file (e.g. %s)%s", name, len(missing),
                        len(face_files), missing[0], "; their frames count as faceless" if detector is None else "")
    warn_shared_subjects(name, [v.subject for split in ("train", "val") for v in videos.get(split, [])],
                         [v.subject for v in videos.get("test", [])], "; test figures are not subject-independent")
    cache = CropCache(name, {**detector_settings(detector), "hints": hints}, detector, margin=options.crop_margin,
                      size=options.crop_size)
    counts = FrameCounts(name, root)
    skipped: list[str] = []
    try:
        sources = {split: _frame_sources(vs, counts, options, skipped) for split, vs in videos.items()}
    finally:
        counts.save()
    if skipped:
        log.warning("%s: %d videos could not be decoded and were skipped (e.g. %s)", name, len(skipped), skipped[0])
    built: dict[str, Any] = {}
    no_face: dict[str, int] = {}
    for split, split_sources in sources.items():
        where = f"{name} {split}"
        if not split_sources:
            raise DataError(f"{where}: no videos for this split in {root}, or none that can be decoded")
        built[split], report = crop_all(split_sources, cache, where, options.on_bad_video)
        check_classes(split, built[split].labels, CLASSES, where)
        no_face[split] = len(report.no_face)
        skipped.extend(sorted({s.path for s in split_sources if cache.status(s.source_id) == "missing"}))
    if counts.decoded:
        log.info("%s: counted the frames of %d videos (cached for later runs)", name, counts.decoded)
    if counts.changed:
        log.warning("%s: %d videos changed since they were first read (e.g. %s); face crops are cached by path and "
                    "frame, so delete %s to rebuild them", name, len(counts.changed), counts.changed[0], cache.folder)
    info = {**info, "root": str(root), "task": "liveness", "dataset": name,
            "videos": {split: len(vs) for split, vs in videos.items()},
            "frames": {split: len(d) for split, d in built.items()}, "no_face": no_face,
            "skipped_videos": sorted(set(skipped)), "crop_cache": str(cache.folder)}
    return Splits(train=built.get("train"), val=built.get("val"), test=built.get("test"), classes=CLASSES, info=info)


def video_root(root: str, name: str, required: Sequence[str], layout: str) -> Path:
    """The dataset's root folder, absolute (crops are cached by absolute path), checked for `required` folders."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{name}: root {path} is not a directory (expected {layout})")
    for folder in required:
        if not (path / folder).is_dir():
            raise DataError(f"{name}: root {path} has no '{folder}/' folder (expected {layout})")
    return path


def videos_under(folder: Path) -> list[Path]:
    """Video files below `folder`, sorted; other files (thumbnails, notes) are ignored."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in fa_video.VIDEO_SUFFIXES)


# ---- CASIA-FASD ---------------------------------------------------------------------------------

LAYOUT = "root/{train_release,test_release}/<subject>/<1..8,HR_1..HR_4>.avi"


def _natural(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def _subject_videos(root: Path, release: str, subject: str) -> list[VideoFile]:
    tag = release.removesuffix("_release")
    found = []
    for path in videos_under(root / release / subject):
        stem = next((s for s in STEMS if s.lower() == path.stem.lower()), None)
        if stem is None:
            raise DataError(f"{path}: unknown CASIA-FASD video name '{path.stem}' "
                            f"(valid stems: {', '.join(STEMS)})")
        attack_type = STEMS[stem]
        face_file = (root / FACE_DIR / path.relative_to(root)).with_suffix(".face")
        found.append(VideoFile(path, SPOOF if attack_type else LIVE, attack_type, f"{tag}:{subject}", face_file))
    return found


def _subjects(root: Path, release: str) -> list[str]:
    return sorted((p.name for p in (root / release).iterdir() if p.is_dir()), key=_natural)


def build(options: CasiaFasdOptions, detector: Any = None) -> Splits:
    root = video_root(options.root, "casia_fasd", ("train_release", "test_release"), LAYOUT)
    train_subjects = _subjects(root, "train_release")
    listed = {subject: _subject_videos(root, "train_release", subject) for subject in train_subjects}
    val = hold_out_subjects({s: {v.label for v in vs} for s, vs in listed.items()}, options.val_subjects,
                            options.seed, f"casia_fasd: {root / 'train_release'}")
    videos: dict[str, list[VideoFile]] = {"train": [], "val": [], "test": []}
    for subject in train_subjects:
        videos["val" if subject in val else "train"] += listed[subject]
    for subject in _subjects(root, "test_release"):
        videos["test"] += _subject_videos(root, "test_release", subject)
    info = {"val_subjects": [f"train:{s}" for s in train_subjects if s in val]}
    return build_video_splits("casia_fasd", root, videos, options, detector, info)


def datasets() -> list[Dataset]:
    return [Dataset(name="casia_fasd", build=build, options=CasiaFasdOptions,
                    description="CASIA-FASD videos (root/{train,test}_release/<subject>/*.avi), face-cropped; "
                                "faces from the recipe's detector or root/face-locations/")]
