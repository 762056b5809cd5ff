"""The `lbp` classical baseline trainer: features, a run through the same recipe machinery, its ONNX model,
its refusals."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import faceauth
from faceauth.errors import RecipeError
from faceauth.io.paths import read_npz
from faceauth.plugins.trainers.lbp import LbpOptions
from faceauth.plugins.trainers.texture import lbp_features, linear_score

RECIPE = {
    "seed": 0,
    "data": {"name": "demo", "train": 48, "val": 24, "test": 24, "size": 48},
    "backbone": {"name": "resnet18", "input_size": 32},
    "loss": {"name": "cross_entropy"},
    "trainer": {"name": "lbp", "image_size": 32, "grid": 2},
    "export": None,
}


def _recipe(tmp_path, **changes) -> str:
    path = tmp_path / "lbp.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, **changes, "output_dir": str(tmp_path / "runs")}), encoding="utf-8")
    return str(path)


def test_features_are_one_normalised_histogram_per_channel_radius_and_cell() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    options = LbpOptions(image_size=32, colour_spaces=("ycrcb", "hsv", "grey"), radii=(1, 2), grid=2)
    features = lbp_features(image, options)
    histograms = features.reshape(-1, 59)
    assert len(histograms) == (3 + 3 + 1) * 2 * 2 * 2
    np.testing.assert_allclose(histograms.sum(axis=1), 1.0, rtol=1e-5)
    # A flat image is one pattern inside (the borders see the padding), noise is many.
    flat = lbp_features(np.full((40, 40, 3), 128, np.uint8), options).reshape(-1, 59)
    assert len(set(flat.argmax(axis=1))) == 1 and (flat.max(axis=1) > 0.7).all()
    assert (histograms.max(axis=1) < 0.5).all()


def test_lbp_run_gives_liveness_metrics_in_log_odds_and_writes_its_parameters(tmp_path) -> None:
    result = faceauth.run(_recipe(tmp_path), ["run_name=lbp"])
    test, val = result.metrics["test"], result.metrics["val"]
    assert {"acer", "apcer", "bpcer", "auc", "threshold"} <= set(test)
    assert test["threshold"] == pytest.approx(val["threshold"]) == pytest.approx(result.metrics["threshold"])
    assert test["auc"] > 0.6  # the demo set's spoofs carry print texture the histograms see
    saved = read_npz(result.dir / "lbp.npz")
    assert saved is not None and saved["coef"].shape == saved["mean"].shape == (result.metrics["num_features"],)
    assert float(saved["threshold"]) == pytest.approx(val["threshold"])
    assert result.onnx_path is None and (result.dir / "metrics.json").is_file()


def test_lbp_exports_an_onnx_model_that_scores_as_the_run_did(tmp_path) -> None:
    from faceauth.deploy.liveness import Liveness
    from faceauth.io.onnx import read_metadata
    from faceauth.runs.models import evaluate, export_checkpoint

    # crops at image_size: the exported model sees the pixels the run described (no resize on either side)
    result = faceauth.run(_recipe(tmp_path, export={"name": "onnx"}, data={**RECIPE["data"], "size": 32}),
                          ["run_name=onnx"])
    metadata = read_metadata(result.onnx_path)
    assert metadata["faceauth.task"] == "liveness" and metadata["preprocess.input_size"] == "32,32"
    assert float(metadata["faceauth.threshold"]) == pytest.approx(result.metrics["threshold"], rel=1e-6)
    # faceauth-eval of the exported model gives the run's test figures
    # faceauth-eval of the exported model, and of the run's checkpoint, give the run's test figures
    exported, stored = evaluate(result.onnx_path, split="test"), evaluate(result.dir, split="test")
    for key in ("acer", "apcer", "bpcer", "auc", "eer"):
        assert exported[key] == pytest.approx(result.metrics["test"][key], abs=1e-9), key
        assert stored[key] == pytest.approx(result.metrics["test"][key], abs=1e-9), key
    # faceauth-export makes the same model from the checkpoint
    again = export_checkpoint(result.dir, tmp_path / "again.onnx")
    assert read_metadata(again)["faceauth.threshold"] == metadata["faceauth.threshold"]
    # and its score is the baseline's log-odds of the crop, as lbp.npz computes it
    crops = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    saved = read_npz(result.dir / "lbp.npz")
    expected = linear_score(np.stack([lbp_features(c, LbpOptions(image_size=32, grid=2)) for c in crops]), saved)
    model = Liveness(result.onnx_path, detect=False)
    np.testing.assert_allclose(model.score_faces([[c] for c in crops]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("override, key", [("trainer.colour_spaces=[lab]", "trainer.colour_spaces"),
                                           ("trainer.radii=[0]", "trainer.radii")])
def test_bad_lbp_options_name_the_key(tmp_path, override, key) -> None:
    with pytest.raises(RecipeError, match=key):
        faceauth.run(_recipe(tmp_path), [override])


@pytest.mark.parametrize("changes, key", [({"optimizer": {"lr": 0.5}}, "optimizer.lr"),
                                          ({"scheduler": {"name": "step"}}, "scheduler.name")])
def test_optimizer_or_scheduler_settings_the_lbp_trainer_would_ignore_are_refused_before_any_work(
        tmp_path, changes, key) -> None:
    with pytest.raises(RecipeError) as caught:
        faceauth.run(_recipe(tmp_path, **changes), ["run_name=ignored"])
    assert str(caught.value) == (f"{key}: the lbp trainer fits a logistic regression and uses no optimizer or "
                                 f"scheduler; remove {key} from the recipe (its settings are trainer.C and "
                                 f"trainer.max_iter)")
    assert not (tmp_path / "runs").exists()


class _Events:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @faceauth.hookimpl
    def faceauth_train_start(self, run) -> None:
        self.seen.append("train_start")

    @faceauth.hookimpl
    def faceauth_train_end(self, run, metrics) -> None:
        self.seen.append(f"train_end {sorted(metrics)[:1]}")


def test_lbp_runs_emit_the_start_and_end_events_plugins_listen_to(tmp_path) -> None:
    events = _Events()
    faceauth.run(_recipe(tmp_path), ["run_name=events"], extra_plugins=[events])
    assert events.seen == ["train_start", "train_end ['best_epoch']"]


def test_lbp_on_clips_names_the_clip_length(tmp_path) -> None:
    clips = {"name": "demo_clips", "train": 6, "val": 3, "test": 3, "frames": 6, "size": 32, "clip_length": 4}
    with pytest.raises(RecipeError, match=r"^data\.clip_length: the lbp trainer describes single images"):
        faceauth.run(_recipe(tmp_path, data=clips), ["run_name=clips"])
