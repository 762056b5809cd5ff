"""Evaluating and exporting what a run produced: a checkpoint, or an exported ONNX model.

Both start from the recipe stored inside the file, so nothing else is needed; a `data` path
replaces the recipe's ``data.root``, and an `ijb` root replaces the recipe's dataset with that
IJB-B / IJB-C release (the ``ijb`` dataset), whose 1:1 protocol is then measured.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from faceauth.config.build import build_component
from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.errors import CheckpointError, ExportError, RecipeError
from faceauth.io.onnx import metadata_threshold, onnx_session, read_metadata, recipe_from_metadata, run_session
from faceauth.metrics.report import ReportTarget
from faceauth.runs.inputs import beside
from faceauth.training import checkpoint, weights
from faceauth.training.protocol import ModelTrainer, missing_methods
from faceauth.training.run import Run

__all__ = ["evaluate", "export_checkpoint"]


def _run_for(stored_recipe: dict[str, Any], overrides: Iterable[str], extra_plugins: Iterable[Any],
             splits: tuple[str, ...] | None = None) -> tuple[Run, Any]:
    registry = load_registry(extra_plugins)
    recipe = load_recipe(None, overrides, registry=registry, base=stored_recipe)
    trainer = build_component(registry, recipe, "trainer")
    missing = missing_methods(trainer, ModelTrainer)
    if missing:
        raise CheckpointError(f"trainer '{recipe.trainer.name}' cannot evaluate or export a stored model (it has no "
                              f"{', '.join(missing)}; see faceauth.training.protocol.ModelTrainer)")
    return Run(recipe, registry, directory=Path("."), splits=splits), trainer


def _data_overrides(data: str | Path | None, overrides: Iterable[str]) -> list[str]:
    return ([f"data.root={Path(data).expanduser()}"] if data is not None else []) + list(overrides)


def _with_ijb(stored_recipe: dict[str, Any], ijb: str | Path | None, task: Any, model_path: Path) -> dict[str, Any]:
    if ijb is None:
        return stored_recipe
    if task != "embedding":
        raise CheckpointError(f"{model_path}: a {task or 'unknown'} model; an IJB protocol measures face-recognition "
                              f"(embedding) models")
    return {**stored_recipe, "data": {"name": "ijb", "root": str(Path(ijb).expanduser())}}


def evaluate(model_path: str | Path, data: str | Path | None = None, *, split: str = "test",
             overrides: Iterable[str] = (), extra_plugins: Iterable[Any] = (),
             ijb: str | Path | None = None, report: str | Path | None = None) -> dict[str, float]:
    """Metrics of a checkpoint (``.pt`` or run directory) or exported ``.onnx`` on one split.

    The decision threshold stored with the model (chosen on validation during training) is applied. A
    model trained on input models (`faceauth.training.run.ModelInput`) is scored with those kept beside it.
    `ijb` measures an embedding model on an IJB-B / IJB-C release instead (its test split).
    `report`: a folder for the liveness report of the split (`faceauth.metrics.report`; liveness models only).
    """
    if ijb is not None and (data is not None or split != "test"):
        raise RecipeError("an IJB release is its own dataset with one (test) protocol: give it without a data "
                          "root or split")
    with weights.restoring():  # the model's own weights are used: no file it started from is needed
        return _evaluate(Path(model_path), _data_overrides(data, overrides), split, extra_plugins, ijb, report)


def _evaluate(model_path: Path, overrides: list[str], split: str, extra_plugins: Iterable[Any],
              ijb: str | Path | None, report: str | Path | None) -> dict[str, float]:
    if model_path.suffix == ".onnx":
        if not model_path.is_file():
            raise ExportError(f"{model_path}: ONNX model not found")
        metadata = read_metadata(model_path)
        stored = _with_ijb(recipe_from_metadata(metadata, model_path), ijb, metadata.get("faceauth.task"), model_path)
        run, trainer = _run_for(stored, overrides, extra_plugins, (split,))
        run.inputs = beside(trainer, run.recipe, model_path.parent, str(model_path))
        session = onnx_session(model_path)

        def score(x: Any) -> np.ndarray:
            return run_session(session, x.numpy())[0]

        threshold = metadata_threshold(metadata, model_path)
        rule = metadata.get("faceauth.threshold_rule")
    else:
        payload = checkpoint.load(model_path)
        stored = _with_ijb(checkpoint.recipe_of(payload), ijb, payload.get("task"), model_path)
        run, trainer = _run_for(stored, overrides, extra_plugins, (split,))
        run.inputs = beside(trainer, run.recipe, _run_folder(model_path), str(model_path))
        with checkpoint.fitting(payload):
            model = trainer.load_model(run, payload)
        score = trainer.torch_scorer(model)
        threshold = getattr(model, "threshold", payload.get("threshold"))  # as the trainer reads its checkpoints
        rule = getattr(model, "threshold_rule", payload.get("threshold_rule"))
    if report is None:
        return trainer.evaluate(run, score, split, threshold)
    if "report" not in inspect.signature(trainer.evaluate).parameters:
        raise RecipeError(f"--report: the '{run.recipe.trainer.name}' trainer writes no report "
                          f"(liveness classifiers do)")
    target = ReportTarget(Path(report), str(model_path), rule or "eer on val")
    return trainer.evaluate(run, score, split, threshold, report=target)


def _run_folder(model_path: Path) -> Path:
    """The run directory of a checkpoint (``<run>/checkpoints/<tag>.pt``, or the run directory itself)."""
    if model_path.is_dir():
        return model_path
    return model_path.parent.parent if model_path.parent.name == "checkpoints" else model_path.parent


def export_checkpoint(model_path: str | Path, output: str | Path, *, overrides: Iterable[str] = (),
                      extra_plugins: Iterable[Any] = ()) -> Path:
    """Export a checkpoint with the exporter its recipe names (``onnx`` when it names none)."""
    with weights.restoring():
        return _export_checkpoint(model_path, output, overrides, extra_plugins)


def _export_checkpoint(model_path: str | Path, output: str | Path, overrides: Iterable[str],
                       extra_plugins: Iterable[Any]) -> Path:
    payload = checkpoint.load(model_path)
    stored = dict(checkpoint.recipe_of(payload))
    stored["export"] = stored.get("export") or {"name": "onnx"}
    run, trainer = _run_for(stored, overrides, extra_plugins)
    with checkpoint.fitting(payload):
        model = trainer.load_model(run, payload)
    model.threshold = getattr(model, "threshold", payload.get("threshold"))
    model.classes = tuple(payload.get("classes", ()))
    exporter = build_component(run.registry, run.recipe, "export")
    if output is None:
        raise CheckpointError("an output path is required")
    return exporter.export(trainer.export_bundle(run, model), Path(output))
