"""Face detectors that need no downloaded model.

- `haar`: OpenCV's frontal-face Haar cascade, whose XML file ships inside the opencv-python 4.x
  wheel. Fast and dependency-free, but weak on rotated or small faces: a plugin can register a
  stronger detector (YuNet, RetinaFace, MTCNN from a local model file) by name.
- `boxes`: the boxes a dataset ships (CelebA-Spoof `_BB.txt`, Replay-Attack `face-locations/`),
  passed through unchanged; a frame without a box has no face.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

import faceauth
from faceauth.components import Detector
from faceauth.errors import PluginError
from faceauth.faces import Box

CASCADE = "haarcascade_frontalface_default.xml"


@attrs.frozen
class HaarOptions:
    scale_factor: float = attrs.field(default=1.1, validator=faceauth.schema.positive)
    min_neighbors: int = attrs.field(default=5, validator=faceauth.schema.non_negative)
    min_size: float = attrs.field(default=0.1, validator=faceauth.schema.fraction)  # of the shorter image side
    max_width: int = attrs.field(default=640, validator=faceauth.schema.positive)  # larger frames are downscaled first


class HaarDetector:
    def __init__(self, options: HaarOptions):
        import cv2

        path = Path(cv2.data.haarcascades) / CASCADE
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise PluginError(f"detector 'haar': cannot load {path} (an opencv-python 4.x wheel ships it; 5.x does not)")
        self.options = options

    def detect(self, image: np.ndarray, hint: Box | None = None) -> list[Box]:
        import cv2

        scale = min(1.0, self.options.max_width / image.shape[1])
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        side = max(16, int(min(grey.shape) * self.options.min_size))
        found = self.cascade.detectMultiScale(grey, scaleFactor=self.options.scale_factor,
                                              minNeighbors=self.options.min_neighbors, minSize=(side, side))
        boxes = [Box(x / scale, y / scale, w / scale, h / scale) for x, y, w, h in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)  # the largest face is the subject


class ShippedBoxes:
    def detect(self, image: np.ndarray, hint: Box | None = None) -> list[Box]:
        return [hint] if hint is not None else []


def detectors() -> list[Detector]:
    return [
        Detector(name="haar", build=HaarDetector, options=HaarOptions,
                 description="OpenCV frontal-face Haar cascade (model ships in the opencv wheel)"),
        Detector(name="boxes", build=lambda: ShippedBoxes(),
                 description="the face boxes the dataset ships (no detection)"),
    ]
