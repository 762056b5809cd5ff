"""Softmax cross-entropy on logits, with optional class weights and label smoothing."""

from __future__ import annotations

import attrs
import torch

import faceauth
from faceauth.errors import RecipeError


@attrs.frozen
class CrossEntropyOptions:
    class_weights: list[float] | None = None
    label_smoothing: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)


def build(options: CrossEntropyOptions, num_classes: int, num_features: int = 0) -> torch.nn.Module:
    weight = None
    if options.class_weights is not None:
        if len(options.class_weights) != num_classes or any(w <= 0 for w in options.class_weights):
            raise RecipeError(
                f"loss.class_weights: expected {num_classes} positive numbers (one per class), got {options.class_weights}"
            )
        weight = torch.tensor(options.class_weights, dtype=torch.float32)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=options.label_smoothing)
