"""Small real video files for tests: rendered faces on a plain background, written by OpenCV.

`.avi` files are Motion-JPEG and `.mov`/`.mp4` files MPEG-4 part 2 ('mp4v'): both are written and
read back by the FFmpeg inside the opencv-python wheel. Faces come from the demo renderer; the
stylised faces are found by the Haar cascade only for some seeds, so most tests give boxes in
face-location files and `haar_face` returns a face that the default Haar settings do find.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceauth.faces import Box
from faceauth.io.video import write_video as write_video  # the tests write their videos with it
from faceauth.plugins.datasets.demo_render import render_face, sample_identity

# A rendered face the default Haar settings find (checked after an MJPG/mp4v round trip) when pasted at
# (40, 20) into a grey HAAR_FRAME (width, height); about a quarter of the rendered faces are found.
HAAR_SEED, HAAR_FACE, HAAR_FRAME = 0, 80, (160, 120)


def rendered_face(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render_face(sample_identity(rng), rng, size=size)


def face_frames(face: np.ndarray, count: int, *, size: tuple[int, int] = (96, 72), move: int = 2,
                blank: Iterable[int] = ()) -> tuple[list[np.ndarray], list[Box | None]]:
    """`count` frames of `size` (width, height) with `face` drifting right by `move` px a frame.

    Frames in `blank` show only the background. Returns the frames and each frame's face box.
    """
    width, height = size
    side = face.shape[0]
    blank = set(blank)
    frames, boxes = [], []
    for index in range(count):
        frame = np.full((height, width, 3), 96, np.uint8)
        x, y = min(4 + move * index, width - side), (height - side) // 2
        if index in blank:
            boxes.append(None)
        else:
            frame[y:y + side, x:x + side] = face
            boxes.append(Box(x, y, side, side))
        frames.append(frame)
    return frames, boxes


def haar_face() -> np.ndarray:
    return rendered_face(HAAR_SEED, HAAR_FACE)


def write_face_file(path: Path, boxes: Sequence[Box | None]) -> Path:
    """Rows `frame x y w h` for the frames that have a box (the Replay-Attack face-locations format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{i} {int(b.x)} {int(b.y)} {int(b.w)} {int(b.h)}" for i, b in enumerate(boxes) if b is not None]
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def corrupt(path: Path) -> Path:
    """Replace a video by bytes no decoder accepts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a video " * 64)
    return path


def record_opened_videos(monkeypatch: Any) -> list[str]:
    """The paths of the videos OpenCV opens from now on (for tests that a cached build decodes none)."""
    import cv2

    opened: list[str] = []
    real_capture = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture", lambda *args: opened.append(args[0]) or real_capture(*args))
    return opened
