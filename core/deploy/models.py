"""One exported component model at deployment (an embedding or liveness ``.onnx``): its crop geometry, its
preprocessing and its onnxruntime session, shared by the `Authenticator`, `faceauth.deploy.liveness` and
the fusion trainer (which scores its components as deployment does); the checks that a model file is of
the expected task (`expect_model_task`) and is the one a fusion model was trained with
(`expect_same_component`).

numpy, onnxruntime, Pillow and OpenCV (face finding) only, never PyTorch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from faceauth.deploy.features import EMBEDDING, unit
from faceauth.errors import DataError, ExportError, article, quote
from faceauth.faces import CropGeometry, crop_faces, face_detector, find_face, first_face
from faceauth.io.images import decode_image
from faceauth.io.onnx import metadata_threshold, onnx_session

__all__ = [
    "FaceCrops",
    "FaceFinder",
    "ImagePreprocess",
    "Input",
    "OnnxComponent",
    "as_rgb",
    "expect_model_task",
    "expect_same_component",
    "file_sha256",
    "model_geometry",
    "open_component",
    "scale_averaged",
    "task_of",
]

MAX_INPUT_SIDE = 4096  # a model's stated input side, in pixels: more is damaged metadata, not a model
Input = Any  # a path (str or Path), a PIL image, or an HxWx3 (or HxW) uint8 RGB array


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# images ---------------------------------------------------------------------------------------------
def as_rgb(item: Input, where: str = "image") -> np.ndarray:
    """An HxWx3 uint8 RGB array from a path, a PIL image or an array; anything unreadable is a DataError."""
    if isinstance(item, (str, Path)):
        return np.asarray(decode_image(item))
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"))
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise DataError(f"{where}: expected a uint8 RGB array, got dtype {item.dtype}")
        if item.ndim == 2:
            item = np.repeat(item[..., None], 3, axis=2)
        if item.ndim != 3 or item.shape[2] not in (3, 4) or min(item.shape[:2]) < 1:
            raise DataError(f"{where}: expected an HxWx3 RGB array, got shape {item.shape}")
        return np.ascontiguousarray(item[..., :3])
    raise DataError(f"{where}: expected an image path, a PIL image or an HxWx3 uint8 array, got {type(item).__name__}")


class FaceFinder:
    """A model's face crops as it was trained to see them: the largest face found by the detector of
    its crop geometry (`faceauth.faces.face_detector`, no PyTorch), cropped by `faceauth.faces.crop_faces`.

    `FaceFinder.for_model(metadata, where)` reads the geometry a model carries (``faceauth.crop``);
    a model without one gets `CropGeometry()` (Haar, scale 1.4, 128 px). `mtcnn_weights` is the
    folder with MTCNN's .onnx files when the geometry's detector is mtcnn.
    """

    def __init__(self, geometry: CropGeometry | None = None, *, mtcnn_weights: str | Path | None = None):
        self.geometry = geometry if geometry is not None else CropGeometry()
        self.detector = face_detector(self.geometry, mtcnn_weights)

    @classmethod
    def for_model(cls, metadata: dict[str, str], where: str, *, mtcnn_weights: str | Path | None = None) -> FaceFinder:
        return cls(model_geometry(metadata, where), mtcnn_weights=mtcnn_weights)

    def crops(self, image: np.ndarray, where: str) -> list[np.ndarray]:
        """The crops of the largest face of `image` (one per scale); a DataError naming `where` without a face."""
        return crop_faces(image, find_face(image, self.detector, where), self.geometry, where)

    def crop(self, image: np.ndarray, where: str) -> np.ndarray:
        """The first scale's crop."""
        return self.crops(image, where)[0]

    def find(self, image: np.ndarray, where: str = "image") -> list[np.ndarray] | None:
        """The crops of the largest face of `image` (one per scale), or None when there is no face."""
        height, width = image.shape[:2]
        box = first_face(self.detector.detect(image), width, height)
        return None if box is None else crop_faces(image, box, self.geometry, where)


