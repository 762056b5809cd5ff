"""Samples, splits and the input pipeline every trainer shares.

A dataset component returns `Splits`: up to three map-style datasets whose items are dicts. Image
samples hold ``image`` (a PIL RGB image) and ``label`` (int); liveness samples add ``attack_type``
("" for bona fide) and, where known, ``subject`` and ``path``. Liveness labels are `LIVE` (0) and
`SPOOF` (1).

Randomness in augmentation is seeded per sample from (seed, epoch, position), not per worker, so a
run gives the same batches whatever the number of workers and continues identically on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Sampler

from faceauth.errors import DataError, FaceAuthError
from faceauth.images import decode_image
from faceauth.video import IMAGE_SUFFIXES  # defined there, torch-free, for the deployment side

__all__ = ["LIVE", "SPOOF", "Splits", "Verification", "read_image", "Transformed", "EpochSampler", "reraise_worker_errors",
           "IMAGE_SUFFIXES", "check_classes", "TemplateVerification"]

LIVE, SPOOF = 0, 1


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


class Transformed(Dataset):
    """Applies `transform` to a sample's ``image`` (or each of its ``frames``) under a per-sample seed.

    Items are requested as ``(index, seed)`` pairs, as `EpochSampler` yields them. `spoof_transform`,
    when given, alters the image (or, through its ``frames`` method, all frames alike) of SPOOF
    samples first: simulated attack artefacts must never touch a bona fide sample.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor],
                 spoof_transform: Any = None):
        self.dataset = dataset
        self.transform = transform
        self.spoof_transform = spoof_transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _same_draws(self, seed: int, frame: Any) -> torch.Tensor:
        # Every frame of a clip gets the same crop, flip and jitter: a flip on some frames only
        # would look like motion, which is what a temporal model learns from.
        torch.default_generator.manual_seed(seed)
        return self.transform(frame)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        sample = dict(self.dataset[index])
        # Seed only the CPU generator, and restore it after: torch.manual_seed would also seed (and,
        # in a worker, probe) every other backend, which costs more than the transform itself.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            spoof = self.spoof_transform if sample.get("label") == SPOOF else None
            if "frames" in sample:
                frames = spoof.frames(sample["frames"]) if spoof is not None else sample["frames"]
                sample["frames"] = torch.stack([self._same_draws(seed, frame) for frame in frames])
            else:
                image = spoof(sample["image"]) if spoof is not None else sample["image"]
                sample["image"] = self.transform(image)
        finally:
            generator.set_state(state)
        return sample


class EpochSampler(Sampler):
    """Yields ``(index, seed)``: a permutation fixed by (seed, epoch), or the plain order for evaluation.

    `start` skips the first positions of the epoch, which is how a run resumes mid-epoch. With
    `world_size` > 1 each rank takes every `world_size`-th position. With `weights`, an epoch draws
    `size` samples with replacement, each with probability proportional to its weight (class
    balancing).
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1,
                 weights: np.ndarray | None = None):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(self.size, size=self.size, replace=True, p=self.weights)
        else:
            order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, 2**62, size=self.size)
        if self.shuffle and self.world_size > 1:
            # Every process must take the same number of training steps: drop the uneven tail.
            usable = len(order) - len(order) % self.world_size
            order, seeds = order[:usable], seeds[:usable]
        return order[self.rank :: self.world_size], seeds[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self._order()
        for position in range(self.start, len(order)):
            yield int(order[position]), int(seeds[position])

    def __len__(self) -> int:
        size = self.size - self.size % self.world_size if self.shuffle else self.size
        return max(0, len(range(self.rank, size, self.world_size)) - self.start)


def reraise_worker_errors(batches: Iterator[Any]) -> Iterator[Any]:
    """Re-raise a faceauth error from a DataLoader worker with its own one-line message.

    PyTorch wraps worker exceptions in a multi-line message that starts with "Caught ... in
    DataLoader worker"; the user's line (the file at fault) is the last line of that text.
    """
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except FaceAuthError as exc:
            lines = str(exc).strip().splitlines()
            if len(lines) > 1 and "DataLoader worker" in lines[0]:
                message = lines[-1].split(": ", 1)[-1]
                raise type(exc)(message) from None
            raise
        yield batch


def check_classes(split_name: str, labels: Sequence[int], classes: Sequence[str], where: str) -> None:
    """A DataError when a split lacks one of the classes (training and metrics need both)."""
    present = set(labels)
    missing = [name for index, name in enumerate(classes) if index not in present]
    if missing:
        raise DataError(f"{where}: the {split_name} split has no '{missing[0]}' samples; each split needs every class")
