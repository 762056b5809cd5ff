"""Pixel-wise binary supervision, the Fourier-spectrum target, and the inputs that take global
brightness and colour away (random grey, per-image standardisation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import faceauth
from faceauth.components import Preprocess
from faceauth.errors import RecipeError
from faceauth.plugins.backbones.resnet import ResNetFeatures, ResNetOptions
from faceauth.plugins.trainers.auxiliary import FourierHead, PixelMapHead, fourier_target, pixel_map_loss
from faceauth.plugins.trainers.classifier import Classifier, standardise_images
from faceauth.training.transforms import AugmentOptions, train_transform
from tests.conftest import TINY_RECIPE


def test_resnet_feature_map_gives_the_same_features_as_forward() -> None:
    net = ResNetFeatures(18, ResNetOptions(input_size=64)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, feature_map = net.forward_map(x)
        torch.testing.assert_close(features, net(x))
    assert feature_map.shape == (2, net.map_channels, 2, 2) and net.map_channels == 512


def test_pixel_map_loss_targets_every_cell_with_its_class() -> None:
    live_cells = torch.full((1, 3, 3), 20.0)  # confident live everywhere
    assert float(pixel_map_loss(live_cells, torch.tensor([0]))) < 1e-6
    assert float(pixel_map_loss(live_cells, torch.tensor([1]))) == pytest.approx(20.0, rel=1e-4)
    assert PixelMapHead(8)(torch.randn(4, 8, 5, 5)).shape == (4, 5, 5)


def test_fourier_target_is_the_centred_log_spectrum_scaled_to_0_1() -> None:
    flat = torch.zeros(1, 3, 32, 32)
    stripes = flat.clone()
    stripes[..., ::2] = 1.0  # the highest horizontal frequency
    target = fourier_target(torch.cat([flat + 0.5, stripes]), (8, 8))
    assert target.shape == (2, 8, 8) and float(target.min()) >= 0.0 and float(target.max()) == pytest.approx(1.0)
    # a constant image has only the DC term (at the centre after the shift); the stripes add energy at the edge
    assert target[0].argmax().item() == 4 * 8 + 4
    assert float(target[1, 4, 0]) > 0.5 and float(target[0, 4, 0]) == 0.0
    assert FourierHead(16)(torch.randn(2, 16, 4, 4)).shape == (2, 4, 4)


def test_standardised_images_do_not_see_global_brightness_or_colour_gain() -> None:
    x = torch.rand(2, 3, 16, 16)
    gained = x * torch.tensor([1.5, 0.7, 1.1]).view(1, 3, 1, 1) + 0.2  # a brighter image with a colour cast
    torch.testing.assert_close(standardise_images(gained), standardise_images(x), atol=1e-4, rtol=1e-4)
    model = Classifier(ResNetFeatures(18, ResNetOptions(input_size=16)), 2, input_norm="image").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(gained), model(x), atol=1e-3, rtol=1e-3)


def test_grayscale_gives_equal_channels() -> None:
    pre = Preprocess(input_size=(24, 24), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    transform = train_transform(pre, AugmentOptions(grayscale=1.0, color_jitter=0.0))
    torch.manual_seed(0)
    out = transform(image)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert "RandomGrayscale" not in [type(t).__name__ for t in train_transform(pre, AugmentOptions()).transforms]


def _write(tmp_path: Path, trainer: dict, backbone: dict | None = None) -> Path:
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "runs"),
              "trainer": {**TINY_RECIPE["trainer"], **trainer}, "backbone": backbone or TINY_RECIPE["backbone"]}
    path = tmp_path / "aux.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_pixel_map_on_a_backbone_without_a_feature_map_names_both_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, {"pixel_supervision": {"weight": 0.5}, "max_steps": 1},
                  {"name": "mobilefacenet"})
    with pytest.raises(RecipeError, match=r"^trainer\.pixel_supervision: .*backbone\.name 'mobilefacenet' has no "
                                          r"feature map"):
        faceauth.run(path)


@pytest.mark.slow
def test_pixel_and_fourier_objectives_train_and_export_score_and_logits_only(tmp_path: Path) -> None:
    path = _write(tmp_path, {"epochs": 1, "pixel_supervision": {"weight": 0.5}, "fourier": {"weight": 0.1},
                             "input_norm": "image"})
    result = faceauth.run(path)
    payload = faceauth.training.checkpoint.load(result.dir / "checkpoints" / "best.pt")
    assert any(k.startswith("pixel_head.") for k in payload["model"])
    assert any(k.startswith("fourier_head.") for k in payload["model"])
    session = faceauth.io.onnx.onnx_session(result.dir / "model.onnx")
    assert [o.name for o in session.get_outputs()] == ["score", "logits"]
    assert np.isfinite(result.metrics["test"]["acer"])
