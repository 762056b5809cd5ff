"""Running exported ONNX models with onnxruntime: sessions, execution providers and the metadata faceauth
stores in every model (preprocessing, task, threshold, recipe, crop geometry).

The reading side only: evaluation and deployment code need no exporter and no PyTorch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceauth.errors import ExportError, quote

__all__ = ["CPU", "check_providers", "decision_threshold", "metadata_json", "metadata_threshold", "onnx_session",
           "read_metadata", "recipe_from_metadata", "run_session"]

CPU = "CPUExecutionProvider"


def check_providers(providers: Sequence[str] | None) -> list[str]:
    """The execution providers to ask onnxruntime for, in order; None: the CPU alone.

    A provider this onnxruntime build does not have is an ExportError naming the installed ones
    (``onnxruntime-gpu`` brings CUDAExecutionProvider and TensorrtExecutionProvider).
    """
    import onnxruntime as ort

    if providers is None:
        return [CPU]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    installed = ort.get_available_providers()
    for name in providers:
        if name not in installed:
            raise ExportError(f"execution provider {str(name)[:80]!r} is not installed (installed: {', '.join(installed)})")
    if not providers:
        raise ExportError(f"no execution provider given (installed: {', '.join(installed)})")
    return list(providers)


def onnx_session(path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None) -> Any:
    """An onnxruntime session with spinning disabled (idle spinning slows whatever runs next).

    `providers`: execution provider names in order of preference (`check_providers`); the default
    is the CPU alone. `threads`: intra-op threads (None: onnxruntime's default, one per core).
    """
    import onnxruntime as ort

    chosen = check_providers(providers)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=chosen)
    except Exception as exc:
        raise ExportError(f"{path}: onnxruntime cannot load this model ({str(exc).splitlines()[0]})") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in an ONNX model (preprocessing, threshold, recipe...)."""
    session = onnx_session(path)
    return dict(session.get_modelmeta().custom_metadata_map)


def metadata_json(metadata: dict[str, str], key: str, path: str | Path, expected: type) -> Any:
    """The JSON value of metadata `key`, which must be a `expected` (dict or list); anything else
    (missing, not JSON, nested past Python's recursion limit, another type) is an ExportError naming the key."""
    what = "a mapping" if expected is dict else "a list"
    try:
        value = json.loads(metadata[key])
    except KeyError:
        raise ExportError(f"{path}: no {key} in the model's metadata (was it exported by faceauth?)") from None
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise ExportError(f"{path}: {key} in the model's metadata is not readable JSON "
                          f"({quote(metadata[key], 80)}); expected {what}") from None
    if not isinstance(value, expected):
        raise ExportError(f"{path}: {key} in the model's metadata is {quote(value, 80)}; expected {what}")
    return value


def recipe_from_metadata(metadata: dict[str, str], path: str | Path) -> dict[str, Any]:
    return metadata_json(metadata, "faceauth.recipe", path, dict)


def decision_threshold(value: Any, where: str) -> float:
    """A decision threshold (a number, or its text) as a finite float; anything else is an ExportError
    naming `where`: a NaN threshold would reject everything without a word."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ExportError(f"{where}: expected a finite number, got {quote(value, 80)}")
    return number


def metadata_threshold(metadata: dict[str, str], path: str | Path) -> float | None:
    """The decision threshold `faceauth.threshold` (None when the model has none), checked by `decision_threshold`."""
    text = metadata.get("faceauth.threshold", "")
    return decision_threshold(text, f"{path}: faceauth.threshold in the model's metadata") if text else None


def run_session(session: Any, *inputs: np.ndarray) -> list[np.ndarray]:
    feeds = {meta.name: np.ascontiguousarray(x) for meta, x in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)
