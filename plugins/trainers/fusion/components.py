"""The component models a fusion model decides over: declared as the trainer's model inputs, opened from the
ONNX files the runner hands over (`faceauth.training.run.Run.inputs`), scored with onnxruntime as at deployment."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from faceauth.deploy.features import EMBEDDING, LIVENESS
from faceauth.deploy.models import model_geometry, open_component
from faceauth.faces import CropGeometry, crop_geometry
from faceauth.plugins.trainers.fusion.options import FusionOptions
from faceauth.training.run import ModelInput

__all__ = ["COMPONENT_RECIPES", "ROLES", "Component", "builtin_overrides", "component_inputs", "open_components",
           "records", "warn_other_crops"]

log = logging.getLogger(__name__)

ROLES = (EMBEDDING, LIVENESS)  # the order of the components (and of their features)
# The built-in recipes (package data, `faceauth-run --list`) that train a component model a recipe names none of
COMPONENT_RECIPES = {EMBEDDING: "fusion_embedding_component", LIVENESS: "fusion_liveness_component"}


@attrs.define
class Component:
    """A frozen component model: `score(images)` maps RGB uint8 crops to unit embeddings or log-odds of live."""

    role: str
    path: Path
    sha256: str
    threshold: float | None
    score: Callable[[Sequence[np.ndarray]], np.ndarray]
    geometry: CropGeometry  # the crop geometry of its training faces (`faceauth.crop` in its metadata)


def builtin_overrides(recipe: Any, role: str, progress: bool) -> list[str]:
    """What the fusion recipe sets in its `COMPONENT_RECIPES`: its seed, device and backbone (and, for the
    embedding model, its loss), and the progress bars."""
    sections = {"backbone": recipe.backbone.to_dict(), **({"loss": recipe.loss.to_dict()} if role == EMBEDDING else {})}
    return [f"seed={recipe.seed}", f"device={json.dumps(recipe.device)}",
            *(f"{key}={json.dumps(value)}" for key, value in sections.items()), f"trainer.progress={json.dumps(progress)}"]


def component_inputs(recipe: Any, options: FusionOptions) -> list[ModelInput]:
    """The trainer's model inputs: the models the recipe names, else what trains one of each role (the recipe
    file ``trainer.train_components`` names, else the built-in one with `builtin_overrides`; the recipe's
    ``*_overrides`` on top)."""
    training = options.train_components
    files = {EMBEDDING: training.embedding_recipe, LIVENESS: training.liveness_recipe}
    extra = {EMBEDDING: training.embedding_overrides, LIVENESS: training.liveness_overrides}
    given = {EMBEDDING: options.embedding_models, LIVENESS: options.liveness_models}
    inputs = []
    for role in ROLES:
        trains, overrides = None, []
        if not given[role] and files[role]:
            trains = str(Path(files[role]).expanduser())
        elif not given[role]:
            trains, overrides = COMPONENT_RECIPES[role], builtin_overrides(recipe, role, options.progress)
        inputs.append(ModelInput(name=role, task=role, key=f"trainer.{role}_models", given=tuple(given[role]),
                                 recipe=trains, overrides=(*overrides, *extra[role])))
    return inputs


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

    Attempts that are face crops already are scored as they are by every component, while deployment
    on photos crops each model as it was trained (its ``faceauth.crop``): where the two differ, so may
    the fused scores. (Attempts given as photos, with a detector, are cropped for each component.)
    """
    attempts = crop_geometry(recipe) or CropGeometry()
    other = [str(c.path.name) for c in components if c.geometry != attempts]
    if other:
        log.warning("fusion: %d component model(s) were trained on other face crops than the attempts' (%s), e.g. "
                    "%s; deployment crops each model as it was trained, so its fused scores may differ from "
                    "training's (give the attempts as photos with a detector, or train the components on the "
                    "attempts' crop geometry)", len(other),
                    attempts.to_json(), other[0])
    return other
