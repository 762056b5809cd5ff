"""Face detectors that need no downloaded model.

- `haar`: OpenCV's frontal-face Haar cascade, whose XML file ships inside the opencv-python 4.x
  wheel. Fast and dependency-free, but weak on rotated or small faces: a plugin can register a
  stronger detector (YuNet, RetinaFace, MTCNN from a local model file) by name.
- `boxes`: the boxes a dataset ships (CelebA-Spoof `_BB.txt`, Replay-Attack `face-locations/`),
  passed through unchanged; a frame without a box has no face.
"""

from __future__ import annotations

import attrs
import numpy as np

import faceauth
from faceauth.errors import DataError, PluginError
from faceauth.faces import Box, HaarCascade


@attrs.frozen
class HaarOptions:
    scale_factor: float = attrs.field(default=1.1, validator=faceauth.schema.positive)
    min_neighbors: int = attrs.field(default=5, validator=faceauth.schema.non_negative)
    min_size: float = attrs.field(default=0.1, validator=faceauth.schema.fraction)  # of the shorter image side
    max_width: int = attrs.field(default=640, validator=faceauth.schema.positive)  # larger frames are downscaled first


class HaarDetector(HaarCascade):
    """The `haar` detector: `faceauth.faces.HaarCascade` with the recipe's options."""

    def __init__(self, options: HaarOptions):
        try:
            super().__init__(**attrs.asdict(options))
        except DataError as exc:
            raise PluginError(f"detector 'haar': {exc}") from None
        self.options = options


class ShippedBoxes:
    def detect(self, image: np.ndarray, hint: Box | None = None) -> list[Box]:
        return [hint] if hint is not None else []
