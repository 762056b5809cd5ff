"""The liveness backbones (CDCN, MiniFAS) and torchvision-layout pretrained weights for the ResNets."""

from __future__ import annotations

import pytest
import torch
import torchvision
import yaml

import faceauth
from faceauth.config.registry import load_registry
from faceauth.errors import CheckpointError, RecipeError
from faceauth.plugins.backbones.cdcn import CentralDifferenceConv2d
from tests.conftest import TINY_RECIPE


def _build(name: str, **options):
    entry = load_registry().get("backbone", name)
    return entry.build(entry.options(**options))


def test_central_difference_convolution_is_the_neighbours_difference_to_the_centre() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9)
    conv = CentralDifferenceConv2d(3, 4, theta=1.0)
    # theta = 1: sum over the kernel of w * (x_neighbour - x_centre), written out with unfold.
    patches = torch.nn.functional.unfold(x, 3, padding=1).view(2, 3, 9, 81)
    differences = patches - x.reshape(2, 3, 1, 81)
    expected = torch.einsum("ock,nckp->nop", conv.weight.reshape(4, 3, 9), differences).view(2, 4, 9, 9)
    # Zero padding makes the border's neighbours 0, so compare inside the border.
    torch.testing.assert_close(conv(x)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    # A constant image has no texture: pure central difference answers 0 (inside the border).
    assert conv(torch.ones(1, 3, 9, 9))[..., 1:-1, 1:-1].abs().max() < 1e-5
    plain = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
    plain.weight.data.copy_(conv.weight.data)
    conv.theta = 0.0
    torch.testing.assert_close(conv(x), plain(x))


STRIDED_CDC = """
import torch
from faceauth.plugins.backbones.cdcn import CentralDifferenceConv2d

torch.manual_seed(0)
conv = CentralDifferenceConv2d(3, 8, stride=2, theta=0.7)
x = torch.randn(2, 3, 96, 96).contiguous(memory_format=torch.channels_last).requires_grad_()
out = conv(x)
out.sum().backward()  # PyTorch 2.14 crashed here when the centre term was a strided 1x1 convolution
# The same operator as one plain convolution: the kernel's centre tap less theta times the kernel's sum.
kernel = conv.weight.detach().clone()
kernel[:, :, 1, 1] -= 0.7 * conv.weight.detach().sum(dim=(2, 3))
expected = torch.nn.functional.conv2d(x.detach(), kernel, stride=2, padding=1)
torch.testing.assert_close(out.detach(), expected, rtol=1e-4, atol=1e-4)
print("OK", tuple(out.shape), tuple(x.grad.shape))
"""


def test_strided_central_difference_convolution_trains_on_channels_last_input() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", STRIDED_CDC], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-1500:]}"
    assert "OK (2, 8, 48, 48) (2, 3, 96, 96)" in done.stdout


@pytest.mark.parametrize("name, size, grid", [("cdcn", 64, 4), ("minifas", 80, 5)])
def test_liveness_backbones_expose_their_feature_map(name, size, grid) -> None:
    backbone = _build(name, input_size=size).eval()
    x = torch.randn(2, 3, size, size)
    features, feature_map = backbone.forward_map(x)
    assert features.shape == (2, backbone.num_features)
    assert feature_map.shape == (2, backbone.map_channels, grid, grid)
    torch.testing.assert_close(backbone(x), features)
    assert backbone.preprocess.input_size == (size, size)


def test_chroma_planes_ignore_the_light_level_and_export_with_the_network(tmp_path) -> None:
    backbone = _build("cdcn", input_size=32, chroma=True).eval()
    assert backbone.stem[0].in_channels == 6 and _build("cdcn", input_size=32).stem[0].in_channels == 3
    torch.manual_seed(0)
    rgb = 0.2 + 0.6 * torch.rand(2, 3, 32, 32)
    normalise = lambda image: (image - 0.5) / 0.5  # noqa: E731 - the cdcn preprocess
    planes = backbone.chroma(normalise(rgb))[:, 3:]
    dimmer = backbone.chroma(normalise(0.6 * rgb))[:, 3:]
    torch.testing.assert_close(planes, dimmer, rtol=0, atol=0.01)  # a ratio: the light level cancels
    grey = backbone.chroma(normalise(rgb[:, :1].expand(2, 3, 32, 32)))[:, 3:]
    assert grey.abs().max() < 1e-5  # no colour, no chroma
    recipe = {**TINY_RECIPE, "backbone": {"name": "cdcn", "input_size": 32, "chroma": True},
              "output_dir": str(tmp_path / "runs")}
    recipe["trainer"] = {**recipe["trainer"], "epochs": 1}
    path = tmp_path / "chroma.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = faceauth.run(path)  # the exporter checks ONNX Runtime against PyTorch before writing
    assert result.onnx_path is not None and result.onnx_path.is_file()


def test_mobile_network_stays_under_half_a_million_parameters_with_its_head() -> None:
    backbone = _build("minifas")
    total = sum(p.numel() for p in backbone.parameters()) + backbone.num_features * 2 + 2
    assert total < 500_000


def test_cdcn_theta_outside_zero_to_one_is_a_recipe_error(tiny_recipe) -> None:
    with pytest.raises(RecipeError, match=r"backbone\.theta.*between 0"):
        faceauth.run(tiny_recipe, ["backbone={name: cdcn, theta: 1.5}"])


def test_mobile_network_trains_and_exports_to_onnx(tmp_path) -> None:
    recipe = {**TINY_RECIPE, "backbone": {"name": "minifas", "input_size": 48}, "output_dir": str(tmp_path / "runs")}
    recipe["trainer"] = {**recipe["trainer"], "epochs": 1}
    path = tmp_path / "minifas.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = faceauth.run(path)  # the exporter checks ONNX Runtime against PyTorch before writing
    assert result.onnx_path is not None and result.onnx_path.is_file()


@pytest.fixture
def torchvision_file(tmp_path):
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet-layout.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_resnet_loads_torchvision_layout_and_drops_the_classifier(torchvision_file, tmp_path) -> None:
    model, path = torchvision_file
    backbone = _build("resnet18", input_size=64, pretrained=str(path)).eval()
    model.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(backbone(x), model(x))
    # The same weights without fc, and in the backbone's own layout, load alike.
    no_fc = tmp_path / "no_fc.pth"
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, no_fc)
    own = tmp_path / "own.pth"
    torch.save(backbone.state_dict(), own)
    for other in (no_fc, own):
        torch.testing.assert_close(_build("resnet18", input_size=64, pretrained=str(other)).eval()(x), model(x))


def test_weights_in_neither_layout_give_counts_and_examples(tmp_path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save({f"encoder.{k}": v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}, path)
    with pytest.raises(CheckpointError) as caught:
        _build("resnet18", pretrained=str(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "120 missing (e.g. conv1.weight" in message and "122 unexpected (e.g. encoder.conv1.weight" in message
    assert "torchvision's resnet18 layout" in message
