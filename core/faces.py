"""Face boxes, OpenCV's Haar face detector, crops, and the on-disk cache of crops that datasets of raw
frames share.

A dataset of raw frames (video, full webcam images) lists its sources, then asks a `CropCache`
for each source's face crop: the first pass runs the detector (with a progress bar) and stores
every crop; later runs read the stored crops. A damaged cache entry is detected when read and
rebuilt; a source with no face is recorded as such and counted, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from faceauth.errors import DataError
from faceauth.paths import atomic_write, cache_dir

__all__ = ["Box", "CropCache", "CropReport", "HaarCascade", "crop_face", "first_face"]


@attrs.frozen
class Box:
    """A face box in pixels: top-left corner, width, height, and a detector score."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    def clamp(self, width: int, height: int) -> Box | None:
        """This box cut to the image; None when nothing of it is left (a degenerate box)."""
        x0, y0 = max(0.0, self.x), max(0.0, self.y)
        x1, y1 = min(float(width), self.x + self.w), min(float(height), self.y + self.h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return Box(x0, y0, x1 - x0, y1 - y0, self.score)


class HaarCascade:
    """OpenCV's frontal-face Haar cascade (its XML file ships in the opencv-python 4.x wheel).

    `detect` returns the faces of an RGB image, largest first (the largest face is the subject).
    Frames wider than `max_width` are downscaled first; faces smaller than `min_size` of the shorter
    side (and 16 pixels) are ignored. The built-in `haar` detector and `faceauth.authenticator` both
    detect with it, so a face is framed at deployment as the training datasets' crop caches frame it.

    One object may be used from any number of threads: OpenCV's cascade keeps scratch state of its
    own while it detects, so each thread loads its own copy on first use (about 10 ms), and the
    threads then detect in parallel (`benchmarks/bench_haar_threads.py` compares this with a lock).
    """

    FILE = "haarcascade_frontalface_default.xml"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: float = 0.1,
                 max_width: int = 640):
        self.scale_factor, self.min_neighbors, self.min_size, self.max_width = (scale_factor, min_neighbors, min_size,
                                                                                max_width)
        self._local = threading.local()
        self._cascade()  # fail here, not in the first detection, when OpenCV has no cascade

    def _cascade(self) -> Any:
        """This thread's own cascade, loaded on its first use."""
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = _load_cascade(self.FILE)
        return cascade

    def detect(self, image: np.ndarray, hint: Box | None = None) -> list[Box]:
        """The faces in an HxWx3 uint8 RGB image, largest first; `hint` is ignored."""
        import cv2

        scale = min(1.0, self.max_width / image.shape[1])
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        side = max(16, int(min(grey.shape) * self.min_size))
        found = self._cascade().detectMultiScale(grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                 minSize=(side, side))
        boxes = [Box(x / scale, y / scale, w / scale, h / scale) for x, y, w, h in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)


def _load_cascade(name: str) -> Any:
    """OpenCV's cascade `name`, or a DataError saying which OpenCV lacks it and what to install."""
    import cv2

    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or folder is None:
        raise DataError(f"OpenCV {cv2.__version__} has no Haar cascades (cv2.CascadeClassifier and cv2.data are "
                        f"gone in 5.x); install opencv-python-headless 4.x: pip install 'opencv-python-headless<5'")
    path = Path(folder) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DataError(f"cannot load OpenCV's face detector {path} (the opencv-python-headless 4.x wheel ships "
                        f"it: pip install 'opencv-python-headless<5')")
    return cascade


def first_face(boxes: list[Box], width: int, height: int) -> Box | None:
    """The first of `boxes` (listed best first) cut to a `width` x `height` image; None when none is left."""
    return next((clamped for box in boxes if (clamped := box.clamp(width, height)) is not None), None)


def crop_face(image: np.ndarray, box: Box, margin: float, size: int) -> np.ndarray:
    """A square crop centred on `box`, its side the box's longer side grown by `margin` on each side.

    Parts outside the image are filled by repeating the edge pixels, so faces near the border keep
    their scale. Returns a `size` x `size` RGB uint8 array.
    """
    height, width = image.shape[:2]
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + int(round(side)), y0 + int(round(side))
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    crop = Image.fromarray(image[y0:y1, x0:x1])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


@attrs.define
class CropReport:
    """What one pass over the sources found: crops made, read from the cache, and faceless sources."""

    made: int = 0
    cached: int = 0
    rebuilt: int = 0
    no_face: list[str] = attrs.field(factory=list)

    def summary(self, where: str) -> str:
        first = ", ".join(self.no_face[:3])
        more = f" (e.g. {first})" if self.no_face else ""
        return (f"{where}: {self.made + self.cached + self.rebuilt} face crops ({self.made} new, {self.cached} cached, "
                f"{self.rebuilt} rebuilt); {len(self.no_face)} frames without a face skipped{more}")


class CropCache:
    """Face crops of one dataset under one setting, stored as JPEG files keyed by source id.

    `settings` (detector name and options, margin, size, ...) name the cache folder, so changing
    any of them starts a new cache instead of mixing crops.
    """

    def __init__(self, dataset: str, settings: dict[str, Any], detector: Any, *, margin: float, size: int):
        key = hashlib.sha256(json.dumps({"dataset": dataset, **settings, "margin": margin, "size": size},
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.folder = cache_dir("crops", f"{dataset}-{key}")
        self.detector, self.margin, self.size = detector, margin, size

    def _path(self, source_id: str) -> Path:
        digest = hashlib.sha256(source_id.encode("utf-8", "surrogateescape")).hexdigest()  # names need not be UTF-8
        return self.folder / digest[:2] / f"{digest}.jpg"

    def _no_face_path(self, source_id: str) -> Path:
        return self._path(source_id).with_suffix(".noface")

    def make(self, source_id: str, image: np.ndarray, hint: Box | None = None) -> np.ndarray | None:
        """Detect, crop and store one source; None (recorded) when no face is found."""
        height, width = image.shape[:2]
        boxes = self.detector.detect(image, hint=hint) if self.detector is not None else ([hint] if hint else [])
        box = first_face(boxes, width, height)
        path = self._path(source_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if box is None:
            self._no_face_path(source_id).touch()
            return None
        crop = crop_face(image, box, self.margin, self.size)
        with atomic_write(path) as handle:
            Image.fromarray(crop).save(handle, format="JPEG", quality=95)
        return crop

    def status(self, source_id: str) -> str:
        """"crop", "no_face" or "missing"."""
        if self._path(source_id).is_file():
            return "crop"
        if self._no_face_path(source_id).is_file():
            return "no_face"
        return "missing"

    def read(self, source_id: str, load: Callable[[], tuple[np.ndarray, Box | None]]) -> Image.Image:
        """The cached crop; a damaged entry is rebuilt from the source with `load`."""
        path = self._path(source_id)
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError):
            image, hint = load()
            crop = self.make(source_id, image, hint)
            if crop is None:
                raise DataError(f"{source_id}: no face found when rebuilding its damaged crop") from None
            return Image.fromarray(crop)
