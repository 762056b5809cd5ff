"""Clips: liveness samples that are short frame sequences of one video, for temporal models.

A clip sample is ``{"frames": [T PIL RGB images], "label": LIVE/SPOOF, "attack_type": str ("" for
live), "video": str, "subject": str}``; the clips of one video share ``video`` (its path), so
scores can be pooled per video. `faceauth.training.loaders.Transformed` transforms and stacks the frames.

The ``video_folder`` layout (the video counterpart of the image ``folder`` layout)::

    root/{train,val,test}/live/[<subject>/]*.{avi,mov,mp4,webm,mkv}
    root/{train,val,test}/spoof/*.avi                          attack type "spoof"
    root/{train,val,test}/spoof/<type>/[<subject>/]*.avi       attack type <type> (print, replay...)

`train` and `val` are required, `test` is optional; the subject is the first folder below
``live/`` or ``spoof/<type>/`` ("" when videos lie directly in it).

Sampling: `clip_length` (T) frames per clip, spread evenly over the whole video
(``clip_stride: null``) or every `clip_stride`-th frame; `clips_per_video` clips at offsets spread
over the video. A video shorter than one clip gives one clip padded by repeating its last sampled
frame (``short_video: pad``) or none (``skip``); both are counted and logged.

Faces: each sampled frame is cropped to the face the recipe's ``detector`` finds (``crop_scale``,
``crop_size``); ``whole_frame`` takes the frame as the face, so its crop is the frame's centre square
(`faceauth.faces.crop_face` of the whole frame), right for videos that already show a face crop, as
``demo_clips`` do. The exported model records the detector, and deployment crops the same way.
Crops go through `CropCache` and frame counts through `FrameCounts`, so a second run decodes no
video. Frames without a face are replaced by the nearest frame of the same clip that has one; a clip
with no face at all is dropped (both counted and logged).

Other video datasets offer clips with `build_clip_splits`, given their videos per split (any
objects with ``path``, ``label``, ``attack_type``, ``subject``), a crop cache and frame counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from PIL import Image

import faceauth
from faceauth.data import LIVE, SPOOF, Splits, check_classes, dataset_root
from faceauth.errors import DataError, RecipeError
from faceauth.faces import WHOLE_FRAME, Box, CropCache
from faceauth.io import video as fa_video
from faceauth.plugins.datasets.frames import FrameCounts, FrameSource, crop_all, crop_geometry_of, detector_settings

__all__ = ["CLASSES", "ClipDataset", "ClipOptions", "ClipReport", "ClipSampling", "ClipVideo", "VideoFolderOptions",
           "build_clip_splits", "clip_cache", "clip_dataset", "clip_indices", "load_video_folder"]

log = logging.getLogger(__name__)

CLASSES = ("live", "spoof")
LAYOUT = "root/{train,val,test}/{live,spoof}/ with video files (spoof/<attack type>/ optional)"


@attrs.frozen(kw_only=True)
class ClipSampling:
    """How clips are cut from a video (the options every clip dataset shares)."""

    clip_length: int = attrs.field(default=8, validator=faceauth.schema.positive)  # T
    clip_stride: int | None = attrs.field(default=None, validator=faceauth.schema.positive)  # None: spread evenly
    clips_per_video: int = attrs.field(default=1, validator=faceauth.schema.positive)
    short_video: Literal["pad", "skip"] = "pad"


@attrs.frozen(kw_only=True)
class ClipOptions(ClipSampling):
    """Clip sampling, what to do with undecodable videos, and the face-crop settings."""

    on_bad_video: Literal["skip", "error"] = "skip"
    crop_scale: float = 1.4  # the crop's side: the face box's longer side times this, in (0, 10]
    crop_size: int = attrs.field(default=128, validator=faceauth.schema.positive)

    def __attrs_post_init__(self) -> None:
        crop_geometry_of(self)


@attrs.frozen(kw_only=True)
class VideoFolderOptions(ClipOptions):
    root: str = faceauth.schema.required(f"the folder laid out as {LAYOUT}")


@attrs.frozen
class ClipVideo:
    """One video before its clips are cut."""

    path: Path
    label: int
    attack_type: str
    subject: str


# ---- sampling ------------------------------------------------------------------------------------

def frames_needed(sampling: ClipSampling) -> int:
    """Frames a video must have for one clip without padding."""
    return fa_video.clip_span(sampling.clip_length, sampling.clip_stride)


def clip_indices(total: int, sampling: ClipSampling) -> list[list[int]]:
    """The frame indices of each clip of a video of `total` frames (`faceauth.io.video.clip_indices`)."""
    return fa_video.clip_indices(total, sampling.clip_length, sampling.clip_stride, sampling.clips_per_video)


def padded_clip(total: int, sampling: ClipSampling) -> list[int]:
    """The one clip of a short video: the frames it has, then its last sampled frame repeated."""
    return fa_video.padded_clip(total, sampling.clip_length, sampling.clip_stride)


# ---- the dataset ---------------------------------------------------------------------------------

@attrs.frozen
class Clip:
    video: str
    frames: tuple[FrameSource, ...]  # T sources, repeats allowed
    label: int
    attack_type: str
    subject: str


class ClipDataset:
    """Clips whose frames are read from the crop cache (a damaged entry is rebuilt from its video)."""

    def __init__(self, clips: Sequence[Clip], cache: CropCache):
        self.clips, self.cache = list(clips), cache
        self.labels = [c.label for c in self.clips]
        self.attack_types = [c.attack_type for c in self.clips]
        self.subjects = [c.subject for c in self.clips]
        self.videos = [c.video for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        frames: list[Image.Image] = [self.cache.read(s.source_id, s.load) for s in clip.frames]
        return {"frames": frames, "label": clip.label, "attack_type": clip.attack_type, "video": clip.video,
                "subject": clip.subject}


@attrs.define
class ClipReport:
    """What cutting one split found: counts, and the videos at fault (logged, kept in `Splits.info`)."""

    videos: int = 0
    clips: int = 0
    padded: list[str] = attrs.field(factory=list)       # shorter than a clip, padded
    short: list[str] = attrs.field(factory=list)        # shorter than a clip, skipped
    bad: list[str] = attrs.field(factory=list)          # could not be decoded, skipped
    held_frames: int = 0                                 # faceless frames replaced by a neighbour's crop
    no_face: list[str] = attrs.field(factory=list)      # clips dropped: no frame had a face
    longest: int = 0                                     # frames of the longest decodable video

    def log(self, where: str, sampling: ClipSampling) -> None:
        log.info("%s: %d clips of %d frames from %d videos", where, self.clips, sampling.clip_length, self.videos)
        needed = frames_needed(sampling)
        if self.padded:
            log.info("%s: %d videos shorter than %d frames, padded by repeating their last frame (e.g. %s)",
                     where, len(self.padded), needed, self.padded[0])
        if self.short:
            log.warning("%s: %d videos shorter than %d frames skipped (data.short_video=skip; e.g. %s)",
                        where, len(self.short), needed, self.short[0])
        if self.bad:
            log.warning("%s: %d videos could not be decoded and were skipped (e.g. %s)", where, len(self.bad),
                        self.bad[0])
        if self.held_frames:
            log.warning("%s: %d frames without a face replaced by the nearest frame of their clip that has one",
                        where, self.held_frames)
        if self.no_face:
            log.warning("%s: %d clips without a face in any frame dropped (e.g. %s)", where, len(self.no_face),
                        self.no_face[0])

    def as_info(self) -> dict[str, Any]:
        return {"videos": self.videos, "clips": self.clips, "padded": len(self.padded), "short_skipped": len(self.short),
                "bad_videos": self.bad, "held_frames": self.held_frames, "no_face_clips": len(self.no_face)}


def clip_cache(name: str, detector: Any, options: ClipOptions, settings: Mapping[str, Any] | None = None) -> CropCache:
    """The crop cache of a clip dataset: the faces `detector` finds (`faceauth.faces.WholeFrame`: the frames).

    `settings` (the detector's description) names the cache folder; pass the one a frame dataset of
    the same videos uses and both share their crops. A dataset whose faces come from shipped boxes
    alone (no detector) makes its own `CropCache` with ``detector=None`` and passes `hints`.
    """
    geometry = crop_geometry_of(options)
    if len(geometry.scales) > 1 or geometry.align:
        raise RecipeError(f"data.crop_scale: clips take one crop scale without alignment, got "
                          f"{list(geometry.scales)}{' aligned' if geometry.align else ''}")
    if detector is None:
        raise RecipeError(f"detector: {name} crops each video frame to its face; name a detector (detector.name="
                          f"haar or mtcnn), or detector.name={WHOLE_FRAME} for videos whose frames show a face "
                          f"crop already (each frame's centre square, in training and in deployment)")
    settings = detector_settings(detector) if settings is None else settings
    return CropCache(name, dict(settings), detector, geometry)


def _cut(video: Any, total: int, sampling: ClipSampling, hints: Mapping[int, Box],
         report: ClipReport) -> list[list[FrameSource]]:
    clips = clip_indices(total, sampling)
    if not clips:
        if sampling.short_video == "skip":
            report.short.append(str(video.path))
            return []
        report.padded.append(str(video.path))
        clips = [padded_clip(total, sampling)]
    sources: dict[int, FrameSource] = {}
    for index in sorted({i for clip in clips for i in clip}):
        sources[index] = FrameSource(str(video.path), index, video.label, video.attack_type, video.subject,
                                     hint=hints.get(index))
    return [[sources[i] for i in clip] for clip in clips]


def _with_faces(frames: list[FrameSource], cache: CropCache, report: ClipReport) -> tuple[FrameSource, ...] | None:
    """The clip's frames, each faceless one replaced by the nearest frame that has a face; None if none has."""
    has_face = [cache.status(f.source_id) == "crop" for f in frames]
    if not any(has_face):
        return None
    positions = [i for i, ok in enumerate(has_face) if ok]
    held = []
    for i, frame in enumerate(frames):
        if has_face[i]:
            held.append(frame)
        else:
            held.append(frames[min(positions, key=lambda p: (abs(p - i), p))])
            report.held_frames += 1
    return tuple(held)


def clip_dataset(videos: Sequence[Any], sampling: ClipSampling, *, cache: CropCache, counts: FrameCounts,
                 where: str, on_bad_video: str = "skip",
                 hints: Callable[[Any], Mapping[int, Box]] | None = None) -> tuple[ClipDataset, ClipReport]:
    """Cut, crop and cache the clips of `videos` (objects with path, label, attack_type, subject).

    `hints` gives a video's shipped face boxes by frame index (e.g. from face-location files).
    Raises a DataError when no clip is left, naming `data.clip_length` when every video was too short.
    """
    report = ClipReport(videos=len(videos))
    cut: list[tuple[Any, list[list[FrameSource]]]] = []
    for video in videos:
        try:
            total = counts.get(Path(video.path))
        except DataError as exc:
            if on_bad_video == "error":
                raise
            log.warning("skipped: %s", exc)
            report.bad.append(str(video.path))
            continue
        report.longest = max(report.longest, total)
        cut.append((video, _cut(video, total, sampling, hints(video) if hints is not None else {}, report)))
    unique = {s.source_id: s for _, clips in cut for clip in clips for s in clip}
    if not unique:
        _raise_no_clips(where, sampling, report)
    crop_all(list(unique.values()), cache, where, on_bad_video)
    clips = []
    for video, video_clips in cut:
        for frames in video_clips:
            if any(cache.status(f.source_id) == "missing" for f in frames):  # its video failed to decode
                if str(video.path) not in report.bad:
                    report.bad.append(str(video.path))
                continue
            held = _with_faces(frames, cache, report)
            if held is None:
                report.no_face.append(f"{video.path}#{frames[0].frame}")
                continue
            clips.append(Clip(str(video.path), held, video.label, video.attack_type, video.subject))
    report.clips = len(clips)
    report.log(where, sampling)
    if not clips:
        _raise_no_clips(where, sampling, report)
    return ClipDataset(clips, cache), report


def _raise_no_clips(where: str, sampling: ClipSampling, report: ClipReport) -> None:
    if report.short and not report.padded:
        lower = "data.clip_length" + (" or data.clip_stride" if sampling.clip_stride is not None else "")
        raise DataError(f"data.clip_length={sampling.clip_length}: every video of {where} is shorter than a clip "
                        f"({frames_needed(sampling)} frames; the longest has {report.longest}); lower {lower}, "
                        f"or set data.short_video=pad")
    raise DataError(f"{where}: no clips left from its {report.videos} videos "
                    f"({len(report.bad)} undecodable, {len(report.no_face)} clips without a face)")


def build_clip_splits(name: str, videos: Mapping[str, Sequence[Any]], sampling: ClipSampling, *, cache: CropCache,
                      counts: FrameCounts, on_bad_video: str = "skip",
                      hints: Callable[[Any], Mapping[int, Box]] | None = None,
                      info: Mapping[str, Any] | None = None) -> Splits:
    """Clip datasets of the videos of each split ("train", "val", "test"; test may be missing)."""
    built: dict[str, ClipDataset] = {}
    reports: dict[str, dict[str, Any]] = {}
    try:
        for split, split_videos in videos.items():
            where = f"{name} {split}"
            built[split], report = clip_dataset(split_videos, sampling, cache=cache, counts=counts, where=where,
                                                on_bad_video=on_bad_video, hints=hints)
            check_classes(split, built[split].labels, CLASSES, where)
            reports[split] = report.as_info()
    finally:
        counts.save()
    info = {**(info or {}), "task": "liveness", "dataset": name, "clip_length": sampling.clip_length,
            "clips": reports, "crop_cache": str(cache.folder),
            "skipped_videos": sorted({path for report in reports.values() for path in report["bad_videos"]})}
    return Splits(train=built.get("train"), val=built.get("val"), test=built.get("test"), classes=CLASSES, info=info)


# ---- the video_folder layout ---------------------------------------------------------------------

def index_video_split(split_dir: Path) -> list[ClipVideo]:
    found = []
    for name in CLASSES:
        folder = split_dir / name
        if not folder.is_dir():
            raise DataError(f"{split_dir}: missing folder '{name}/' (expected {split_dir}/{{live,spoof}}/)")
        paths = fa_video.videos_under(folder)
        if not paths:
            raise DataError(f"{folder}: no video files ({', '.join(fa_video.VIDEO_SUFFIXES)}); "
                            f"each split needs live and spoof videos")
        for path in paths:
            parts = path.relative_to(folder).parts
            if name == "live":
                found.append(ClipVideo(path, LIVE, "", parts[0] if len(parts) > 1 else ""))
            else:
                attack_type = parts[0] if len(parts) > 1 else "spoof"
                found.append(ClipVideo(path, SPOOF, attack_type, parts[1] if len(parts) > 2 else ""))
    _refuse_subjects_as_attack_types(split_dir, found)
    return found


def _refuse_subjects_as_attack_types(split_dir: Path, videos: list[ClipVideo]) -> None:
    """The layout is spoof/<attack type>/[<subject>/]: a spoof/<x>/ folder named like a live subject folder
    is spoof/<subject>/ misplaced, which would make every subject an attack type. Refuse it, naming it."""
    subjects = {video.subject for video in videos if video.label == LIVE and video.subject}
    misread = sorted({video.attack_type for video in videos if video.label == SPOOF and video.attack_type in subjects})
    if misread:
        raise DataError(f"{split_dir / 'spoof' / misread[0]}: named like the live subject folder live/{misread[0]}/, "
                        f"but the level below spoof/ is the attack type (spoof/<attack type>/[<subject>/]); "
                        f"move its videos to spoof/<attack type>/{misread[0]}/")


def load_video_folder(root: str | Path, options: ClipOptions, detector: Any = None, *, name: str = "video_folder",
                      key: str = "data.root", splits: Sequence[str] | None = None) -> Splits:
    """Clips of the videos under `root` in the video_folder layout; `splits` (e.g. ``("test",)``) builds only those."""
    root = dataset_root(root, key, LAYOUT).resolve()  # absolute: crops are cached by path
    for required in splits or ("train", "val"):
        if not (root / required).is_dir():
            raise DataError(f"{key}: {root} has no '{required}/' folder (expected {LAYOUT})")
    splits = splits or [split for split in ("train", "val", "test") if (root / split).is_dir()]
    videos = {split: index_video_split(root / split) for split in splits}
    return build_clip_splits(name, videos, options, cache=clip_cache(name, detector, options),
                             counts=FrameCounts(name, root), on_bad_video=options.on_bad_video,
                             info={"root": str(root), "detector": detector is not None})


def build_video_folder(options: VideoFolderOptions, detector: Any = None, splits: Sequence[str] | None = None) -> Splits:
    return load_video_folder(options.root, options, detector, splits=splits)
