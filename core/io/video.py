"""Reading (and, for generated sets, writing) video files with OpenCV, which uses FFmpeg; never by hand.

Frames are HxWx3 uint8 RGB arrays. A file that cannot be opened or decoded raises a `DataError`
naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faceauth.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "files_under", "clip_indices", "clip_span", "frame_count", "padded_clip", "read_frames", "sample_indices",
           "videos_under", "write_video"]

VIDEO_SUFFIXES = (".avi", ".mov", ".mp4", ".webm", ".mkv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff")  # faceauth.data re-exports it


# Codecs the FFmpeg inside the opencv-python wheel both writes and reads back.
_FOURCC = {".avi": "MJPG", ".mov": "mp4v", ".mp4": "mp4v"}


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> Path:
    """Write RGB frames (all of one size) to `path`: Motion-JPEG for .avi, MPEG-4 part 2 for .mov/.mp4."""
    import cv2

    fourcc = _FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: cannot write {path.suffix!r} videos (writable: {', '.join(_FOURCC)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write {fourcc} video")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def files_under(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files below `folder` (any depth) whose suffix, in any case, is one of `suffixes`, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def videos_under(folder: Path) -> list[Path]:
    """Video files below `folder` (any depth), sorted; other files (thumbnails, notes) are ignored."""
    return files_under(folder, VIDEO_SUFFIXES)


def _open(path: str | Path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"{path}: cannot open video (not a video file, or a codec FFmpeg cannot decode)")
    return capture


def frame_count(path: str | Path) -> int:
    """Frames in the video, by decoding it (container headers are often wrong or missing)."""
    capture = _open(path)
    try:
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise DataError(f"{path}: the video has no decodable frames")
    return count


def read_frames(path: str | Path, indices: Sequence[int]) -> list[np.ndarray]:
    """The frames at `indices` (any order, repeats allowed), decoded in one sequential pass."""
    import cv2

    wanted = sorted(set(int(i) for i in indices))
    found: dict[int, np.ndarray] = {}
    capture = _open(path)
    try:
        index = 0
        for target in wanted:
            while index <= target:
                if not capture.grab():
                    raise DataError(f"{path}: frame {target} cannot be decoded (the video ends at frame {index})")
                if index == target:
                    ok, frame = capture.retrieve()
                    if not ok:
                        raise DataError(f"{path}: frame {target} cannot be decoded")
                    found[target] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
    finally:
        capture.release()
    return [found[int(i)] for i in indices]


def sample_indices(total: int, count: int, stride: int | None = None, offset: int = 0) -> list[int]:
    """`count` frame indices: every `stride`-th frame from `offset`, or spread evenly when stride is None."""
    if total <= 0 or count <= 0:
        return []
    if stride is None:
        if count >= total:
            return list(range(total))
        return [int(round(x)) for x in np.linspace(0, total - 1, count)]
    return [i for i in range(offset, total, stride)][:count]


def clip_span(length: int, stride: int | None) -> int:
    """Frames a video must have for one clip of `length` frames without padding."""
    return length if stride is None else (length - 1) * stride + 1


def clip_indices(total: int, length: int, stride: int | None, count: int) -> list[list[int]]:
    """The frame indices of `count` clips of `length` frames of a video of `total` frames; [] when too short.

    Evenly spread clips (`stride` None) interleave: clip k starts k/K of a frame step after clip
    k-1, so the first clip starts at frame 0 and the last ends at the last frame. Strided clips
    start at offsets spread from 0 to the last possible start. Identical clips (a video just long
    enough) count once. Training's clip datasets and `faceauth-predict` cut videos with this.
    """
    if total < clip_span(length, stride):
        return []
    if count == 1:
        clips = [sample_indices(total, length, stride)]
    elif stride is None:
        step = (total - 1) / (length - 1 + (count - 1) / count)
        clips = [[round(k * step / count + i * step) for i in range(length)] for k in range(count)]
    else:
        offsets = np.linspace(0, total - clip_span(length, stride), count)
        clips = [sample_indices(total, length, stride, round(o)) for o in offsets]
    unique: list[list[int]] = []
    for clip in clips:
        if clip not in unique:
            unique.append(clip)
    return unique


def padded_clip(total: int, length: int, stride: int | None) -> list[int]:
    """The one clip of a short video: the frames it has, then its last sampled frame repeated."""
    indices = sample_indices(total, length, stride)
    return indices + [indices[-1]] * (length - len(indices))
