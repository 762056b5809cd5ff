"""The `lbp` trainer: the classical liveness baseline, LBP histograms + a linear classifier.

The descriptor and the classifier are `faceauth.plugins.trainers.texture`'s. The baseline is trained
and measured through the same recipes, datasets, splits and metrics as the deep models. Its score is
the classifier's decision function, the log-odds of live (higher = live, 0 = even), in the same
convention as the classifier trainer; the threshold is chosen at the validation EER (or by
`threshold`, ``apcer=x`` / ``bpcer=x``, as the classifier's) and applied unchanged to test. The run
writes its fitted parameters to ``lbp.npz`` and a checkpoint, and its ONNX model (``export.name:
onnx``) is `LbpScore` on RGB crops of the data's ``crop_size`` (when it is a whole multiple of
`image_size`, else `image_size`) scaled to 0-1, with the threshold and crop geometry in its metadata
like any liveness model's. It takes no gradient steps, so a recipe that sets ``optimizer.*`` or
``scheduler.*`` is refused in one line rather than silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import torch

from faceauth.components import Preprocess
from faceauth.config.recipe import OptimizerConfig, Recipe, SchedulerConfig
from faceauth.data import LIVE
from faceauth.errors import DataError, RecipeError
from faceauth.io.paths import write_npz
from faceauth.metrics import threshold_rule_option
from faceauth.plugins.trainers.liveness_scores import measure, predict
from faceauth.plugins.trainers.texture import (
    LbpDescriptor,
    LbpScore,
    LinearOptions,
    fit_linear,
    lbp_features,
    linear_score,
)
from faceauth.training import checkpoint
from faceauth.training.export import Bundle, model_metadata
from faceauth.training.loaders import image_loader
from faceauth.training.run import FitResult, Run
from faceauth.training.transforms import eval_transform


@attrs.frozen
class LbpOptions(LinearOptions):
    threshold: str = attrs.field(default="eer", validator=threshold_rule_option)  # as the classifier's trainer.threshold


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

    def preprocess(self, run: Run) -> Preprocess:
        """The exported model's input: the data's crops as they are (``crop_size``, when `LbpDescriptor` can
        area-resize it by a whole factor, as `lbp_features` does), else `image_size` (images of other sizes
        then reach it by deployment's bilinear resize instead of the area resize); pixels scaled to 0-1."""
        crop = attrs.asdict(run.recipe.data.options).get("crop_size") if attrs.has(type(run.recipe.data.options)) else None
        side = crop if isinstance(crop, int) and crop % self.options.image_size == 0 else self.options.image_size
        return Preprocess(input_size=(side, side), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def fit(self, run: Run) -> FitResult:
        refuse_gradient_settings(run.recipe)
        splits = run.build("data")
        if splits.val is None or len(splits.val) == 0:
            raise DataError("data: the lbp trainer chooses its threshold on the validation split; the dataset has none")
        run.emit("train_start")  # one fit, no epochs: the event hooks see its start and end
        x_train, train = _features(splits.train, self.options, "train")
        model = fit_linear(x_train, train["label"] == LIVE, self.options, run.recipe.seed)
        result: dict[str, Any] = {"epochs_completed": 1, "best_epoch": 1, "monitor": "val/eer",
                                  "num_features": int(x_train.shape[1]),
                                  "threshold_rule": f"{self.options.threshold} on val"}
        x_val, val = _features(splits.val, self.options, "val")
        result["val"] = measure({**val, "score": linear_score(x_val, model)}, threshold=None,
                                rule=self.options.threshold)
        result["threshold"] = result["val"]["threshold"]
        if splits.test is not None and len(splits.test):
            x_test, test = _features(splits.test, self.options, "test")
            result["test"] = measure({**test, "score": linear_score(x_test, model)}, result["threshold"])
        for label in ("val", "test"):
            if label in result:
                run.log({f"{label}/{k}": v for k, v in result[label].items()}, 1)
        self._save(run, model, result["threshold"])
        scorer = self._network(run)
        scorer.load(model)
        scorer.threshold, scorer.threshold_rule = result["threshold"], result["threshold_rule"]
        # A checkpoint like the networks': faceauth-eval and faceauth-export take the run as they take theirs.
        run.save_checkpoint("best", {"task": "liveness", "model": scorer.state_dict(), "threshold": scorer.threshold,
                                     "threshold_rule": scorer.threshold_rule, "classes": ["live", "spoof"]})
        run.emit("train_end", metrics=result)
        return FitResult(model=scorer, metrics=result)

    def _network(self, run: Run) -> LbpScore:
        """The baseline as a network on `preprocess`'s input (unfitted)."""
        pre = self.preprocess(run)
        return LbpScore(LbpDescriptor(self.options, pre.input_size, pre.mean, pre.std)).eval()

    def load_model(self, run: Run, payload: dict[str, Any]) -> LbpScore:
        checkpoint.expect_task(payload, "liveness", "load an LBP baseline")
        model = self._network(run)
        model.load_state_dict(payload["model"])
        model.threshold, model.threshold_rule = payload.get("threshold"), payload.get("threshold_rule")
        return model

    @staticmethod
    def torch_scorer(model: LbpScore) -> Callable[[torch.Tensor], np.ndarray]:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return model(x).numpy()

        return score

    def _save(self, run: Run, model: dict[str, np.ndarray], threshold: float) -> None:
        write_npz(run.dir / "lbp.npz", {
            **model, "threshold": np.asarray(threshold), "options": np.asarray(repr(attrs.asdict(self.options))),
            "score": np.asarray("log-odds of live: (features - mean) / scale @ coef + intercept; live when >= threshold"),
        })

    def export_bundle(self, run: Run, model: LbpScore) -> Bundle:
        pre = self.preprocess(run)
        metadata = model_metadata(run, pre, task="liveness", threshold=model.threshold,
                                  score="log-odds of live from LBP histograms and logistic regression: higher = "
                                        "more likely live, 0 = even; accept as live when score >= threshold",
                                  classes="live,spoof", model=model.description(), input="images [batch, 3, H, W]")
        metadata["faceauth.threshold_rule"] = getattr(model, "threshold_rule", None) or f"{self.options.threshold} on val"
        h, w = pre.input_size
        generator = torch.Generator().manual_seed(0)
        return Bundle(module=model, example_inputs=(torch.rand(2, 3, h, w, generator=generator),), input_names=("input",),
                      output_names=("score",), dynamic_axes={"input": {0: "batch"}, "score": {0: "batch"}},
                      metadata=metadata, check_inputs=((torch.rand(3, 3, h, w, generator=generator),),))

    def evaluate(self, run: Run, score: Callable[[torch.Tensor], np.ndarray], split: str,
                 threshold: float | None) -> dict[str, float]:
        """Figures of an exported model (``faceauth-eval model.onnx``) on `split`, at `threshold`."""
        dataset = getattr(run.build("data"), split)
        if dataset is None or len(dataset) == 0:
            raise DataError(f"data: no {split} split to evaluate on")
        loader = image_loader(dataset, eval_transform(self.preprocess(run)), batch_size=64, num_workers=0,
                              seed=run.recipe.seed, shuffle=False)
        return measure(predict(score, loader, torch.device("cpu"), progress=False), threshold)


def build(options: LbpOptions) -> LbpTrainer:
    return LbpTrainer(options)

