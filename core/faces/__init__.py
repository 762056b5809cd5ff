"""Face boxes (with optional landmarks), OpenCV's Haar face detector, crop geometry and crops, the face
finding every deployment path calls, and the on-disk cache of crops that datasets of raw frames share.

A dataset of raw frames (video, full webcam images) lists its sources, then asks a `CropCache`
for each source's face crop: the first pass runs the detector (with a progress bar) and stores
every crop; later runs read the stored crops. A damaged cache entry is detected when read and
rebuilt; a source with no face is recorded as such and counted, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from faceauth.errors import DataError, quote
from faceauth.io.paths import atomic_write, cache_dir

__all__ = ["Box", "CropCache", "CropGeometry", "CropReport", "HaarCascade", "LANDMARK_NAMES", "WHOLE_FRAME", "WholeFrame",
           "crop_face", "crop_faces", "crop_geometry", "face_detector", "find_face", "first_face"]

#: How `crop_face` frames a window that reaches past the image; part of every crop cache's key, so
#: crops framed another way are never mixed in.
CROP_FRAMING = "inside"

#: The five landmarks a `Box` may carry, in this order (the order of the ArcFace alignment template).
LANDMARK_NAMES = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")


def _landmarks(value: Any) -> tuple[tuple[float, float], ...] | None:
    if value is None:
        return None
    points = np.asarray(value, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"landmarks: expected 5 finite (x, y) points ({', '.join(LANDMARK_NAMES)}), got shape "
                         f"{points.shape}")
    return tuple((float(x), float(y)) for x, y in points)


@attrs.frozen
class Box:
    """A face box in pixels: top-left corner, width, height, a detector score, and optionally the five
    landmarks (`LANDMARK_NAMES`, (x, y) in image pixels) of a detector that finds them."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0
    landmarks: tuple[tuple[float, float], ...] | None = attrs.field(default=None, converter=_landmarks)

    def clamp(self, width: int, height: int) -> Box | None:
        """This box cut to the image (landmarks kept as found); None when nothing of it is left."""
        x0, y0 = max(0.0, self.x), max(0.0, self.y)
        x1, y1 = min(float(width), self.x + self.w), min(float(height), self.y + self.h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return Box(x0, y0, x1 - x0, y1 - y0, self.score, self.landmarks)


#: The detector name of faces that are whole frames (videos that show a face crop already).
WHOLE_FRAME = "whole_frame"


class WholeFrame:
    """The `whole_frame` detector: the face is the whole frame, so its crop is the frame's centre square
    (`crop_face` at a scale of 1 or more), in training and in deployment alike."""

    def detect(self, image: np.ndarray, hint: Box | None = None) -> list[Box]:
        height, width = image.shape[:2]
        return [Box(0.0, 0.0, float(width), float(height))]


class HaarCascade:
    """OpenCV's frontal-face Haar cascade (its XML file ships in the opencv-python 4.x wheel).

    `detect` returns the faces of an RGB image, largest first (the largest face is the subject).
    Frames wider than `max_width` are downscaled first; faces smaller than `min_size` of the shorter
    side (and 16 pixels) are ignored. The built-in `haar` detector and `faceauth.deploy.authenticator` both
    detect with it, so a face is framed at deployment as the training datasets' crop caches frame it.

    One object may be used from any number of threads: OpenCV's cascade keeps scratch state of its
    own while it detects, so each thread loads its own copy on first use (about 10 ms), and the
    threads then detect in parallel (`benchmarks/bench_haar_threads.py` compares this with a lock).
    """

    FILE = "haarcascade_frontalface_default.xml"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: float = 0.1,
                 max_width: int = 640):
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        for name, value, valid, wanted in (
                ("scale_factor", scale_factor, number(scale_factor) and scale_factor > 1, "a number above 1"),
                ("min_neighbors", min_neighbors, isinstance(min_neighbors, int) and 0 <= min_neighbors <= 1000,
                 "a whole number from 0 to 1000"),
                ("min_size", min_size, number(min_size) and 0 <= min_size <= 1, "a fraction from 0 to 1"),
                ("max_width", max_width, isinstance(max_width, int) and 16 <= max_width <= 16384,
                 "a whole number from 16 to 16384")):
            if not valid:  # OpenCV would fail (or loop) inside the first detection instead
                raise DataError(f"Haar cascade {name}: expected {wanted}, got {quote(value, 60)}")
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


def crop_face(image: np.ndarray, box: Box, scale: float, size: int) -> np.ndarray:
    """A square crop around `box`, its side the box's longer side times `scale`, of real pixels only.

    A window that would reach past the frame is shifted back inside it, and one larger than the
    frame's shorter side shrinks to that side (as Silent-Face frames its crops): no pixel is invented.
    Filling the outside instead (repeated edge pixels, a constant) paints a pattern whose presence
    follows where the face sits in the frame, a cue of the capture setup rather than of liveness.
    Returns a `size` x `size` RGB uint8 array.
    """
    height, width = image.shape[:2]
    side = max(1, min(int(round(max(box.w, box.h) * scale)), width, height))
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0 = min(max(int(round(cx - side / 2)), 0), width - side)
    y0 = min(max(int(round(cy - side / 2)), 0), height - side)
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side]))
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def _scales(value: Any) -> tuple[float, ...]:
    return (value,) if isinstance(value, (int, float)) else tuple(value)


