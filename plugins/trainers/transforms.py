"""Image transforms of the built-in trainers: augmentation for training, plain resizing for evaluation."""

from __future__ import annotations

import attrs
import torch
from torchvision.transforms import v2

import faceauth
from faceauth.components import Preprocess


@attrs.frozen
class AugmentOptions:
    hflip: bool = True
    crop_scale: float = attrs.field(default=0.8, validator=faceauth.schema.fraction)  # 1.0: no random crop
    rotation: float = attrs.field(default=8.0, validator=faceauth.schema.non_negative)  # degrees
    color_jitter: float = attrs.field(default=0.15, validator=faceauth.schema.fraction)


def _normalise(preprocess: Preprocess) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(preprocess.mean, preprocess.std)]


def eval_transform(preprocess: Preprocess) -> v2.Compose:
    return v2.Compose([v2.Resize(list(preprocess.input_size), antialias=True), *_normalise(preprocess)])


def train_transform(preprocess: Preprocess, augment: AugmentOptions) -> v2.Compose:
    steps: list[v2.Transform] = []
    if augment.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(list(preprocess.input_size), scale=(augment.crop_scale, 1.0),
                                          ratio=(0.9, 1.1), antialias=True))
    else:
        steps.append(v2.Resize(list(preprocess.input_size), antialias=True))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.rotation > 0:
        steps.append(v2.RandomRotation(augment.rotation))
    if augment.color_jitter > 0:
        j = augment.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4)))
    return v2.Compose([*steps, *_normalise(preprocess)])


def denormalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return (batch.float().cpu() * std + mean).clamp(0, 1)
