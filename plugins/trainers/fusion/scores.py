"""Per-image outputs of the component models, cached per split, and the attempts' features built from them.

Each image an attempt uses is scored once: every image by the embedding models, the probes by the
liveness models (and their quality). The cache file in ``$FACEAUTH_CACHE/scores/`` is named by the
dataset, split and settings; it stores the SHA-256 of the component models, and one made with other
models is rebuilt. Features are those of `faceauth.deploy.features`, the code deployment runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from faceauth.deploy.features import EMBEDDING, attempt_features, match_scores, quality_features, template
from faceauth.io.paths import cache_dir, read_npz, write_npz

from faceauth.plugins.trainers.fusion.components import Component

__all__ = ["SCORES_VERSION", "compute_outputs", "features_of", "image_outputs", "images_key"]

log = logging.getLogger(__name__)

SCORES_VERSION = 2  # 2: liveness features are log-odds of live, no longer P(live)


def images_key(paths: Sequence[str]) -> str:
    """A digest of the images' paths, sizes and modification times: other images, another cache file."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def compute_outputs(dataset: Any, components: Sequence[Component], quality: bool, batch_size: int,
                    progress: bool, where: str) -> dict[str, np.ndarray]:
    """Every image's embeddings (``embedding/<i>``), every probe's liveness scores (``liveness/<i>``) and quality."""
    images, probes = dataset.images(), dataset.probes()
    probe_row = {p: i for i, p in enumerate(probes)}
    out: dict[str, Any] = {"images": np.array(images), "probes": np.array(probes)}
    chunks: dict[str, list[np.ndarray]] = {f"{c.role}/{i}": [] for i, c in enumerate(components)}
    chunks["quality"] = []
    probe_order: list[int] = []
    with tqdm(total=len(images), desc=f"scoring {where}", unit="image", disable=not progress, leave=False) as bar:
        for start in range(0, len(images), batch_size):
            paths = images[start:start + batch_size]
            pixels = [np.asarray(dataset.load(p).convert("RGB")) for p in paths]
            is_probe = [p in probe_row for p in paths]
            probe_pixels = [x for x, keep in zip(pixels, is_probe) if keep]
            probe_order.extend(probe_row[p] for p, keep in zip(paths, is_probe) if keep)
            for i, component in enumerate(components):
                if component.role == EMBEDDING:
                    chunks[f"{component.role}/{i}"].append(component.score(pixels))
                elif probe_pixels:
                    chunks[f"{component.role}/{i}"].append(component.score(probe_pixels))
            if quality and probe_pixels:
                chunks["quality"].append(np.stack([quality_features(x) for x in probe_pixels]))
            bar.update(len(paths))
    order = np.argsort(np.asarray(probe_order))  # probe rows back into `probes` order
    for key, parts in chunks.items():
        if not parts:
            continue
        values = np.concatenate(parts).astype(np.float32)
        out[key] = values if key.startswith(EMBEDDING) else values[order]
    return out


def image_outputs(dataset: Any, split: str, components: Sequence[Component], *, quality: bool, batch_size: int,
                  progress: bool, data_section: Any) -> dict[str, np.ndarray]:
    """`compute_outputs`, read from the split's cache file when it was made with these component models."""
    images = dataset.images()
    settings = {"data": data_section, "split": split, "images": images_key(images), "quality": quality,
                "roles": [c.role for c in components], "version": SCORES_VERSION}
    name = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache_dir("scores", f"{split}-{name}.npz")
    models = [{"role": c.role, "sha256": c.sha256} for c in components]
    if path.is_file():
        stored = read_npz(path)
        try:
            if stored is None:
                raise ValueError
            if json.loads(str(stored.pop("models"))) == models:
                log.debug("%s: scores read from %s", split, path)
                return stored
            log.info("%s: the cached scores %s were made with other component models; rebuilding", split, path)
        except (ValueError, KeyError):  # json.JSONDecodeError is a ValueError
            log.warning("%s: the cached scores %s are damaged; rebuilding", split, path)
    outputs = compute_outputs(dataset, components, quality, batch_size, progress, split)
    write_npz(path, {"models": np.array(json.dumps(models)), **outputs})
    return outputs


def features_of(dataset: Any, outputs: dict[str, np.ndarray], components: Sequence[Component],
                quality: bool) -> np.ndarray:
    """[N, F] features of the dataset's attempts (`faceauth.deploy.features.attempt_features`)."""
    row = {p: i for i, p in enumerate(outputs["images"].tolist())}
    probe_row = {p: i for i, p in enumerate(outputs["probes"].tolist())}
    probes = np.array([probe_row[a.probe] for a in dataset.attempts])
    matches, liveness = [], []
    for i, component in enumerate(components):
        values = outputs[f"{component.role}/{i}"]
        if component.role == EMBEDDING:
            templates = np.stack([template(values[[row[p] for p in a.enrol]]) for a in dataset.attempts])
            matches.append(match_scores(templates, values[[row[a.probe] for a in dataset.attempts]]))
        else:
            liveness.append(values[probes])
    return attempt_features(matches, liveness, outputs["quality"][probes] if quality else None)
