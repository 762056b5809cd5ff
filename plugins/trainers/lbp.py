"""The `lbp` trainer: the classical liveness baseline, LBP histograms + a linear classifier.

The descriptor and the classifier are `faceauth.plugins.trainers.texture`'s: the run fits and measures
the network it ships (`LbpScore.fit`, as the texture branch fits), whose features equal the reference
`lbp_features` bit for bit. The baseline is trained and measured through the same recipes, datasets,
splits and metrics as the deep models. Its score is
the classifier's decision function, the log-odds of live (higher = live, 0 = even), in the same
convention as the classifier trainer; the threshold is chosen at the validation EER (or by
`threshold`, ``apcer=x`` / ``bpcer=x``, as the classifier's) and applied unchanged to test. The run
writes its fitted parameters to ``lbp.npz`` and a checkpoint, and its ONNX model (``export.name:
onnx``) is `LbpScore` on RGB crops of the data's ``crop_size`` (or ``size``; when it is a whole
multiple of `image_size`, else `image_size`) scaled to 0-1, with the threshold and crop geometry in its metadata
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
from faceauth.errors import DataError, RecipeError
from faceauth.io.paths import write_npz
from faceauth.metrics import threshold_rule_option
from faceauth.plugins.trainers.liveness_scores import measure, predict
from faceauth.plugins.trainers.texture import LbpDescriptor, LbpScore, LinearOptions
from faceauth.training import checkpoint
from faceauth.training.export import Bundle, model_metadata
from faceauth.training.loaders import image_loader
from faceauth.training.run import FitResult, Run
from faceauth.training.transforms import eval_transform


@attrs.frozen
class LbpOptions(LinearOptions):
    threshold: str = attrs.field(default="eer", validator=threshold_rule_option)  # as the classifier's trainer.threshold


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
        """The model's input: the data's images as they are (its ``crop_size``, or ``size`` for the rendered
        sets, when `LbpDescriptor` can area-resize that by a whole factor, as `lbp_features` does), else
        `image_size` (other images then reach it by a bilinear resize instead); pixels scaled to 0-1."""
        options = run.recipe.data.options
        side = getattr(options, "crop_size", None) or getattr(options, "size", None)
        side = side if isinstance(side, int) and side % self.options.image_size == 0 else self.options.image_size
        return Preprocess(input_size=(side, side), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def fit(self, run: Run) -> FitResult:
        refuse_gradient_settings(run.recipe)
        splits = run.build("data")
        if splits.val is None or len(splits.val) == 0:
            raise DataError("data: the lbp trainer chooses its threshold on the validation split; the dataset has none")
        run.emit("train_start")  # one fit, no epochs: the event hooks see its start and end
        # Fitted and measured as it ships: the exported network's features, on its input (the texture
        # branch's fit; equal to `lbp_features` of the crops bit for bit where the crop size allows).
        model = self._network(run)
        model.fit(self._loader(run, splits.train, "train"), torch.device("cpu"), self.options, run.recipe.seed,
                  progress=False)
        model.threshold_rule = f"{self.options.threshold} on val"
        result: dict[str, Any] = {"epochs_completed": 1, "best_epoch": 1, "monitor": "val/eer",
                                  "num_features": model.descriptor.num_features, "threshold_rule": model.threshold_rule}
        result["val"] = self.evaluate(run, self.torch_scorer(model), "val", None, splits)
        result["threshold"] = model.threshold = result["val"]["threshold"]
        if splits.test is not None and len(splits.test):
            result["test"] = self.evaluate(run, self.torch_scorer(model), "test", model.threshold, splits)
        for label in ("val", "test"):
            if label in result:
                run.log({f"{label}/{k}": v for k, v in result[label].items()}, 1)
        self._save(run, model)
        # A checkpoint like the networks': faceauth-eval and faceauth-export take the run as they take theirs.
        run.save_checkpoint("best", {"task": "liveness", "model": model.state_dict(), "threshold": model.threshold,
                                     "threshold_rule": model.threshold_rule, "classes": ["live", "spoof"]})
        run.emit("train_end", metrics=result)
        return FitResult(model=model, metrics=result)

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

    def _save(self, run: Run, model: LbpScore) -> None:
        write_npz(run.dir / "lbp.npz", {
            **{name: getattr(model, name).numpy() for name in ("mean", "scale", "coef", "intercept")},
            "threshold": np.asarray(model.threshold), "options": np.asarray(repr(attrs.asdict(self.options))),
            "score": np.asarray("log-odds of live: (features - mean) / scale @ coef + intercept; live when >= threshold"),
        })

    def _loader(self, run: Run, dataset: Any, split: str) -> Any:
        if dataset is None or len(dataset) == 0:
            raise DataError(f"data: the {split} split is empty")
        if "frames" in dataset[0]:
            raise RecipeError("data.clip_length: the lbp trainer describes single images; remove data.clip_length")
        return image_loader(dataset, eval_transform(self.preprocess(run)), batch_size=64, num_workers=0,
                            seed=run.recipe.seed, shuffle=False)

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
                 threshold: float | None, splits: Any = None) -> dict[str, float]:
        """Figures of `score` (the run's model, or its export: ``faceauth-eval model.onnx``) on `split`, at
        `threshold` (None: the one the recipe's rule picks there, as on validation)."""
        loader = self._loader(run, getattr(splits or run.build("data"), split), split)
        return measure(predict(score, loader, torch.device("cpu"), progress=False), threshold, rule=self.options.threshold)


def build(options: LbpOptions) -> LbpTrainer:
    return LbpTrainer(options)

