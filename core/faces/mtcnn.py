"""MTCNN face detection (three cascaded networks) with numpy and OpenCV, for any way of running the networks.

The cascade (Zhang et al., 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks"):

1. **P-Net** runs fully convolutionally on an image pyramid (each level `factor` = 0.709 times the
   previous, from the scale that makes a `min_face` face 12 pixels); every output cell whose face
   probability passes the first threshold proposes a 12x12 window (stride 2). Proposals are merged by
   NMS (IoU 0.5 per level, then 0.7 over all levels), moved by their regression and made square.
2. **R-Net** scores each proposal cropped to 24x24, keeps those over the second threshold, NMS 0.7,
   regression, square.
3. **O-Net** scores 48x48 crops, keeps those over the third threshold, gives five landmarks (left eye,
   right eye, nose, left and right mouth corner), regression, NMS 0.7; a box mostly inside or around a
   better one (over 70% of the smaller box) is dropped too, as the original cascade's last step does.

`MtcnnPipeline` does the pyramid, crops, proposals, regression and box bookkeeping; the three networks
and NMS are callables, so PyTorch (the `mtcnn` detector plugin) and onnxruntime (`MtcnnOnnx`, which
deployment uses without PyTorch) share this one implementation. Box coordinates inside the cascade
follow the original one-based convention the published weights were trained with; the returned
`faceauth.faces.Box` is in zero-based pixels like every other detector's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np

from faceauth.errors import DataError
from faceauth.faces import Box

__all__ = ["MTCNN_NETS", "MtcnnOnnx", "MtcnnPipeline", "MtcnnSettings", "nms_opencv", "onnx_files"]

#: The three networks, the crop side each sees (P-Net: any size) and the files they are kept in.
MTCNN_NETS = {"pnet": None, "rnet": 24, "onet": 48}

Stage = Callable[[np.ndarray], Sequence[np.ndarray]]  # NCHW float32 -> (P(face) [N, 2, ...], regression, ...)
Nms = Callable[[np.ndarray, np.ndarray, float], np.ndarray]  # (x1y1x2y2 [N, 4], scores [N], IoU) -> kept indices

_CHUNK = 256  # crops per R-Net / O-Net call


@attrs.frozen
class MtcnnSettings:
    """The cascade's settings: the smallest face in pixels, the pyramid factor, the three thresholds.

    Frames wider than `max_width` are downscaled first (as the Haar detector does), which bounds the
    pyramid's cost on large photos.
    """

    min_face: int = 20
    factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    max_width: int = 640

    def __attrs_post_init__(self) -> None:
        # Checked here, not only in the plugin's options: deployment builds settings from a model's metadata,
        # and a factor of 1 or more would make the image pyramid endless.
        numbers = (self.min_face, self.factor, self.max_width, *self.thresholds)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise ValueError("mtcnn settings must be finite numbers")
        if self.min_face < 1 or self.max_width < 1:
            raise ValueError(f"min_face and max_width must be at least 1 (got {self.min_face:g}, {self.max_width:g})")
        if not 0 < self.factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {self.factor:g}")
        if len(self.thresholds) != 3 or not all(0 <= t <= 1 for t in self.thresholds):
            raise ValueError("thresholds must be three numbers in [0, 1]")


def _normalise(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in about [-1, 1], as the networks were trained."""
    return ((images.astype(np.float32) - 127.5) * np.float32(0.0078125)).transpose(0, 3, 1, 2).copy()


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes (x1, y1, x2, y2, ...) grown to squares on their longer side, same centre."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray, inclusive: bool) -> np.ndarray:
    out = boxes.copy()
    extra = 1.0 if inclusive else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    out[:, :4] = boxes[:, :4] + reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return out


def _drop_nested(boxes: np.ndarray, overlap: float) -> np.ndarray:
    """Indices of `boxes` (best first) kept when each box whose intersection with a better kept box covers
    more than `overlap` of the smaller of the two is dropped: a loose box around a face, or a part of one."""
    kept: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    for i in range(len(boxes)):
        if kept:
            k = np.asarray(kept)
            iw = np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]) + 1
            ih = np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]) + 1
            inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
            if np.any(inter / np.minimum(area[k], area[i]) > overlap):
                continue
        kept.append(i)
    return np.asarray(kept, dtype=np.int64)


