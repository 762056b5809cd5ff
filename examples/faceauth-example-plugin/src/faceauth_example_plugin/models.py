"""The example plugin's PyTorch side: imported only when a recipe builds one of its components."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from faceauth.components import Preprocess
from faceauth.data import LIVE, SPOOF, Splits
from faceauth.training.weights import load_pretrained
from faceauth_example_plugin import FocalOptions, StripesOptions, TinyOptions


# backbone ---------------------------------------------------------------------------------------
class TinyCNN(torch.nn.Module):
    def __init__(self, options: TinyOptions):
        super().__init__()
        w = options.width

        def norm(channels: int) -> torch.nn.Module:
            return torch.nn.BatchNorm2d(channels) if options.norm == "batch" else torch.nn.GroupNorm(4, channels)

        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, w, 3, 2, 1), norm(w), torch.nn.ReLU(),
            torch.nn.Conv2d(w, 2 * w, 3, 2, 1), norm(2 * w), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.num_features = 2 * w
        self.preprocess = Preprocess(input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        if options.pretrained:
            load_pretrained(self, options.pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# dataset ----------------------------------------------------------------------------------------
class Stripes:
    """Live: smooth colour blobs. Spoof: the same with a printed stripe pattern over it."""

    def __init__(self, count: int, size: int, seed: int):
        self.count, self.size, self.seed = count, size, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index])
        label = LIVE if index % 2 == 0 else SPOOF
        grid = np.linspace(0, 1, self.size)
        base = rng.uniform(60, 200, 3) + 40 * np.sin(grid[:, None] * rng.uniform(1, 4) + grid[None, :])[..., None]
        if label == SPOOF:
            base = base + 35 * np.sign(np.sin(np.arange(self.size) * 1.6))[None, :, None]
        pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        return {"image": Image.fromarray(pixels), "label": label, "attack_type": "" if label == LIVE else "stripes"}


def build_stripes(options: StripesOptions) -> Splits:
    return Splits(train=Stripes(options.train, options.size, options.seed),
                  val=Stripes(options.val, options.size, options.seed + 1),
                  test=Stripes(options.test, options.size, options.seed + 2))


# loss -------------------------------------------------------------------------------------------
class FocalLoss(torch.nn.Module):
    def __init__(self, gamma: float):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        return (-(1 - log_p.exp()) ** self.gamma * log_p).mean()


def build_focal(options: FocalOptions, num_classes: int, num_features: int) -> FocalLoss:
    return FocalLoss(options.gamma)
