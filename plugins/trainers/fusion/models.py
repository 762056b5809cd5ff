"""The fused model and the field's baselines beside it.

- ``mlp`` (`FusionMLP`): a small MLP on the features, P(accept) out; the model that is exported.
- ``logistic`` (`Logistic`): logistic-regression score fusion (scikit-learn).
- ``and`` (`and_accepts`): accept when every component accepts at its own threshold (`and_thresholds`).
- ``match``: the matcher alone, the mean match score (no liveness).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from faceauth.deploy.features import EMBEDDING
from faceauth.metrics import eer_threshold
from faceauth.plugins.trainers.fusion.components import Component

__all__ = ["MODELS", "FusionMLP", "Logistic", "and_accepts", "and_thresholds", "mlp_scores"]

log = logging.getLogger(__name__)

MODELS = ("mlp", "logistic", "and", "match")


class FusionMLP(torch.nn.Module):
    """Raw features [N, F] in (standardised inside, statistics from the training set), P(accept) [N] out."""

    def __init__(self, num_features: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        layers: list[torch.nn.Module] = []
        width = num_features
        for size in hidden:
            layers += [torch.nn.Linear(width, size), torch.nn.ReLU()]
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
            width = size
        layers.append(torch.nn.Linear(width, 1))
        self.net = torch.nn.Sequential(*layers)

    def standardise_on(self, features: np.ndarray) -> None:
        """Take the standardisation statistics from the training features."""
        self.mean.copy_(torch.from_numpy(features.mean(axis=0)))
        self.std.copy_(torch.from_numpy(np.maximum(features.std(axis=0), 1e-6)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def mlp_scores(model: FusionMLP, x: np.ndarray) -> np.ndarray:
    """P(accept) of feature rows, float64."""
    model.eval()
    device = model.mean.device
    with torch.no_grad():
        return model(torch.from_numpy(x).to(device)).cpu().numpy().astype(np.float64)


class Logistic:
    """Logistic-regression score fusion on standardised features (scikit-learn), kept as plain numbers."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, seed: int) -> Logistic:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        model = LogisticRegression(max_iter=1000, random_state=seed).fit(scaler.transform(x), y)
        return cls({"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
                    "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        z = ((x - np.asarray(p["mean"])) / np.asarray(p["scale"])) @ np.asarray(p["coef"]) + p["intercept"]
        return 1.0 / (1.0 + np.exp(-z))


def and_thresholds(features: np.ndarray, kinds: np.ndarray, components: Sequence[Component],
                   rule: str) -> list[float]:
    """Each component's threshold for the AND rule: its own (stored) one, or its EER on validation.

    A match score's EER is on the licit protocol (genuine vs. impostor); a liveness score's on the
    probes' liveness (live probes of genuine and impostor attempts vs. spoofs).
    """
    thresholds = []
    for i, component in enumerate(components):
        if rule == "model" and component.threshold is not None:
            thresholds.append(float(component.threshold))
            continue
        if rule == "model":
            log.info("%s has no stored threshold; the AND rule uses its validation EER threshold", component.path)
        if component.role == EMBEDDING:
            licit = kinds != "spoof"
            thresholds.append(eer_threshold(features[licit, i], kinds[licit] == "genuine")[1])
        else:
            thresholds.append(eer_threshold(features[:, i], kinds != "spoof")[1])
    return thresholds


def and_accepts(features: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    return np.all(features[:, :len(thresholds)] >= np.asarray(thresholds, np.float32), axis=1)
