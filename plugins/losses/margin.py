"""Margin-based softmax losses for face recognition: ArcFace, CosFace and their combined form.

All three are one formula. With theta the angle between an embedding and its class centre, the
target-class logit ``s * cos(theta)`` becomes ``s * (cos(m1 * theta + m2) - m3)``; the other
logits stay ``s * cos(theta_j)``:

- ``arcface``: m1 = 1, m2 = margin (additive angular margin), m3 = 0;
- ``cosface``: m1 = 1, m2 = 0, m3 = margin (additive cosine margin);
- ``combined_margin``: any m1, m2, m3 (m1 is SphereFace's multiplicative angular margin).

`margin_logits` holds that math and nothing else, so that a sharded head (Partial FC) can call it
on its own slice of class centres and give the same numbers as these losses on one process.

The edge ``m1 * theta + m2 > pi``: there ``cos(m1 * theta + m2)`` would rise again as theta grows,
rewarding the network for moving an embedding *away* from its centre. Past that angle the target
logit is ``cos(theta) - m3 - c`` instead (no "easy margin"), with ``c = (pi - t) * sin(t)`` at the
threshold angle ``t = (pi - m2) / m1``: for m1 = 1 that is ``m2 * sin(m2)``, the constant of
insightface's ArcFace / CombinedMarginLoss (``cos(theta) - sin(pi - m) * m`` below ``cos(pi - m)``).
`c` is raised to ``1 + cos(t)`` where that is larger (only for very large margins), so the target
logit never increases with theta anywhere.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F

import faceauth

__all__ = [
    "margin_logits",
    "MarginSoftmaxLoss",
    "ArcFaceOptions",
    "CosFaceOptions",
    "CombinedMarginOptions",
    "build_arcface",
    "build_cosface",
    "build_combined_margin",
]

# The derivative of acos is infinite at +-1 (an embedding exactly on its centre), which would make
# the gradient inf/NaN. The angle's value is exact, but its gradient is that of acos on cosines
# clamped to [-1 + _EPS, 1 - _EPS] (zero beyond): this only matters within ~5e-4 rad of +-1.
_EPS = 1e-7


def _below_pi(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value < math.pi:
        raise ValueError(f"{attribute.name}: expected an angle in radians, >= 0 and below pi, got {value!r}")


def _fallback(m1: float, m2: float) -> tuple[float, float] | None:
    """(threshold angle t, constant c) of the region m1 * theta + m2 > pi, or None when theta <= pi never gets there."""
    t = (math.pi - m2) / m1
    if t >= math.pi:
        return None
    return t, max((math.pi - t) * math.sin(t), 1.0 + math.cos(t))


def _target_logit(cos: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """cos(m1 * theta + m2) - m3 for cos = cos(theta), with the fallback past m1 * theta + m2 = pi."""
    if m1 == 1.0 and m2 == 0.0:  # CosFace: no angle needed (exact, and no acos near +-1)
        return cos - m3
    exact = torch.acos(cos.clamp(-1.0, 1.0))
    clamped = torch.acos(cos.clamp(-1.0 + _EPS, 1.0 - _EPS))
    theta = clamped + (exact - clamped).detach()
    out = torch.cos(m1 * theta + m2) - m3
    edge = _fallback(m1, m2)
    if edge is not None:
        t, c = edge
        out = torch.where(theta <= t, out, cos - m3 - c)
    return out


def margin_logits(cos: torch.Tensor, target: torch.Tensor, m1: float = 1.0, m2: float = 0.0, m3: float = 0.0,
                  s: float = 64.0) -> torch.Tensor:
    """Scaled logits with the combined margin on each row's target class.

    `cos` is (N, C): cosines between L2-normalised embeddings and L2-normalised class centres.
    `target` is (N,) int64: row i's class among these C columns, or -1 where row i's class is not
    among them (a Partial FC shard that does not hold it): such rows get no margin. Returns
    ``s * cos`` with ``[i, target[i]]`` replaced by ``s * (cos(m1 * theta + m2) - m3)`` (see the
    module docstring for the region m1 * theta + m2 > pi). Half-precision input is computed and
    returned in float32. The input is not modified.
    """
    if cos.dim() != 2 or target.shape != cos.shape[:1]:
        raise ValueError(f"margin_logits: expected cos (N, C) and target (N,), got {tuple(cos.shape)} and {tuple(target.shape)}")
    if cos.dtype in (torch.float16, torch.bfloat16):
        cos = cos.float()
    target = target.long()
    present = target >= 0
    index = torch.where(present, target, torch.zeros_like(target)).unsqueeze(1)
    original = cos.gather(1, index).squeeze(1)
    adjusted = torch.where(present, _target_logit(original, m1, m2, m3), original)
    return cos.scatter(1, index, adjusted.unsqueeze(1)) * s


class MarginSoftmaxLoss(torch.nn.Module):
    """Softmax cross-entropy on `margin_logits`, owning the class centres.

    `weight` (num_classes x num_features) holds one centre per class; it is L2-normalised on use,
    as are the embeddings. Call as ``loss(embeddings, target)``; `logits(embeddings, target)` gives
    the scaled logits the cross-entropy sees, and `cosine(embeddings)` the plain cosines (for
    accuracy or evaluation).
    """

    def __init__(self, num_classes: int, num_features: int, *, m1: float = 1.0, m2: float = 0.0, m3: float = 0.0,
                 scale: float = 64.0):
        super().__init__()
        if num_classes < 1 or num_features < 1:
            raise ValueError(f"margin loss: num_classes and num_features must be positive, got {num_classes} and {num_features}")
        self.num_classes, self.num_features = num_classes, num_features
        self.m1, self.m2, self.m3, self.scale = float(m1), float(m2), float(m3), float(scale)
        self.weight = torch.nn.Parameter(torch.empty(num_classes, num_features))
        torch.nn.init.normal_(self.weight, std=0.01)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_features={self.num_features}, "
                f"m1={self.m1:g}, m2={self.m2:g}, m3={self.m3:g}, scale={self.scale:g}")

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.num_features:
            raise ValueError(f"margin loss: expected embeddings of shape (N, {self.num_features}), "
                             f"got {tuple(embeddings.shape)}")
        weight = self.weight
        if embeddings.dtype != weight.dtype:
            embeddings = embeddings.to(weight.dtype)
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1))

    def logits(self, embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return margin_logits(self.cosine(embeddings), target, self.m1, self.m2, self.m3, self.scale)

    def forward(self, embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, target), target)


@attrs.frozen
class ArcFaceOptions:
    scale: float = attrs.field(default=64.0, validator=faceauth.schema.positive)
    margin: float = attrs.field(default=0.5, validator=_below_pi)  # additive angular margin m2, radians


@attrs.frozen
class CosFaceOptions:
    scale: float = attrs.field(default=64.0, validator=faceauth.schema.positive)
    margin: float = attrs.field(default=0.35, validator=faceauth.schema.non_negative)  # additive cosine margin m3


@attrs.frozen
class CombinedMarginOptions:
    scale: float = attrs.field(default=64.0, validator=faceauth.schema.positive)
    m1: float = attrs.field(default=1.0, validator=faceauth.schema.positive)  # multiplicative angular margin
    m2: float = attrs.field(default=0.5, validator=_below_pi)  # additive angular margin, radians
    m3: float = attrs.field(default=0.0, validator=faceauth.schema.non_negative)  # additive cosine margin


def build_arcface(options: ArcFaceOptions, num_classes: int, num_features: int) -> MarginSoftmaxLoss:
    return MarginSoftmaxLoss(num_classes, num_features, m1=1.0, m2=options.margin, m3=0.0, scale=options.scale)


def build_cosface(options: CosFaceOptions, num_classes: int, num_features: int) -> MarginSoftmaxLoss:
    return MarginSoftmaxLoss(num_classes, num_features, m1=1.0, m2=0.0, m3=options.margin, scale=options.scale)


def build_combined_margin(options: CombinedMarginOptions, num_classes: int, num_features: int) -> MarginSoftmaxLoss:
    return MarginSoftmaxLoss(num_classes, num_features, m1=options.m1, m2=options.m2, m3=options.m3,
                             scale=options.scale)
