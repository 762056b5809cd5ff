"""An example faceauth plugin: one module, four hooks, nothing from faceauth's internals."""

from __future__ import annotations

import json
import time
from typing import Literal

import attrs
import numpy as np
import torch
from PIL import Image

import faceauth
from faceauth.components import Backbone, Dataset, Loss, Preprocess
from faceauth.data import LIVE, SPOOF, Splits

__version__ = "0.1.0"


# backbone ---------------------------------------------------------------------------------------
@attrs.frozen
class TinyOptions:
    width: int = attrs.field(default=16, validator=faceauth.schema.positive)
    norm: Literal["batch", "group"] = "batch"  # group norm is per sample: batch-size independent


class TinyCNN(torch.nn.Module):
    def __init__(self, options: TinyOptions):
        super().__init__()
        w = options.width

        def norm(channels: int) -> torch.nn.Module:
            return torch.nn.BatchNorm2d(channels) if options.norm == "batch" else torch.nn.GroupNorm(4, channels)

        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, w, 3, 2, 1), norm(w), torch.nn.ReLU(),
            torch.nn.Conv2d(w, 2 * w, 3, 2, 1), norm(2 * w), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.num_features = 2 * w
        self.preprocess = Preprocess(input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# dataset ----------------------------------------------------------------------------------------
@attrs.frozen
class StripesOptions:
    train: int = attrs.field(default=64, validator=faceauth.schema.positive)
    val: int = attrs.field(default=32, validator=faceauth.schema.positive)
    test: int = attrs.field(default=32, validator=faceauth.schema.positive)
    size: int = attrs.field(default=32, validator=faceauth.schema.positive)
    seed: int = 0


class Stripes:
    """Live: smooth colour blobs. Spoof: the same with a printed stripe pattern over it."""

    def __init__(self, count: int, size: int, seed: int):
        self.count, self.size, self.seed = count, size, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        label = LIVE if index % 2 == 0 else SPOOF
        grid = np.linspace(0, 1, self.size)
        base = rng.uniform(60, 200, 3) + 40 * np.sin(grid[:, None] * rng.uniform(1, 4) + grid[None, :])[..., None]
        if label == SPOOF:
            base = base + 35 * np.sign(np.sin(np.arange(self.size) * 1.6))[None, :, None]
        pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        return {"image": Image.fromarray(pixels), "label": label, "attack_type": "" if label == LIVE else "stripes"}


def build_stripes(options: StripesOptions) -> Splits:
    return Splits(train=Stripes(options.train, options.size, options.seed),
                  val=Stripes(options.val, options.size, options.seed + 1),
                  test=Stripes(options.test, options.size, options.seed + 2))


# loss -------------------------------------------------------------------------------------------
@attrs.frozen
class FocalOptions:
    gamma: float = attrs.field(default=2.0, validator=faceauth.schema.non_negative)


class FocalLoss(torch.nn.Module):
    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        return (-(1 - log_p.exp()) ** self.gamma * log_p).mean()


def build_focal(options: FocalOptions, num_classes: int, num_features: int) -> FocalLoss:
    return FocalLoss(options.gamma)


# hooks ------------------------------------------------------------------------------------------
@faceauth.hookimpl
def faceauth_backbones():
    return [Backbone(name="tiny_cnn", build=TinyCNN, options=TinyOptions, description="three-layer CNN (example)")]


@faceauth.hookimpl
def faceauth_datasets():
    return [Dataset(name="stripes", build=build_stripes, options=StripesOptions,
                    description="in-memory live vs. striped spoof images (example)")]


@faceauth.hookimpl
def faceauth_losses():
    return [Loss(name="focal", build=build_focal, options=FocalOptions, consumes="logits",
                 description="focal loss on logits (example)")]


def _log(run, event: str, **fields) -> None:
    with open(run.dir / "example_plugin.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": event, "time": time.time(), **fields}, default=str) + "\n")


@faceauth.hookimpl
def faceauth_train_start(run):
    _log(run, "train_start", epoch=run.epoch)


@faceauth.hookimpl
def faceauth_epoch_end(run, epoch, metrics):
    _log(run, "epoch_end", epoch=epoch, val_acer=metrics.get("val/acer"))


@faceauth.hookimpl
def faceauth_checkpoint_saved(run, tag):
    _log(run, "checkpoint_saved", tag=tag)


@faceauth.hookimpl
def faceauth_train_end(run, metrics):
    _log(run, "train_end", best_epoch=metrics.get("best_epoch"))
