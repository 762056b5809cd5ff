"""A central difference convolution network (CDCN-style) for liveness, trained from scratch.

A central difference convolution mixes a plain 3x3 convolution with its central-difference form:
``y = conv(x, w) - theta * conv(x, sum(w))``, the second term being the centre pixel weighted by the
kernel's sum. At ``theta = 0`` it is a plain convolution; at ``theta = 1`` each output sees only
the differences of its neighbours to the centre, i.e. fine texture such as print dots and moire,
and not the absolute intensities (global brightness and colour casts). The field reports ``theta``
near 0.7 as the best mix.

The network follows the CDCN layout at a cost suited to a CPU: a stride-2 stem (the original keeps
full resolution, about 20x a ResNet-18's multiply-adds at 64x64; this one is about 1.4x at width
16, 0.57 M parameters), three blocks of three central difference convolutions each ending in a
stride-2 max pool, and a multi-level head that joins the three blocks' outputs at the last block's
resolution (input / 16) into a feature map.
`forward_map` returns the pooled features and that map (for pixel-wise supervision); `forward`
returns the pooled features only.

With ``chroma: true`` the network also sees three chromaticity planes of its input (colour texture
analysis, as the LBP baseline's YCrCb and HSV channels): the opponent colours ``R - (G + B) / 2``
and ``(G - B) * sqrt(3) / 2`` and the chroma ``max - min``, each over the pixel's value ``max(R, G, B)``.
Being ratios, they do not change when the light gets brighter or dimmer; a print's narrower ink gamut
and a screen's colour cast show in them. They are computed inside the network, so the exported
model takes the same RGB input.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn
from torch.nn import functional as F

import faceauth
from faceauth.components import Preprocess

__all__ = ["CdcnOptions", "CentralDifferenceConv2d", "Cdcn", "preprocess"]


def _theta(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name}: expected a number between 0 (plain convolution) and 1 (pure central "
                         f"difference), got {value!r}")


@attrs.frozen
class CdcnOptions:
    input_size: int = attrs.field(default=64, validator=faceauth.schema.positive)
    theta: float = attrs.field(default=0.7, validator=_theta)
    width: int = attrs.field(default=16, validator=faceauth.schema.positive)  # the stem's channels; blocks use 2x-3x
    chroma: bool = False  # add the three brightness-invariant chromaticity planes (module docstring)


class CentralDifferenceConv2d(nn.Conv2d):
    """A 3x3 convolution (padding 1, no bias) minus `theta` times its central-difference term."""

    def __init__(self, cin: int, cout: int, stride: int = 1, theta: float = 0.7):
        super().__init__(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.theta = theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.theta == 0.0:
            return out
        # The centre tap of every output sits on the strided input grid: a 1x1 convolution of that grid.
        # (Striding the 1x1 convolution instead crashes PyTorch 2.14's CPU backward on channels-last input.)
        centre = F.conv2d(x[..., ::self.stride[0], ::self.stride[1]], self.weight.sum(dim=(2, 3), keepdim=True))
        return out - self.theta * centre


def _cdc_bn_relu(cin: int, cout: int, theta: float, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(CentralDifferenceConv2d(cin, cout, stride=stride, theta=theta), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _block(cin: int, width: int, theta: float) -> nn.Sequential:
    return nn.Sequential(_cdc_bn_relu(cin, 4 * width, theta), _cdc_bn_relu(4 * width, 6 * width, theta),
                         _cdc_bn_relu(6 * width, 4 * width, theta), nn.MaxPool2d(3, stride=2, padding=1))


class ChromaPlanes(nn.Module):
    """[N, 3, H, W] RGB normalised by `preprocess` -> the same with three chromaticity planes appended."""

    def __init__(self, preprocess: Preprocess):
        super().__init__()
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = (x * self.std + self.mean).clamp(0, 1)
        r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        value, low = rgb.amax(dim=1, keepdim=True), rgb.amin(dim=1, keepdim=True)
        planes = torch.cat([r - (g + b) / 2, (g - b) * (3**0.5 / 2), value - low], dim=1) / (value + 1e-3)
        return torch.cat([x, 2 * planes], dim=1)  # x2: about the spread of the normalised RGB


def preprocess(options: CdcnOptions) -> Preprocess:
    """`input_size` square crops, pixels scaled to [-1, 1]."""
    return Preprocess(input_size=(options.input_size, options.input_size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class Cdcn(nn.Module):
    """`stem` and `block1..3` (each halves the resolution), `head` (joined levels -> `map_channels` at input / 16)."""

    def __init__(self, options: CdcnOptions | None = None):
        super().__init__()
        options = options or CdcnOptions()
        w, theta = options.width, options.theta
        self.preprocess = preprocess(options)
        self.chroma = ChromaPlanes(self.preprocess) if options.chroma else None
        self.stem = _cdc_bn_relu(6 if options.chroma else 3, 2 * w, theta, stride=2)
        self.block1 = _block(2 * w, w, theta)
        self.block2 = _block(4 * w, w, theta)
        self.block3 = _block(4 * w, w, theta)
        self.map_channels = 4 * w
        self.head = nn.Sequential(_cdc_bn_relu(12 * w, 4 * w, theta), _cdc_bn_relu(4 * w, self.map_channels, theta))
        self.num_features = self.map_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features [N, map_channels], feature map [N, map_channels, H/16, W/16])."""
        if self.chroma is not None:
            x = self.chroma(x)
        x1 = self.block1(self.stem(x))
        x2 = self.block2(x1)
        x3 = self.block3(x2)
        size = x3.shape[-2:]
        joined = torch.cat([F.adaptive_avg_pool2d(x1, size), F.adaptive_avg_pool2d(x2, size), x3], dim=1)
        feature_map = self.head(joined)
        return feature_map.mean(dim=(2, 3)), feature_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_map(x)[0]


def build(options: CdcnOptions) -> Cdcn:
    return Cdcn(options)

