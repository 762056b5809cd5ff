"""The models a trainer takes as input (`faceauth.training.run.ModelInput`), resolved by the runner.

A trainer that builds on other models (the fusion trainer on a matcher and a liveness model) declares
them with ``model_inputs(recipe)``; it never loads, trains or exports them itself. For a new run,
`resolve` checks each model the recipe gives (it exists and is of the input's task) and trains the
missing ones with `faceauth.runs.runner.run` from the recipe the input names: once per resolved
setting (the recipe with every default, and the faceauth version), into
``$FACEAUTH_CACHE/inputs/<name>-<key>/`` through a temporary folder renamed into place when the run
finished, so an interrupted run is never taken for a finished one. `place` then puts their ONNX form
into the run directory (``<name>.onnx``, or ``<name>-<i>.onnx`` with several: ``.onnx`` files copied,
checkpoints exported) and records in ``inputs.json`` where each came from (and, for a trained one, its
run and figures). The trainer reads them from `Run.inputs`.

A resumed run, and a model evaluated later (`faceauth.runs.models.evaluate`), use the files kept
beside it (`beside`): the models it was trained with, whatever the recipe's paths point to now.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from faceauth.config.recipe import Recipe, load_recipe
from faceauth.config.registry import Registry, version
from faceauth.deploy.models import expect_model_task, file_sha256
from faceauth.errors import CheckpointError, RecipeError, article, quote
from faceauth.io.onnx import read_metadata
from faceauth.io.paths import atomic_write, cache_dir, write_text
from faceauth.training import checkpoint, distributed
from faceauth.training.run import ModelInput

__all__ = ["INPUTS_RECORD", "Resolved", "beside", "declared", "file_names", "place", "recorded", "resolve"]

log = logging.getLogger(__name__)

INPUTS_RECORD = "inputs.json"  # in the run directory: where each input model came from


@attrs.frozen
class Resolved:
    """One declared input with its models: the files given, or the one trained (`trained`: its run and figures)."""

    spec: ModelInput
    sources: tuple[Path, ...]
    trained: dict[str, Any] | None = None


def declared(trainer: Any, recipe: Recipe) -> list[ModelInput]:
    """The trainer's `ModelInput`s for `recipe` (none when it declares no ``model_inputs``)."""
    method = getattr(trainer, "model_inputs", None)
    specs = list(method(recipe)) if method is not None else []
    names = [spec.name for spec in specs]
    for spec in specs:
        if not spec.name or Path(spec.name).name != spec.name or names.count(spec.name) > 1:
            raise RecipeError(f"trainer.name: '{recipe.trainer.name}' declares the model input {quote(spec.name, 40)}; "
                              f"expected distinct names usable as file names")
    return specs


def file_names(spec: ModelInput) -> list[str]:
    """The input's files in a run directory: ``<name>.onnx``, or ``<name>-<i>.onnx`` when several are given."""
    count = max(1, len(spec.given))
    return [f"{spec.name}.onnx"] if count == 1 else [f"{spec.name}-{i}.onnx" for i in range(count)]


# resolving ------------------------------------------------------------------------------------------
def resolve(trainer: Any, recipe: Recipe, registry: Registry) -> list[Resolved]:
    """Each declared input's models: the given ones checked, a missing one trained (or taken from the cache)."""
    resolved = []
    for spec in declared(trainer, recipe):
        if spec.given:
            resolved.append(Resolved(spec, tuple(_given(spec, index, text) for index, text in enumerate(spec.given))))
        elif spec.recipe is None:
            raise RecipeError(f"{spec.key}: none given; expected {article(spec.task)} model (an exported .onnx, "
                              f"a checkpoint or a run directory)")
        else:
            folder = _trained(spec, registry)
            resolved.append(Resolved(spec, (folder / "model.onnx",), _figures(folder)))
    return resolved


