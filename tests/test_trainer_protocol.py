"""The Trainer protocol (faceauth.training.protocol) as the runner and faceauth-eval enforce it."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

import faceauth
from faceauth.components import Trainer
from faceauth.training.protocol import ModelTrainer, missing_methods
from faceauth.training.protocol import Trainer as TrainerProtocol


class FitOnly:
    def fit(self, run):  # pragma: no cover - never reached: the runner refuses the trainer first
        raise AssertionError("fit ran")


@attrs.frozen
class NoOptions:
    pass


class Plugin:
    @faceauth.hookimpl
    def faceauth_trainers(self):
        return [Trainer(name="fit_only", build=lambda options: FitOnly(), options=NoOptions)]


def test_missing_methods_names_what_a_trainer_lacks() -> None:
    assert missing_methods(FitOnly(), TrainerProtocol) == ["export_bundle"]
    assert missing_methods(FitOnly(), ModelTrainer) == ["evaluate", "export_bundle", "load_model", "torch_scorer"]
    from faceauth.plugins.trainers.classifier import ClassifierOptions, ClassifierTrainer

    assert missing_methods(ClassifierTrainer(ClassifierOptions()), ModelTrainer) == []


def test_the_runner_refuses_a_trainer_without_the_protocol(tmp_path: Path) -> None:
    recipe = {"data": {"name": "demo"}, "backbone": {"name": "resnet18"}, "loss": {"name": "cross_entropy"},
              "trainer": {"name": "fit_only"}, "output_dir": str(tmp_path)}
    with pytest.raises(faceauth.PluginError, match=r"trainer 'fit_only' has no export_bundle \(see faceauth.training"):
        faceauth.run(recipe, extra_plugins=[Plugin()])
    assert not list(tmp_path.iterdir())  # refused before a run directory was made


def test_eval_of_a_trainer_without_load_model_is_one_line(tmp_path: Path) -> None:
    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.training import checkpoint

    raw = {"data": {"name": "demo"}, "backbone": {"name": "resnet18"}, "loss": {"name": "cross_entropy"},
           "trainer": {"name": "fit_only"}}
    recipe = load_recipe(raw, registry=load_registry([Plugin()]))
    path = checkpoint.save(tmp_path / "best.pt", {"task": "fit_only", "recipe": recipe.to_dict(), "model": {}})
    with pytest.raises(faceauth.CheckpointError, match=r"trainer 'fit_only' cannot evaluate or export a stored model "
                                                       r"\(it has no evaluate, export_bundle, load_model, torch_scorer"):
        faceauth.evaluate(path, extra_plugins=[Plugin()])


class FeaturelessBackbone:
    @faceauth.hookimpl
    def faceauth_backbones(self):
        from faceauth.components import Backbone

        return [Backbone(name="featureless", build=lambda options: __import__("torch").nn.Identity(), options=NoOptions)]


def test_every_trainer_gets_backbones_with_their_stated_attributes(tmp_path: Path) -> None:
    """The core checks what faceauth.components.Backbone states (num_features, preprocess) when it builds one,
    so no trainer repeats the check."""
    recipe = {"data": {"name": "demo", "train": 8, "val": 8, "test": 8}, "backbone": {"name": "featureless"},
              "loss": {"name": "cross_entropy"}, "trainer": {"name": "classifier", "progress": False},
              "output_dir": str(tmp_path)}
    with pytest.raises(faceauth.PluginError, match=r"backbone 'featureless' from .* has no 'num_features' attribute"):
        faceauth.run(recipe, extra_plugins=[FeaturelessBackbone()])