def _crops(image: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """Each box (one-based, inclusive corners, truncated to integers) cut from `image` with zeros
    outside it and resized to `side` x `side`: uint8 [N, side, side, 3]."""
    import cv2

    height, width = image.shape[:2]
    out = np.empty((len(boxes), side, side, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(np.int64)):
        bw, bh = max(int(x2 - x1 + 1), 1), max(int(y2 - y1 + 1), 1)
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx0, sy0 = max(x1 - 1, 0), max(y1 - 1, 0)
        sx1, sy1 = min(x2, width), min(y2, height)
        if sx1 > sx0 and sy1 > sy0:
            dx, dy = sx0 - (x1 - 1), sy0 - (y1 - 1)
            patch[dy:dy + sy1 - sy0, dx:dx + sx1 - sx0] = image[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return out


class MtcnnPipeline:
    """The MTCNN cascade around three network callables and an NMS callable (see the module docstring).

    ``pnet(x)`` returns (P(face) [N, 2, h, w], regression [N, 4, h, w]); ``rnet(x)`` returns
    (P(face) [N, 2], regression [N, 4]); ``onet(x)`` returns (P(face) [N, 2], regression [N, 4],
    landmarks [N, 10]: five x then five y, relative to the box). ``nms(boxes, scores, iou)`` returns
    the indices kept, best first.
    """

    landmarks = True

    def __init__(self, pnet: Stage, rnet: Stage, onet: Stage, nms: Nms, settings: MtcnnSettings = MtcnnSettings()):
        self.pnet, self.rnet, self.onet, self.nms, self.settings = pnet, rnet, onet, nms, settings

    def pyramid(self, height: int, width: int) -> list[float]:
        """The scales at which P-Net sees the image: a `min_face` face becomes 12 pixels, then x `factor`."""
        first = 12.0 / self.settings.min_face
        scales, side = [], min(height, width) * first
        while side >= 12:
            scales.append(first * self.settings.factor ** len(scales))
            side *= self.settings.factor
        return scales

    def _order(self, boxes: np.ndarray, iou: float) -> np.ndarray:
        """The indices of `boxes` (x1, y1, x2, y2, score, ...) that NMS keeps, best first."""
        if len(boxes) == 0:
            return np.zeros(0, np.int64)
        kept = self.nms(boxes[:, :4].astype(np.float32), boxes[:, 4].astype(np.float32), iou)
        return np.asarray(kept, dtype=np.int64).reshape(-1)

    def _keep(self, boxes: np.ndarray, iou: float) -> np.ndarray:
        return boxes[self._order(boxes, iou)]

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        import cv2

        height, width = image.shape[:2]
        found = []
        for scale in self.pyramid(height, width):
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            prob, reg = self.pnet(_normalise(level[None]))[:2]
            ys, xs = np.nonzero(prob[0, 1] >= self.settings.thresholds[0])
            if len(ys) == 0:
                continue
            cells = np.stack([xs, ys], axis=1).astype(np.float32)
            boxes = np.concatenate([np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale),
                                    prob[0, 1, ys, xs][:, None], reg[0][:, ys, xs].T], axis=1)
            found.append(self._keep(boxes, 0.5))
        if not found:
            return np.zeros((0, 9), np.float32)
        boxes = self._keep(np.concatenate(found), 0.7)
        return _square(_regress(boxes, boxes[:, 5:9], inclusive=False))

    def _refine(self, image: np.ndarray, boxes: np.ndarray, net: Stage, side: int, threshold: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        outputs = [net(_normalise(_crops(image, boxes[i:i + _CHUNK], side))) for i in range(0, len(boxes), _CHUNK)]
        prob = np.concatenate([o[0] for o in outputs])[:, 1]
        reg = np.concatenate([o[1] for o in outputs])
        marks = np.concatenate([o[2] for o in outputs]) if len(outputs[0]) > 2 else None
        keep = prob > threshold
        kept = boxes[keep].copy()
        kept[:, 4] = prob[keep]
        return kept, reg[keep], (marks[keep] if marks is not None else None)

    def detect_boxes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [N, 5] (x1, y1, x2, y2, P(face); one-based, inclusive) and landmarks [N, 5, 2] (zero-based)."""
        thresholds = self.settings.thresholds
        boxes = self._proposals(image)
        if len(boxes):
            boxes, reg, _ = self._refine(image, boxes, self.rnet, MTCNN_NETS["rnet"], thresholds[1])
            order = self._order(boxes, 0.7)
            boxes = _square(_regress(boxes[order], reg[order], inclusive=True))
        if not len(boxes):
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes, reg, marks = self._refine(image, boxes, self.onet, MTCNN_NETS["onet"], thresholds[2])
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        points = np.stack([boxes[:, 0:1] + w[:, None] * marks[:, :5] - 1,
                           boxes[:, 1:2] + h[:, None] * marks[:, 5:10] - 1], axis=2)
        boxes = _regress(boxes, reg, inclusive=True)
        order = self._order(boxes, 0.7)
        order = order[_drop_nested(boxes[order], 0.7)] if len(order) else order
        return boxes[order, :5].astype(np.float32), points[order].astype(np.float32)

    def detect(self, image: np.ndarray, hint: Box | None = None) -> list[Box]:
        """The faces of an HxWx3 uint8 RGB image with their five landmarks, largest first; `hint` is ignored."""
        import cv2

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"mtcnn: expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        scale = min(1.0, self.settings.max_width / image.shape[1])
        if scale < 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        boxes, points = self.detect_boxes(np.ascontiguousarray(image))
        faces = [Box(float(x1 - 1) / scale, float(y1 - 1) / scale, float(x2 - x1 + 1) / scale,
                     float(y2 - y1 + 1) / scale, float(p), landmarks=tuple(map(tuple, (pts / scale).tolist())))
                 for (x1, y1, x2, y2, p), pts in zip(boxes, points)]
        return sorted(faces, key=lambda b: b.w * b.h, reverse=True)


def nms_opencv(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS with OpenCV's `cv2.dnn.NMSBoxes`: indices of the kept boxes, best first."""
    import cv2

    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    rects = [(float(x1), float(y1), float(x2 - x1), float(y2 - y1)) for x1, y1, x2, y2 in boxes]
    # NMSBoxes drops scores not above its (non-negative) threshold; shifted scores keep every box.
    kept = cv2.dnn.NMSBoxes(rects, [float(s) + 1.0 for s in scores], 0.0, float(iou))
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def onnx_files(folder: str | Path) -> dict[str, Path]:
    """Where the three exported networks live in a weights folder: pnet.onnx, rnet.onnx, onet.onnx."""
    return {name: Path(folder) / f"{name}.onnx" for name in MTCNN_NETS}


class _OnnxStage:
    def __init__(self, session: object):
        self.session = session
        self.input = session.get_inputs()[0].name  # type: ignore[attr-defined]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input: x})  # type: ignore[attr-defined]


class MtcnnOnnx(MtcnnPipeline):
    """MTCNN with the three networks exported to ONNX, run by onnxruntime: no PyTorch needed.

    `folder` holds ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``, which
    ``python -m faceauth.plugins.detectors.mtcnn_export DIR`` writes from ``pnet.pt``, ``rnet.pt``
    and ``onet.pt`` in DIR.
    """

    def __init__(self, folder: str | Path, settings: MtcnnSettings = MtcnnSettings(), threads: int | None = 1):
        from faceauth.io.onnx import onnx_session

        files = onnx_files(folder)
        missing = [path.name for path in files.values() if not path.is_file()]
        if missing:
            raise DataError(f"mtcnn: {folder}: {', '.join(missing)} not found (make them from pnet.pt, rnet.pt and "
                            f"onet.pt with: python -m faceauth.plugins.detectors.mtcnn_export {folder})")
        stages = [_OnnxStage(onnx_session(files[name], threads)) for name in MTCNN_NETS]
        super().__init__(*stages, nms=nms_opencv, settings=settings)
        self.folder = Path(folder)
