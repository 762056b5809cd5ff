"""The fusion trainer's options (``trainer:`` in a recipe). The optimiser and its schedule are the recipe's
``optimizer`` and ``scheduler`` sections, as for every trainer."""

from __future__ import annotations

from typing import Any, Literal

import attrs

import faceauth
from faceauth.training.loop import LoopOptions

__all__ = ["ComponentTraining", "FusionOptions"]


@attrs.frozen
class ComponentTraining:
    """What trains the component models a recipe does not name (the runner trains them, once per setting).

    By default an embedding model (`embedding` trainer on `demo_identities`) and a liveness model
    (`classifier` trainer on the `demo` set), both with the fusion recipe's `backbone`, the embedding
    one with its `loss`. `*_recipe` names a recipe file to use instead; `*_overrides` are applied to
    either, as on the faceauth-run command line.
    """

    embedding_recipe: str | None = None
    liveness_recipe: str | None = None
    embedding_overrides: list[str] = attrs.field(factory=list)
    liveness_overrides: list[str] = attrs.field(factory=list)


def _layer_sizes(instance: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if any(size <= 0 for size in value):
        raise ValueError(f"{attribute.name}: expected positive layer sizes, got {value!r}")


@attrs.frozen
class FusionOptions:
    embedding_models: list[str] = attrs.field(factory=list)  # .onnx, checkpoints or run directories; several: an ensemble
    liveness_models: list[str] = attrs.field(factory=list)
    quality: bool = True  # the probe's sharpness and brightness as features
    hidden: list[int] = attrs.field(factory=lambda: [16, 16], validator=_layer_sizes)  # [] : a linear model
    dropout: float = attrs.field(default=0.1, validator=faceauth.schema.fraction)
    epochs: int = attrs.field(default=150, validator=faceauth.schema.positive)
    batch_size: int = attrs.field(default=64, validator=faceauth.schema.positive)
    max_steps: int | None = attrs.field(default=None, validator=faceauth.schema.positive)
    target_far: float = attrs.field(default=0.01, validator=faceauth.schema.fraction)
    and_thresholds: Literal["val", "model"] = "val"
    score_batch_size: int = attrs.field(default=32, validator=faceauth.schema.positive)
    progress: bool = True
    train_components: ComponentTraining = ComponentTraining()

    def loop_options(self) -> LoopOptions:
        """The training loop's settings: a few features per attempt train on the CPU in full precision."""
        return LoopOptions(epochs=self.epochs, batch_size=self.batch_size, num_workers=0, max_steps=self.max_steps,
                           amp=False, channels_last=False, progress=self.progress)
