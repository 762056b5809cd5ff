"""Helpers shared by the benchmark scripts: timing, steady-state training throughput, engine latency, a table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def load_average() -> str:
    """The 1-minute load average: on a shared 2-core machine, figures taken above ~2 are noisy."""
    return f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load average unknown"


def step_times(batches: Iterable[Any], step: Callable[[Any], int], steps: int, warmup: int = 2
               ) -> list[tuple[int, float]]:
    """(images, seconds) of each of `steps` calls of `step(batch)` (which returns the batch's image count).

    A step's time runs from the end of the previous step to the end of this one, data loading
    included, as a trainer's logged wall times measure it. The `warmup` steps before (allocators,
    caches, DataLoader workers) are not returned. `batches` is iterated again when it runs out.
    """
    out: list[tuple[int, float]] = []
    done, last = 0, time.perf_counter()
    while done < steps + warmup:
        for batch in batches:
            images = step(batch)
            now = time.perf_counter()
            if done >= warmup:
                out.append((images, now - last))
            last, done = now, done + 1
            if done >= steps + warmup:
                break
    return out


def timed_steps(batches: Iterable[Any], step: Callable[[Any], int], steps: int, warmup: int = 2) -> float:
    """Images/s of `step(batch)` over `steps` batches after `warmup` (see `step_times`)."""
    times = step_times(batches, step, steps, warmup)
    return sum(n for n, _ in times) / sum(t for _, t in times)


def _logged(run_dir: Path, after_step: int, tag: str) -> list[Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    logged = [s for s in acc.Scalars(tag) if s.step >= after_step]
    if len(logged) < 2:
        raise RuntimeError(f"{run_dir}: fewer than two '{tag}' steps logged after step {after_step}")
    return logged


def logged_images_per_second(run_dir: Path, batch: int, after_step: int = 0, tag: str = "train/loss_step") -> float:
    """Steady-state images/s of a faceauth run from the wall times TensorBoard recorded at logged steps.

    Steps up to `after_step` (warm-up) are left out: the rate is taken from the first logged step
    at or after it to the last one.
    """
    logged = _logged(run_dir, after_step, tag)
    first, last = logged[0], logged[-1]
    return (last.step - first.step) * batch / (last.wall_time - first.wall_time)


def logged_step_seconds(run_dir: Path, after_step: int = 0, tag: str = "train/loss_step") -> list[float]:
    """Seconds of each step after `after_step`, from consecutive logged wall times (`log_every: 1`)."""
    logged = _logged(run_dir, after_step, tag)
    return [(b.wall_time - a.wall_time) / (b.step - a.step) for a, b in zip(logged, logged[1:])]


def logged_values(run_dir: Path, tag: str) -> list[float]:
    """Every value of `tag` TensorBoard recorded for a faceauth run, in the order logged (e.g. one per epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [s.value for s in acc.Scalars(tag)]


def run_recipe(recipe: dict[str, Any], workdir: Path, overrides: Iterable[str] = ()) -> Any:
    """Write `recipe` as YAML into `workdir` and run it with `faceauth.run`; returns its RunResult."""
    import yaml

    import faceauth

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return faceauth.run(path, list(overrides))


def eager_and_onnx_seconds(model: Any, onnx_path: Path, x: Any, repeats: int, warmup: int = 2,
                           threads: int | None = None) -> tuple[float, float]:
    """Median seconds of one call of eager `model(x)` and of onnxruntime on the exported model, each timed alone.

    The onnxruntime session (thread spinning disabled, see `faceauth.io.onnx.onnx_session`; `threads`
    intra-op threads, default onnxruntime's) exists only while it is timed, so its threads never
    compete with PyTorch's.
    """
    import torch

    from faceauth.io.onnx import onnx_session

    with torch.no_grad():
        eager = median_seconds(lambda: model(x), repeats, warmup)
    session = onnx_session(onnx_path, threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    ort_time = median_seconds(lambda: session.run(None, feed), repeats, warmup)
    return eager, ort_time
