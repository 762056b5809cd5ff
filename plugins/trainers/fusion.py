"""The `fusion` trainer: one accept/reject decision from face-matching and liveness scores.

A matcher alone accepts a print of the enrolled person; a liveness model alone accepts any live
impostor. This trainer scores verification attempts (`faceauth.plugins.datasets.attempts`) with
frozen component models and learns the decision over their scores:

- features per attempt (`faceauth.deploy.authenticator` computes them, the same code at deployment): the
  cosine match score of each embedding model (probe vs. the enrolment template), the log-odds of
  live of the probe from each liveness model (its ``score``), and, with ``quality: true``, the probe's sharpness and brightness;
- ``mlp``: a small MLP on those features (the fused model that is exported), and beside it the
  field's baselines: ``logistic`` (logistic-regression score fusion, scikit-learn), ``and`` (accept
  when every component accepts at its own threshold: chosen on validation at each component's EER
  with ``and_thresholds: val``, or the thresholds stored in the models with ``model``), and
  ``match`` (the matcher alone: the mean match score, no liveness). Several embedding models are
  fused as an ensemble by the MLP and logistic models.

Component models are exported ``.onnx`` files (run with onnxruntime) or checkpoints (loaded by
their own trainer through the recipe they carry); a model of the wrong kind is an error. When
none are given, the trainer first trains small ones with `faceauth.run` (see `ComponentTraining`)
into ``$FACEAUTH_CACHE/components/<key>/``, reused by later runs with the same settings. Per-image
outputs are computed once per split and cached in ``$FACEAUTH_CACHE/scores/``; the cache records
the SHA-256 of the component models and is rebuilt when they change.

Measured like the field (Chingovska et al., "Anti-spoofing in action: joint operation with a
verification system"): the licit protocol (genuine vs. zero-effort impostors) gives FAR, FRR,
HTER, EER and AUC; the spoof protocol (genuine vs. spoofs) gives SFAR, the share of spoof attempts
accepted (per attack type too). Each scored model's threshold is chosen on validation at
``target_far`` on the licit protocol and applied unchanged to test (the joint operating point).

The run directory doubles as a models directory for `faceauth.deploy.authenticator.Authenticator`:
``model.onnx`` (features [N, F] -> P(accept), dynamic batch; metadata: feature order, components,
threshold) and the component models as ``embedding.onnx`` / ``liveness.onnx`` (``-<i>`` suffixes
when several; checkpoints are exported).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import faceauth
from faceauth.training import checkpoint, weights
from faceauth import metrics as fa_metrics
from faceauth.deploy.authenticator import (EMBEDDING, LIVENESS, article, feature_names, file_sha256, match_scores, model_geometry, open_component, quality_features, unit)
from faceauth.errors import CheckpointError, DataError, RecipeError
from faceauth.training.export import Bundle
from faceauth.io.paths import cache_dir, read_npz, write_npz
from faceauth.training.run import FitResult, Run
from faceauth.config.build import build_component

log = logging.getLogger(__name__)

TASK = "fusion"
MODELS = ("mlp", "logistic", "and", "match")
SCORED = ("mlp", "logistic", "match")
_SCORES_VERSION = 2  # 2: liveness features are log-odds of live, no longer P(live)


# options ----------------------------------------------------------------------------------------------
@attrs.frozen
class ComponentTraining:
    """The component models trained first when a recipe gives none.

    By default an embedding model (`embedding` trainer on `demo_identities`) and a liveness model
    (`classifier` trainer on the `demo` set), both with the fusion recipe's `backbone`, the
    embedding one with its `loss`. `*_recipe` names a recipe file to use instead; `*_overrides`
    are applied to either, as on the faceauth-run command line.
    """

    embedding_recipe: str | None = None
    liveness_recipe: str | None = None
    embedding_overrides: list[str] = attrs.field(factory=list)
    liveness_overrides: list[str] = attrs.field(factory=list)


def _layer_sizes(instance: Any, attribute: attrs.Attribute, value: list[int]) -> None:
    if any(size <= 0 for size in value):
        raise ValueError(f"{attribute.name}: expected positive layer sizes, got {value!r}")


@attrs.frozen
class FusionOptions:
    embedding_models: list[str] = attrs.field(factory=list)  # .onnx or checkpoints; several: an ensemble
    liveness_models: list[str] = attrs.field(factory=list)
    quality: bool = True  # the probe's sharpness and brightness as features
    hidden: list[int] = attrs.field(factory=lambda: [16, 16], validator=_layer_sizes)  # [] : a linear model
    dropout: float = attrs.field(default=0.1, validator=faceauth.schema.fraction)
    epochs: int = attrs.field(default=150, validator=faceauth.schema.positive)
    lr: float = attrs.field(default=0.01, validator=faceauth.schema.positive)
    weight_decay: float = attrs.field(default=1e-4, validator=faceauth.schema.non_negative)
    batch_size: int = attrs.field(default=64, validator=faceauth.schema.positive)
    target_far: float = attrs.field(default=0.01, validator=faceauth.schema.fraction)
    and_thresholds: Literal["val", "model"] = "val"
    score_batch_size: int = attrs.field(default=32, validator=faceauth.schema.positive)
    checkpoint_every: int = attrs.field(default=10, validator=faceauth.schema.positive)  # epochs between last.pt
    progress: bool = True
    train_components: ComponentTraining = ComponentTraining()


# component models -------------------------------------------------------------------------------------
@attrs.define
class Component:
    """A frozen component model: `score(images)` maps RGB uint8 crops to unit embeddings or log-odds of live."""

    role: str
    source: Path
    sha256: str
    threshold: float | None
    score: Callable[[Sequence[np.ndarray]], np.ndarray]
    trained: dict[str, Any] | None = None  # the metrics of a component this trainer trained
    geometry: Any = None  # the `faceauth.faces.CropGeometry` of its training faces (None: not recorded)


class TorchComponent:
    """A checkpoint's model through its own trainer: its evaluation transform, then `trainer.torch_scorer`."""

    def __init__(self, role: str, scorer: Callable[[torch.Tensor], np.ndarray], preprocess: Any):
        from faceauth.training.transforms import eval_transform

        self.role, self.scorer, self.transform = role, scorer, eval_transform(preprocess)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        x = torch.stack([self.transform(Image.fromarray(image)) for image in images])
        out = np.asarray(self.scorer(x), np.float32)
        return unit(out) if self.role == EMBEDDING else out.reshape(-1)


