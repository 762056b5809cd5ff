"""What faceauth shows on the terminal: a run's progress and per-epoch record, and how every command
reports errors (`guard`) and versions (`add_version_option`).

- one summary line per epoch through the ``faceauth`` logger (loss, the validation figures, a best
  marker, the time), e.g. ``epoch 3/10  loss 0.4121  val acer 0.0312 apcer 0.0400 bpcer 0.0224
  eer 0.0300  * best  41.2 s``;
- progress bars for training, validation and test on a terminal; on anything else (a file, a pipe)
  plain lines at each quarter of a training epoch instead of carriage-return updates;
- ``epochs.jsonl`` in the run directory: one JSON object per epoch with the same figures, rewritten
  whole (atomically) each epoch, so a resumed run that repeats an epoch replaces its line;
- for every command (faceauth's and a plugin's own): a `FaceAuthError` as one line and exit status 1,
  ``--debug`` for the traceback, ``--version`` for the versions of faceauth, its main dependencies and
  the plugins.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from faceauth.errors import FaceAuthError
from faceauth.io.paths import atomic_write

__all__ = ["EPOCHS_FILE", "EXIT_ERROR", "EXIT_INTERRUPTED", "add_version_option", "epoch_line", "guard", "installed_version", "record_epoch",
           "read_epochs", "is_terminal", "step_progress", "progress", "phase", "versions"]

EPOCHS_FILE = "epochs.jsonl"
# Validation figures shown on the epoch line, in this order, when the trainer reports them: the
# liveness protocol's when there is an ACER, else recognition's (or fusion's).
LIVENESS_SHOWN = ("acer", "apcer", "bpcer", "eer")
OTHER_SHOWN = ("accuracy", "eer", "hter", "auc", "loss")

log = logging.getLogger("faceauth.io.console")
_PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("faceauth_phase", default="evaluating")


def is_terminal() -> bool:
    """Whether progress goes to a terminal (bars) rather than a file or pipe (plain lines)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def epoch_line(epoch: int, epochs: int, figures: dict[str, Any], best: bool, seconds: float) -> str:
    """The console summary of one epoch (1-based `epoch`) from its ``train/...`` and ``val/...`` figures."""
    parts = [f"epoch {epoch}/{epochs}"]
    if isinstance(figures.get("train/loss"), (int, float)):
        parts.append(f"loss {figures['train/loss']:.4f}")
    keys = LIVENESS_SHOWN if "val/acer" in figures else OTHER_SHOWN
    shown = [f"{key} {figures[f'val/{key}']:.4f}" for key in keys if isinstance(figures.get(f"val/{key}"), (int, float))]
    if shown:
        parts.append("val " + " ".join(shown))
    if best:
        parts.append("* best")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy and torch scalars
        return _plain(value.item())
    return str(value)


def read_epochs(directory: str | Path) -> list[dict[str, Any]]:
    """The entries of a run directory's ``epochs.jsonl`` (none when it has no such file)."""
    path = Path(directory) / EPOCHS_FILE
    entries = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and isinstance(entry.get("epoch"), int):
                    entries.append(entry)
    return entries


def record_epoch(directory: str | Path, epoch: int, figures: dict[str, Any], *, best: bool, seconds: float) -> None:
    """Write epoch `epoch`'s entry into ``epochs.jsonl``, keeping only the earlier epochs' entries."""
    entry = {"epoch": epoch, "best": best, "seconds": round(seconds, 3),
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **{k: _plain(v) for k, v in figures.items()}}
    entries = [e for e in read_epochs(directory) if e["epoch"] < epoch] + [entry]
    with atomic_write(Path(directory) / EPOCHS_FILE) as handle:
        handle.write("".join(json.dumps(e, sort_keys=False) + "\n" for e in entries).encode("utf-8"))


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Label the evaluation passes inside the block (``val 3/10``, ``test``) in their progress bars."""
    token = _PHASE.set(name)
    try:
        yield
    finally:
        _PHASE.reset(token)


def progress(batches: Iterable[Any], total: int | None = None, *, enabled: bool = True) -> Iterator[Any]:
    """`batches` of an evaluation pass, with a progress bar on a terminal (and nothing elsewhere)."""
    if not (enabled and is_terminal()):
        yield from batches
        return
    from tqdm import tqdm

    with tqdm(batches, total=total, desc=_PHASE.get(), unit="batch", leave=False, dynamic_ncols=True) as bar:
        yield from bar


class _PlainProgress:
    """A training bar's interface that logs a plain line at each quarter of the epoch."""

    def __init__(self, total: int, initial: int, desc: str):
        self.total, self.count, self.desc = total, initial, desc
        self.postfix: dict[str, Any] = {}
        self.next_mark = self._mark_after(initial)

    def _mark_after(self, count: int) -> int:
        quarter = max(1, self.total // 4)
        return (count // quarter + 1) * quarter

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def update(self, steps: int = 1) -> None:
        self.count += steps
        if self.count >= self.next_mark and self.count < self.total:
            shown = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
            log.info("%s  step %d/%d  %s", self.desc, self.count, self.total, shown)
            self.next_mark = self._mark_after(self.count)

    def close(self) -> None:
        pass


def step_progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    """A progress bar over an epoch's steps: tqdm on a terminal, quarter-epoch lines elsewhere.
    Both offer ``set_postfix(**values)``, ``update(n)`` and ``close()``."""
    if enabled and is_terminal():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    if enabled:
        return _PlainProgress(total, initial, desc)
    return _PlainProgress(0, initial, desc)  # total 0: never logs


# commands ---------------------------------------------------------------------------------------------
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
# Distributions whose versions `--version` reports beside faceauth's and the plugins'.
REPORTED = ("torch", "torchvision", "onnxruntime", "onnx")


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution` from its metadata (nothing is imported), or None."""
    import importlib.metadata as metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> list[tuple[str, str]]:
    """(distribution, version) of faceauth, its main dependencies and every installed plugin
    package, read from the installed metadata (nothing is imported)."""
    import importlib.metadata as metadata
    import platform

    def version_of(name: str) -> str:
        return installed_version(name) or "not installed"

    found = [("faceauth", version_of("faceauth")), ("python", platform.python_version())]
    found += [(name, version_of(name)) for name in REPORTED]
    plugins = {ep.dist.name: ep.dist.version for ep in metadata.entry_points(group="faceauth")
               if ep.dist is not None and ep.dist.name != "faceauth"}
    return found + [(f"plugin {name}", version) for name, version in sorted(plugins.items())]


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the versions of faceauth, PyTorch, ONNX Runtime and the plugins, and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        found = versions()
        width = max(len(name) for name, _ in found)
        try:
            print("\n".join(f"{name:<{width}}  {version}" for name, version in found), flush=True)
        except BrokenPipeError:  # piped into `head`: nothing more to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        parser.exit()


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """Give a command ``--version`` (every faceauth command has it)."""
    parser.add_argument("--version", action=_VersionAction)


def guard(prog: str, debug: bool, action: Callable[[], int]) -> int:
    """Run a command's `action`: a `FaceAuthError` is one line on stderr and exit status 1 (``--debug``: the
    traceback), Ctrl-C is status 130, a closed pipe is quiet; faceauth's log lines show under `prog`."""
    # faceauth's own loggers only: other libraries' log lines are not shown under faceauth's name.
    logger = logging.getLogger("faceauth")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    try:
        return action()
    except FaceAuthError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
