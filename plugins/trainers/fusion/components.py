"""The component models a fusion model decides over: declared as the trainer's model inputs, opened from the
ONNX files the runner hands over (`faceauth.training.run.Run.inputs`), scored with onnxruntime as at deployment."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from faceauth.deploy.authenticator import model_geometry, open_component
from faceauth.deploy.features import EMBEDDING, LIVENESS
from faceauth.faces import CropGeometry, crop_geometry
from faceauth.training.run import ModelInput

from faceauth.plugins.trainers.fusion.options import FusionOptions

__all__ = ["ROLES", "Component", "builtin_recipes", "component_inputs", "open_components", "records",
           "warn_other_crops"]

log = logging.getLogger(__name__)

ROLES = (EMBEDDING, LIVENESS)  # the order of the components (and of their features)


@attrs.define
class Component:
    """A frozen component model: `score(images)` maps RGB uint8 crops to unit embeddings or log-odds of live."""

    role: str
    path: Path
    sha256: str
    threshold: float | None
    score: Callable[[Sequence[np.ndarray]], np.ndarray]
    geometry: CropGeometry  # the crop geometry of its training faces (`faceauth.crop` in its metadata)


def builtin_recipes(recipe: Any, progress: bool) -> dict[str, dict[str, Any]]:
    """The recipes of the small component models trained when a recipe names none (each with its own optimiser)."""
    common = {"seed": recipe.seed, "device": recipe.device, "backbone": recipe.backbone.to_dict(),
              "scheduler": {"name": "cosine", "warmup_epochs": 0.5}, "export": {"name": "onnx"}}
    loop = {"batch_size": 32, "num_workers": 0, "progress": progress}
    return {
        EMBEDDING: {**common, "data": {"name": "demo_identities", "identities": 100, "images_per_identity": 8},
                    "loss": recipe.loss.to_dict(), "trainer": {"name": "embedding", "epochs": 5, **loop},
                    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}},
        LIVENESS: {**common, "data": {"name": "demo"}, "loss": {"name": "cross_entropy"},
                   "trainer": {"name": "classifier", "epochs": 3, **loop},
                   "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 5e-4}},
    }


def component_inputs(recipe: Any, options: FusionOptions) -> list[ModelInput]:
    """The trainer's model inputs: the models the recipe names, else what trains one of each role."""
    training = options.train_components
    files = {EMBEDDING: training.embedding_recipe, LIVENESS: training.liveness_recipe}
    overrides = {EMBEDDING: training.embedding_overrides, LIVENESS: training.liveness_overrides}
    given = {EMBEDDING: options.embedding_models, LIVENESS: options.liveness_models}

    def trains(role: str) -> dict[str, Any] | str | None:
        if given[role]:
            return None
        return str(Path(files[role]).expanduser()) if files[role] else builtin_recipes(recipe, options.progress)[role]

    return [ModelInput(name=role, task=role, key=f"trainer.{role}_models", given=tuple(given[role]),
                       recipe=trains(role), overrides=tuple(overrides[role]))
            for role in ROLES]


def open_components(inputs: dict[str, Sequence[Path]]) -> list[Component]:
    """The components from `Run.inputs`, embedding models first."""
    components = []
    for role in ROLES:
        for path in inputs.get(role, ()):
            model = open_component(path, role)
            components.append(Component(role, Path(path), model.sha256, model.threshold, model,
                                        model_geometry(model.metadata, str(path))))
    return components


def records(components: Sequence[Component]) -> list[dict[str, Any]]:
    """What the fusion model stores of its components (``faceauth.components``): files beside it and their SHA-256."""
    return [{"role": c.role, "file": c.path.name, "sha256": c.sha256, "threshold": c.threshold} for c in components]


def warn_other_crops(recipe: dict[str, Any], components: Sequence[Component]) -> list[str]:
    """Warn about (and return) the components trained on faces cropped unlike the attempts.

    Training features score every component on the attempts' crops, while deployment crops each
    model as it was trained (its ``faceauth.crop``): where the two differ, so may the fused scores.
    """
    attempts = crop_geometry(recipe) or CropGeometry()
    other = [str(c.path.name) for c in components if c.geometry != attempts]
    if other:
        log.warning("fusion: %d component model(s) were trained on other face crops than the attempts' (%s), e.g. "
                    "%s; deployment crops each model as it was trained, so its fused scores may differ from "
                    "training's (train the components on the attempts' crop geometry)", len(other),
                    attempts.to_json(), other[0])
    return other
