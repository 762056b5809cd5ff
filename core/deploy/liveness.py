"""Scoring images, folders and videos with an exported liveness model: `Liveness` and ``faceauth-predict``.

Deployment code: numpy, onnxruntime, Pillow and OpenCV only, never PyTorch::

    from faceauth.deploy.liveness import Liveness

    model = Liveness("runs/liveness_resnet18-20261204-101500/model.onnx")
    for row in model.predict("photos/"):            # an image, a video, or a folder of them
        row.path, row.face, row.score, row.live

Faces are found and cropped as `faceauth.deploy.models.FaceFinder` finds them for the model: by the
crop geometry it was trained with (``faceauth.crop``: detector, scales, size, alignment), the
scores of several scales averaged (``detect=False`` takes the images as face crops already), and
prepared as the model's metadata says. ``score`` is
the model's ``score`` output (its meaning is in the metadata's ``faceauth.score``); a
presentation is live when ``score >= threshold``, the threshold stored in the model
(``faceauth.threshold``) unless one is given.

A video is scored as the model was evaluated: a frame model scores the frames its recipe samples
(``frames_per_video`` spread evenly, or every ``frame_stride``-th) and a clip model the clips
(``clip_length``, ``clip_stride``, ``clips_per_video``); the video's score is the mean over the
frames or clips with a face. `faceauth.io.video` does the sampling for training and here alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from faceauth.deploy.features import LIVENESS
from faceauth.deploy.models import FaceFinder, Input, as_rgb, open_component
from faceauth.errors import DataError, ExportError, quote
from faceauth.io import video as fa_video
from faceauth.io.onnx import decision_threshold

__all__ = ["Liveness", "Prediction", "inputs_under"]

NO_FACE = "no face"


@attrs.frozen
class Prediction:
    """One input's outcome: `score` is None and `decision` "no face" when no face was found.

    `frames` counts the frames (or clips, for a clip model) that were scored: 1 for an image.
    """

    path: str
    face: bool
    score: float | None
    decision: str  # "live", "spoof" or "no face"
    frames: int

    @property
    def live(self) -> bool:
        return self.decision == "live"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def inputs_under(path: str | Path) -> list[Path]:
    """An image or video file itself, or the images and videos below a folder (any depth, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    suffixes = fa_video.IMAGE_SUFFIXES + fa_video.VIDEO_SUFFIXES
    found = fa_video.files_under(path, suffixes)
    if not found:
        raise DataError(f"{path}: no images or videos in this folder (expected files ending in "
                        f"{', '.join(suffixes)})")
    return found


def _sampling(metadata: dict[str, str], where: str) -> dict[str, Any]:
    """How the model's recipe sampled videos: frames_per_video/frame_stride, or the clip settings."""
    try:
        recipe = json.loads(metadata.get("faceauth.recipe", "{}"))
    except (json.JSONDecodeError, RecursionError):
        recipe = {}
    recipe = recipe if isinstance(recipe, dict) else {}
    data = recipe.get("data") or {}
    data = data[0] if isinstance(data, list) and data else data
    data = data if isinstance(data, dict) else {}
    backbone = recipe.get("backbone") if isinstance(recipe.get("backbone"), dict) else {}
    sampling = {"frames_per_video": data.get("frames_per_video") or 10, "frame_stride": data.get("frame_stride"),
                "clip_length": data.get("clip_length") or backbone.get("clip_length") or 8,
                "clip_stride": data.get("clip_stride"), "clips_per_video": data.get("clips_per_video") or 1}
    for key, value in sampling.items():  # damaged metadata must not become a huge or nonsensical read
        if not (value is None and key in ("frame_stride", "clip_stride")) and not (
                isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100_000):
            raise ExportError(f"{where}: faceauth.recipe in the model's metadata: data.{key} is {quote(value, 60)}; "
                              f"expected a whole number from 1 to 100000")
    return sampling


class Liveness:
    """An exported liveness model (``faceauth.task`` = "liveness") scoring images, videos and folders.

    `threshold` replaces the stored one. `detect`: find and crop the face in each image or frame
    (or take them as face crops already); `mtcnn_weights`: the folder of MTCNN's .onnx files for a
    model trained on MTCNN crops (see `faceauth.faces.face_detector`). `providers` and `threads` are
    `faceauth.io.onnx.onnx_session`'s (default: the CPU, onnxruntime's thread count). `batch_size`
    images are scored per onnxruntime call.
    """

    def __init__(self, model: str | Path, *, threshold: float | None = None, detect: bool = True,
                 mtcnn_weights: str | Path | None = None, providers: Sequence[str] | None = None,
                 threads: int | None = None, batch_size: int = 32):
        self.model = open_component(model, LIVENESS, providers=providers, threads=threads)
        self.path, self.metadata = self.model.path, self.model.metadata
        if threshold is None:
            threshold = self.model.threshold
            if threshold is None:
                raise ExportError(f"{self.path}: no decision threshold in the metadata (faceauth.threshold); "
                                  f"give threshold=... (--threshold)")
        self.threshold = decision_threshold(threshold, "threshold")
        self.clips = self.metadata.get("faceauth.input", "").startswith("clips")
        self.sampling = _sampling(self.metadata, str(self.path))
        self.finder = FaceFinder.for_model(self.metadata, str(self.path), mtcnn_weights=mtcnn_weights) if detect else None
        self.batch_size = max(1, int(batch_size))

    # scoring -----------------------------------------------------------------------------------------
    def face(self, image: np.ndarray, where: str = "image") -> list[np.ndarray] | None:
        """The face crops the model scores (one per scale; the image itself with detect=False), or None."""
        return self.finder.find(image, where) if self.finder is not None else [image]

    def score_faces(self, faces: Sequence[list[np.ndarray]]) -> np.ndarray:
        """Scores of faces [N] (a frame model), or of one clip of T faces [1] (a clip model), each the
        mean over the face's crop scales."""
        scales = len(faces[0])
        if self.clips:
            batch = np.stack([self.model.preprocess([face[s] for face in faces]) for s in range(scales)])
            out = self.model.session.run(None, {self.model.input_name: batch})[0].astype(np.float32).reshape(-1)
            return np.array([out.mean()], np.float32)
        out = self.model([crop for face in faces for crop in face])
        return out.reshape(len(faces), scales).mean(axis=1)

    def _row(self, path: str, score: float | None, frames: int) -> Prediction:
        if score is None:
            return Prediction(path, False, None, NO_FACE, frames)
        return Prediction(path, True, score, "live" if score >= self.threshold else "spoof", frames)

    def predict_images(self, items: Sequence[Input]) -> Iterator[Prediction]:
        """One prediction per image (a path, a PIL image or an RGB array), scored `batch_size` at a time."""
        if self.clips and items:
            raise DataError(f"{_label(items[0], 0)}: {self.path.name} scores clips of "
                            f"frames (faceauth.input); give videos")
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            faces = [self.face(as_rgb(item, _label(item, start + i)), _label(item, start + i))
                     for i, item in enumerate(chunk)]
            found = [face for face in faces if face is not None]
            scores = iter(self.score_faces(found).tolist() if found else [])
            for i, (item, face) in enumerate(zip(chunk, faces)):
                yield self._row(_label(item, start + i), next(scores) if face is not None else None, 1)

    def predict_video(self, path: str | Path) -> Prediction:
        """The video's score: the mean of its sampled frames' (or clips') scores, over those with a face."""
        total = fa_video.frame_count(path)
        s = self.sampling
        if self.clips:
            length, stride = s["clip_length"], s["clip_stride"]
            groups = fa_video.clip_indices(total, length, stride, s["clips_per_video"]) or [
                fa_video.padded_clip(total, length, stride)]
        else:
            groups = [[i] for i in fa_video.sample_indices(total, s["frames_per_video"], s["frame_stride"])]
        wanted = sorted({i for group in groups for i in group})
        faces = dict(zip(wanted, (self.face(frame, f"{path} frame {i}")
                                  for i, frame in zip(wanted, fa_video.read_frames(path, wanted)))))
        usable = [[faces[i] for i in group] for group in groups if all(faces[i] is not None for i in group)]
        if not usable:
            return self._row(str(path), None, 0)
        if self.clips:
            scores = np.concatenate([self.score_faces(group) for group in usable])
        else:
            scores = self.score_faces([group[0] for group in usable])
        return self._row(str(path), float(np.mean(scores)), len(usable))

    def predict(self, source: str | Path | Input) -> Iterator[Prediction]:
        """Predictions for an image, a video, or every image and video below a folder (in path order)."""
        if not isinstance(source, (str, Path)):
            yield from self.predict_images([source])
            return
        images: list[Path] = []
        for path in inputs_under(source):
            if path.suffix.lower() in fa_video.VIDEO_SUFFIXES:
                yield from self.predict_images(images)
                images = []
                yield self.predict_video(path)
            else:
                images.append(path)
        yield from self.predict_images(images)


def _label(item: Input, index: int) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"image[{index}]"