class FaceCrops:
    """Faces cropped for several models at once, each as its model was trained: one `FaceFinder` per distinct
    crop geometry (`add`), shared by the models cropped alike; a detector several geometries share runs once
    per image. Used by the `Authenticator` and by the fusion trainer on photos."""

    def __init__(self, mtcnn_weights: str | Path | None = None):
        self.mtcnn_weights = mtcnn_weights
        self.finders: dict[str, FaceFinder] = {}  # the geometry's JSON -> its finder

    def add(self, geometry: CropGeometry) -> str:
        """The key of `geometry`'s finder (its JSON), made on first use."""
        key = geometry.to_json()
        if key not in self.finders:
            self.finders[key] = FaceFinder(geometry, mtcnn_weights=self.mtcnn_weights)
        return key

    def crops(self, image: np.ndarray, where: str, *, required: bool = True) -> dict[str, list[np.ndarray] | None]:
        """Per geometry key, the crops (one per scale) of the largest face in `image`; without a face a
        DataError naming `where` (`required`), else None."""
        height, width = image.shape[:2]
        boxes: dict[str, Any] = {}
        crops: dict[str, list[np.ndarray] | None] = {}
        for key, finder in self.finders.items():
            detector = json.dumps([finder.geometry.detector, finder.geometry.detector_options], sort_keys=True)
            if detector not in boxes:
                boxes[detector] = (find_face(image, finder.detector, where) if required
                                   else first_face(finder.detector.detect(image), width, height))
            box = boxes[detector]
            crops[key] = None if box is None else crop_faces(image, box, finder.geometry, where)
        return crops


