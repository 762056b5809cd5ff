"""ArcFace IResNet-18/34/50/100: the "improved" pre-activation ResNets of insightface's arcface_torch.

The networks take 112x112 RGB face crops normalised to [-1, 1] and return a 512-d embedding (a
linear layer over the flattened 7x7 map, then a BatchNorm1d). Module names, parameter shapes,
BatchNorm settings and the order of operations follow insightface's
``recognition/arcface_torch/backbones/iresnet.py``, so the public arcface_torch ``backbone.pth``
files (r18, r34, r50, r100, e.g. the ms1mv3/glint360k/webface models) load strictly through
`pretrained` and give the same embeddings as the original code. Mixed precision (the original's
``fp16`` switch) is left to the trainer.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

import faceauth
from faceauth.components import Preprocess
from faceauth.training.weights import load_pretrained

__all__ = ["IResNetOptions", "IBasicBlock", "IResNet", "DEPTHS", "preprocess"]

# Blocks per stage for each depth, as in the public model definitions.
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}
INPUT_SIZE = 112
BN_EPS = 1e-5
PREPROCESS = Preprocess(input_size=(INPUT_SIZE, INPUT_SIZE), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@attrs.frozen
class IResNetOptions:
    pretrained: str | None = None
    num_features: int = attrs.field(default=512, validator=faceauth.schema.positive)
    dropout: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (strided) -> BN, plus the (projected) input."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + shortcut


def preprocess(options: IResNetOptions) -> Preprocess:
    """The fixed input this network was designed for, whatever its options."""
    return PREPROCESS


class IResNet(nn.Module):
    """The stem, four stride-2 stages (64/128/256/512 channels) and the BN-dropout-FC-BN embedding head."""

    def __init__(self, depth: int, options: IResNetOptions | None = None):
        super().__init__()
        options = options or IResNetOptions()
        if depth not in DEPTHS:
            raise ValueError(f"IResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        self.depth = depth
        self.num_features = options.num_features
        self.preprocess = preprocess(options)

        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.prelu = nn.PReLU(64)
        cin = 64
        for index, (width, blocks) in enumerate(zip((64, 128, 256, 512), DEPTHS[depth]), start=1):
            stage = [IBasicBlock(cin, width, stride=2)] + [IBasicBlock(width, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            cin = width
        final = INPUT_SIZE // 16  # four stride-2 stages: 112 -> 7
        self.bn2 = nn.BatchNorm2d(512, eps=BN_EPS)
        self.dropout = nn.Dropout(p=options.dropout, inplace=True)
        self.fc = nn.Linear(512 * final * final, options.num_features)
        self.features = nn.BatchNorm1d(options.num_features, eps=BN_EPS)
        self._init_weights()
        if options.pretrained:
            load_pretrained(self, options.pretrained)

    def _init_weights(self) -> None:
        # The original's scheme: N(0, 0.1) convolutions, unit/zero BatchNorm, and a frozen unit
        # scale on the embedding BatchNorm (only its shift is learned).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))
