"""The `Trainer` protocol: what a trainer component's ``build(options)`` returns, and who calls what.

A trainer is the component that knows a task (liveness, embeddings, fusion, ...): it builds the rest of
the recipe's components through the `Run`, trains, measures and hands its model to the exporter. The
runner (`faceauth.runs.runner`) calls ``fit`` and then, unless the run was paused, ``export_bundle``;
``faceauth-eval`` and ``faceauth-export`` (`faceauth.runs.models`) call the `ModelTrainer` methods on a
checkpoint or exported model. The built-in trainers build on `faceauth.training.loop` (`TrainingLoop` and
a `Task`), which a third-party trainer may use too; the example plugin's ``linear_probe`` shows how.

The model a trainer returns (in `FitResult.model`, or from ``load_model``) carries ``threshold`` (float or
None): the decision threshold chosen on validation, stored in checkpoints and exported models.

A trainer that builds on other trained models (the fusion trainer on a matcher and a liveness model) also
declares them (`TrainerWithInputs.model_inputs`); the runner, never the trainer, checks, trains and exports
them (`faceauth.runs.inputs`), so no plugin starts a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from faceauth.config.recipe import Recipe
    from faceauth.metrics.report import ReportTarget
    from faceauth.training.export import Bundle
    from faceauth.training.run import FitResult, ModelInput, Run

__all__ = ["ModelTrainer", "Trainer", "TrainerWithInputs", "Scorer", "missing_methods"]

#: A scorer: a batch of prepared model inputs (a torch tensor on the CPU) to one score per sample (a numpy array).
Scorer = Callable[[Any], Any]


@runtime_checkable
class Trainer(Protocol):
    """Every trainer: train the recipe, and hand the trained model to the exporter."""

    def fit(self, run: Run) -> FitResult:
        """Train and measure (validation each epoch, the test split at the end) and return the best model and
        the run's figures, which the runner writes to ``metrics.json``: ``val`` and ``test`` hold the trained
        model's figures flat (``{metric: number}``, what faceauth-run prints), anything else (other models'
        figures, such as fusion's ``baselines``) goes under keys of its own. Checkpoints go through
        ``run.save_checkpoint`` with the payload key ``task`` naming the task; when ``run.resume`` holds a
        checkpoint payload, continue from it."""

    def export_bundle(self, run: Run, model: Any) -> Bundle:
        """The model in its inference form, with its example inputs and metadata
        (`faceauth.training.export.model_metadata`), for the recipe's exporter."""


@runtime_checkable
class ModelTrainer(Trainer, Protocol):
    """A trainer whose checkpoints and exported models faceauth-eval and faceauth-export can use."""

    def load_model(self, run: Run, payload: dict[str, Any]) -> Any:
        """The model stored in checkpoint `payload` (a `faceauth.training.checkpoint.load` result, whose
        recipe `run` was built from), with its ``threshold``; a checkpoint of another task is a
        `CheckpointError` (`faceauth.training.checkpoint.expect_task`)."""

    def torch_scorer(self, model: Any) -> Scorer:
        """A scorer running `model` with PyTorch: the same scores its exported form gives."""

    def evaluate(self, run: Run, score: Scorer, split: str, threshold: float | None,
                 report: ReportTarget | None = None) -> dict[str, float]:
        """The figures of `score` (a `torch_scorer`, or an ONNX session's) on split `split` of the run's data,
        at `threshold` (None: the trainer's own choice on validation). `report`: also write the split's
        report there; a trainer that writes no reports leaves the parameter out of its signature."""


@runtime_checkable
class TrainerWithInputs(Trainer, Protocol):
    """A trainer whose model is built on other trained models, which it takes as inputs (optional method)."""

    def model_inputs(self, recipe: Recipe) -> Sequence[ModelInput]:
        """The models this trainer needs for `recipe` (`faceauth.training.run.ModelInput`: a name, the task they
        must have, the recipe key naming the given ones, and the recipe that trains one when none is given).
        A pure function of the recipe: the runner calls it for a new run, a resumed one and faceauth-eval.

        Before ``fit`` the runner checks the given models (present, of the task), trains a missing one once
        per setting into the cache, and puts each model's ONNX form into the run directory (``<name>.onnx``,
        ``<name>-<i>.onnx`` when several; a checkpoint is exported), with ``inputs.json`` saying where each
        came from (also in ``metrics.json`` under ``inputs``). ``run.inputs`` then maps each name to its ONNX
        paths in the order given; the trainer opens them (`faceauth.deploy.models.open_component`)
        and records what its model needs of them. A resumed run, and a stored model that faceauth-eval
        scores, get the files kept beside it: a model with inputs is used where its run left them."""


def missing_methods(trainer: Any, protocol: type) -> list[str]:
    """The methods of `protocol` that `trainer` lacks (empty when it implements them all)."""
    wanted = [name for name in vars(protocol) if not name.startswith("_") and callable(vars(protocol)[name])]
    for base in protocol.__mro__[1:]:
        if base is not Protocol and base is not object and isinstance(base, type) and base.__module__ == __name__:
            wanted += [name for name in vars(base) if not name.startswith("_") and callable(vars(base)[name])]
    return sorted({name for name in wanted if not callable(getattr(trainer, name, None))})
