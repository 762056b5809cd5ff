"""What a trainer hands to an exporter, and running exported ONNX models with onnxruntime.

The exporter component turns a `Bundle` into a file; this module stays on the reading side
(sessions, metadata) so that evaluation and deployment code need no exporter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from faceauth.errors import ExportError

__all__ = ["Bundle", "model_metadata", "onnx_session", "read_metadata", "recipe_from_metadata", "run_session",
           "PARITY_TOLERANCE"]

PARITY_TOLERANCE = 1e-4


@attrs.frozen
class Bundle:
    """A model in its inference form and what is needed to export and check it.

    `module` maps the tensors of `example_inputs` to the outputs named `output_names`.
    `dynamic_axes` names the axes that must stay free in the exported graph (``{"input": {0:
    "batch"}}``). `check_inputs` are further input tuples the exported model is compared on (for
    example other sequence lengths). `metadata` values are strings stored in the model file.
    """

    module: Any
    example_inputs: tuple[Any, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    metadata: dict[str, str]
    check_inputs: tuple[tuple[Any, ...], ...] = ()


def model_metadata(run: Any, preprocess: Any, *, task: str, score: str, threshold: float | None,
                   **extra: str) -> dict[str, str]:
    """The metadata every faceauth model carries: preprocessing, task, score meaning, threshold,
    the resolved recipe (so `faceauth-eval` can rebuild the data), the versions that made it, and the
    crop geometry of its training faces (``faceauth.crop``, when its data crops faces), which every
    deployment path reads to crop alike."""
    from faceauth.faces import crop_geometry

    recipe = run.recipe.to_dict()
    crop = crop_geometry(recipe)
    return {
        **{f"preprocess.{k}": v for k, v in preprocess.as_metadata().items()},
        "faceauth.task": task,
        "faceauth.score": score,
        "faceauth.threshold": f"{threshold:.9g}" if threshold is not None else "",
        "faceauth.recipe": json.dumps(recipe),
        "faceauth.versions": json.dumps(run.versions()),
        **({"faceauth.crop": crop.to_json()} if crop is not None else {}),
        **{f"faceauth.{k}": v for k, v in extra.items()},
    }


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with spinning disabled (idle spinning slows whatever runs next)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path}: onnxruntime cannot load this model ({str(exc).splitlines()[0]})") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in an ONNX model (preprocessing, threshold, recipe...)."""
    session = onnx_session(path)
    return dict(session.get_modelmeta().custom_metadata_map)


def recipe_from_metadata(metadata: dict[str, str], path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(metadata["faceauth.recipe"])
    except (KeyError, json.JSONDecodeError):
        raise ExportError(f"{path}: no faceauth recipe in the model's metadata (was it exported by faceauth?)") from None


def run_session(session: Any, *inputs: np.ndarray) -> list[np.ndarray]:
    feeds = {meta.name: np.ascontiguousarray(x) for meta, x in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)
