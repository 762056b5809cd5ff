"""What a trainer receives and returns: the `Run` (one training run as a trainer sees it), `FitResult`, and
the `ModelInput`s a trainer that builds on other models declares.

The run directory a `Run` writes into holds ``recipe.yaml`` (resolved), ``events.out.tfevents.*``
(TensorBoard), ``checkpoints/{last,best}.pt``, ``epochs.jsonl`` (one line of figures per epoch), and, once
the runner (`faceauth.runs.runner`) finished it, ``metrics.json`` and ``model.onnx``. "The run's
checkpoint" means ``checkpoints/best.pt`` wherever a run directory is given for a model
(`faceauth.training.checkpoint.RUN_CHECKPOINT`, turned into a file by `faceauth.training.checkpoint.resolve`):
the weights of the best epoch, which were tested and exported; ``last.pt`` is what ``--resume`` continues.
A run with input models (`ModelInput`) also holds them as ``<name>.onnx`` (``<name>-<i>.onnx`` when
several) and ``inputs.json``, where each came from.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from faceauth.config.build import build_component, preprocess_of
from faceauth.config.recipe import COMPONENT_SECTIONS, Recipe
from faceauth.config.registry import Registry, version
from faceauth.data import Splits
from faceauth.io import console
from faceauth.io.images import utf8_text
from faceauth.io.paths import atomic_link, write_text
from faceauth.training import checkpoint, distributed

__all__ = ["FitResult", "ModelInput", "Run"]

log = logging.getLogger(__name__)


@attrs.frozen
class FitResult:
    """What a trainer's ``fit(run)`` returns: the trained model (best weights) and the run's figures."""

    model: Any
    metrics: dict[str, Any]


@attrs.frozen
class ModelInput:
    """A model a trainer takes as input (a fusion model's matcher, say), declared by the trainer's optional
    ``model_inputs(recipe) -> Sequence[ModelInput]``. The runner, not the trainer, resolves it
    (`faceauth.runs.inputs`) before ``fit`` and hands the trainer ONNX files on `Run.inputs`.

    - `name`: the key in `Run.inputs`, and the files' stem in the run directory: ``<name>.onnx``, or
      ``<name>-0.onnx``, ``<name>-1.onnx``... when the recipe gives several.
    - `task`: the ``faceauth.task`` every model must have ("embedding", "liveness").
    - `key`: the recipe key that names the given models, for messages ("trainer.embedding_models").
    - `given`: the models the recipe names: exported ``.onnx`` files (copied), checkpoints or run
      directories (exported with the exporter their recipe names, ONNX when none).
    - `recipe` (+ `overrides`): when none is given, what trains one: a recipe mapping, a recipe file or a
      built-in recipe's name; trained once per resolved setting into ``$FACEAUTH_CACHE/inputs/`` and
      reused. None: a model must be given.
    """

    name: str
    task: str
    key: str
    given: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    recipe: Mapping[str, Any] | str | None = None
    overrides: tuple[str, ...] = attrs.field(default=(), converter=tuple)


class Run:
    """One training run as a trainer sees it.

    Public: `recipe`, `dir`, `device`, `epoch`, `resume` (the checkpoint to continue from, or None),
    `inputs` (the ONNX files of the trainer's `ModelInput`s by name, in the order given), `stop_reason`, `paused`;
    `build(section)`, `preprocess()`, `log(scalars, step)`, `writer`, `save_checkpoint(tag, payload)`,
    `link_checkpoint(source, tag)`, `emit(event, **kwargs)`, `request_stop(reason, finish=True)`,
    `record_epoch(epoch, figures, ...)`.
    """

    def __init__(self, recipe: Recipe, registry: Registry, directory: Path, resume: dict[str, Any] | None = None,
                 splits: tuple[str, ...] | None = None):
        self.recipe, self.registry, self.dir, self.resume = recipe, registry, directory, resume
        self.splits = splits  # the splits this run needs (None: all); a dataset whose build takes `splits` gets it
        self.epoch = 0
        self.started = time.time()  # for the wall time in reports
        self.stop_reason: str | None = None
        self.stop_finishes = False  # a finishing stop (tested and exported), not a resumable pause
        self.device = distributed.device(recipe.device)
        self.datasets: dict[str, Any] = {}  # what each data section's build found (counts, skips), for metrics.json
        self.inputs: dict[str, tuple[Path, ...]] = {}  # set by the runner (faceauth.runs.inputs)
        self._writer: Any = None
        self._recipe_written = resume is None  # a resumed run's recipe.yaml is rewritten only once restored

    # components -------------------------------------------------------------------------------
    def build(self, section_key: str, **kwargs: Any) -> Any:
        if self.splits is not None and COMPONENT_SECTIONS.get(section_key) == "dataset":
            kwargs.setdefault("splits", self.splits)
        built = build_component(self.registry, self.recipe, section_key, **kwargs)
        if isinstance(built, Splits):
            self.datasets[section_key] = built.info
        return built

    def preprocess(self, section_key: str = "backbone") -> Any:
        """The preprocessing (`faceauth.components.Preprocess`) of the recipe's backbone, without building
        the network when its record states it (`faceauth.config.build.preprocess_of`)."""
        return preprocess_of(self.registry, self.recipe, section_key)

    def component(self, section_key: str) -> Any:
        """The registered record of a (single) recipe section, e.g. to read a loss's `consumes`."""
        return self.registry.get(COMPONENT_SECTIONS[section_key], getattr(self.recipe, section_key).name)

    def versions(self) -> dict[str, Any]:
        return {"faceauth": version(), "components": self.registry.providers_of(self.recipe.component_names())}

    # logging ----------------------------------------------------------------------------------
    @property
    def writer(self) -> Any:
        """TensorBoard's SummaryWriter on rank 0; on other ranks a writer that writes nothing."""
        if self._writer is None:
            if distributed.is_main():
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.dir))
            else:
                self._writer = _NoWriter()
        return self._writer

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(utf8_text(key), value, step)  # keys may hold folder names (attack types)

    def record_epoch(self, epoch: int, figures: dict[str, Any], *, best: bool, seconds: float,
                     epochs: int | None = None) -> None:
        """Epoch `epoch` (1-based) is done: its line in ``epochs.jsonl`` and its summary on the console."""
        if distributed.is_main():
            console.record_epoch(self.dir, epoch, figures, best=best, seconds=seconds)
            log.info("%s", console.epoch_line(epoch, epochs or epoch, figures, best, seconds))

    # events and stopping ----------------------------------------------------------------------
    def emit(self, event: str, **kwargs: Any) -> None:
        if distributed.is_main():
            if event == "train_start":  # the data was found: training starts here
                log.info("run directory: %s%s", self.dir, " (resumed)" if self.resume is not None else "")
            getattr(self.registry.hook(), f"faceauth_{event}")(run=self, **kwargs)

    def request_stop(self, reason: str, finish: bool = True) -> None:
        """Stop training. `finish` (a plugin's early-stopping rule): after the current epoch, test the
        best checkpoint and export it. ``finish=False`` (Ctrl-C, ``max_steps``): pause at the next
        step, resumable with ``--resume``; a pause overrides a pending finish."""
        if self.stop_reason is None or (self.stop_finishes and not finish):
            self.stop_reason, self.stop_finishes = reason, finish

    @property
    def paused(self) -> bool:
        """Whether training stopped for a pause (resumable; no test, no export) rather than finished."""
        return self.stop_reason is not None and not self.stop_finishes

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """The first Ctrl-C asks the trainer to stop after the current step; a second one aborts."""

        def on_sigint(signum: int, frame: Any) -> None:
            if self.stop_reason == "interrupted":
                raise KeyboardInterrupt
            self.request_stop("interrupted", finish=False)

        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: leave signals alone
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, tag: str, payload: dict[str, Any]) -> Path:
        """Written by rank 0; every rank waits until it is on disk."""
        path = self.dir / "checkpoints" / f"{tag}.pt"
        if distributed.is_main():
            self.write_recipe()  # a resumed run's first checkpoint comes after its restore
            checkpoint.save(path, {**payload, "recipe": self.recipe.to_dict(), "versions": self.versions(), "tag": tag})
            self.emit("checkpoint_saved", path=path, epoch=self.epoch, tag=tag)
        distributed.barrier()
        return path

    def write_recipe(self) -> None:
        """Write ``recipe.yaml`` (once; on resume only after the checkpoint was restored, i.e. with the first save)."""
        if not self._recipe_written and distributed.is_main():
            write_text(self.dir / "recipe.yaml", self.recipe.to_yaml())
            self._recipe_written = True

    def link_checkpoint(self, source: str, tag: str) -> Path:
        """Make checkpoint `tag` the file checkpoint `source` is (an epoch that is both the last and the
        best is written once); rank 0 links, every rank waits."""
        path = self.dir / "checkpoints" / f"{tag}.pt"
        if distributed.is_main():
            atomic_link(path.with_name(f"{source}.pt"), path)
            self.emit("checkpoint_saved", path=path, epoch=self.epoch, tag=tag)
        distributed.barrier()
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class _NoWriter:
    """What ranks other than 0 get instead of a SummaryWriter."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
