"""Running a recipe: the run directory, the trainer's fit, the figures and the final export.

`run()` is what ``faceauth-run`` calls; the trainer receives a `faceauth.training.run.Run`, whose module
describes the run directory.

Stopping: ``run.request_stop(reason)`` (a plugin's early-stopping rule) *finishes* the run after the
current epoch: the best checkpoint is tested and exported and ``metrics.json`` holds
``stopped_early: reason``. Ctrl-C and ``trainer.max_steps`` *pause* it
(``request_stop(reason, finish=False)``): no test, no export, ``stopped: reason``, resumable.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from faceauth.config.build import build_component
from faceauth.config.recipe import Recipe, load_recipe
from faceauth.config.registry import load_registry
from faceauth.errors import FaceAuthError, PluginError, RecipeError, TrainingError, quote
from faceauth.io.paths import atomic_write, folder_lock, sweep_temporaries, write_fault, write_text
from faceauth.runs import inputs as model_inputs
from faceauth.training import checkpoint, distributed
from faceauth.training.protocol import Trainer, missing_methods
from faceauth.training.run import Run

__all__ = ["RunResult", "run"]

log = logging.getLogger(__name__)


# Keys a resumed run may change; anything else must match the checkpoint's recipe.
RESUMABLE_KEYS = ("trainer.epochs", "trainer.max_steps", "trainer.num_workers", "trainer.progress",
                  "trainer.log_every", "device", "output_dir", "run_name", "export")


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            where = f"{path}.{key}" if path else str(key)
            if where in RESUMABLE_KEYS:
                continue
            found = _first_difference(a.get(key), b.get(key), where)
            if found:
                return found
        return None
    return None if a == b else f"{path}: {quote(a)} in the checkpoint, {quote(b)} given"


@attrs.frozen
class RunResult:
    """What `run()` returns: where the run lives and its figures."""

    dir: Path
    metrics: dict[str, Any]
    interrupted: bool
    onnx_path: Path | None


def _naming_write_faults(function: Any) -> Any:
    """A failed write in a run (a full disk, a read-only folder) as one line naming the file and the cause;
    what the run wrote before it stays (every file is written atomically)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except OSError as exc:
            fault = write_fault(exc)
            if fault is None or fault.filename is None:
                raise
            raise TrainingError(f"{fault.filename}: cannot write ({fault.strerror or fault})") from exc

    return wrapper


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what mkdir(parents=True) creates)."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _run_dir(recipe: Recipe) -> Path:
    stem = Path(recipe.source).stem if recipe.source != "<recipe>" else "run"
    name = recipe.run_name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(recipe.output_dir)
    directory, suffix = root / name, 1
    while True:  # mkdir, not exists(), decides: two runs started in the same second get different folders
        try:
            directory.mkdir(parents=True)
            break
        except FileExistsError:
            suffix += 1
            directory = root / f"{name}-{suffix}"
        except OSError as exc:
            raise RecipeError(f"output_dir: cannot create run directory {directory} ({exc.strerror or exc})") from None
    return directory