def _check_scales(instance: Any, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if not value or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 10 for s in value):
        raise ValueError(f"crop_scale: expected a number in (0, 10] or a list of them (the crop's side is the face "
                         f"box's longer side times it; e.g. 1.4, or [2.7, 4.0]), got {str(list(value))[:200]}")


@attrs.frozen
class CropGeometry:
    """How a face becomes a model's input crop, recorded in runs and in exported models (``faceauth.crop``).

    `detector` is the recipe's detector name (None: the training images were crops already, or the
    dataset's own boxes; `WHOLE_FRAME`: each frame was the face) and `detector_options` its options.
    Without alignment each face gives one square crop per scale in `scales` (side = the box's longer
    side x scale, `size` pixels); several scales make several samples of one face, whose scores are
    averaged. With `align` the face is warped by its five landmarks onto the ArcFace template (scaled
    to `size`), as recognition models expect; that needs a detector with landmarks and takes one scale.
    """

    detector: str | None = "haar"
    detector_options: dict[str, Any] = attrs.field(factory=dict)
    scales: tuple[float, ...] = attrs.field(default=(1.4,), converter=_scales, validator=_check_scales)
    size: int = 128
    align: bool = False

    def __attrs_post_init__(self) -> None:
        if self.align and len(self.scales) > 1:
            raise ValueError(f"crop_align: an aligned crop has one geometry (the ArcFace template); got the scales "
                             f"{list(self.scales)}")
        if self.size < 1:
            raise ValueError(f"crop_size: expected a positive integer, got {self.size!r}")

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str, where: str) -> CropGeometry:
        """The geometry stored in a model's ``faceauth.crop``; an ExportError names the model when it is invalid."""
        from faceauth.errors import ExportError

        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON mapping")
            geometry = cls(**{k: data[k] for k in ("detector", "detector_options", "scales", "size", "align") if k in data})
            if not (isinstance(geometry.size, int) and geometry.size <= 4096 and isinstance(geometry.align, bool)
                    and isinstance(geometry.detector, (str, type(None))) and isinstance(geometry.detector_options, dict)):
                raise ValueError("size must be an integer of at most 4096 pixels, align true or false, detector a "
                                 "name, detector_options a mapping")
            return geometry
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:
            raise ExportError(f"{where}: invalid faceauth.crop metadata ({str(exc)[:200]}); expected JSON with "
                              f"detector, scales, size, align") from None


def crop_geometry(recipe: dict[str, Any]) -> CropGeometry | None:
    """The crop geometry a resolved recipe trains with, or None when it does not say.

    A data section that crops faces (``crop_size``, ``crop_scale``, ``crop_align``) gives its geometry
    with the recipe's ``detector``. A data section of face crops made elsewhere (recognition folders,
    insightface packs: ArcFace-aligned) with a ``detector`` that finds landmarks (``mtcnn``) gives the
    aligned geometry at the data's ``align_size`` (default 112), so deployment aligns faces the same way.
    """
    data = recipe.get("data")
    data = data[0] if isinstance(data, list) and data else data
    detector = dict(recipe.get("detector") or {})
    name = detector.pop("name", None)
    if not isinstance(data, dict):
        return None
    if "crop_size" not in data:
        if name != "mtcnn":
            return None
        return CropGeometry(detector=name, detector_options=detector, scales=1.0, size=data.get("align_size", 112),
                            align=True)
    return CropGeometry(detector=name if name not in (None, "boxes") else None, detector_options=detector,
                        scales=data.get("crop_scale", 1.4), size=data["crop_size"], align=data.get("crop_align", False))


def crop_faces(image: np.ndarray, box: Box, geometry: CropGeometry, where: str = "image") -> list[np.ndarray]:
    """The crops of one face under `geometry`: the aligned crop, or one scaled crop per scale."""
    if geometry.align:
        from faceauth.faces.align import align_five_point

        if box.landmarks is None:
            raise DataError(f"{where}: the crop geometry aligns faces by their landmarks, and the detector "
                            f"({geometry.detector}) found none (use a detector with landmarks, e.g. mtcnn)")
        return [np.asarray(align_five_point(image, box.landmarks, geometry.size))]
    return [crop_face(image, box, scale, geometry.size) for scale in geometry.scales]


