"""FaceNet's Inception-ResNet-v1 as published by facenet-pytorch.

The network takes 160x160 RGB face crops scaled as (x - 127.5) / 128 and returns an L2-normalised
512-d embedding (average pool, dropout, linear 1792 -> 512, BatchNorm1d, L2 norm). Module names,
shapes, BatchNorm settings (eps 1e-3) and residual scales (0.17, 0.10, 0.20, 1.0) follow
facenet-pytorch's ``models/inception_resnet_v1.py``, so its ``vggface2`` (20180402-114759) and
``casia-webface`` (20180408-102900) state_dicts load strictly through `pretrained` and give the
same embeddings as ``InceptionResnetV1(pretrained=...).eval()``. Those files also hold the
classification layer ``logits`` they were trained with (8631 and 10575 classes): set `classes` to
that number to load them. The layer is kept for completeness; `forward` does not apply it.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import nn

import faceauth
from faceauth.components import Preprocess
from faceauth.errors import CheckpointError
from faceauth.training.weights import load_pretrained, read_state_dict

__all__ = ["FaceNetOptions", "InceptionResnetV1", "PUBLIC_CLASSES", "preprocess"]

INPUT_SIZE = 160
# (x - 127.5) / 128 on 0-255 pixels, in Preprocess's 0-1 units.
PREPROCESS = Preprocess(input_size=(INPUT_SIZE, INPUT_SIZE), mean=(127.5 / 255,) * 3, std=(128 / 255,) * 3)
PUBLIC_CLASSES = {"vggface2": 8631, "casia-webface": 10575}
EMBEDDING = 512


@attrs.frozen
class FaceNetOptions:
    pretrained: str | None = None
    dropout: float = attrs.field(default=0.6, validator=faceauth.schema.fraction)
    classes: int | None = attrs.field(default=None, validator=faceauth.schema.positive)


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class _ResidualInception(nn.Module):
    """Concatenated branches, projected by `conv2d` (with bias), scaled, added to the input; ReLU if `activate`."""

    scale: float
    activate: bool

    def _branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(torch.cat(self._branches(x), 1)) * self.scale + x
        return self.relu(out) if self.activate else out


class Block35(_ResidualInception):
    """Inception-ResNet-A on the 256-channel 17x17 map (for 160 input)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale, self.activate = scale, True
        self.branch0 = BasicConv2d(256, 32, 1)
        self.branch1 = nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1),
                                     BasicConv2d(32, 32, 3, padding=1))
        self.conv2d = nn.Conv2d(96, 256, kernel_size=1)
        self.relu = nn.ReLU()

    def _branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x), self.branch2(x)]


class Block17(_ResidualInception):
    """Inception-ResNet-B on the 896-channel map, with factorised 1x7 / 7x1 convolutions."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale, self.activate = scale, True
        self.branch0 = BasicConv2d(896, 128, 1)
        self.branch1 = nn.Sequential(BasicConv2d(896, 128, 1),
                                     BasicConv2d(128, 128, (1, 7), padding=(0, 3)),
                                     BasicConv2d(128, 128, (7, 1), padding=(3, 0)))
        self.conv2d = nn.Conv2d(256, 896, kernel_size=1)
        self.relu = nn.ReLU()

    def _branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x)]


class Block8(_ResidualInception):
    """Inception-ResNet-C on the 1792-channel map, with factorised 1x3 / 3x1 convolutions."""

    def __init__(self, scale: float = 1.0, activate: bool = True):
        super().__init__()
        self.scale, self.activate = scale, activate
        self.branch0 = BasicConv2d(1792, 192, 1)
        self.branch1 = nn.Sequential(BasicConv2d(1792, 192, 1),
                                     BasicConv2d(192, 192, (1, 3), padding=(0, 1)),
                                     BasicConv2d(192, 192, (3, 1), padding=(1, 0)))
        self.conv2d = nn.Conv2d(384, 1792, kernel_size=1)
        if activate:
            self.relu = nn.ReLU()

    def _branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch0(x), self.branch1(x)]


class Mixed6a(nn.Module):
    """Reduction-A: 256 -> 896 channels at half the resolution."""

    def __init__(self):
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, stride=2)
        self.branch1 = nn.Sequential(BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, padding=1),
                                     BasicConv2d(192, 256, 3, stride=2))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x)), 1)


class Mixed7a(nn.Module):
    """Reduction-B: 896 -> 1792 channels at half the resolution."""

    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2))
        self.branch2 = nn.Sequential(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, padding=1),
                                     BasicConv2d(256, 256, 3, stride=2))
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


def preprocess(options: FaceNetOptions) -> Preprocess:
    """The fixed input this network was designed for, whatever its options."""
    return PREPROCESS


class InceptionResnetV1(nn.Module):
    """Stem, 5 x Block35, Mixed6a, 10 x Block17, Mixed7a, 5 x Block8 + a final linear Block8, embedding head."""

    def __init__(self, options: FaceNetOptions | None = None):
        super().__init__()
        options = options or FaceNetOptions()
        self.num_features = EMBEDDING
        self.preprocess = preprocess(options)
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*(Block35(scale=0.17) for _ in range(5)))
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*(Block17(scale=0.10) for _ in range(10)))
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*(Block8(scale=0.20) for _ in range(5)))
        self.block8 = Block8(activate=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(options.dropout)
        self.last_linear = nn.Linear(1792, EMBEDDING, bias=False)
        self.last_bn = nn.BatchNorm1d(EMBEDDING, eps=0.001, momentum=0.1)
        if options.classes is not None:
            self.logits = nn.Linear(EMBEDDING, options.classes)
        if options.pretrained:
            _load(self, options.pretrained, options.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.repeat_2(self.mixed_6a(self.repeat_1(x)))
        x = self.block8(self.repeat_3(self.mixed_7a(x)))
        x = self.dropout(self.avgpool_1a(x))
        x = self.last_bn(self.last_linear(x.flatten(1)))
        return F.normalize(x, p=2, dim=1)


def _logits_classes(path: str | Path) -> int | None:
    """The class count of the `logits` head stored in a weights file, or None when it holds none."""
    try:
        weight = read_state_dict(path).get("logits.weight")
    except CheckpointError:
        return None
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else None


def _load(module: InceptionResnetV1, path: str, classes: int | None) -> None:
    try:
        load_pretrained(module, path)
    except CheckpointError as exc:
        stored = _logits_classes(path) if classes is None else None
        if stored is None:
            raise
        known = ", ".join(f"{name}: {count}" for name, count in PUBLIC_CLASSES.items())
        raise CheckpointError(
            f"{exc}; the file holds a {stored}-class 'logits' layer but backbone.classes is not set: "
            f"set backbone.classes: {stored} to load it ({known})"
        ) from None


def build(options: FaceNetOptions) -> InceptionResnetV1:
    return InceptionResnetV1(options)
