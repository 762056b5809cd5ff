"""What a trainer hands to an exporter: the `Bundle`, and the metadata every faceauth model carries.

The exporter component turns a `Bundle` into a file; reading exported models back (sessions, metadata)
is `faceauth.io.onnx`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import numpy as np

__all__ = ["Bundle", "PARITY_TOLERANCE", "model_metadata"]

PARITY_TOLERANCE = 1e-4


@attrs.frozen
class Bundle:
    """A model in its inference form and what is needed to export and check it.

    `module` maps the tensors of `example_inputs` to the outputs named `output_names`.
    `dynamic_axes` names the axes that must stay free in the exported graph (``{"input": {0:
    "batch"}}``). `check_inputs` are further input tuples the exported model is compared on (for
    example other sequence lengths). `metadata` values are strings stored in the model file.

    For int8 export (``export.quantize: int8``): `calibration()` yields input tuples (numpy
    float32 batches of validation data); `evaluate(score)` returns the test split's metrics of a
    scorer (a batch tensor in, scores out), and `parity_metric` names the one int8 may change only
    within ``export.int8_max_change``.
    """

    module: Any
    example_inputs: tuple[Any, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    metadata: dict[str, str]
    check_inputs: tuple[tuple[Any, ...], ...] = ()
    calibration: Callable[[], Iterable[tuple[np.ndarray, ...]]] | None = None
    evaluate: Callable[[Callable[[Any], np.ndarray]], dict[str, float]] | None = None
    parity_metric: str = ""


def model_metadata(run: Any, preprocess: Any = None, *, task: str, score: str, threshold: float | None,
                   **extra: str) -> dict[str, str]:
    """The metadata every faceauth model carries: preprocessing (``preprocess.*``, from a backbone's
    `Preprocess`; None for a model whose input is not an image, such as the fusion model's feature rows),
    task, score meaning, threshold, the resolved recipe (so `faceauth-eval` can rebuild the data), the
    versions that made it, and the crop geometry of its training faces (``faceauth.crop``, when its data
    crops faces), which every deployment path reads to crop alike. `extra` adds ``faceauth.<key>``."""
    from faceauth.faces import crop_geometry

    recipe = run.recipe.to_dict()
    crop = crop_geometry(recipe)
    return {
        **({f"preprocess.{k}": v for k, v in preprocess.as_metadata().items()} if preprocess is not None else {}),
        "faceauth.task": task,
        "faceauth.score": score,
        "faceauth.threshold": f"{threshold:.9g}" if threshold is not None else "",
        "faceauth.recipe": json.dumps(recipe),
        "faceauth.versions": json.dumps(run.versions()),
        **({"faceauth.crop": crop.to_json()} if crop is not None else {}),
        **{f"faceauth.{k}": v for k, v in extra.items()},
    }
