"""Per-image outputs of the component models, cached per split, and the attempts' features built from them.

Each image an attempt uses is scored once: every image by the embedding models, the probes by the
liveness models (and their quality). The cache file in ``$FACEAUTH_CACHE/scores/`` is named by the
dataset, split and settings; it stores the SHA-256 of the component models, and one made with other
models is rebuilt. Features are those of `faceauth.deploy.features`, the code deployment runs.

Crops: when the attempts are photos (`AttemptSet.photos`: the recipe has a detector), each component
scores the face as deployment crops it for that model (`faceauth.deploy.models.FaceFinder` with the
model's crop geometry; several scales averaged), so the fused scores are those of deployment; an image
where that model's detector finds no face is scored on the attempts' crop (counted in a warning). The
quality features use the attempts' crop, which the exported fusion model records as its own geometry.
Attempts that are face crops already are given to every component as they are (``detect=False``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from faceauth.deploy.features import EMBEDDING, attempt_features, match_scores, quality_features, template
from faceauth.deploy.models import FaceCrops, as_rgb, scale_averaged
from faceauth.io import console
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


class ComponentCrops:
    """Each component's crops of a photo, as deployment makes them (`faceauth.deploy.models.FaceCrops`)."""

    def __init__(self, components: Sequence[Component]):
        self.faces = FaceCrops()
        for component in components:
            self.faces.add(component.geometry)
        self.missed = dict.fromkeys(self.faces.finders, 0)  # geometry -> photos where its detector found no face

    def crops(self, paths: Sequence[str], fallback: Sequence[np.ndarray]) -> dict[str, list[list[np.ndarray]]]:
        """Per geometry, per photo: its crops (one per scale), or [the attempts' crop] when no face was found."""
        found = [self.faces.crops(as_rgb(path), path, required=False) for path in paths]
        per_geometry = {}
        for key in self.faces.finders:
            self.missed[key] += sum(crops[key] is None for crops in found)
            per_geometry[key] = [crops[key] or [crop] for crops, crop in zip(found, fallback)]
        return per_geometry

    @staticmethod
    def score(component: Component, crops: list[list[np.ndarray]]) -> np.ndarray:
        """`component`'s output per photo, averaged over its crops (as `Authenticator` does)."""
        return scale_averaged(component.score, component.role, crops)


def compute_outputs(dataset: Any, components: Sequence[Component], quality: bool, batch_size: int,
                    progress: bool, where: str) -> dict[str, np.ndarray]:
    """Every image's embeddings (``embedding/<i>``), every probe's liveness scores (``liveness/<i>``) and quality."""
    images, probes = dataset.images(), dataset.probes()
    probe_row = {p: i for i, p in enumerate(probes)}
    out: dict[str, Any] = {"images": np.array(images), "probes": np.array(probes)}
    chunks: dict[str, list[np.ndarray]] = {f"{c.role}/{i}": [] for i, c in enumerate(components)}
    chunks["quality"] = []
    probe_order: list[int] = []
    own = ComponentCrops(components) if getattr(dataset, "photos", False) else None
    starts = range(0, len(images), batch_size)
    with console.phase(f"scoring {where}"):
        for start in console.progress(starts, len(starts), enabled=progress):
            paths = images[start:start + batch_size]
            pixels = [np.asarray(dataset.load(p).convert("RGB")) for p in paths]
            is_probe = [p in probe_row for p in paths]
            probe_pixels = [x for x, keep in zip(pixels, is_probe) if keep]
            probe_order.extend(probe_row[p] for p, keep in zip(paths, is_probe) if keep)
            crops = own.crops(paths, pixels) if own is not None else {}
            for i, component in enumerate(components):
                if component.role != EMBEDDING and not probe_pixels:
                    continue
                if own is None:
                    chunks[f"{component.role}/{i}"].append(
                        component.score(pixels if component.role == EMBEDDING else probe_pixels))
                    continue
                mine = crops[component.geometry.to_json()]
                mine = mine if component.role == EMBEDDING else [c for c, keep in zip(mine, is_probe) if keep]
                chunks[f"{component.role}/{i}"].append(own.score(component, mine))
            if quality and probe_pixels:
                chunks["quality"].append(np.stack([quality_features(x) for x in probe_pixels]))
    if own is not None:
        for key, count in own.missed.items():
            if count:
                names = ", ".join(c.path.name for c in components if c.geometry.to_json() == key)
                log.warning("%s: %d photo(s) without a face for the crop geometry of %s (%s); scored on the "
                            "attempts' crops", where, count, names, key)
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
                "roles": [c.role for c in components], "photos": bool(getattr(dataset, "photos", False)),
                "version": SCORES_VERSION}
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
