"""The `lbp` trainer: the classical liveness baseline, LBP histograms + a linear classifier.

Each face crop is resized to `image_size`, converted to each of `colour_spaces` (colour texture
analysis: luminance and chrominance channels of YCrCb and HSV show print and replay artefacts that
grey levels hide), and every channel is described by uniform local binary patterns (scikit-image,
``nri_uniform``: 59 labels for 8 neighbours) at each radius of `radii`, histogrammed over a
`grid` x `grid` spatial grid. A standardised logistic regression (scikit-learn) separates live
from spoof.

It is trained and measured through the same recipes, datasets, splits and metrics as the deep
models. Its score is the classifier's decision function, the log-odds of live (higher = live,
0 = even), in the same convention as the classifier trainer; the threshold is chosen at the
validation EER (or by `threshold`, ``apcer=x`` / ``bpcer=x``, as the classifier's) and applied
unchanged to test. There is nothing to export to ONNX: the run writes
its fitted parameters to ``lbp.npz`` in the run directory instead. It takes no gradient steps, so a
recipe that sets ``optimizer.*`` or ``scheduler.*`` is refused in one line rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import attrs
import cv2
import numpy as np
from skimage.feature import local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import faceauth
from faceauth.config.recipe import OptimizerConfig, Recipe, SchedulerConfig
from faceauth.data import LIVE
from faceauth.errors import DataError, ExportError, RecipeError
from faceauth.io.paths import write_npz
from faceauth.metrics import threshold_rule_option
from faceauth.plugins.trainers.liveness_scores import measure
from faceauth.training.run import FitResult, Run

COLOUR_SPACES = {"rgb": None, "grey": cv2.COLOR_RGB2GRAY, "ycrcb": cv2.COLOR_RGB2YCrCb, "hsv": cv2.COLOR_RGB2HSV}
NEIGHBOURS = 8  # per radius: the 59 uniform patterns of LBP^{u2}_{8,R}


def _colour_spaces(instance: Any, attribute: attrs.Attribute, value: Sequence[str]) -> None:
    unknown = [v for v in value if v not in COLOUR_SPACES]
    if not value or unknown:
        raise ValueError(f"{attribute.name}: expected one or more of {', '.join(COLOUR_SPACES)}, got {list(value)!r:.200}")


def _radii(instance: Any, attribute: attrs.Attribute, value: Sequence[int]) -> None:
    if not value or any(r < 1 for r in value):
        raise ValueError(f"{attribute.name}: expected one or more radii >= 1 pixel, got {list(value)!r:.200}")


@attrs.frozen
class LbpOptions:
    image_size: int = attrs.field(default=64, validator=faceauth.schema.positive)
    colour_spaces: tuple[str, ...] = attrs.field(default=("ycrcb", "hsv"), converter=tuple, validator=_colour_spaces)
    radii: tuple[int, ...] = attrs.field(default=(1, 2), converter=tuple, validator=_radii)
    grid: int = attrs.field(default=3, validator=faceauth.schema.positive)
    C: float = attrs.field(default=0.1, validator=faceauth.schema.positive)  # inverse L2 strength
    class_weight: Literal["balanced", "none"] = "balanced"
    max_iter: int = attrs.field(default=2000, validator=faceauth.schema.positive)
    threshold: str = attrs.field(default="eer", validator=threshold_rule_option)  # as the classifier's trainer.threshold


def lbp_features(image: np.ndarray, options: LbpOptions) -> np.ndarray:
    """The concatenated, per-cell normalised LBP histograms of one HxWx3 uint8 RGB face crop."""
    size = options.image_size
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    bins = NEIGHBOURS * (NEIGHBOURS - 1) + 3  # nri_uniform labels 0..58
    edges = np.linspace(0, size, options.grid + 1).astype(int)
    parts = []
    for space in options.colour_spaces:
        code = COLOUR_SPACES[space]
        converted = image if code is None else cv2.cvtColor(image, code)
        channels = converted[..., None] if converted.ndim == 2 else converted
        for c in range(channels.shape[2]):
            for radius in options.radii:
                codes = local_binary_pattern(channels[..., c], NEIGHBOURS, radius, method="nri_uniform").astype(int)
                for y0, y1 in zip(edges, edges[1:]):
                    for x0, x1 in zip(edges, edges[1:]):
                        counts = np.bincount(codes[y0:y1, x0:x1].ravel(), minlength=bins).astype(np.float32)
                        parts.append(counts / max(counts.sum(), 1.0))
    return np.concatenate(parts)


def _features(dataset: Any, options: LbpOptions, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features of every sample of `dataset` and the labels/attack types/videos `measure` reads."""
    rows, labels, attack_types, videos = [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        if "frames" in sample:
            raise RecipeError("data.clip_length: the lbp trainer describes single images; remove data.clip_length")
        rows.append(lbp_features(np.asarray(sample["image"].convert("RGB")), options))
        labels.append(int(sample["label"]))
        attack_types.append(sample.get("attack_type") or "")
        videos.append(str(sample.get("video", f"{split}:{index}")))
    if not rows:
        raise DataError(f"data: the {split} split is empty")
    targets = {"label": np.asarray(labels), "attack_type": np.asarray(attack_types), "video": np.asarray(videos)}
    return np.stack(rows), targets


def refuse_gradient_settings(recipe: Recipe) -> None:
    """A RecipeError naming the first ``optimizer.*``/``scheduler.*`` key `recipe` sets away from its default:
    the lbp trainer would ignore it."""
    for section, default in (("optimizer", OptimizerConfig()), ("scheduler", SchedulerConfig())):
        given = attrs.asdict(getattr(recipe, section))
        for key, value in attrs.asdict(default).items():
            if given[key] != value:
                raise RecipeError(f"{section}.{key}: the lbp trainer fits a logistic regression and uses no optimizer "
                                  f"or scheduler; remove {section}.{key} from the recipe (its settings are "
                                  f"trainer.C and trainer.max_iter)")


class LbpTrainer:
    def __init__(self, options: LbpOptions):
        self.options = options

    def _classifier(self, seed: int) -> Any:
        weight = "balanced" if self.options.class_weight == "balanced" else None
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.options.C, class_weight=weight,
                                                                  max_iter=self.options.max_iter, random_state=seed))

    def fit(self, run: Run) -> FitResult:
        refuse_gradient_settings(run.recipe)
        if run.recipe.export is not None:
            raise ExportError(f"export.name: the lbp trainer cannot export {run.recipe.export.name!r} (it is not a "
                              f"network); set export: null, and use the fitted parameters it writes to lbp.npz")
        splits = run.build("data")
        if splits.val is None or len(splits.val) == 0:
            raise DataError("data: the lbp trainer chooses its threshold on the validation split; the dataset has none")
        run.emit("train_start")  # one fit, no epochs: the event hooks see its start and end
        x_train, train = _features(splits.train, self.options, "train")
        model = self._classifier(run.recipe.seed).fit(x_train, train["label"] == LIVE)
        result: dict[str, Any] = {"epochs_completed": 1, "best_epoch": 1, "monitor": "val/eer",
                                  "num_features": int(x_train.shape[1]),
                                  "threshold_rule": f"{self.options.threshold} on val"}
        x_val, val = _features(splits.val, self.options, "val")
        result["val"] = measure({**val, "score": model.decision_function(x_val)}, threshold=None,
                                rule=self.options.threshold)
        result["threshold"] = result["val"]["threshold"]
        if splits.test is not None and len(splits.test):
            x_test, test = _features(splits.test, self.options, "test")
            result["test"] = measure({**test, "score": model.decision_function(x_test)}, result["threshold"])
        for label in ("val", "test"):
            if label in result:
                run.log({f"{label}/{k}": v for k, v in result[label].items()}, 1)
        self._save(run, model, result["threshold"])
        run.emit("train_end", metrics=result)
        return FitResult(model=model, metrics=result)

    def _save(self, run: Run, model: Any, threshold: float) -> None:
        scaler, linear = model.named_steps["standardscaler"], model.named_steps["logisticregression"]
        write_npz(run.dir / "lbp.npz", {
            "mean": scaler.mean_, "scale": scaler.scale_, "coef": linear.coef_[0], "intercept": linear.intercept_,
            "threshold": np.asarray(threshold), "options": np.asarray(repr(attrs.asdict(self.options))),
            "score": np.asarray("log-odds of live: (features - mean) / scale @ coef + intercept; live when >= threshold"),
        })

    def export_bundle(self, run: Run, model: Any) -> Any:
        raise ExportError("export.name: the lbp trainer has no ONNX form; its fitted parameters are in lbp.npz")


def build(options: LbpOptions) -> LbpTrainer:
    return LbpTrainer(options)

