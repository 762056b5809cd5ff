"""torchvision ResNets as feature extractors for face crops.

The classification layer is dropped: the module returns pooled features and the trainer or loss
adds its own head. Weights start random unless `pretrained` names a local state_dict file, in
torchvision's own key layout (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...; e.g. the ImageNet
weights torchvision publishes, saved once with ``torch.save(model.state_dict(), path)``; the
classifier's ``fc`` is not part of the backbone and is skipped when present) or in this module's
(``net.conv1.weight``, ...: this module's own ``state_dict()``).
"""

from __future__ import annotations

import attrs
import torch
import torchvision

import faceauth
from faceauth.components import Preprocess
from faceauth.training.weights import load_pretrained

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@attrs.frozen
class ResNetOptions:
    input_size: int = attrs.field(default=112, validator=faceauth.schema.positive)
    pretrained: str | None = None
    dropout: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)


def preprocess(options: ResNetOptions) -> Preprocess:
    """ImageNet's normalisation at `input_size`, as torchvision's weights expect."""
    return Preprocess(input_size=(options.input_size, options.input_size), mean=IMAGENET_MEAN, std=IMAGENET_STD)


class ResNetFeatures(torch.nn.Module):
    def __init__(self, depth: int, options: ResNetOptions):
        super().__init__()
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        if options.pretrained:
            load_pretrained(
                net, options.pretrained, ignore=("fc.",), prefixes=("net.",),
                layouts=f"torchvision's resnet{depth} layout (conv1.weight, layer1.0.conv1.weight, ...; fc optional) "
                        f"or faceauth's (net.conv1.weight, ...)")
        self.num_features = self.map_channels = net.fc.in_features
        net.fc = torch.nn.Dropout(options.dropout) if options.dropout else torch.nn.Identity()
        self.net = net
        self.preprocess = preprocess(options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features [N, num_features], the last stage's feature map [N, map_channels, h, w])."""
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        feature_map = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return net.fc(torch.flatten(net.avgpool(feature_map), 1)), feature_map

