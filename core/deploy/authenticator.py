"""Face authentication with exported models: one accept/reject decision from a matcher, a liveness
model and the fusion model trained over their scores (the `fusion` trainer).

Deployment code: numpy, onnxruntime, Pillow and OpenCV (face finding) only, never PyTorch::

    from faceauth.deploy.authenticator import Authenticator

    auth = Authenticator.from_dir("runs/fusion_mlp-20261127-101500")   # the fusion run's directory
    decision = auth.verify(["alice_1.jpg", "alice_2.jpg"], "probe.jpg")
    decision.accept, decision.score, decision.match, decision.liveness

A models directory holds the fusion model (``model.onnx``, ``faceauth.task`` = "fusion") and the
component models its metadata lists (``faceauth.components``: file names relative to it and their
SHA-256), which is what a fusion run leaves in its run directory. A component file that is missing
or differs from the one the fusion model was trained with is an error: the fused decision is only
valid for the scores it was trained on.

How an attempt becomes a decision (the fusion trainer computes its features with the same code):

1. every image is read as RGB; with ``detect=True`` each component model's face is found and cropped
   as that model was trained: its crop geometry (``faceauth.crop`` in its metadata: detector, box
   scale(s), size, five-point alignment; `faceauth.faces.CropGeometry`) picks the detector (Haar, or
   MTCNN on onnxruntime) and the crop; the largest face counts; a model without one gets the default
   geometry (Haar, scale 1.4, 128 px); several scales give one crop each, whose outputs are averaged;
   ``detect=False`` takes the images as face crops already;
2. each component model prepares the crop as its metadata says (``preprocess.input_size``,
   ``mean``, ``std`` in 0-1 units, RGB, NCHW; bilinear resize, as training's evaluation transform);
3. the attempt's features, in the order of the fusion model's ``faceauth.features``
   (`faceauth.deploy.features`: match scores against the enrolment template, liveness scores, the
   probe's quality);
4. the fusion model maps the features to P(accept); accept when ``score >= threshold`` (the
   threshold chosen on validation, stored in the fusion model).

A probe given as several frames is scored frame by frame and its features averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

from faceauth.deploy.features import (
    EMBEDDING,
    LIVENESS,
    QUALITY_FEATURES,
    attempt_features,
    feature_names,
    match_scores,
    quality_features,
    template,
)
from faceauth.deploy.models import (
    FaceCrops,
    Input,
    OnnxComponent,
    as_rgb,
    expect_model_task,
    expect_same_component,
    model_geometry,
    open_component,
    scale_averaged,
    task_of,
)
from faceauth.errors import DataError, ExportError, quote
from faceauth.io.onnx import decision_threshold, metadata_json, metadata_threshold, onnx_session

__all__ = ["FUSION", "Authenticator", "Decision", "Template"]

FUSION = "fusion"


def _name(item: Input, fallback: str) -> str:
    return str(item) if isinstance(item, (str, Path)) else fallback


# decisions --------------------------------------------------------------------------------------------
@attrs.frozen
class Template:
    """An enrolled person: one unit template embedding per embedding model, from `images` enrolment images."""

    embeddings: tuple[np.ndarray, ...]
    images: int


@attrs.frozen
class Decision:
    """One verification attempt's outcome.

    `score` is the fused P(accept) and `accept` is ``score >= threshold``. `match` and `liveness`
    are the component scores (averaged when there are several models; each model's score is in
    `components`, keyed by file name); `features` is the fusion model's input by name.
    """

    accept: bool
    score: float
    threshold: float
    match: float
    liveness: float
    components: dict[str, float]
    features: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _components_from(metadata: dict[str, str], where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The fusion model's component records and feature names, each checked: a record is
    ``{"role": "embedding"|"liveness", "file": a name in the models directory, "sha256": 64 hex digits}``."""
    components = metadata_json(metadata, "faceauth.components", where, list)
    features = metadata_json(metadata, "faceauth.features", where, list)
    for index, record in enumerate(components):
        file = record.get("file") if isinstance(record, dict) else None
        sha = record.get("sha256") if isinstance(record, dict) else None
        problem = (
            "is not a mapping" if not isinstance(record, dict)
            else f"has role {quote(record.get('role'), 40)}, not 'embedding' or 'liveness'"
            if record.get("role") not in (EMBEDDING, LIVENESS)
            else f"has file {quote(file, 80)}, not a file name in the models directory"
            if not isinstance(file, str) or not file or Path(file).name != file or file in (".", "..")
            else f"has sha256 {quote(sha, 80)}, not 64 hexadecimal digits"
            if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha))
            else None)
        if problem:
            raise ExportError(f"{where}: faceauth.components[{index}] in the model's metadata {problem}")
    if not all(isinstance(name, str) for name in features):
        raise ExportError(f"{where}: faceauth.features in the model's metadata is {quote(features, 80)}; "
                          f"expected a list of feature names")
    return components, features


