"""Evaluating and exporting what a run produced: a checkpoint, or an exported ONNX model.

Both start from the recipe stored inside the file, so nothing else is needed; a `data` path
replaces the recipe's ``data.root``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from faceauth import checkpoint
from faceauth.errors import CheckpointError, ExportError
from faceauth.export import onnx_session, read_metadata, recipe_from_metadata, run_session
from faceauth.recipe import load_recipe
from faceauth.registry import load_registry
from faceauth.runner import Run, build_component

__all__ = ["evaluate", "export_checkpoint"]


def _run_for(stored_recipe: dict[str, Any], overrides: Iterable[str], extra_plugins: Iterable[Any]) -> tuple[Run, Any]:
    registry = load_registry(extra_plugins)
    recipe = load_recipe(None, overrides, registry=registry, base=stored_recipe)
    return Run(recipe, registry, directory=Path(".")), build_component(registry, recipe, "trainer")


def _data_overrides(data: str | Path | None, overrides: Iterable[str]) -> list[str]:
    return ([f"data.root={Path(data).expanduser()}"] if data is not None else []) + list(overrides)


def evaluate(model_path: str | Path, data: str | Path | None = None, *, split: str = "test",
             overrides: Iterable[str] = (), extra_plugins: Iterable[Any] = ()) -> dict[str, float]:
    """Metrics of a checkpoint (``.pt`` or run directory) or exported ``.onnx`` on one split.

    The decision threshold stored with the model (chosen on validation during training) is applied.
    """
    model_path = Path(model_path)
    overrides = _data_overrides(data, overrides)
    if model_path.suffix == ".onnx":
        if not model_path.is_file():
            raise ExportError(f"{model_path}: ONNX model not found")
        metadata = read_metadata(model_path)
        run, trainer = _run_for(recipe_from_metadata(metadata, model_path), overrides, extra_plugins)
        session = onnx_session(model_path)

        def score(x: Any) -> np.ndarray:
            return run_session(session, x.numpy())[0]

        threshold = float(metadata["faceauth.threshold"]) if metadata.get("faceauth.threshold") else None
    else:
        payload = checkpoint.load(model_path)
        run, trainer = _run_for(payload["recipe"], overrides, extra_plugins)
        model = trainer.load_model(run, payload)
        score = trainer.torch_scorer(model)
        threshold = getattr(model, "threshold", payload.get("threshold"))  # as the trainer reads its checkpoints
    return trainer.evaluate(run, score, split, threshold)


def export_checkpoint(model_path: str | Path, output: str | Path, *, overrides: Iterable[str] = (),
                      extra_plugins: Iterable[Any] = ()) -> Path:
    """Export a checkpoint with the exporter its recipe names (``onnx`` when it names none)."""
    payload = checkpoint.load(model_path)
    stored = dict(payload["recipe"])
    stored["export"] = stored.get("export") or {"name": "onnx"}
    run, trainer = _run_for(stored, overrides, extra_plugins)
    model = trainer.load_model(run, payload)
    model.threshold = getattr(model, "threshold", payload.get("threshold"))
    model.classes = tuple(payload.get("classes", ()))
    exporter = build_component(run.registry, run.recipe, "export")
    if output is None:
        raise CheckpointError("an output path is required")
    return exporter.export(trainer.export_bundle(run, model), Path(output))