def load_component(registry: Any, path: str | Path, role: str, where: str) -> Component:
    """An exported model (onnxruntime) or a checkpoint (its trainer's `load_model`), checked to be of `role`."""
    path = Path(path).expanduser()
    if path.suffix == ".onnx":
        model = open_component(path, role, where)
        return Component(role, path, model.sha256, model.threshold, model,
                         geometry=model_geometry(model.metadata, str(path)))
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    payload = checkpoint.load(path)
    task = payload.get("task") or "unknown"
    if task != role:
        raise CheckpointError(f"{where}: {path} is {article(task)} checkpoint (task {task!r}); "
                              f"expected {article(role)} model")
    from faceauth.config.recipe import load_recipe

    stored = checkpoint.recipe_of(payload)
    # Scored on the CPU whatever device it trained on; its own weights only (no file it started from is read).
    recipe = load_recipe(None, ("device=cpu",), registry=registry, base=stored)
    trainer = build_component(registry, recipe, "trainer")
    with weights.restoring(), checkpoint.fitting(payload):
        model = trainer.load_model(Run(recipe, registry, directory=Path(".")), payload).to("cpu")
    preprocess = getattr(model, "preprocess", None) or model.backbone.preprocess
    threshold = getattr(model, "threshold", payload.get("threshold"))  # as its trainer reads it
    from faceauth.faces import CropGeometry, crop_geometry

    return Component(role, path, file_sha256(path), None if threshold is None else float(threshold),
                     TorchComponent(role, trainer.torch_scorer(model), preprocess),
                     geometry=crop_geometry(stored) or CropGeometry())


def _builtin_component_recipes(recipe: Any, progress: bool) -> dict[str, dict[str, Any]]:
    common = {"seed": recipe.seed, "device": recipe.device, "backbone": recipe.backbone.to_dict(),
              "scheduler": {"name": "cosine", "warmup_epochs": 0.5}, "export": {"name": "onnx"}}
    loop = {"batch_size": 32, "num_workers": 0, "progress": progress}
    return {
        EMBEDDING: {**common, "data": {"name": "demo_identities", "identities": 100, "images_per_identity": 8},
                    "loss": recipe.loss.to_dict(), "trainer": {"name": "embedding", "epochs": 5, **loop},
                    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}},
        LIVENESS: {**common, "data": {"name": "demo"}, "loss": {"name": "cross_entropy"},
                   "trainer": {"name": "classifier", "epochs": 3, **loop},
                   "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 5e-4}},
    }


def _component_recipes(recipe: Any, options: FusionOptions) -> dict[str, tuple[dict[str, Any], list[str]]]:
    from faceauth.config.recipe import read_yaml

    training = options.train_components
    builtin = _builtin_component_recipes(recipe, options.progress)
    files = {EMBEDDING: training.embedding_recipe, LIVENESS: training.liveness_recipe}
    overrides = {EMBEDDING: list(training.embedding_overrides), LIVENESS: list(training.liveness_overrides)}
    return {role: (read_yaml(Path(files[role]).expanduser()) if files[role] else builtin[role], overrides[role])
            for role in (EMBEDDING, LIVENESS)}


