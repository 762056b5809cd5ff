"""Triplet loss with online batch-hard mining (Hermans, Beyer and Leibe, 2017).

For every anchor in the batch: its hardest positive (the farthest embedding with the same label,
itself excluded) and its hardest negative (the nearest embedding with another label), and the loss
``max(0, d(a, p) - d(a, n) + margin)``, averaged over the anchors that have both. Distances are
Euclidean between L2-normalised embeddings (so within [0, 2]), or their squares with
``squared: true`` (within [0, 4]; FaceNet's choice). The default is the plain distance, which
Hermans et al. found trains more stably than the squared one.

Batches need at least one identity with two images and a second identity; a P x K sampler
(`faceauth.training.samplers.PKSampler`, P >= 2, K >= 2) guarantees that every anchor has both.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

import faceauth
from faceauth.errors import DataError

__all__ = ["TripletOptions", "BatchHardTripletLoss", "pairwise_distances", "build_triplet"]

# Distances are square roots of values clamped to this: the root's derivative is infinite at 0
# (two identical embeddings, e.g. an image repeated by the sampler).
_MIN_SQUARED = 1e-12


@attrs.frozen
class TripletOptions:
    margin: float = attrs.field(default=0.2, validator=faceauth.schema.non_negative)
    squared: bool = False  # squared Euclidean distance instead of the distance


def pairwise_distances(embeddings: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """(N, N) Euclidean distances (or their squares) between the L2-normalised rows of `embeddings`."""
    unit = F.normalize(embeddings, dim=1)
    squared_distances = (2.0 - 2.0 * unit @ unit.T).clamp(min=0.0)
    if squared:
        return squared_distances
    return squared_distances.clamp(min=_MIN_SQUARED).sqrt()


class BatchHardTripletLoss(torch.nn.Module):
    """Batch-hard triplet loss; call as ``loss(embeddings, target)`` with (N, D) embeddings and (N,) labels."""

    def __init__(self, margin: float = 0.2, squared: bool = False):
        super().__init__()
        self.margin, self.squared = float(margin), bool(squared)

    def extra_repr(self) -> str:
        return f"margin={self.margin:g}, squared={self.squared}"

    def hardest(self, embeddings: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hardest-positive distance, hardest-negative distance, valid) per anchor; `valid` marks
        anchors that have at least one positive and one negative (the others' distances are meaningless)."""
        if embeddings.dim() != 2 or target.shape != embeddings.shape[:1]:
            raise ValueError(f"triplet loss: expected embeddings (N, D) and target (N,), "
                             f"got {tuple(embeddings.shape)} and {tuple(target.shape)}")
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()
        distances = pairwise_distances(embeddings, self.squared)
        same = target.unsqueeze(0) == target.unsqueeze(1)
        itself = torch.eye(len(target), dtype=torch.bool, device=target.device)
        positive, negative = same & ~itself, ~same
        # Distances are >= 0, so 0 stands in for "no positive" and +inf for "no negative".
        hardest_positive = torch.where(positive, distances, torch.zeros_like(distances)).amax(dim=1)
        hardest_negative = torch.where(negative, distances, torch.full_like(distances, float("inf"))).amin(dim=1)
        return hardest_positive, hardest_negative, positive.any(dim=1) & negative.any(dim=1)

    def forward(self, embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hardest_positive, hardest_negative, valid = self.hardest(embeddings, target)
        if not bool(valid.any()):
            identities = torch.unique(target).numel()
            raise DataError(
                f"triplet loss: the batch of {len(target)} embeddings from {identities} "
                f"{'identity' if identities == 1 else 'identities'} has no valid triplet (no identity has two "
                f"images alongside another identity); sample batches with P >= 2 identities x K >= 2 images "
                f"(faceauth.training.samplers.PKSampler)")
        return F.relu(hardest_positive[valid] - hardest_negative[valid] + self.margin).mean()


def build_triplet(options: TripletOptions, num_classes: int = 0, num_features: int = 0) -> BatchHardTripletLoss:
    return BatchHardTripletLoss(margin=options.margin, squared=options.squared)
