"""What the video liveness databases (CASIA-FASD, Replay-Attack) share: options, face files, the build.

A database module lists its videos per split as `VideoFile`s and calls `build_video_splits`, which
samples them in one of two ways:

* frames (``clip_length: null``, the default): `frames_per_video` frames per video (spread evenly,
  or every `frame_stride`-th), each a sample for frame-level models;
* clips (``clip_length: T``): `clips_per_video` clips of T frames (spread evenly, or every
  `clip_stride`-th frame), each a sample for temporal models; short videos follow `short_video`
  (see `clips`).

Both use the same face boxes and the same crop cache, so a clip run after a frame run (or the other
way round) only crops the frames the first did not. Boxes come from the recipe's ``detector``, with
the database's face files (``frame x y w h`` per row) as its hints, or from the face files alone
when the recipe names no detector.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

import faceauth
from faceauth.data import Splits, check_classes, dataset_root
from faceauth.errors import DataError
from faceauth.faces import Box, CropCache
from faceauth.io import video as fa_video
from faceauth.plugins.datasets.clips import CLASSES, ClipSampling, build_clip_splits
from faceauth.plugins.datasets.frames import (
    CropOptions,
    FrameCounts,
    FrameSource,
    crop_all,
    crop_geometry_of,
    detector_settings,
    warn_shared_subjects,
)

__all__ = ["FACE_DIR", "VideoFile", "VideoOptions", "build_video_splits", "read_face_file", "video_root"]

log = logging.getLogger(__name__)

FACE_DIR = "face-locations"


@attrs.frozen(kw_only=True)
class VideoOptions(CropOptions):
    """Options every video liveness database shares (plus the crop options it inherits)."""

    root: str = faceauth.schema.required("the database's folder (see the dataset's layout)")
    frames_per_video: int = attrs.field(default=10, validator=faceauth.schema.positive)
    frame_stride: int | None = attrs.field(default=None, validator=faceauth.schema.positive)  # None: spread evenly
    clip_length: int | None = attrs.field(default=None, validator=faceauth.schema.positive)  # T; None: frames
    clip_stride: int | None = attrs.field(default=None, validator=faceauth.schema.positive)  # None: spread evenly
    clips_per_video: int = attrs.field(default=1, validator=faceauth.schema.positive)
    short_video: Literal["pad", "skip"] = "pad"
    on_bad_video: Literal["skip", "error"] = "skip"

    def __attrs_post_init__(self) -> None:
        if self.clip_length is None:
            unused = {"clip_stride": self.clip_stride is not None, "clips_per_video": self.clips_per_video != 1,
                      "short_video": self.short_video != "pad"}
            why = "is a clip setting, but clip_length is null (single frames are sampled); set clip_length to cut clips"
        else:
            default = attrs.fields(type(self)).frames_per_video.default
            unused = {"frames_per_video": self.frames_per_video != default, "frame_stride": self.frame_stride is not None}
            why = (f"is a frame setting, but clip_length is {self.clip_length} (clips are cut); use clip_stride and "
                   f"clips_per_video instead")
        for key, is_set in unused.items():
            if is_set:
                raise ValueError(f"{key}: {why}")

    def clip_sampling(self) -> ClipSampling | None:
        """How clips are cut, or None when single frames are sampled."""
        if self.clip_length is None:
            return None
        return ClipSampling(clip_length=self.clip_length, clip_stride=self.clip_stride,
                            clips_per_video=self.clips_per_video, short_video=self.short_video)


@attrs.frozen
class VideoFile:
    """One video of a database, before its frames are chosen."""

    path: Path
    label: int
    attack_type: str
    subject: str
    face_file: Path | None  # where its face boxes would be (None: the database has none)


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


def _face_boxes(video: VideoFile) -> dict[int, Box]:
    return read_face_file(video.face_file) if video.face_file is not None and video.face_file.is_file() else {}


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
        boxes = _face_boxes(video)
        for index in fa_video.sample_indices(total, options.frames_per_video, options.frame_stride):
            sources.append(FrameSource(str(video.path), index, video.label, video.attack_type, video.subject,
                                       hint=boxes.get(index)))
    return sources


def _frame_splits(name: str, root: Path, videos: Mapping[str, list[VideoFile]], options: VideoOptions,
                  cache: CropCache, counts: FrameCounts) -> tuple[dict[str, Any], dict[str, Any]]:
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
            raise DataError(f"{where}: none of its videos in {root} can be decoded")
        built[split], report = crop_all(split_sources, cache, where, options.on_bad_video)
        check_classes(split, built[split].labels, CLASSES, where)
        no_face[split] = len(report.no_face)
        skipped.extend(sorted({s.path for s in split_sources if cache.status(s.source_id) == "missing"}))
    info = {"frames": {split: len(d) for split, d in built.items()}, "no_face": no_face,
            "skipped_videos": sorted(set(skipped))}
    return built, info


def build_video_splits(name: str, root: Path, videos: dict[str, list[VideoFile]], options: VideoOptions,
                       detector: Any, info: dict[str, Any]) -> Splits:
    """Count, sample and crop the videos of each split ("train", "val", "test") into `Splits` of frames or clips."""
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
    cache = CropCache(name, {**detector_settings(detector), "hints": hints}, detector, crop_geometry_of(options))
    counts = FrameCounts(name, root)
    info = {**info, "root": str(root), "task": "liveness", "dataset": name,
            "videos": {split: len(vs) for split, vs in videos.items()}, "crop_cache": str(cache.folder)}
    for split, split_videos in videos.items():
        if not split_videos:
            raise DataError(f"{name} {split}: no videos for this split in {root}")
    sampling = options.clip_sampling()
    if sampling is not None:
        splits = build_clip_splits(name, videos, sampling, cache=cache, counts=counts,
                                   on_bad_video=options.on_bad_video, hints=_face_boxes, info=info)
    else:
        built, frame_info = _frame_splits(name, root, videos, options, cache, counts)
        splits = Splits(train=built.get("train"), val=built.get("val"), test=built.get("test"), classes=CLASSES,
                        info={**info, **frame_info})
    if counts.changed:
        log.warning("%s: %d videos changed since they were first read (e.g. %s); face crops are cached by path and "
                    "frame, so delete %s to rebuild them", name, len(counts.changed), counts.changed[0], cache.folder)
    return splits


def video_root(root: str, name: str, required: Sequence[str], layout: str) -> Path:
    """The database's root folder, absolute (crops are cached by absolute path), checked for `required` folders."""
    path = dataset_root(root, "data.root", layout).resolve()
    for folder in required:
        if not (path / folder).is_dir():
            raise DataError(f"{name}: root {path} has no '{folder}/' folder (expected {layout})")
    return path
