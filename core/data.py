"""What a dataset component returns: samples and splits, and the liveness score convention.

A dataset component returns `Splits`: up to three map-style datasets whose items are dicts. Image
samples hold ``image`` (a PIL RGB image) and ``label`` (int); liveness samples add ``attack_type``
("" for bona fide) and, where known, ``subject`` and ``path``. Liveness labels are `LIVE` (0) and
`SPOOF` (1). Trainers feed splits to their models through `faceauth.training.loaders`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset

from faceauth.errors import DataError
from faceauth.io.images import decode_image
from faceauth.io.video import IMAGE_SUFFIXES  # defined there, torch-free, for the deployment side

__all__ = ["LIVE", "SPOOF", "Splits", "Verification", "read_image", "IMAGE_SUFFIXES", "check_classes", "TemplateVerification",
           "live_log_odds", "dataset_root"]

LIVE, SPOOF = 0, 1


def dataset_root(value: str | Path | None, key: str = "data.root", layout: str | None = None) -> Path:
    """A dataset's root folder from its recipe value (``~`` expanded), which every loader starts from.

    A value that is empty, or not an existing folder, is one DataError line naming `key`, the path and,
    with `layout`, what the folder should hold: ``data.root: /x is not a directory (expected root/...)``.
    """
    expected = f" (expected {layout})" if layout else ""
    if value is None or not str(value).strip():
        raise DataError(f"{key}: no folder given{expected}")  # Path("") would be the working directory
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"{key}: {path} is not a directory{expected}")
    return path


def live_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """The liveness score of logits [N, C]: log P(live) / P(not live), ``logit_live - logit_spoof`` for the
    two liveness classes (it keeps its order where a float32 softmax saturates to 1.0)."""
    others = torch.cat([logits[:, :LIVE], logits[:, LIVE + 1:]], dim=1)
    rest = others[:, 0] if others.shape[1] == 1 else torch.logsumexp(others, dim=1)
    return logits[:, LIVE] - rest


@attrs.frozen
class Splits:
    """What a dataset component returns.

    `classes[i]` names label i. `more_tests` holds further named test sets measured like `test`
    (e.g. the cfp_fp and agedb_30 packs beside lfw), reported as ``test_<name>``. `info` describes
    the build in plain data (counts, skipped files; it is written to ``metrics.json``).
    """

    train: Dataset | None
    val: Dataset | None
    test: Dataset | None
    classes: tuple[str, ...] = ("live", "spoof")
    info: dict[str, Any] = attrs.field(factory=dict)
    more_tests: dict[str, Dataset] = attrs.field(factory=dict)

    @classmethod
    def concat(cls, parts: Sequence[Splits]) -> Splits:
        """Several datasets used as one: each split is the concatenation of the parts' splits."""
        first = parts[0]
        for part in parts[1:]:
            if tuple(part.classes) != tuple(first.classes):
                raise DataError(f"data: datasets with different classes cannot be joined "
                                f"({', '.join(first.classes)} vs. {', '.join(part.classes)})")

        def join(split: str) -> Dataset | None:
            present = [p.get(split) for p in parts if p.get(split) is not None]
            if any(isinstance(d, Verification) for d in present):
                raise DataError(f"data: verification protocols ({split}) cannot be joined; list one dataset")
            if not present:
                return None
            return present[0] if len(present) == 1 else JoinedDataset(present)

        more = [name for p in parts for name in p.more_tests]
        if more:
            raise DataError(f"data: further test sets ({', '.join(more)}) cannot be joined; list one dataset")
        return cls(train=join("train"), val=join("val"), test=join("test"), classes=first.classes,
                   info={"parts": [p.info for p in parts]})

    def get(self, split: str) -> Dataset | None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}")
        return getattr(self, split)


@attrs.frozen
class Verification:
    """A face-verification protocol: images, and pairs of their indices labelled same/different person.

    `images` is a dataset whose items hold ``image``; `pairs` is an (N, 2) int array of indices into
    it; `is_same` an (N,) bool array. Pairs keep the order their source lists them in (LFW's ten
    folds are contiguous), and each image is embedded once however many pairs use it.
    """

    name: str
    images: Dataset
    pairs: np.ndarray
    is_same: np.ndarray

    def __attrs_post_init__(self) -> None:
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2 or len(self.pairs) != len(self.is_same):
            raise ValueError(f"verification set {self.name!r}: pairs must be (N, 2) with one is_same per pair")


@attrs.frozen(eq=False)
class TemplateVerification:
    """A template-based 1:1 verification protocol (IJB-B / IJB-C): pairs of templates, not of images.

    A template is a set of faces of one person from several media (photos, video frames); its
    feature pools its faces' embeddings. `images` holds the faces (items with ``image``);
    `face_template[i]` is face i's template (an index into `template_ids`), `face_media[i]` its
    media id and `face_score[i]` its detector score. `pairs` is a (P, 2) array of template indices
    and `is_same` a (P,) bool array, in the order the protocol lists them. `detector_score` weights
    each face by its detector score before pooling; `norm_score` keeps each face embedding's norm
    (a quality cue) instead of normalising it first.
    """

    name: str
    images: Dataset
    face_template: np.ndarray
    face_media: np.ndarray
    face_score: np.ndarray
    template_ids: np.ndarray
    pairs: np.ndarray
    is_same: np.ndarray
    detector_score: bool = True
    norm_score: bool = True

    def __attrs_post_init__(self) -> None:
        faces = len(self.face_template)
        if len(self.face_media) != faces or len(self.face_score) != faces:
            raise ValueError(f"template set {self.name!r}: one template, media and score per face")
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2 or len(self.pairs) != len(self.is_same):
            raise ValueError(f"template set {self.name!r}: pairs must be (N, 2) with one is_same per pair")


class JoinedDataset(ConcatDataset):
    """`torch.utils.data.ConcatDataset` that keeps the parts' `labels` lists, when they all have one."""

    def __init__(self, parts: Sequence[Dataset]):
        super().__init__(parts)
        if all(hasattr(p, "labels") for p in parts):
            self.labels = [label for p in parts for label in p.labels]


def read_image(path: str | Path) -> Image.Image:
    """Decode an image file to RGB; an unreadable, corrupt or oversized file raises DataError naming it."""
    return decode_image(path)


def check_classes(split_name: str, labels: Sequence[int], classes: Sequence[str], where: str) -> None:
    """A DataError when a split lacks one of the classes (training and metrics need both)."""
    present = set(labels)
    missing = [name for index, name in enumerate(classes) if index not in present]
    if missing:
        raise DataError(f"{where}: the {split_name} split has no '{missing[0]}' samples; each split needs every class")