def scale_averaged(model: Callable[[Sequence[np.ndarray]], np.ndarray], role: str,
                   crops: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """`model`'s output per face, averaged over the face's crops (one per scale): unit embeddings [N, D] (the
    mean re-normalised) for an embedding model, scores [N] for a liveness model."""
    out = model([crop for per_face in crops for crop in per_face])
    bounds = np.cumsum([0] + [len(per_face) for per_face in crops])
    means = np.stack([out[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
    return unit(means) if role == EMBEDDING else means.astype(np.float32)


def model_geometry(metadata: dict[str, str], where: str) -> CropGeometry:
    """The crop geometry stored in a model's metadata (``faceauth.crop``), or the default one."""
    text = metadata.get("faceauth.crop", "")
    return CropGeometry.from_json(text, where) if text else CropGeometry()


@attrs.frozen
class ImagePreprocess:
    """What a model's metadata says about its input: resize to (H, W), scale to 0-1, (x - mean) / std, NCHW."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], where: str) -> ImagePreprocess:
        """The preprocessing a model's metadata states; anything missing, malformed or out of range is an
        ExportError naming the key (a std of 0 or a NaN mean would turn every image into NaNs)."""
        def numbers(key: str, count: int, kind: type) -> tuple:
            text = metadata.get(key)
            if text is None:
                raise ExportError(f"{where}: no {key} in the model's metadata (expected preprocess.input_size, "
                                  f"preprocess.mean, preprocess.std)")
            try:
                values = tuple(kind(v) for v in text.split(",", count)) if len(text) < 200 else ()
            except ValueError:
                values = ()
            if len(values) != count:
                raise ExportError(f"{where}: {key} in the model's metadata is {quote(text, 80)}; expected {count} "
                                  f"{'integers' if kind is int else 'numbers'} separated by commas")
            return values

        h, w = numbers("preprocess.input_size", 2, int)
        mean, std = numbers("preprocess.mean", 3, float), numbers("preprocess.std", 3, float)
        order = metadata.get("preprocess.channel_order", "RGB")
        if not (1 <= h <= MAX_INPUT_SIDE and 1 <= w <= MAX_INPUT_SIDE):
            raise ExportError(f"{where}: preprocess.input_size in the model's metadata is {h},{w}; expected sides of "
                              f"1 to {MAX_INPUT_SIDE} pixels")
        if not all(np.isfinite(mean)) or not all(np.isfinite(v) and v > 0 for v in std):
            raise ExportError(f"{where}: preprocessing in the model's metadata has mean {quote(mean)} and std "
                              f"{quote(std)}; expected finite means and positive finite stds")
        if order != "RGB":
            raise ExportError(f"{where}: preprocess.channel_order in the model's metadata is {quote(order, 40)}; "
                              f"expected 'RGB'")
        return cls((h, w), mean, std)  # type: ignore[arg-type]

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        h, w = self.input_size
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        batch = np.empty((len(images), 3, h, w), np.float32)
        for i, image in enumerate(images):
            pil = Image.fromarray(image)
            if pil.size != (w, h):  # what torchvision's Resize does to a PIL image (bilinear, PIL's antialiasing)
                pil = pil.resize((w, h), Image.BILINEAR)
            batch[i] = (np.asarray(pil, np.float32).transpose(2, 0, 1) / np.float32(255) - mean) / std
        return batch


# models -----------------------------------------------------------------------------------------------
class OnnxComponent:
    """An exported embedding or liveness model: images (uint8 RGB crops) in, unit embeddings or liveness scores
    (the model's ``score`` output: log-odds of live for models since that convention, P(live) before) out."""

    def __init__(self, path: str | Path, role: str, session: Any, metadata: dict[str, str]):
        self.path, self.role, self.session, self.metadata = Path(path), role, session, metadata
        self.preprocess = ImagePreprocess.from_metadata(metadata, str(path))
        self.threshold = metadata_threshold(metadata, path)
        inputs = session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        stated = [3, *self.preprocess.input_size]
        clips = metadata.get("faceauth.input", "").startswith("clips")  # [N, T, 3, H, W]: a temporal model
        if len(shape) != 4 + clips or any(isinstance(d, int) and d != s for d, s in zip(shape[1 + clips:], stated)):
            raise ExportError(f"{path}: the model takes input of shape {quote(shape, 80)}, but its metadata states "
                              f"[N, {'T, ' if clips else ''}{', '.join(map(str, stated))}]")
        self.input_name = inputs[0].name
        self._sha256: str | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return self._sha256

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = self.session.run(None, {self.input_name: self.preprocess(images)})[0]
        return unit(out.astype(np.float32)) if self.role == EMBEDDING else out.astype(np.float32).reshape(-1)


def task_of(metadata: dict[str, str]) -> str:
    return metadata.get("faceauth.task", "") or "unknown"


def expect_model_task(metadata: dict[str, str], task: str, where: str) -> None:
    """The one check that an exported model was made for `task` (its ``faceauth.task``), the ONNX twin of
    `faceauth.training.checkpoint.expect_task`. Otherwise one ExportError line: ``<where> is <a task> model
    (faceauth.task=...); expected <a task> model``; `where` names the file (after the recipe key that named
    it, when one did)."""
    found = task_of(metadata)
    if found != task:
        raise ExportError(f"{where} is {article(found)} model (faceauth.task={quote(found, 60)}); "
                          f"expected {article(task)} model")


def expect_same_component(path: str | Path, sha256: str, record: Mapping[str, Any]) -> None:
    """The one check that a component model is the file a fusion model was trained with: `record` is the
    fusion model's entry for it (``faceauth.components``: role, file, sha256). Otherwise one ExportError line
    naming the file and both digests."""
    expected = str(record.get("sha256"))
    if sha256 != expected:
        raise ExportError(f"{path}: not the {record.get('role')} model this fusion model was trained with "
                          f"({record.get('file')}, sha256 {expected[:12]}...; this file has "
                          f"{sha256[:12]}...)")


def open_component(path: str | Path, role: str, where: str | None = None, threads: int | None = None,
                   providers: Sequence[str] | None = None) -> OnnxComponent:
    """Load an exported model and check that it is of `role` ("embedding" or "liveness") by its faceauth.task.

    `where` names what gave the path in messages (a recipe key; None: the path). `threads` and `providers`
    are `faceauth.io.onnx.onnx_session`'s."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{where or path}: {path} not found (expected {article(role)} model exported as .onnx)")
    session = onnx_session(path, threads, providers)
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    expect_model_task(metadata, role, f"{where}: {path.name}" if where else str(path))
    return OnnxComponent(path, role, session, metadata)
