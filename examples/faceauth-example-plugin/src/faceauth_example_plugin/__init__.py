"""An example faceauth plugin: one registration module, eight hooks, nothing from faceauth's internals.

This module imports no PyTorch, so `faceauth-run --list` stays fast: the records point at their
builders in `models.py` through `faceauth.components.lazy`, imported when a recipe uses them.
"""

from __future__ import annotations

import json
import time
from typing import Literal

import attrs

import faceauth
from faceauth.components import Backbone, Dataset, Loss, Trainer, lazy

__version__ = "0.1.0"


# options ----------------------------------------------------------------------------------------
@attrs.frozen
class TinyOptions:
    width: int = attrs.field(default=16, validator=faceauth.schema.positive)
    norm: Literal["batch", "group"] = "batch"  # group norm is per sample: batch-size independent
    pretrained: str | None = None  # a faceauth checkpoint or run directory with a tiny_cnn backbone


@attrs.frozen
class StripesOptions:
    train: int = attrs.field(default=64, validator=faceauth.schema.positive)
    val: int = attrs.field(default=32, validator=faceauth.schema.positive)
    test: int = attrs.field(default=32, validator=faceauth.schema.positive)
    size: int = attrs.field(default=32, validator=faceauth.schema.positive)
    seed: int = 0


@attrs.frozen
class FocalOptions:
    gamma: float = attrs.field(default=2.0, validator=faceauth.schema.non_negative)


# hooks ------------------------------------------------------------------------------------------
@faceauth.hookimpl
def faceauth_backbones():
    return [Backbone(name="tiny_cnn", build=lazy("faceauth_example_plugin.models:TinyCNN"), options=TinyOptions,
                     description="three-layer CNN (example)")]


@faceauth.hookimpl
def faceauth_datasets():
    return [Dataset(name="stripes", build=lazy("faceauth_example_plugin.models:build_stripes"), options=StripesOptions,
                    description="in-memory live vs. striped spoof images (example)")]


@faceauth.hookimpl
def faceauth_losses():
    return [Loss(name="focal", build=lazy("faceauth_example_plugin.models:build_focal"), options=FocalOptions,
                 consumes="logits", description="focal loss on logits (example)")]


@faceauth.hookimpl
def faceauth_trainers():
    # Its options extend faceauth.training.loop.LoopOptions (PyTorch), so they are referenced lazily too.
    return [Trainer(name="linear_probe", build=lazy("faceauth_example_plugin.probe:build"),
                    options=lazy("faceauth_example_plugin.probe:ProbeOptions"),
                    description="linear live/spoof head on a frozen backbone, built on faceauth.training (example)")]


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
