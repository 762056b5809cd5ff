"""Running a recipe: the run directory, the components, events, checkpoints and the final export.

`run()` is what ``faceauth-run`` calls; `Run` is what a trainer receives. A run directory holds:
``recipe.yaml`` (resolved), ``events.out.tfevents.*`` (TensorBoard), ``checkpoints/{last,best}.pt``,
``epochs.jsonl`` (one line of figures per epoch), ``metrics.json`` and ``model.onnx``.

Stopping: ``run.request_stop(reason)`` (a plugin's early-stopping rule) *finishes* the run after the
current epoch: the best checkpoint is tested and exported and ``metrics.json`` holds
``stopped_early: reason``. Ctrl-C and ``trainer.max_steps`` *pause* it
(``request_stop(reason, finish=False)``): no test, no export, ``stopped: reason``, resumable.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from faceauth import checkpoint, console, distributed
from faceauth.data import Splits
from faceauth.images import utf8_text
from faceauth.errors import FaceAuthError, PluginError, RecipeError, TrainingError, quote
from faceauth.paths import atomic_link, atomic_write, folder_lock, sweep_temporaries, write_fault
from faceauth.recipe import COMPONENT_SECTIONS, Recipe, load_recipe
from faceauth.registry import Registry, load_registry

__all__ = ["Run", "Components", "FitResult", "RunResult", "run", "version", "build_component"]

log = logging.getLogger(__name__)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("faceauth")
    except PackageNotFoundError:
        return "unknown"


def _accepts(function: Any, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def build_component(registry: Registry, recipe: Recipe, section_key: str, **kwargs: Any) -> Any:
    """Build the component a recipe section names, with its validated options.

    A list of dataset sections builds each and joins their splits. A dataset whose ``build`` takes
    a ``detector`` argument receives the recipe's detector (or None when the recipe names none).
    """
    section = getattr(recipe, section_key)
    if section is None:
        raise RecipeError(f"{recipe.source}: {section_key}: this recipe has no '{section_key}' section")
    kind = COMPONENT_SECTIONS[section_key]
    if isinstance(section, tuple):
        return Splits.concat([_build(registry, recipe, part, kind, **kwargs) for part in section])
    return _build(registry, recipe, section, kind, **kwargs)


def _build(registry: Registry, recipe: Recipe, section: Any, kind: str, **kwargs: Any) -> Any:
    entry = registry.entry(kind, section.name)
    args = (section.options,) if entry.component.options is not None else ()
    if kind == "dataset" and "splits" in kwargs and not _accepts(entry.component.build, "splits"):
        kwargs.pop("splits")  # a dataset that cannot build fewer splits builds them all
    if kind == "dataset" and _accepts(entry.component.build, "detector"):
        kwargs["detector"] = build_component(registry, recipe, "detector") if recipe.detector is not None else None
    if _accepts(entry.component.build, "components"):
        kwargs["components"] = Components(registry, recipe)
    try:
        return entry.component.build(*args, **kwargs)
    except FaceAuthError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{kind} '{section.name}' from {entry.provider} failed to build: {type(exc).__name__}: {exc}"
        ) from exc


class Components:
    """Given to a component whose ``build`` takes a ``components`` argument, to build the components
    named inside its own options (a temporal model's frame encoder, a fusion model's members).

    ``components.build("backbone", {"name": "resnet18", "input_size": 64}, key="backbone.encoder")``
    validates the section like a recipe section (errors name `key`) and builds it.
    """

    def __init__(self, registry: Registry, recipe: Recipe):
        self._registry, self._recipe = registry, recipe

    def build(self, kind: str, section: Any, key: str, **kwargs: Any) -> Any:
        from faceauth.recipe import resolve_section

        try:
            resolved = resolve_section(section, key, kind, self._registry)
        except RecipeError as exc:
            raise RecipeError(f"{self._recipe.source}: {exc}") from None
        return _build(self._registry, self._recipe, resolved, kind, **kwargs)


class Run:
    """One training run as a trainer sees it.

    Public: `recipe`, `dir`, `device`, `epoch`, `resume` (the checkpoint to continue from, or None),
    `stop_reason`, `paused`; `build(section)`, `log(scalars, step)`, `writer`, `save_checkpoint(tag, payload)`,
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
            _write_text(self.dir / "recipe.yaml", self.recipe.to_yaml())
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
class FitResult:
    """What a trainer's ``fit(run)`` returns: the trained model (best weights) and the run's figures."""

    model: Any
    metrics: dict[str, Any]


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
    directory = root / name
    suffix = 1
    while directory.exists():
        suffix += 1
        directory = root / f"{name}-{suffix}"
    try:
        directory.mkdir(parents=True)
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
        state = checkpoint.load(Path(resume))
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
    exporter = build_component(registry, recipe_obj, "export") if recipe_obj.export is not None else None
    distributed.check_same("the resolved recipe", recipe_obj.to_dict())
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
                   "datasets": current.datasets}
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
            _write_text(directory / "recipe.yaml", write_recipe)
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


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text.encode("utf-8"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as handle:
        handle.write((json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))
