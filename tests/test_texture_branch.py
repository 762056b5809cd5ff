"""The LBP descriptor as a network, and the classifier's texture branch (`trainer.texture`): the
LBP baseline's log-odds added to the network's, fitted as the `lbp` trainer fits it, exported in
the same ONNX graph."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import faceauth
from faceauth.data import live_log_odds
from faceauth.errors import RecipeError
from faceauth.io.paths import read_npz
from faceauth.plugins.backbones.resnet import ResNetFeatures, ResNetOptions
from faceauth.plugins.trainers.classifier import Classifier
from faceauth.plugins.trainers.texture import (
    LBP_BINS,
    LbpDescriptor,
    LbpDescriptorOptions,
    LbpScore,
    lbp_features,
    linear_score,
    uniform_labels,
)
from tests.conftest import TINY_RECIPE

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _crops(size: int) -> np.ndarray:
    """Noise, a flat band, a blurred half and a blurred whole: ties between neighbours and centre, where
    a descriptor that rounds differently from the reference would give other patterns."""
    crops = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    crops[0, : size // 3] = crops[0, :1, :1]
    crops[1, :, : size // 2] = cv2.GaussianBlur(crops[1], (9, 9), 3)[:, : size // 2]
    crops[2] = cv2.GaussianBlur(crops[2], (15, 15), 5)
    crops[3, ..., 1] = crops[3, ..., 0]  # equal channels: the hue formula's ties
    return crops


def _normalised(crops: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("image_size, input_size", [(24, 24), (24, 48), (16, 48), (12, 48)])
def test_descriptor_equals_the_scikit_image_reference_bit_for_bit(image_size, input_size) -> None:
    options = LbpDescriptorOptions(image_size=image_size, colour_spaces=("ycrcb", "hsv", "grey", "rgb"),
                                   radii=(1, 2, 3), grid=3)
    crops = _crops(input_size)
    descriptor = LbpDescriptor(options, (input_size, input_size), MEAN, STD)
    features = descriptor(_normalised(crops)).numpy()
    reference = np.stack([lbp_features(crop, options) for crop in crops])
    assert features.shape == reference.shape == (4, descriptor.num_features)
    np.testing.assert_array_equal(features, reference)


def test_uniform_labels_number_the_58_uniform_patterns_and_one_for_the_rest() -> None:
    table = uniform_labels()
    assert sorted(set(table)) == list(range(LBP_BINS))
    assert table[0] == 0 and table[255] == 57 and table[0b01010101] == 58
    assert np.bincount(table)[58] == 256 - 58


def _recipe(tmp_path: Path, trainer: dict, backbone: dict | None = None, **top) -> Path:
    recipe = {**TINY_RECIPE, "data": {**TINY_RECIPE["data"], "size": 64}, "output_dir": str(tmp_path / "runs"),
              "backbone": backbone or {"name": "resnet18", "input_size": 64},
              "trainer": trainer if trainer.get("name") == "lbp" else {**TINY_RECIPE["trainer"], **trainer}, **top}
    if trainer.get("name") == "lbp":
        del recipe["optimizer"]
    path = tmp_path / "texture.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


TEXTURE = {"weight": 1.0, "image_size": 32, "grid": 2}


@pytest.mark.slow
def test_texture_branch_is_the_lbp_baseline_added_to_the_network_and_exported_with_it(tmp_path: Path, caplog) -> None:
    baseline = faceauth.run(_recipe(tmp_path, {"name": "lbp", "image_size": 32, "grid": 2}, export=None),
                            ["run_name=lbp"])
    fused = faceauth.run(_recipe(tmp_path, {"epochs": 2, "texture": TEXTURE}), ["run_name=fused"])
    # The branch is fitted on the same features as the baseline, the same way; training leaves it alone.
    payload = faceauth.training.checkpoint.load(fused.dir / "checkpoints" / "best.pt")
    fitted = read_npz(baseline.dir / "lbp.npz")
    for name in ("mean", "scale", "coef", "intercept"):
        np.testing.assert_allclose(payload["model"][f"texture.{name}"].numpy(), fitted[name], rtol=1e-6, atol=1e-9)
    # Each branch is also measured alone, at its own validation threshold: the texture branch as the baseline.
    for split in ("val", "test"):
        for key in ("acer", "auc", "threshold"):
            assert fused.metrics[split][f"texture/{key}"] == pytest.approx(baseline.metrics[split][key], abs=1e-4), key
        assert {"network/acer", "network/auc"} <= set(fused.metrics[split])
    # Test applies the thresholds the best epoch chose on validation, the model's and each branch's.
    for prefix in ("", "network/", "texture/"):
        assert fused.metrics["test"][f"{prefix}threshold"] == pytest.approx(fused.metrics["val"][f"{prefix}threshold"])
    backbone = ResNetFeatures(18, ResNetOptions(input_size=64))
    pre = backbone.preprocess
    options = LbpDescriptorOptions(image_size=32, grid=2)
    model = Classifier(backbone, 2, texture=LbpScore(LbpDescriptor(options, pre.input_size, pre.mean, pre.std)))
    model.load_state_dict(payload["model"])
    model.eval()
    crops = _crops(64)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - torch.tensor(pre.mean).view(1, 3, 1, 1)) \
        / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        score, network, texture = (live_log_odds(model(x)), live_log_odds(model.network_logits(x)), model.texture(x))
    # The fused log-odds is the network's plus the baseline's decision on the same crops.
    baseline_score = linear_score(np.stack([lbp_features(crop, options) for crop in crops]), fitted)
    np.testing.assert_allclose(texture.numpy(), baseline_score, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(score.numpy(), (network + texture).numpy(), rtol=1e-5, atol=1e-4)
    session = faceauth.io.onnx.onnx_session(fused.onnx_path)
    exported, _ = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(exported, score.numpy(), rtol=1e-4, atol=1e-3)
    assert "LBP histograms (ycrcb+hsv" in session.get_modelmeta().custom_metadata_map["faceauth.texture"]
    # A resumed run keeps the fitted branch from its checkpoint rather than fitting it again.
    with caplog.at_level(logging.INFO, logger="faceauth"):
        resumed = faceauth.run(None, ["trainer.epochs=3", "export=null"], resume=fused.dir)
    assert "logistic regression fitted" not in caplog.text
    last = faceauth.training.checkpoint.load(resumed.dir / "checkpoints" / "last.pt")
    for name in ("mean", "scale", "coef", "intercept"):
        assert torch.equal(last["model"][f"texture.{name}"], payload["model"][f"texture.{name}"]), name


def test_texture_branch_needs_an_input_a_whole_multiple_of_its_image_size(tmp_path: Path) -> None:
    path = _recipe(tmp_path, {"epochs": 1, "texture": {**TEXTURE, "image_size": 48}})
    with pytest.raises(RecipeError, match=r"^trainer\.texture\.image_size: .*64x64 input.*multiple"):
        faceauth.run(path)


def test_texture_branch_on_a_clip_backbone_names_the_weight(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, {"epochs": 1, "texture": TEXTURE},
                     backbone={"name": "lstm", "encoder": {"name": "resnet18", "input_size": 64}})
    with pytest.raises(RecipeError, match=r"^trainer\.texture\.weight: .*single images.*'lstm' takes clips"):
        faceauth.run(recipe)
