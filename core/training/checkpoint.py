"""Checkpoints: written atomically, read without executing code.

A checkpoint is a dict of tensors and plain Python data (no pickled classes), so it loads with
``torch.load(weights_only=True)``. It carries the resolved recipe and the versions of faceauth and
of the plugins used, which is all `faceauth-eval` and `faceauth-export` need.

Wherever a run directory is given for a checkpoint (`faceauth-eval`, `faceauth-export`, a recipe key such as
``backbone.encoder_checkpoint``, `load`), it means the run's model, `RUN_CHECKPOINT` (``checkpoints/best.pt``:
the best epoch, which was tested and exported); only ``--resume`` continues from `RESUME_CHECKPOINT`
(``checkpoints/last.pt``). `resolve` is the one place that turns a run directory into a file.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceauth.errors import CheckpointError, article, quote
from faceauth.io.paths import atomic_write

__all__ = ["FORMAT", "RUN_CHECKPOINT", "RESUME_CHECKPOINT", "resolve", "save", "load", "recipe_of", "expect_task",
           "fitting", "rng_state", "set_rng_state"]

FORMAT = "faceauth-checkpoint-1"
RUN_CHECKPOINT = Path("checkpoints") / "best.pt"  # a run directory's model, relative to it
RESUME_CHECKPOINT = Path("checkpoints") / "last.pt"  # what --resume continues, relative to the run directory


def resolve(path: str | Path, within: Path = RUN_CHECKPOINT, key: str | None = None) -> Path:
    """The checkpoint file `path` names: `path` itself unless it is a directory; a run directory's
    `within` (its model, `RUN_CHECKPOINT`; `RESUME_CHECKPOINT` for ``--resume``). A run directory that
    lacks that file is one CheckpointError line saying why (after `key`, the recipe key that named it)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    file = path / within
    if file.is_file():
        return file
    where = f"{key}: {path}" if key else str(path)
    if not (path / "recipe.yaml").is_file():
        raise CheckpointError(f"{where}: not a run directory (no recipe.yaml; expected a checkpoint file or a run "
                              f"directory with {within})")
    if not (path / RESUME_CHECKPOINT).is_file():
        raise CheckpointError(f"{where}: this run has no checkpoint ({file} is missing): it stopped before its first "
                              f"one was written; start it again from {path / 'recipe.yaml'}")
    raise CheckpointError(f"{where}: this run has no {within.name} yet ({file} is missing): it paused before its "
                          f"first validation; continue it with faceauth-run --resume {path}")


def save(path: Path, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    try:
        with atomic_write(path, durable=True) as handle:
            torch.save({"format": FORMAT, **payload}, handle)
    except OSError as exc:  # a full disk, a read-only folder: atomic_write names `path` and the cause
        kept = f"; the previous {path.name} is kept" if path.is_file() else ""
        raise CheckpointError(f"{path}: cannot write the checkpoint ({exc.strerror or exc}){kept}") from exc
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save` (a file, or a run directory's model: see `resolve`); anything
    else is a CheckpointError naming the file."""
    path = resolve(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch raises many types for a damaged or foreign file; none helps the user
        raise CheckpointError(f"{path}: not a readable faceauth checkpoint (damaged, or not written by torch.save)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a faceauth checkpoint (expected format {FORMAT!r})")
    payload["path"] = str(path)
    return payload


def recipe_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The resolved recipe a loaded checkpoint carries, or a CheckpointError naming the file."""
    recipe = payload.get("recipe")
    if not isinstance(recipe, dict):
        raise CheckpointError(f"{payload.get('path', 'checkpoint')}: no recipe in this checkpoint (expected 'recipe', "
                              f"the mapping faceauth-run stores); was it written by faceauth?")
    return recipe


def expect_task(payload: dict[str, Any], task: str, purpose: str, key: str | None = None) -> None:
    """The one check that a loaded checkpoint was written for `task` (its ``task`` entry, as a `Task` names it).

    Otherwise one CheckpointError line: ``[key: ]<file>: expected <a task> checkpoint to <purpose>, found
    <a task> checkpoint``. `purpose` says what the checkpoint was loaded for ("resume this run", "load a
    liveness classifier"); `key` is the recipe key that named the file, when one did.
    """
    found = payload.get("task")
    if found == task:
        return
    found_text = article(found) if isinstance(found, str) and found else "a task-less"
    where = f"{key}: " if key else ""
    raise CheckpointError(f"{where}{payload.get('path', 'checkpoint')}: expected {article(task)} checkpoint to "
                          f"{purpose}, found {found_text} checkpoint")


@contextlib.contextmanager
def fitting(payload: dict[str, Any], what: str = "the model") -> Iterator[None]:
    """Turn a state_dict that does not fit the recipe's model (load_state_dict's RuntimeError, a missing
    or mistyped entry) into one CheckpointError line naming the file."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        lines = str(exc).strip().splitlines()
        detail = quote(" ".join(line.strip() for line in lines[:3]), 300) if lines else type(exc).__name__
        raise CheckpointError(f"{payload.get('path', 'checkpoint')}: its weights do not fit {what} of its recipe "
                              f"({detail})") from None


def rng_state() -> dict[str, Any]:
    """The global random states a training step may touch, in weights_only-safe form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