@_naming_write_faults
def run(recipe: str | Path | Mapping[str, Any] | None = None, overrides: Iterable[str] = (), *,
        resume: str | Path | None = None, extra_plugins: Iterable[Any] = ()) -> RunResult:
    """Run a recipe (a YAML file, a built-in recipe's name or a mapping; or continue the run in
    directory `resume`) and return its results."""
    registry = load_registry(extra_plugins)
    state = None
    if resume is not None:
        state = checkpoint.load(checkpoint.resolve(resume, checkpoint.RESUME_CHECKPOINT))
        stored = checkpoint.recipe_of(state)
        recipe_obj = load_recipe(None, overrides, registry=registry, base=stored)
        _check_resume_overrides(load_recipe(None, (), registry=registry, base=stored), recipe_obj, overrides, resume)
        if recipe is not None:
            given = load_recipe(recipe, overrides, registry=registry)
            difference = _first_difference(stored, given.to_dict())
            if difference:
                raise RecipeError(f"{recipe}: the run in {resume} was made with another recipe ({difference}); "
                                  f"resume with --resume alone, or start a new run")
        directory = Path(resume)
    else:
        if recipe is None:
            raise RecipeError("no recipe given (a YAML file such as recipes/liveness_resnet18.yaml)")
        recipe_obj = load_recipe(recipe, overrides, registry=registry)
        directory = None
    distributed.setup(recipe_obj.device)
    trainer = build_component(registry, recipe_obj, "trainer")
    missing = missing_methods(trainer, Trainer)
    if missing:
        raise PluginError(f"trainer '{recipe_obj.trainer.name}' has no {', '.join(missing)} "
                          f"(see faceauth.training.protocol.Trainer)")
    exporter = build_component(registry, recipe_obj, "export") if recipe_obj.export is not None else None
    distributed.check_same("the resolved recipe", recipe_obj.to_dict())
    # The trainer's input models: checked, and the missing ones trained, before this run's directory exists.
    resolved = model_inputs.resolve(trainer, recipe_obj, registry) if state is None else None
    created = None
    held = contextlib.ExitStack()  # the run directory's lock, held until the run ends
    if distributed.is_main():
        created = _first_missing(Path(recipe_obj.output_dir).absolute()) if directory is None else None
        directory = directory or _run_dir(recipe_obj)
        created = created or (directory.absolute() if state is None else None)
        _take_run_dir(held, directory, write_recipe=recipe_obj.to_yaml() if state is None else None)
    directory = distributed.broadcast(directory)
    current = Run(recipe_obj, registry, directory, resume=state)
    try:
        with current.interruptible():
            try:
                current.inputs, inputs_record = _inputs(trainer, current, resolved)
                fit = trainer.fit(current)
            except FaceAuthError:
                # Bad input found before anything was trained: leave no empty run directory behind.
                if created is not None and not (directory / "checkpoints").exists():
                    current.close()
                    held.close()
                    shutil.rmtree(created, ignore_errors=True)
                raise
        onnx_path = None
        metrics = {**fit.metrics, "stopped": current.stop_reason if current.paused else None,
                   "datasets": current.datasets, **({"inputs": inputs_record} if inputs_record else {})}
        if current.stop_reason is not None and not current.paused:
            metrics["stopped_early"] = current.stop_reason
        if distributed.is_main():
            current.write_recipe()
            _write_json(directory / "metrics.json", metrics)  # before the export: a failed export keeps the figures
            if exporter is not None and not current.paused:
                onnx_path = _export(exporter, trainer.export_bundle(current, fit.model), directory)
        distributed.barrier()
    finally:
        current.close()
        held.close()
    return RunResult(directory, metrics, current.stop_reason == "interrupted", onnx_path)


def _inputs(trainer: Any, current: Run, resolved: list[Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`Run.inputs` and ``inputs.json``: a new run's input models put into its directory (by rank 0), a resumed
    run's those it kept."""
    if resolved is None:
        return (model_inputs.beside(trainer, current.recipe, current.dir, str(current.dir)),
                model_inputs.recorded(current.dir))
    if distributed.is_main():
        placed = model_inputs.place(resolved, current.dir)
    distributed.barrier()
    return placed if distributed.is_main() else (model_inputs.beside(trainer, current.recipe, current.dir,
                                                                     str(current.dir)), {})


def _take_run_dir(held: contextlib.ExitStack, directory: Path, write_recipe: str | None) -> None:
    """Lock `directory` for this run (released by `held`), sweep the temporary files a killed run left, and
    write ``recipe.yaml`` when given (a resumed run rewrites it only once its checkpoint is restored)."""
    held.enter_context(folder_lock(directory))
    try:
        swept = sweep_temporaries(directory)
        if swept:
            logging.getLogger("faceauth").info("removed %d temporary file(s) of an interrupted write (%s)",
                                               len(swept), ", ".join(p.name for p in swept[:3]))
        if write_recipe is not None:
            write_text(directory / "recipe.yaml", write_recipe)
    except BaseException:
        held.close()
        raise


def _check_resume_overrides(stored: Recipe, resumed: Recipe, overrides: list[str], resume: str | Path) -> None:
    """Overrides given with --resume may change only `RESUMABLE_KEYS`, as a recipe file given with it."""
    difference = _first_difference(stored.to_dict(), resumed.to_dict())
    if difference is None:
        return
    key = difference.partition(":")[0]
    named = [item for item in overrides if key.startswith(item.partition("=")[0].strip())]
    where = f"override {quote(named[-1])}" if named else "overrides"
    raise RecipeError(f"{where}: the run in {resume} was made with another recipe ({difference}); a resumed run may "
                      f"change only {', '.join(RESUMABLE_KEYS)}; start a new run for anything else")


def _export(exporter: Any, bundle: Any, directory: Path) -> Path:
    try:
        return exporter.export(bundle, directory / "model.onnx")
    except FaceAuthError as exc:
        raise type(exc)(f"{exc} (the run's figures are kept in {directory / 'metrics.json'})") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as handle:
        handle.write((json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))
