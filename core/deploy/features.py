"""The features of a verification attempt, computed alike by the `fusion` trainer and the `Authenticator`.

An attempt is enrolment image(s) of a person and a probe. Its features, in `feature_names` order:

1. ``match/<i>`` per embedding model: the cosine similarity of the probe's unit embedding with the
   enrolment template (`template`: the re-normalised mean of the enrolment images' unit embeddings);
2. ``liveness/<i>`` per liveness model: its ``score`` of the probe (the log-odds of live);
3. optionally the probe's quality (`quality_features`): ``quality/sharpness``, log(1 + variance of the
   Laplacian) of the grey probe at 112x112, and ``quality/brightness``, its mean grey level in 0-1.

numpy and Pillow only: deployment imports this without PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "EMBEDDING",
    "LIVENESS",
    "QUALITY_FEATURES",
    "attempt_features",
    "feature_names",
    "match_scores",
    "quality_features",
    "template",
    "unit",
]

EMBEDDING, LIVENESS = "embedding", "liveness"  # the roles of the component models
QUALITY_FEATURES = ("quality/sharpness", "quality/brightness")
_QUALITY_SIZE = 112


def feature_names(num_embedding: int, num_liveness: int, quality: bool) -> list[str]:
    """The fusion model's input order: match scores, liveness scores, then the probe's quality."""
    return ([f"match/{i}" for i in range(num_embedding)] + [f"liveness/{i}" for i in range(num_liveness)]
            + (list(QUALITY_FEATURES) if quality else []))


def unit(x: np.ndarray) -> np.ndarray:
    """`x` scaled to unit length along its last axis."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def template(embeddings: np.ndarray) -> np.ndarray:
    """The enrolment template of unit embeddings [..., K, D]: their mean, re-normalised, [..., D]."""
    return unit(np.asarray(embeddings).mean(axis=-2))


def match_scores(template: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit `probes` [N, D] (or [D]) with the unit `template` [D] (or [N, D])."""
    return np.sum(unit(template) * unit(probes), axis=-1)


def quality_features(image: np.ndarray) -> np.ndarray:
    """(sharpness, brightness) of an RGB image: log(1 + Laplacian variance) and mean grey in 0-1, at 112x112."""
    grey = Image.fromarray(image).convert("L").resize((_QUALITY_SIZE, _QUALITY_SIZE), Image.BILINEAR)
    g = np.asarray(grey, np.float32)
    laplacian = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return np.array([np.log1p(float(laplacian.var())), float(g.mean()) / 255.0], np.float32)


def attempt_features(matches: Sequence[np.ndarray], liveness: Sequence[np.ndarray],
                     quality: np.ndarray | None) -> np.ndarray:
    """Feature rows [N, F] float32 in `feature_names` order: per embedding model its match scores [N], per
    liveness model its scores [N], then the probes' `quality_features` [N, 2] (None: without quality)."""
    columns = [np.asarray(c, np.float32).reshape(-1) for c in (*matches, *liveness)]
    rows = len(columns[0]) if columns else (0 if quality is None else len(quality))
    features = np.stack(columns, axis=1) if columns else np.zeros((rows, 0), np.float32)
    if quality is not None:
        features = np.concatenate([features, np.asarray(quality, np.float32).reshape(rows, -1)], axis=1)
    return features.astype(np.float32)
