"""Five landmarks of every image of an identity folder, found once by the recipe's detector and cached.

With ``detector: {name: mtcnn, weights: DIR}`` an `identity_folder` of unaligned photos is aligned to
the ArcFace template as it is read, from the landmarks of each image's largest face (as deployment
finds it: `faceauth.faces.first_face`). The first build detects every image (with a progress bar);
the landmarks are stored in the cache, keyed by root, detector settings and each file's size and
modification time, so later builds detect only new or changed images. Images without a face get
NaN landmarks and are left out by the loader, with a count in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from faceauth.data import read_image
from faceauth.errors import RecipeError
from faceauth.faces import first_face
from faceauth.io.paths import cache_dir, read_npz, write_npz

log = logging.getLogger(__name__)


def _signature(path: str) -> str:
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def detect_landmarks(paths: list[str], detector: Any, settings: dict[str, Any], root: Path) -> np.ndarray:
    """(N, 5, 2) float32 landmarks of the largest face of each image in `paths`; NaN where none is found."""
    if not getattr(detector, "landmarks", False):
        raise RecipeError(f"detector: identity_folder aligns faces by their five landmarks, and "
                          f"{type(detector).__name__} finds none (use detector: {{name: mtcnn, weights: DIR}}, "
                          f"or give data.landmarks as a CSV)")
    key = hashlib.sha256(json.dumps({"root": str(root), **settings}, sort_keys=True, default=str).encode())
    cache = cache_dir("landmarks", f"identity-{key.hexdigest()[:16]}.npz")
    stored = read_npz(cache) or {}
    known: dict[str, tuple[str, np.ndarray]] = {}
    if {"paths", "signatures", "points"} <= set(stored):
        known = {p: (s, pts) for p, s, pts in zip(stored["paths"].tolist(), stored["signatures"].tolist(),
                                                    stored["points"])}
    signatures = [_signature(p) for p in paths]
    points = np.full((len(paths), 5, 2), np.nan, dtype=np.float32)
    todo = []
    for i, (path, signature) in enumerate(zip(paths, signatures)):
        entry = known.get(path)
        if entry is not None and entry[0] == signature:
            points[i] = entry[1]
        else:
            todo.append(i)
    for i in tqdm(todo, desc="landmarks", unit="image", disable=not todo, leave=False):
        image = np.asarray(read_image(paths[i]))
        box = first_face(detector.detect(image), image.shape[1], image.shape[0])
        if box is not None and box.landmarks is not None:
            points[i] = np.asarray(box.landmarks, dtype=np.float32)
    if todo:
        write_npz(cache, {"paths": np.array(paths), "signatures": np.array(signatures), "points": points})
        log.info("identity_folder: detected the landmarks of %d images (cached for later builds)", len(todo))
    return points
