"""What a fusion run trains and measures on: the attempt splits, their features and the baselines fitted
before the training loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from faceauth.deploy.features import EMBEDDING, LIVENESS, feature_names
from faceauth.errors import DataError, RecipeError
from faceauth.plugins.trainers.fusion.components import Component, open_components, records, warn_other_crops
from faceauth.plugins.trainers.fusion.models import Logistic, and_thresholds
from faceauth.plugins.trainers.fusion.options import FusionOptions
from faceauth.plugins.trainers.fusion.scores import features_of, image_outputs
from faceauth.training.run import Run

__all__ = ["Prepared", "SplitData", "attempt_splits", "names_of", "prepare", "split_data"]


@attrs.define
class SplitData:
    """A split's attempts as the models see them: features [N, F], labels (1 = accept), kinds and attack types."""

    features: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    attack_types: np.ndarray


@attrs.define
class Prepared:
    """The components, the splits' features, and the baselines that need no training loop."""

    components: list[Component]
    records: list[dict[str, Any]]
    data: dict[str, SplitData]
    names: list[str]
    logistic: Logistic
    gates: list[float]  # the AND rule's threshold per component

    def extras(self, options: FusionOptions) -> dict[str, Any]:
        """What every checkpoint stores beside the weights (and the exported model's metadata reads)."""
        return {"features": self.names, "components": self.records, "num_features": len(self.names),
                "hidden": list(options.hidden), "dropout": options.dropout, "logistic": self.logistic.params,
                "and_thresholds": self.gates, "target_far": options.target_far}


def _data_section(recipe: Any) -> Any:
    """What makes the attempts' images: the data section(s) and the detector that crops them."""
    section = recipe.data
    data = [s.to_dict() for s in section] if isinstance(section, tuple) else section.to_dict()
    return {"data": data, "detector": recipe.detector.to_dict() if recipe.detector is not None else None}


def _data_name(recipe: Any) -> str:
    section = recipe.data
    return "+".join(s.name for s in section) if isinstance(section, tuple) else section.name


def attempt_splits(run: Run) -> Any:
    """The recipe's data, checked to be verification attempts with train and val splits."""
    splits = run.build("data")
    for split in ("train", "val", "test"):
        dataset = splits.get(split)
        if dataset is not None and not hasattr(dataset, "attempts"):
            raise RecipeError(f"data.name: the fusion trainer needs verification attempts (demo_attempts, "
                              f"attempt_folder); '{_data_name(run.recipe)}' gives {type(dataset).__name__}")
    for split in ("train", "val"):
        if splits.get(split) is None:
            raise DataError(f"data: the dataset has no {split} split")
    return splits


def split_data(run: Run, options: FusionOptions, dataset: Any, split: str,
               components: Sequence[Component]) -> SplitData:
    outputs = image_outputs(dataset, split, components, quality=options.quality, batch_size=options.score_batch_size,
                            progress=options.progress, data_section=_data_section(run.recipe))
    features = features_of(dataset, outputs, components, options.quality)
    return SplitData(features, np.asarray(dataset.labels, np.float32), np.asarray(dataset.kinds),
                     np.asarray(dataset.attack_types))


def names_of(components: Sequence[Component], quality: bool) -> list[str]:
    return feature_names(sum(c.role == EMBEDDING for c in components), sum(c.role == LIVENESS for c in components),
                         quality)


def prepare(run: Run, options: FusionOptions) -> Prepared:
    """The components the runner handed over, every split's features, logistic regression and AND thresholds."""
    splits = attempt_splits(run)
    components = open_components(run.inputs)
    if not getattr(splits.train, "photos", False):  # photos are cropped for each component as at deployment
        warn_other_crops(run.recipe.to_dict(), components)
    data = {split: split_data(run, options, splits.get(split), split, components)
            for split in ("train", "val", "test") if splits.get(split) is not None}
    train, val = data["train"], data["val"]
    if len(np.unique(train.labels)) < 2:
        raise DataError("data: the training attempts need both accepted and rejected attempts")
    logistic = Logistic.fit(train.features, train.labels, run.recipe.seed)
    gates = and_thresholds(val.features[:, :len(components)], val.kinds, components, options.and_thresholds)
    return Prepared(components, records(components), data, names_of(components, options.quality), logistic, gates)
