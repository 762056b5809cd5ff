"""Auxiliary objectives of the liveness classifier on the backbone's feature map, used in training only.

- **Pixel-wise binary supervision** (DeepPixBiS, George & Marcel, ICB 2019): a 1x1 convolution maps
  the feature map to one logit per cell; every cell of a live face has target 1, every cell of an
  attack 0, with binary cross-entropy. It asks each region of the face for evidence, not only the
  pooled features.
- **Fourier-spectrum target** (as Silent-Face trains its MiniFASNets): a small convolutional head
  predicts the log-magnitude spectrum of the grey input, centred and min-max scaled per image,
  at the feature map's size, with a mean-squared error. Prints and screens change the spectrum
  (halftone and pixel grids, lost high frequencies).

Both need a backbone that exposes its feature map: ``forward_map(x) -> (features [N, F],
feature_map [N, C, h, w])`` and an int ``map_channels``. The exported model keeps only the binary
head (``score`` and ``logits``); the auxiliary heads are not exported.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

import faceauth
from faceauth.data import LIVE

__all__ = ["AuxiliaryOptions", "PixelMapHead", "FourierHead", "pixel_map_loss", "fourier_target", "fourier_loss",
           "has_feature_map"]


@attrs.frozen
class AuxiliaryOptions:
    weight: float = attrs.field(default=0.0, validator=faceauth.schema.non_negative)  # 0: off


def has_feature_map(backbone: torch.nn.Module) -> bool:
    return callable(getattr(backbone, "forward_map", None)) and isinstance(getattr(backbone, "map_channels", None), int)


class PixelMapHead(torch.nn.Module):
    """Feature map [N, C, h, w] -> one live logit per cell [N, h, w]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.conv(feature_map).squeeze(1)


def pixel_map_loss(map_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every cell against its sample's class (live 1, attack 0)."""
    target = (labels == LIVE).to(map_logits.dtype)[:, None, None].expand_as(map_logits)
    return F.binary_cross_entropy_with_logits(map_logits.float(), target.float())


class FourierHead(torch.nn.Module):
    """Feature map [N, C, h, w] -> the predicted spectrum [N, h, w] (two 3x3 conv-BN-ReLU, then one channel)."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, hidden, 3, padding=1, bias=False), torch.nn.BatchNorm2d(hidden),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(hidden, hidden // 2, 3, padding=1, bias=False), torch.nn.BatchNorm2d(hidden // 2),
            torch.nn.ReLU(inplace=True),
            torch.nn.Conv2d(hidden // 2, 1, 3, padding=1))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.net(feature_map).squeeze(1)


@torch.no_grad()
def fourier_target(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """log(1 + |FFT|) of the grey images [N, 3, H, W], centred, area-resized to `size`, min-max scaled to 0-1."""
    grey = images.float().mean(dim=1)
    spectrum = torch.log1p(torch.fft.fftshift(torch.fft.fft2(grey).abs(), dim=(-2, -1)))
    spectrum = F.adaptive_avg_pool2d(spectrum[:, None], size)[:, 0]
    low = spectrum.amin(dim=(-2, -1), keepdim=True)
    high = spectrum.amax(dim=(-2, -1), keepdim=True)
    return (spectrum - low) / (high - low).clamp_min(1e-6)


def fourier_loss(predicted: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(predicted.float(), fourier_target(images, tuple(predicted.shape[-2:])))