def _components_folder(recipes: dict[str, tuple[dict[str, Any], list[str]]]) -> Path:
    from faceauth.config.registry import version

    key = hashlib.sha256(json.dumps({"recipes": recipes, "faceauth": version()}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    return cache_dir("components", key)


def train_components(recipe: Any, options: FusionOptions, roles: Sequence[str]) -> dict[str, Path]:
    """Train the missing component models with `faceauth.run` (once per setting; later runs reuse them).

    Each run goes to a temporary folder renamed into place when it finished, so an interrupted run
    is never taken for a finished one.
    """
    from faceauth.runs.runner import run as faceauth_run

    recipes = _component_recipes(recipe, options)
    folder = _components_folder(recipes)
    found = {}
    for role in roles:
        final = folder / role
        if not (final / "model.onnx").is_file():
            raw, overrides = recipes[role]
            tmp = folder / f".{role}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            path = tmp / f"{role}.yaml"
            path.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
            log.info("training the %s component model (once, into %s)", role, final)
            result = faceauth_run(path, [*overrides, f"output_dir={tmp}", "run_name=run"])
            if result.interrupted:
                raise KeyboardInterrupt
            if result.onnx_path is None:
                raise RecipeError(f"trainer.train_components: the {role} run exported no model (was it stopped, "
                                  f"or does its recipe set export: null?)")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp / "run", final)
            shutil.rmtree(tmp, ignore_errors=True)
        found[role] = final
    return found


def trained_component_dirs(recipe: Any, options: FusionOptions) -> Path:
    return _components_folder(_component_recipes(recipe, options))


def resolve_components(run: Run, options: FusionOptions, train: bool) -> list[Component]:
    """The component models: those the recipe names, else the ones this trainer trains (or trained)."""
    given = {EMBEDDING: list(options.embedding_models), LIVENESS: list(options.liveness_models)}
    keys = {EMBEDDING: "trainer.embedding_models", LIVENESS: "trainer.liveness_models"}
    missing = [role for role in (EMBEDDING, LIVENESS) if not given[role]]
    trained: dict[str, Path] = {}
    if missing:
        if train:
            trained = train_components(run.recipe, options, missing)
        else:
            folder = trained_component_dirs(run.recipe, options)
            trained = {role: folder / role for role in missing}
            for role, path in trained.items():
                if not (path / "model.onnx").is_file():
                    raise DataError(f"{keys[role]}: none given, and the {role} model this recipe trains is not in "
                                    f"{path} (train the fusion recipe again, or name the models)")
    components = []
    for role in (EMBEDDING, LIVENESS):
        if given[role]:
            for i, path in enumerate(given[role]):
                components.append(load_component(run.registry, path, role, f"{keys[role]}[{i}]"))
        else:
            component = load_component(run.registry, trained[role] / "model.onnx", role, keys[role])
            metrics_file = trained[role] / "metrics.json"
            if metrics_file.is_file():
                figures = json.loads(metrics_file.read_text(encoding="utf-8"))
                component.trained = {"run": str(trained[role]), **{k: figures.get(k) for k in ("val", "test")}}
            components.append(component)
    warn_other_crops(run.recipe.to_dict(), components)
    return components


def warn_other_crops(recipe: dict[str, Any], components: Sequence[Component]) -> list[str]:
    """Warn about (and return) the components trained on faces cropped unlike the attempts.

    Training features score every component on the attempts' crops, while deployment crops each
    model as it was trained (its ``faceauth.crop``): where the two differ, so may the fused scores.
    """
    from faceauth.faces import CropGeometry, crop_geometry

    attempts = crop_geometry(recipe) or CropGeometry()
    other = [str(c.source) for c in components if c.geometry is not None and c.geometry != attempts]
    if other:
        log.warning("fusion: %d component model(s) were trained on other face crops than the attempts' (%s), e.g. "
                    "%s; deployment crops each model as it was trained, so its fused scores may differ from "
                    "training's (train the components on the attempts' crop geometry)", len(other),
                    attempts.to_json(), other[0])
    return other


def _role_files(components: Sequence[Component]) -> list[str]:
    names = []
    for component in components:
        same = [c for c in components if c.role == component.role]
        names.append(f"{component.role}.onnx" if len(same) == 1 else f"{component.role}-{same.index(component)}.onnx")
    return names


def ship_components(components: Sequence[Component], folder: Path) -> list[dict[str, Any]]:
    """Put the ONNX form of each component into `folder` (copied, or exported from a checkpoint) and describe it."""
    from faceauth.runs.models import export_checkpoint

    records = []
    for component, name in zip(components, _role_files(components)):
        target = folder / name
        if component.source.suffix == ".onnx":
            if component.source.resolve() != target.resolve():
                shutil.copyfile(component.source, target)
        else:
            export_checkpoint(component.source, target)
        records.append({"role": component.role, "file": name, "sha256": file_sha256(target),
                        "source": str(component.source), "source_sha256": component.sha256,
                        "threshold": component.threshold})
    return records


# features ---------------------------------------------------------------------------------------------
def _images_key(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _compute_outputs(dataset: Any, components: Sequence[Component], quality: bool, batch_size: int,
                     progress: bool, where: str) -> dict[str, np.ndarray]:
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


def image_outputs(dataset: Any, split: str, components: Sequence[Component], options: FusionOptions,
                  data_section: Any) -> dict[str, np.ndarray]:
    """Every image's embeddings and every probe's liveness (and quality), cached per split.

    The cache file is named by the dataset, split and settings; it stores the SHA-256 of the
    component models, and one made with other models is rebuilt.
    """
    images = dataset.images()
    settings = {"data": data_section, "split": split, "images": _images_key(images), "quality": options.quality,
                "roles": [c.role for c in components], "version": _SCORES_VERSION}
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
    outputs = _compute_outputs(dataset, components, options.quality, options.score_batch_size, options.progress, split)
    write_npz(path, {"models": np.array(json.dumps(models)), **outputs})
    return outputs


def attempt_features(dataset: Any, outputs: dict[str, np.ndarray], components: Sequence[Component],
                     quality: bool) -> np.ndarray:
    """[N, F] features of the attempts, in `feature_names` order (match, liveness, quality)."""
    row = {p: i for i, p in enumerate(outputs["images"].tolist())}
    probe_row = {p: i for i, p in enumerate(outputs["probes"].tolist())}
    probes = np.array([probe_row[a.probe] for a in dataset.attempts])
    columns = []
    for i, component in enumerate(components):
        values = outputs[f"{component.role}/{i}"]
        if component.role == EMBEDDING:
            templates = np.stack([unit(values[[row[p] for p in a.enrol]].mean(axis=0)) for a in dataset.attempts])
            columns.append(match_scores(templates, values[[row[a.probe] for a in dataset.attempts]]))
        else:
            columns.append(values[probes])
    features = np.stack(columns, axis=1)
    if quality:
        features = np.concatenate([features, outputs["quality"][probes]], axis=1)
    return features.astype(np.float32)


# measuring --------------------------------------------------------------------------------------------
def _rate(mask: np.ndarray, accepted: np.ndarray) -> float:
    return float(np.mean(accepted[mask])) if mask.any() else float("nan")


def decision_figures(accepted: np.ndarray, kinds: np.ndarray, attack_types: np.ndarray) -> dict[str, float]:
    """FAR and FRR (licit protocol), HTER, and SFAR (spoof protocol, pooled and per attack type)."""
    accepted = np.asarray(accepted, bool)
    far = _rate(kinds == "impostor", accepted)
    frr = 1.0 - _rate(kinds == "genuine", accepted)
    figures = {"far": far, "frr": frr, "hter": (far + frr) / 2, "sfar": _rate(kinds == "spoof", accepted)}
    spoof_types = sorted(set(attack_types[kinds == "spoof"].tolist()))
    if len(spoof_types) > 1:
        for attack in spoof_types:
            figures[f"sfar_{attack}"] = _rate((kinds == "spoof") & (attack_types == attack), accepted)
    return figures


def threshold_at_far(scores: np.ndarray, kinds: np.ndarray, target: float) -> float:
    """The lowest threshold whose FAR on the licit protocol is <= `target` (the best FRR within it)."""
    licit = (kinds == "genuine") | (kinds == "impostor")
    fpr, _, thresholds = fa_metrics.roc_points(scores[licit], kinds[licit] == "genuine")
    index = int(np.flatnonzero(fpr <= target * (1 + 1e-9))[-1])
    if index == 0:  # only "accept nothing" reaches the target: just above the highest score
        return float(np.nextafter(np.max(scores[licit]), np.inf))
    return float(thresholds[index])


def scored_figures(scores: np.ndarray, kinds: np.ndarray, attack_types: np.ndarray, threshold: float,
                   eer_threshold: float | None = None) -> dict[str, float]:
    """A scored model's figures at `threshold`, its licit EER and AUC, and HTER/SFAR at `eer_threshold`."""
    from sklearn.metrics import roc_auc_score

    licit = (kinds == "genuine") | (kinds == "impostor")
    genuine = kinds[licit] == "genuine"
    eer, own_eer_threshold = fa_metrics.eer_threshold(scores[licit], genuine)
    figures = {"threshold": float(threshold), **decision_figures(scores >= threshold, kinds, attack_types),
               "eer": eer, "auc": float(roc_auc_score(genuine, scores[licit]))}
    at_eer = eer_threshold if eer_threshold is not None else own_eer_threshold
    by_eer = decision_figures(scores >= at_eer, kinds, attack_types)
    figures.update({"eer_threshold": float(at_eer), "hter_at_eer": by_eer["hter"], "sfar_at_eer": by_eer["sfar"]})
    return figures


def and_thresholds(features: np.ndarray, kinds: np.ndarray, components: Sequence[Component],
                   rule: str) -> list[float]:
    """Each component's threshold for the AND rule: its own (stored) one, or its EER on validation.

    A match score's EER is on the licit protocol (genuine vs. impostor); a liveness score's on the
    probes' liveness (live probes of genuine and impostor attempts vs. spoofs).
    """
    thresholds = []
    for i, component in enumerate(components):
        if rule == "model" and component.threshold is not None:
            thresholds.append(float(component.threshold))
            continue
        if rule == "model":
            log.info("%s has no stored threshold; the AND rule uses its validation EER threshold", component.source)
        if component.role == EMBEDDING:
            licit = kinds != "spoof"
            thresholds.append(fa_metrics.eer_threshold(features[licit, i], kinds[licit] == "genuine")[1])
        else:
            thresholds.append(fa_metrics.eer_threshold(features[:, i], kinds != "spoof")[1])
    return thresholds


def and_accepts(features: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    return np.all(features[:, :len(thresholds)] >= np.asarray(thresholds, np.float32), axis=1)


def det_figure(curves: dict[str, dict[str, Any]], title: str) -> Any:
    """DET curves (probit axes) of each model, licit (FRR vs FAR) and spoof (FRR vs SFAR) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from scipy.stats import norm

    figure = Figure(figsize=(9, 4.2))
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    for position, (attack, label) in enumerate((("impostor", "FAR (zero-effort impostors)"),
                                                ("spoof", "SFAR (spoof attempts accepted)"))):
        axes = figure.add_subplot(1, 2, position + 1)
        for name, curve in curves.items():
            kinds, genuine = curve["kinds"], curve["kinds"] == "genuine"
            mask = genuine | (kinds == attack)
            floor = 0.5 / max(1, int(mask.sum()))
            if "scores" in curve:
                fpr, tpr, _ = fa_metrics.roc_points(curve["scores"][mask], genuine[mask])
                x, y = np.clip(fpr, floor, 1 - floor), np.clip(1 - tpr, floor, 1 - floor)
                line = axes.plot(norm.ppf(x), norm.ppf(y), label=name)[0]
                colour = line.get_color()
            else:
                colour = "black"
            accepted = curve["accepted"]
            point = (np.clip(np.mean(accepted[kinds == attack]), floor, 1 - floor),
                     np.clip(1 - np.mean(accepted[genuine]), floor, 1 - floor))
            axes.plot(norm.ppf(point[0]), norm.ppf(point[1]), "o" if "scores" in curve else "s", color=colour,
                      label=None if "scores" in curve else name)
        axes.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
        axes.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
        lo, hi = norm.ppf(5e-4), norm.ppf(0.99)
        axes.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=label, ylabel="FRR", title=f"{title}: {attack}s")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    return figure


# the fused model --------------------------------------------------------------------------------------
class FusionMLP(torch.nn.Module):
    """Raw features [N, F] in (standardised inside, statistics from the training set), P(accept) [N] out."""

    def __init__(self, num_features: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        layers: list[torch.nn.Module] = []
        width = num_features
        for size in hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
            width = size
        layers.append(torch.nn.Linear(width, 1))
        self.net = torch.nn.Sequential(*layers)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def _scores(model: FusionMLP, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy().astype(np.float64)


class Logistic:
    """Logistic-regression score fusion on standardised features (scikit-learn), kept as plain numbers."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, seed: int) -> Logistic:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(scaler.transform(x), y)
        return cls({"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
                    "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        z = ((x - np.asarray(p["mean"])) / np.asarray(p["scale"])) @ np.asarray(p["coef"]) + p["intercept"]
        return 1.0 / (1.0 + np.exp(-z))


@attrs.define
class SplitData:
    features: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    attack_types: np.ndarray


@attrs.define
class Prepared:
    """What a fusion run trains and measures on, set up before the training loop."""

    components: list[Component]
    records: list[dict[str, Any]]
    data: dict[str, SplitData]
    names: list[str]
    logistic: Logistic
    gates: list[float]
    extras: dict[str, Any]  # stored in every checkpoint


class FusionTrainer:
    def __init__(self, options: FusionOptions):
        self.options = options

    # data -------------------------------------------------------------------------------------------
    def _splits(self, run: Run) -> Any:
        splits = run.build("data")
        for split in ("train", "val", "test"):
            dataset = splits.get(split)
            if dataset is not None and not hasattr(dataset, "attempts"):
                raise RecipeError(f"data.name: the fusion trainer needs verification attempts (demo_attempts, "
                                  f"attempt_folder); '{_data_name(run.recipe)}' gives {type(dataset).__name__}")
        for split in ("train", "val"):
            if splits.get(split) is None:
                raise DataError(f"data: the dataset has no {split} split")
        return splits

    def _split_data(self, run: Run, dataset: Any, split: str, components: Sequence[Component]) -> SplitData:
        outputs = image_outputs(dataset, split, components, self.options, _data_section(run.recipe))
        features = attempt_features(dataset, outputs, components, self.options.quality)
        return SplitData(features, np.asarray(dataset.labels, np.float32), np.asarray(dataset.kinds),
                         np.asarray(dataset.attack_types))

    def _feature_names(self, components: Sequence[Component]) -> list[str]:
        return feature_names(sum(c.role == EMBEDDING for c in components),
                             sum(c.role == LIVENESS for c in components), self.options.quality)

    # training ---------------------------------------------------------------------------------------
    def build_model(self, num_features: int) -> FusionMLP:
        return FusionMLP(num_features, self.options.hidden, self.options.dropout)

    def fit(self, run: Run) -> FitResult:
        torch.manual_seed(run.recipe.seed)
        setup = self._prepare(run)
        model = self.build_model(len(setup.names))
        train = setup.data["train"]
        model.mean.copy_(torch.from_numpy(train.features.mean(axis=0)))
        model.std.copy_(torch.from_numpy(np.maximum(train.features.std(axis=0), 1e-6)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.options.lr, weight_decay=self.options.weight_decay)
        state: dict[str, Any] = {"epoch": 0, "best": {"loss": None, "epoch": None, "threshold": None, "model": None}}
        if run.resume is not None:
            self._restore(run.resume, model, optimizer, state)
        run.emit("train_start")
        self._train(run, setup, model, optimizer, state)
        if state["best"]["model"] is None:  # stopped before the first epoch ended
            self._save_last(run, model, optimizer, state, setup.extras)
            run.emit("train_end", metrics={"epochs_completed": state["epoch"]})
            return FitResult(model=model, metrics={"epochs_completed": state["epoch"]})
        model.load_state_dict(state["best"]["model"])
        model.eval()
        model.threshold, model.features, model.components = state["best"]["threshold"], setup.names, setup.records
        result = self._finish(run, setup, model, state)
        run.emit("train_end", metrics=result)
        run.writer.flush()
        return FitResult(model=model, metrics=result)

    def _prepare(self, run: Run) -> Prepared:
        """Components (trained first when none are given), their ONNX forms in the run directory, features,
        and the baselines that need no training loop (logistic regression, AND thresholds)."""
        splits = self._splits(run)
        components = resolve_components(run, self.options, train=True)
        records = ship_components(components, run.dir)
        data = {split: self._split_data(run, splits.get(split), split, components)
                for split in ("train", "val", "test") if splits.get(split) is not None}
        train, val = data["train"], data["val"]
        if len(np.unique(train.labels)) < 2:
            raise DataError("data: the training attempts need both accepted and rejected attempts")
        names = self._feature_names(components)
        logistic = Logistic.fit(train.features, train.labels, run.recipe.seed)
        gates = and_thresholds(val.features[:, :len(components)], val.kinds, components, self.options.and_thresholds)
        extras = {"features": names, "components": records, "num_features": len(names),
                  "hidden": list(self.options.hidden), "dropout": self.options.dropout, "logistic": logistic.params,
                  "and_thresholds": gates, "target_far": self.options.target_far}
        return Prepared(components, records, data, names, logistic, gates, extras)

    def _train(self, run: Run, setup: Prepared, model: FusionMLP, optimizer: Any, state: dict[str, Any]) -> None:
        """Epochs of minibatch steps (order seeded by seed and epoch), validation and checkpoints, until done
        or stopped."""
        options = self.options
        train, val = setup.data["train"], setup.data["val"]
        x, y = torch.from_numpy(train.features), torch.from_numpy(train.labels)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        while state["epoch"] < options.epochs and run.stop_reason is None:
            epoch = run.epoch = state["epoch"]
            started = time.perf_counter()
            model.train()
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(run.recipe.seed * 100003 + epoch))
            total = 0.0
            for start in range(0, len(x), options.batch_size):
                batch = order[start:start + options.batch_size]
                loss = loss_fn(model.logits(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            state["epoch"] = epoch = epoch + 1
            figures = {"train/loss": total / len(x), **self._validate(model, val, loss_fn, options.target_far)}
            run.log(figures, epoch)
            if state["best"]["loss"] is None or figures["val/loss"] < state["best"]["loss"]:
                state["best"] = {"loss": figures["val/loss"], "epoch": epoch, "threshold": figures["val/threshold"],
                                 "model": copy.deepcopy(model.state_dict())}
                run.save_checkpoint("best", {"task": TASK, "model": model.state_dict(), "epoch": epoch,
                                             "threshold": figures["val/threshold"], **setup.extras})
            run.record_epoch(epoch, figures, best=state["best"]["epoch"] == epoch, seconds=time.perf_counter() - started,
                             epochs=options.epochs)
            run.emit("epoch_end", epoch=epoch, metrics=figures)
            if epoch % options.checkpoint_every == 0 or epoch == options.epochs or run.stop_reason is not None:
                self._save_last(run, model, optimizer, state, setup.extras)

    def _finish(self, run: Run, setup: Prepared, model: FusionMLP, state: dict[str, Any]) -> dict[str, Any]:
        """The run's figures: every model on validation and test, thresholds chosen on validation."""
        best, components, val = state["best"], setup.components, setup.data["val"]
        result: dict[str, Any] = {"epochs_completed": state["epoch"], "best_epoch": best["epoch"],
                                  "monitor": "val/loss", "threshold": best["threshold"],
                                  "target_far": self.options.target_far, "features": setup.names,
                                  "components": setup.records, "and_thresholds": dict(zip(setup.names, setup.gates))}
        trained = {c.role: c.trained for c in components if c.trained is not None}
        if trained:
            result["component_runs"] = trained
        if run.paused:
            return result
        matchers = [i for i, c in enumerate(components) if c.role == EMBEDDING]
        scorers = {"mlp": lambda f: _scores(model, f), "logistic": setup.logistic,
                   "match": lambda f: f[:, matchers].mean(axis=1)}
        thresholds = {name: threshold_at_far(scorer(val.features), val.kinds, self.options.target_far)
                      for name, scorer in scorers.items()}
        thresholds["mlp"] = best["threshold"]
        licit = val.kinds != "spoof"
        eer_thresholds = {name: fa_metrics.eer_threshold(scorer(val.features)[licit], val.kinds[licit] == "genuine")[1]
                          for name, scorer in scorers.items()}
        for split in ("val", "test"):
            if split in setup.data:
                result[split] = self._measure(run, split, setup.data[split], scorers, thresholds, eer_thresholds,
                                              setup.gates, state["epoch"])
        return result

    def _validate(self, model: FusionMLP, val: SplitData, loss_fn: Any, target_far: float) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            logits = model.logits(torch.from_numpy(val.features))
            loss = float(loss_fn(logits, torch.from_numpy(val.labels)))
            scores = torch.sigmoid(logits).numpy().astype(np.float64)
        threshold = threshold_at_far(scores, val.kinds, target_far)
        figures = scored_figures(scores, val.kinds, val.attack_types, threshold)
        return {"val/loss": loss, **{f"val/{k}": v for k, v in figures.items()}}

    def _measure(self, run: Run, split: str, part: SplitData, scorers: dict[str, Callable],
                 thresholds: dict[str, float], eer_thresholds: dict[str, float], gates: list[float],
                 step: int) -> dict[str, dict[str, float]]:
        figures, curves = {}, {}
        for name in MODELS:
            if name == "and":
                accepted = and_accepts(part.features, gates)
                figures[name] = decision_figures(accepted, part.kinds, part.attack_types)
                curves[name] = {"kinds": part.kinds, "accepted": accepted}
            else:
                scores = scorers[name](part.features)
                figures[name] = scored_figures(scores, part.kinds, part.attack_types, thresholds[name],
                                               eer_thresholds[name])
                curves[name] = {"kinds": part.kinds, "scores": scores, "accepted": scores >= thresholds[name]}
        figures["and"]["num_attempts"] = float(len(part.kinds))
        for kind in ("genuine", "impostor", "spoof"):
            figures["and"][f"num_{kind}"] = float(np.sum(part.kinds == kind))
        run.log({f"{split}/{name}/{k}": v for name, values in figures.items() for k, v in values.items()
                 if np.isfinite(v)}, step)
        run.writer.add_figure(f"{split}/det", det_figure(curves, split), step)
        return figures

    # checkpoints ------------------------------------------------------------------------------------
    def _save_last(self, run: Run, model: FusionMLP, optimizer: Any, state: dict[str, Any],
                   extras: dict[str, Any]) -> None:
        run.save_checkpoint("last", {"task": TASK, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "epoch": state["epoch"], "best": state["best"],
                                     "threshold": state["best"]["threshold"], "rng": checkpoint.rng_state(),
                                     **extras})

    def _restore(self, payload: dict[str, Any], model: FusionMLP, optimizer: Any, state: dict[str, Any]) -> None:
        if payload.get("task") != TASK:
            raise CheckpointError(f"{payload.get('path')}: {article(payload.get('task') or 'unknown')} checkpoint "
                                  f"cannot resume a fusion run")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        state["epoch"], state["best"] = payload["epoch"], payload["best"]
        checkpoint.set_rng_state(payload["rng"])

    def load_model(self, run: Run, payload: dict[str, Any]) -> FusionMLP:
        if payload.get("task") != TASK:
            raise CheckpointError(f"{payload.get('path')}: {article(payload.get('task') or 'unknown')} checkpoint; "
                                  f"expected a fusion model")
        model = FusionMLP(payload["num_features"], payload["hidden"], payload["dropout"])
        model.load_state_dict(payload["model"])
        model.threshold, model.features = payload.get("threshold"), list(payload["features"])
        model.components = list(payload["components"])
        return model.eval()

    @staticmethod
    def torch_scorer(model: FusionMLP) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return model.eval()(x.float().cpu()).numpy()

        score.components = getattr(model, "components", None)  # type: ignore[attr-defined]
        return score

    # evaluation and export --------------------------------------------------------------------------
    def evaluate(self, run: Run, score_fn: Callable[[torch.Tensor], np.ndarray], split: str,
                 threshold: float | None) -> dict[str, float]:
        """The fused model's figures on one split (what faceauth-eval reports), at `threshold`.

        As in training, `threshold` (None: the one at `target_far` on validation) is applied, and
        ``hter_at_eer`` / ``sfar_at_eer`` use the validation EER threshold. Component models: those
        recorded in the checkpoint (their sources, when still there), else those the recipe names or
        trained.
        """
        splits = self._splits(run)
        dataset = splits.get(split)
        if dataset is None:
            raise DataError(f"data: the dataset has no '{split}' split")
        recorded = getattr(score_fn, "components", None)
        if recorded and all(Path(r["source"]).is_file() for r in recorded):
            components = [load_component(run.registry, r["source"], r["role"], "checkpoint components")
                          for r in recorded]
            for component, record in zip(components, recorded):
                if component.sha256 != record["source_sha256"]:
                    raise CheckpointError(f"{component.source}: changed since the fusion model was trained with it")
        else:
            components = resolve_components(run, self.options, train=False)
        def scored(name: str) -> tuple[SplitData, np.ndarray]:
            part = self._split_data(run, splits.get(name), name, components)
            return part, np.asarray(score_fn(torch.from_numpy(part.features)), np.float64).reshape(-1)

        val, val_scores = scored("val")
        part, scores = (val, val_scores) if split == "val" else scored(split)
        if threshold is None:
            threshold = threshold_at_far(val_scores, val.kinds, self.options.target_far)
        licit = val.kinds != "spoof"
        eer_threshold = fa_metrics.eer_threshold(val_scores[licit], val.kinds[licit] == "genuine")[1]
        return scored_figures(scores, part.kinds, part.attack_types, threshold, eer_threshold)

    def export_bundle(self, run: Run, model: FusionMLP) -> Bundle:
        model = model.to("cpu").eval()
        threshold = getattr(model, "threshold", None)
        features = list(getattr(model, "features", []))
        metadata = {
            "faceauth.task": TASK,
            "faceauth.score": "P(accept): the probe is the enrolled person and live; accept when score >= threshold",
            "faceauth.threshold": f"{threshold:.9g}" if threshold is not None else "",
            "faceauth.input": "features [batch, F] in the order of faceauth.features",
            "faceauth.features": json.dumps(features),
            "faceauth.components": json.dumps([{k: c[k] for k in ("role", "file", "sha256", "threshold")}
                                               for c in getattr(model, "components", [])]),
            "faceauth.template": "re-normalised mean of the unit enrolment embeddings; match = cosine with the probe",
            "faceauth.recipe": json.dumps(run.recipe.to_dict()),
            "faceauth.versions": json.dumps(run.versions()),
        }
        generator = torch.Generator().manual_seed(0)
        width = len(features) or int(model.mean.shape[0])
        return Bundle(module=model, example_inputs=(torch.randn(2, width, generator=generator),),
                      input_names=("features",), output_names=("score",),
                      dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}}, metadata=metadata,
                      check_inputs=((torch.randn(7, width, generator=generator),),
                                    (torch.randn(1, width, generator=generator),)))


def _data_section(recipe: Any) -> Any:
    section = recipe.data
    return [s.to_dict() for s in section] if isinstance(section, tuple) else section.to_dict()


def _data_name(recipe: Any) -> str:
    section = recipe.data
    return "+".join(s.name for s in section) if isinstance(section, tuple) else section.name


def build(options: FusionOptions) -> FusionTrainer:
    return FusionTrainer(options)
