"""The fusion trainer's options (``trainer:`` in a recipe). The optimiser and its schedule are the recipe's
``optimizer`` and ``scheduler`` sections, as for every trainer."""

from __future__ import annotations

from typing import Any, Literal

import attrs

import faceauth
from faceauth.errors import quote
from faceauth.training.loop import LoopOptions

__all__ = ["ComponentTraining", "FusionOptions"]


@attrs.frozen
class ComponentTraining:
    """What trains the component models a recipe does not name (the runner trains them, once per setting).

    By default the built-in recipes ``fusion_embedding_component`` (`embedding` trainer on
    `demo_identities`) and ``fusion_liveness_component`` (`classifier` trainer on the `demo` set), each
    with its own optimizer and schedule, given the fusion recipe's `seed`, `device` and `backbone` (the
    embedding one also its `loss`). `*_recipe` names a recipe file to use as it is instead; `*_overrides`
    are applied to either, as on the faceauth-run command line.
    """

    embedding_recipe: str | None = None
    liveness_recipe: str | None = None
    embedding_overrides: list[str] = attrs.field(factory=list)
    liveness_overrides: list[str] = attrs.field(factory=list)


def _layer_sizes(instance: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if any(size <= 0 for size in value):
        raise ValueError(f"{attribute.name}: expected positive layer sizes, got {value!r}")


def _unused(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """The loop options a small MLP on feature rows in memory has no use for: only their fusion default."""
    if value != attribute.default:
        raise ValueError(f"{attribute.name}: the fusion trainer fits a small MLP on feature rows in memory, in full "
                         f"precision, and takes no {attribute.name} (leave it out; got {quote(value, 40)})")


@attrs.frozen
class FusionOptions(LoopOptions):
    """The loop's options (`faceauth.training.loop.LoopOptions`: ``epochs``, ``batch_size``, ``max_steps``,
    ``grad_clip``, ``log_every``, ``progress``) with fusion's defaults; the image-pipeline ones
    (``num_workers``, ``amp``, ``amp_dtype``, ``compile``, ``channels_last``) are rejected in one line."""

    epochs: int = attrs.field(default=150, validator=faceauth.schema.positive)
    batch_size: int = attrs.field(default=64, validator=faceauth.schema.positive)
    num_workers: int = attrs.field(default=0, validator=_unused)
    amp: bool = attrs.field(default=False, validator=_unused)
    amp_dtype: Literal["auto", "float16", "bfloat16"] = attrs.field(default="auto", validator=_unused)
    compile: bool = attrs.field(default=False, validator=_unused)
    channels_last: bool = attrs.field(default=False, validator=_unused)
    embedding_models: list[str] = attrs.field(factory=list)  # .onnx, checkpoints or run directories; several: an ensemble
    liveness_models: list[str] = attrs.field(factory=list)
    quality: bool = True  # the probe's sharpness and brightness as features
    hidden: list[int] = attrs.field(factory=lambda: [16, 16], validator=_layer_sizes)  # [] : a linear model
    dropout: float = attrs.field(default=0.1, validator=faceauth.schema.fraction)
    target_far: float = attrs.field(default=0.01, validator=faceauth.schema.fraction)
    and_thresholds: Literal["val", "model"] = "val"
    score_batch_size: int = attrs.field(default=32, validator=faceauth.schema.positive)
    train_components: ComponentTraining = ComponentTraining()
