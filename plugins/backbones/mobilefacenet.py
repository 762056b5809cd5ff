"""MobileFaceNet ("mbf") as trained by insightface's arcface_torch.

A small depthwise-separable network for 112x112 RGB face crops normalised to [-1, 1], ending in a
global depthwise convolution (GDC) over the 7x7 map, a linear layer and a BatchNorm1d: a 512-d
embedding from about 2 M parameters. Structure, key names and shapes follow
``recognition/arcface_torch/backbones/mobilefacenet.py`` with ``get_mbf(fp16, num_features)``
(stage blocks (1, 4, 6, 2), width scale 2), so the public arcface_torch ``mbf`` ``backbone.pth``
files (e.g. ms1mv3/glint360k/webface mbf) load strictly through `pretrained` and give the same
embeddings as the original code.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

import faceauth
from faceauth.components import Preprocess
from faceauth.training.weights import load_pretrained

__all__ = ["MobileFaceNetOptions", "MobileFaceNet", "preprocess"]

INPUT_SIZE = 112
PREPROCESS = Preprocess(input_size=(INPUT_SIZE, INPUT_SIZE), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
BLOCKS = (1, 4, 6, 2)
SCALE = 2


@attrs.frozen
class MobileFaceNetOptions:
    pretrained: str | None = None
    num_features: int = attrs.field(default=512, validator=faceauth.schema.positive)


class ConvBN(nn.Module):
    """Convolution (no bias) and BatchNorm, optionally followed by a per-channel PReLU; held in `layers`."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, activation: bool = True):
        super().__init__()
        parts: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if activation:
            parts.append(nn.PReLU(cout))
        self.layers = nn.Sequential(*parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """1x1 expansion to `hidden` channels, 3x3 depthwise (maybe strided), linear 1x1 projection; optional identity."""

    def __init__(self, cin: int, cout: int, hidden: int, stride: int = 1, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBN(cin, hidden),
            ConvBN(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden),
            ConvBN(hidden, cout, activation=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class Residual(nn.Module):
    """`count` residual DepthWise blocks at constant width, in `layers`."""

    def __init__(self, channels: int, count: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(*(DepthWise(channels, channels, hidden, residual=True) for _ in range(count)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise 7x7 convolution + BN, flatten, linear (no bias), BatchNorm1d: the embedding head."""

    def __init__(self, num_features: int, channels: int = 512, size: int = 7):
        super().__init__()
        self.layers = nn.Sequential(
            ConvBN(channels, channels, kernel=size, groups=channels, activation=False),
            nn.Flatten(),
            nn.Linear(channels, num_features, bias=False),
            nn.BatchNorm1d(num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def preprocess(options: MobileFaceNetOptions) -> Preprocess:
    """The fixed input this network was designed for, whatever its options."""
    return PREPROCESS


class MobileFaceNet(nn.Module):
    """`layers` (stem and four stride/residual stages), `conv_sep` (1x1 to 512) and `features` (GDC)."""

    def __init__(self, options: MobileFaceNetOptions | None = None):
        super().__init__()
        options = options or MobileFaceNetOptions()
        self.num_features = options.num_features
        self.preprocess = preprocess(options)
        c1, c2 = 64 * SCALE, 128 * SCALE
        # The depthwise/expansion widths are fixed numbers in the original, not multiples of SCALE.
        self.layers = nn.ModuleList([
            ConvBN(3, c1, kernel=3, stride=2, padding=1),
            ConvBN(c1, c1, kernel=3, padding=1, groups=64),  # BLOCKS[0] == 1: one grouped conv
            DepthWise(c1, c1, hidden=128, stride=2),
            Residual(c1, BLOCKS[1], hidden=128),
            DepthWise(c1, c2, hidden=256, stride=2),
            Residual(c2, BLOCKS[2], hidden=256),
            DepthWise(c2, c2, hidden=512, stride=2),
            Residual(c2, BLOCKS[3], hidden=256),
        ])
        self.conv_sep = ConvBN(c2, 512)
        self.features = GDC(options.num_features, size=INPUT_SIZE // 16)
        self._init_weights()
        if options.pretrained:
            load_pretrained(self, options.pretrained)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


def build(options: MobileFaceNetOptions) -> MobileFaceNet:
    return MobileFaceNet(options)