class Authenticator:
    """Accept or reject a probe against enrolment images with exported component and fusion models.

    `fusion` is the fusion model (``.onnx``). `embedding` / `liveness` (lists of ``.onnx`` files)
    default to the files its metadata lists, next to it; explicit files must be the same models
    (SHA-256 checked). `threshold` replaces the stored decision threshold. `detect`: find and crop
    the face in each image as each model's crop geometry says (largest face) or take the images as
    crops already. `mtcnn_weights`: the folder of MTCNN's .onnx files, for models trained on MTCNN
    crops (default: ``$FACEAUTH_MTCNN_WEIGHTS``, else the folder recorded at training).
    `threads`: onnxruntime's intra-op threads per model (None: its default, one per core); `providers`:
    its execution providers in order (None: the CPU; see `faceauth.io.onnx.onnx_session`).
    """

    def __init__(self, fusion: str | Path, embedding: Sequence[str | Path] | None = None,
                 liveness: Sequence[str | Path] | None = None, *, detect: bool = True, threshold: float | None = None,
                 mtcnn_weights: str | Path | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None):
        fusion = Path(fusion)
        if not fusion.is_file():
            raise ExportError(f"{fusion}: fusion model not found")
        self.session = onnx_session(fusion, threads, providers)
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        expect_model_task(metadata, FUSION, str(fusion))
        listed, self.feature_names = _components_from(metadata, str(fusion))
        self.path, self.metadata = fusion, metadata
        given = {EMBEDDING: embedding, LIVENESS: liveness}
        self.models: dict[str, list[OnnxComponent]] = {}
        for role in (EMBEDDING, LIVENESS):
            expected = [c for c in listed if c["role"] == role]
            paths = [fusion.parent / c["file"] for c in expected] if given[role] is None else list(given[role])
            if len(paths) != len(expected):
                raise ExportError(f"{fusion}: trained with {len(expected)} {role} model(s), given {len(paths)}")
            self.models[role] = [open_component(p, role, threads=threads, providers=providers) for p in paths]
            for model, record in zip(self.models[role], expected):
                expect_same_component(model.path, model.sha256, record)
        self.quality = all(name in self.feature_names for name in QUALITY_FEATURES)
        expected_names = feature_names(len(self.models[EMBEDDING]), len(self.models[LIVENESS]), self.quality)
        if expected_names != self.feature_names:
            raise ExportError(f"{fusion}: unsupported feature order {quote(self.feature_names)} "
                              f"(expected {quote(expected_names)})")
        stored = metadata_threshold(metadata, fusion)
        if threshold is None and stored is None:
            raise ExportError(f"{fusion}: no decision threshold in the metadata; give threshold=...")
        self.threshold = decision_threshold(threshold, "threshold") if threshold is not None else stored
        shape = list(self.session.get_inputs()[0].shape)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(self.feature_names)):
            raise ExportError(f"{fusion}: the model takes input of shape {quote(shape, 80)}, but its metadata lists "
                              f"{len(self.feature_names)} features")
        # The crop geometries in use: the models', and the fusion model's own for the quality features;
        # "" stands for the images themselves (detect=False).
        self.face_crops = FaceCrops(mtcnn_weights)
        self.crop_keys: dict[int, str] = {}  # id(model) -> its geometry's key
        self.quality_key = ""
        if detect:
            for model in (m for role in (EMBEDDING, LIVENESS) for m in self.models[role]):
                self.crop_keys[id(model)] = self.face_crops.add(model_geometry(model.metadata, str(model.path)))
            if self.quality:
                self.quality_key = self.face_crops.add(model_geometry(metadata, str(fusion)))
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def from_dir(cls, models_dir: str | Path, **options: Any) -> Authenticator:
        """The fusion model in `models_dir`: ``model.onnx`` or ``fusion.onnx``, else its one fusion .onnx."""
        folder = Path(models_dir)
        if not folder.is_dir():
            raise ExportError(f"{folder}: models directory not found")
        def is_fusion(path: Path) -> bool:
            return task_of(dict(onnx_session(path).get_modelmeta().custom_metadata_map)) == FUSION

        for name in ("model.onnx", "fusion.onnx"):
            if (folder / name).is_file() and is_fusion(folder / name):
                return cls(folder / name, **options)
        found = [path for path in sorted(folder.glob("*.onnx")) if is_fusion(path)]
        if len(found) != 1:
            names = ", ".join(path.name for path in found)
            what = f"{len(found)} fusion models ({names})" if found else "no fusion model"
            raise ExportError(f"{folder}: {what}; expected one .onnx with faceauth.task=fusion "
                              f"(a fusion run's directory)")
        return cls(found[0], **options)

    # steps ------------------------------------------------------------------------------------------
    def faces(self, items: Sequence[Input], what: str) -> list[dict[str, list[np.ndarray]]]:
        """Per item, its face crops under each crop geometry in use (keyed by the geometry's JSON; one crop
        per scale); with detect=False the images themselves, under the key "". A detector shared by
        several geometries runs once per image."""
        if isinstance(items, (str, Path, Image.Image, np.ndarray)):
            items = [items]
        items = list(items)
        if not items:
            raise DataError(f"{what}: no images given")
        faces = []
        for index, item in enumerate(items):
            where = _name(item, f"{what}[{index}]")
            image = as_rgb(item, where)
            faces.append(self.face_crops.crops(image, where) if self.face_crops.finders else {"": [image]})
        return faces

    def _outputs(self, model: OnnxComponent, faces: list[dict[str, list[np.ndarray]]]) -> np.ndarray:
        """`model`'s output per item: unit embeddings [N, D] or scores [N], averaged over the crop scales."""
        return scale_averaged(model, model.role, [face[self.crop_keys.get(id(model), "")] for face in faces])

    def enroll(self, images: Input | Sequence[Input]) -> Template:
        """The template of one person from one or more enrolment images."""
        faces = self.faces(images, "enrolled")
        return Template(tuple(template(self._outputs(model, faces)) for model in self.models[EMBEDDING]), len(faces))

    def features(self, enrolled: Template, probe: Input | Sequence[Input]) -> np.ndarray:
        """The fusion model's input for one attempt: [F] float32, in `feature_names` order."""
        faces = self.faces(probe, "probe")
        matches = [match_scores(t, self._outputs(model, faces))
                   for t, model in zip(enrolled.embeddings, self.models[EMBEDDING])]
        liveness = [self._outputs(model, faces) for model in self.models[LIVENESS]]
        quality = np.stack([quality_features(f[self.quality_key][0]) for f in faces]) if self.quality else None
        return attempt_features(matches, liveness, quality).mean(axis=0).astype(np.float32)

    def score(self, features: np.ndarray) -> np.ndarray:
        """P(accept) of feature rows [N, F]."""
        return self.session.run(None, {self.input_name: np.atleast_2d(features).astype(np.float32)})[0].reshape(-1)

    def verify(self, enrolled: Template | Input | Sequence[Input], probe: Input | Sequence[Input]) -> Decision:
        """Accept or reject `probe` (an image, or a list of frames of one presentation) against `enrolled`."""
        x = self.features(enrolled if isinstance(enrolled, Template) else self.enroll(enrolled), probe)
        score = float(self.score(x)[0])
        named = dict(zip(self.feature_names, (float(v) for v in x)))
        components = {}
        for role, prefix in ((EMBEDDING, "match"), (LIVENESS, "liveness")):
            for i, model in enumerate(self.models[role]):
                components[model.path.name] = named[f"{prefix}/{i}"]
        match = [named[f"match/{i}"] for i in range(len(self.models[EMBEDDING]))]
        live = [named[f"liveness/{i}"] for i in range(len(self.models[LIVENESS]))]
        return Decision(accept=score >= self.threshold, score=score, threshold=self.threshold,
                        match=float(np.mean(match)) if match else float("nan"),
                        liveness=float(np.mean(live)) if live else float("nan"),
                        components=components, features=named)