def face_detector(geometry: CropGeometry, mtcnn_weights: str | Path | None = None) -> Any:
    """The detector deployment runs for `geometry`, without PyTorch: OpenCV's Haar cascade (also for crops
    trained without a detector or with a dataset's boxes), MTCNN on onnxruntime, or `WholeFrame`.

    MTCNN's ONNX files are looked for in `mtcnn_weights`, else in ``$FACEAUTH_MTCNN_WEIGHTS``, else in the
    folder the model was trained with (``detector_options.weights``).
    """
    import os

    options = dict(geometry.detector_options)
    if geometry.detector == "mtcnn":
        from faceauth.faces.mtcnn import MtcnnOnnx, MtcnnSettings

        folder = mtcnn_weights or os.environ.get("FACEAUTH_MTCNN_WEIGHTS") or options.pop("weights", None)
        if not folder:
            raise DataError("mtcnn: no weights folder (give mtcnn_weights=DIR or set FACEAUTH_MTCNN_WEIGHTS)")
        options.pop("weights", None)
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()
                    if k in attrs.fields_dict(MtcnnSettings)}
        try:
            chosen = MtcnnSettings(**settings)
        except (TypeError, ValueError) as exc:
            raise DataError(f"mtcnn: the model's crop geometry holds settings MTCNN cannot run ({quote(exc, 120)})") from None
        return MtcnnOnnx(folder, chosen)
    if geometry.detector == WHOLE_FRAME:
        return WholeFrame()
    if geometry.detector in (None, "haar"):
        return HaarCascade(**{k: v for k, v in options.items()
                              if k in ("scale_factor", "min_neighbors", "min_size", "max_width")})
    raise DataError(f"crop geometry names the detector {quote(geometry.detector, 60)}, which deployment cannot run "
                    f"(it runs haar, mtcnn and {WHOLE_FRAME})")


def find_face(image: np.ndarray, detector: Any, where: str) -> Box:
    """The first (largest) face `detector` finds in `image`, cut to it; a DataError naming `where` when there
    is none. Every deployment path finds faces with this function (and crops them with `crop_faces`)."""
    height, width = image.shape[:2]
    box = first_face(detector.detect(image), width, height)
    if box is None:
        raise DataError(f"{where}: no face found (give a photo with one frontal face, or detect=False "
                        f"for images that are face crops already)")
    return box


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
    """Face crops of one dataset under one setting, stored as lossless PNG files keyed by source id.

    Lossless, so a model trains and is measured on the very pixels deployment crops from the same
    frame (`crop_faces`): a JPEG re-encoding (even at quality 95) moves fine texture, and the LBP
    baseline's scores with it.

    `settings` (detector name and options, ...) and the `geometry`'s scales, size and alignment name
    the cache folder, so changing any of them starts a new cache instead of mixing crops. A geometry
    with several scales stores one crop per scale of each source (the face is detected once).
    """

    def __init__(self, dataset: str, settings: dict[str, Any], detector: Any, geometry: CropGeometry):
        if geometry.align and detector is not None and not getattr(detector, "landmarks", False):
            from faceauth.errors import RecipeError

            raise RecipeError(f"data.crop_align: aligned crops need a detector that finds the five landmarks "
                              f"(detector: {{name: mtcnn, weights: DIR}}); {type(detector).__name__} finds none")
        key = hashlib.sha256(json.dumps({"dataset": dataset, **settings, "scales": list(geometry.scales),
                                         "framing": CROP_FRAMING, "format": "png",
                                         "size": geometry.size, "align": geometry.align},
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.folder = cache_dir("crops", f"{dataset}-{key}")
        self.detector, self.geometry = detector, geometry

    @property
    def num_scales(self) -> int:
        return len(self.geometry.scales)

    def _path(self, source_id: str, scale: int = 0) -> Path:
        digest = hashlib.sha256(source_id.encode("utf-8", "surrogateescape")).hexdigest()  # names need not be UTF-8
        return self.folder / digest[:2] / (f"{digest}.png" if scale == 0 else f"{digest}-{scale}.png")

    def _no_face_path(self, source_id: str) -> Path:
        return self._path(source_id).with_suffix(".noface")

    def make(self, source_id: str, image: np.ndarray, hint: Box | None = None) -> list[np.ndarray] | None:
        """Detect, crop and store one source (one crop per scale); None (recorded) when no face is found."""
        height, width = image.shape[:2]
        boxes = self.detector.detect(image, hint=hint) if self.detector is not None else ([hint] if hint else [])
        box = first_face(boxes, width, height)
        path = self._path(source_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if box is None or (self.geometry.align and box.landmarks is None):
            self._no_face_path(source_id).touch()
            return None
        crops = crop_faces(image, box, self.geometry, source_id)
        for scale, crop in reversed(list(enumerate(crops))):  # the first scale's file, written last, marks completion
            with atomic_write(self._path(source_id, scale)) as handle:
                Image.fromarray(crop).save(handle, format="PNG", compress_level=1)
        return crops

    def status(self, source_id: str) -> str:
        """"crop", "no_face" or "missing"."""
        if self._path(source_id).is_file():
            return "crop"
        if self._no_face_path(source_id).is_file():
            return "no_face"
        return "missing"

    def read(self, source_id: str, load: Callable[[], tuple[np.ndarray, Box | None]], scale: int = 0) -> Image.Image:
        """The cached crop (of the `scale`-th scale); a damaged entry is rebuilt from the source with `load`."""
        path = self._path(source_id, scale)
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError):
            image, hint = load()
            crops = self.make(source_id, image, hint)
            if crops is None:
                raise DataError(f"{source_id}: no face found when rebuilding its damaged crop") from None
            return Image.fromarray(crops[scale])