def _given(spec: ModelInput, index: int, text: str) -> Path:
    """A given model's file, checked to exist and to be of the input's task."""
    where = f"{spec.key}[{index}]"
    path = checkpoint.resolve(text, key=where)  # a run directory: its model
    if not path.is_file():
        raise RecipeError(f"{where}: {path} not found (expected {article(spec.task)} model: an exported .onnx, "
                          f"a checkpoint or a run directory)")
    if path.suffix == ".onnx":
        expect_model_task(read_metadata(path), spec.task, f"{where}: {path.name}")
    else:
        checkpoint.expect_task(checkpoint.load(path), spec.task, f"use as the {spec.name} model", key=where)
    return path


def _trained(spec: ModelInput, registry: Registry) -> Path:
    """The run folder of the model `spec.recipe` trains, trained now unless a run with this setting finished."""
    recipe = load_recipe(spec.recipe, spec.overrides, registry=registry)
    setting = {k: v for k, v in recipe.to_dict().items() if k not in ("output_dir", "run_name")}
    key = hashlib.sha256(json.dumps({"recipe": setting, "faceauth": version()}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    final = cache_dir("inputs", f"{spec.name}-{key}")
    if (final / "model.onnx").is_file():
        return final
    if distributed.active():
        raise RecipeError(f"{spec.key}: none given, and the {spec.name} model is not trained yet; a run under "
                          f"torchrun does not train it: run this recipe once in one process, or name a model")
    from faceauth.runs.runner import run  # the runner resolves inputs: imported here, when one is trained

    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("training the %s model (%s; once, into %s)", spec.name, spec.key, final)
    try:
        result = run(spec.recipe, [*spec.overrides, f"output_dir={tmp}", "run_name=run"])
        if result.interrupted:
            raise KeyboardInterrupt
        if result.onnx_path is None:
            raise RecipeError(f"{spec.key}: the run that trains the {spec.name} model exported no model "
                              f"(was it stopped, or does its recipe set export: null?)")
        if not (final / "model.onnx").is_file():  # else another process finished the same setting first
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp / "run", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _figures(folder: Path) -> dict[str, Any]:
    metrics = folder / "metrics.json"
    figures = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else {}
    return {"run": str(folder), **{split: figures.get(split) for split in ("val", "test")}}


# the run directory ----------------------------------------------------------------------------------
def place(resolved: Sequence[Resolved], directory: Path) -> tuple[dict[str, tuple[Path, ...]], dict[str, Any]]:
    """Put every input model's ONNX form into `directory` and write ``inputs.json``; returns `Run.inputs`
    and the record."""
    from faceauth.runs.models import export_checkpoint

    inputs: dict[str, tuple[Path, ...]] = {}
    record: dict[str, Any] = {}
    for item in resolved:
        names = file_names(item.spec)
        record[item.spec.name] = []
        for source, name in zip(item.sources, names):
            target = directory / name
            if source.suffix == ".onnx":
                with open(source, "rb") as reader, atomic_write(target) as writer:
                    shutil.copyfileobj(reader, writer)
            else:
                export_checkpoint(source, target)
            record[item.spec.name].append({"file": name, "sha256": file_sha256(target), "source": str(source),
                                           **({"trained": item.trained} if item.trained is not None else {})})
        inputs[item.spec.name] = tuple(directory / name for name in names)
    if record:
        write_text(directory / INPUTS_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return inputs, record


def beside(trainer: Any, recipe: Recipe, folder: Path, where: str) -> dict[str, tuple[Path, ...]]:
    """`Run.inputs` from the files kept in `folder` (a run directory, or an exported model's folder)."""
    inputs = {}
    for spec in declared(trainer, recipe):
        paths = tuple(folder / name for name in file_names(spec))
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise CheckpointError(f"{where}: trained with the {spec.name} model {missing[0]}, which is not in "
                                  f"{folder} (a model with input models is used where its run left them)")
        inputs[spec.name] = paths
    return inputs


def recorded(directory: Path) -> dict[str, Any]:
    """The ``inputs.json`` of a run directory (empty when it has none)."""
    path = directory / INPUTS_RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        log.warning("%s: unreadable; metrics.json will not say where the input models came from", path)
        return {}
