"""The hooks a faceauth plugin implements: the whole plugin surface, on one screen.

A plugin is a module (or object) with functions marked `@faceauth.hookimpl`, made known to faceauth
through the entry-point group ``faceauth`` of its distribution::

    [project.entry-points.faceauth]
    my_plugin = "my_package.faceauth_plugin"

Registration hooks (``faceauth_datasets`` ... ``faceauth_detectors``) take no arguments and return
a list of records from `faceauth.components`; every plugin's results are collected (none wins
over another) and a name claimed twice within one kind is an error naming both plugins.

Event hooks (``faceauth_train_start`` ... ``faceauth_train_end``) are called through ``run.emit``
(`faceauth.training.run.Run`; the training loop, `faceauth.training.loop.TrainingLoop`, emits them all),
on rank 0, on every plugin that implements them; their return value is ignored. Their ``run`` is that
`Run` (typed ``Any`` here: this lowest layer imports no training code). An implementation may accept fewer
arguments than the spec lists, so new arguments never break an existing plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from faceauth.components import Backbone, Dataset, Detector, Exporter, Loss, Trainer

hookspec = pluggy.HookspecMarker("faceauth")
hookimpl = pluggy.HookimplMarker("faceauth")


@hookspec
def faceauth_datasets() -> list[Dataset]:
    """Register datasets: sample sources a recipe names in its ``data`` section.

    Returns a list of `faceauth.components.Dataset` records. ``build(options)`` returns a
    `faceauth.data.Splits`. All plugins' results are collected.

    Example::

        @faceauth.hookimpl
        def faceauth_datasets():
            return [faceauth.components.Dataset(name="my_faces", build=build, options=MyOptions)]
    """


@hookspec
def faceauth_backbones() -> list[Backbone]:
    """Register backbones: networks a recipe names in its ``backbone`` section.

    Returns a list of `faceauth.components.Backbone` records. ``build(options)`` returns a
    `torch.nn.Module` with ``num_features`` and ``preprocess`` attributes; the record's optional
    ``preprocess(options)`` states the latter without building the network. All results are collected.

    Example::

        @faceauth.hookimpl
        def faceauth_backbones():
            return [faceauth.components.Backbone(name="tiny_cnn", build=TinyCNN, options=TinyOptions)]
    """


@hookspec
def faceauth_losses() -> list[Loss]:
    """Register losses a recipe names in its ``loss`` section.

    Returns a list of `faceauth.components.Loss` records. ``build(options, num_classes=...,
    num_features=...)`` returns a `torch.nn.Module` called as ``loss(x, target)``. All results are
    collected.

    Example::

        @faceauth.hookimpl
        def faceauth_losses():
            return [faceauth.components.Loss(name="focal", build=build_focal, options=FocalOptions)]
    """


@hookspec
def faceauth_trainers() -> list[Trainer]:
    """Register trainers a recipe names in its ``trainer`` section.

    Returns a list of `faceauth.components.Trainer` records; see that class for what ``build``
    returns. All results are collected.
    """


@hookspec
def faceauth_exporters() -> list[Exporter]:
    """Register exporters a recipe names in its ``export`` section.

    Returns a list of `faceauth.components.Exporter` records; see that class for what ``build``
    returns. All results are collected.
    """


@hookspec
def faceauth_detectors() -> list[Detector]:
    """Register face detectors a recipe names in its ``detector`` section.

    Returns a list of `faceauth.components.Detector` records; ``build(options)`` returns an object
    with ``detect(image, hint=None) -> list[faceauth.faces.Box]``. All results are collected.

    Example::

        @faceauth.hookimpl
        def faceauth_detectors():
            return [faceauth.components.Detector(name="yunet", build=YuNet, options=YuNetOptions)]
    """


@hookspec
def faceauth_train_start(run: Any) -> None:
    """Called once before the first training step (also when a run resumes).

    ``run`` is the `faceauth.training.run.Run`: its ``dir``, ``recipe`` and ``epoch`` are public.
    """


@hookspec
def faceauth_epoch_end(run: Any, epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch's validation with that epoch's figures (``train/loss``, ``val/acer`` ...);
    ``epoch`` counts from 0 (``epochs.jsonl`` and the console count from 1).

    A plugin may call ``run.request_stop(reason)`` here, for example for early stopping: the run
    then finishes after this epoch (the best checkpoint tested and exported); ``finish=False`` pauses
    it instead (resumable, as Ctrl-C does).
    """


@hookspec
def faceauth_checkpoint_saved(run: Any, path: Any, epoch: int, tag: str) -> None:
    """Called after a checkpoint was written to ``path``; ``tag`` is "last" or "best" (``checkpoints/<tag>.pt``)
    and ``epoch`` is the index, from 0, of the epoch it was written in."""


@hookspec
def faceauth_train_end(run: Any, metrics: dict[str, float]) -> None:
    """Called once when training ended (normally or stopped), with the final figures."""
