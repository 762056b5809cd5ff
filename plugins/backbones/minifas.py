"""A mobile liveness network under 0.5 M parameters (MiniFASNet-sized), for phones.

Depthwise-separable inverted residual blocks (MobileFaceNet's `DepthWise`/`Residual`, narrower and
shallower) take an 80x80 face crop (by default) down to input / 16; a 1x1 convolution widens the
map to `map_channels`, and a global depthwise convolution (GDC) with a linear layer gives
`num_features` features. About 0.4 M parameters at the defaults; trained from scratch.
`forward_map` returns the features and the input / 16 map (for pixel-wise supervision).
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn

import faceauth
from faceauth.components import Preprocess
from faceauth.plugins.backbones.mobilefacenet import GDC, ConvBN, DepthWise, Residual

__all__ = ["MiniFasOptions", "MiniFas", "preprocess"]


@attrs.frozen
class MiniFasOptions:
    input_size: int = attrs.field(default=80, validator=faceauth.schema.positive)
    num_features: int = attrs.field(default=128, validator=faceauth.schema.positive)
    dropout: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)


def preprocess(options: MiniFasOptions) -> Preprocess:
    """`input_size` square crops, pixels scaled to [-1, 1]."""
    return Preprocess(input_size=(options.input_size, options.input_size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class MiniFas(nn.Module):
    """`layers` (stem and three stride/residual stages, input / 16), `conv_sep` (1x1 to `map_channels`), `features` (GDC)."""

    map_channels = 256

    def __init__(self, options: MiniFasOptions | None = None):
        super().__init__()
        options = options or MiniFasOptions()
        self.num_features = options.num_features
        self.preprocess = preprocess(options)
        self.layers = nn.Sequential(
            ConvBN(3, 32, kernel=3, stride=2, padding=1),
            ConvBN(32, 32, kernel=3, padding=1, groups=32),
            DepthWise(32, 48, hidden=64, stride=2),
            Residual(48, 2, hidden=96),
            DepthWise(48, 96, hidden=128, stride=2),
            Residual(96, 3, hidden=192),
            DepthWise(96, 128, hidden=256, stride=2),
            Residual(128, 2, hidden=256),
        )
        self.conv_sep = ConvBN(128, self.map_channels)
        size = options.input_size
        for _ in range(4):  # each stride-2 3x3 convolution with padding 1 gives ceil(size / 2)
            size = math.ceil(size / 2)
        self.features = GDC(options.num_features, channels=self.map_channels, size=size)
        self.dropout = nn.Dropout(options.dropout) if options.dropout else nn.Identity()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [N, num_features], feature map [N, map_channels, H/16, W/16])."""
        feature_map = self.conv_sep(self.layers(x))
        return self.dropout(self.features(feature_map)), feature_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_map(x)[0]


def build(options: MiniFasOptions) -> MiniFas:
    return MiniFas(options)

