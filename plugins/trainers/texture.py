"""LBP colour texture: the descriptor, its network form and the fitted linear score.

Each face crop is resized to `image_size`, converted to each of `colour_spaces` (colour texture
analysis: luminance and chrominance channels of YCrCb and HSV show print and replay artefacts that
grey levels hide), and every channel is described by uniform local binary patterns (scikit-image,
``nri_uniform``: 59 labels for 8 neighbours) at each radius of `radii`, histogrammed over a
`grid` x `grid` spatial grid (`lbp_features`, the reference). A standardised logistic regression
(scikit-learn, `fit_linear`) separates live from spoof; its decision function is the log-odds of live.

The same descriptor is also a network, `LbpDescriptor` (equal to `lbp_features` bit for bit, tested),
and with the fitted linear model `LbpScore`. Two trainers use it: the `lbp` trainer
(`faceauth.plugins.trainers.lbp`), the classical baseline, which ships `LbpScore` as its ONNX model,
and the classifier trainer's texture branch (``trainer.texture.weight`` > 0), which fits it the same
way on the training split and adds its log-odds to the network's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

import attrs
import cv2
import numpy as np
import torch
from skimage.feature import local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import faceauth
from faceauth.data import LIVE
from faceauth.errors import RecipeError
from faceauth.plugins.trainers.liveness_scores import predict

log = logging.getLogger(__name__)

COLOUR_SPACES = {"rgb": None, "grey": cv2.COLOR_RGB2GRAY, "ycrcb": cv2.COLOR_RGB2YCrCb, "hsv": cv2.COLOR_RGB2HSV}
NEIGHBOURS = 8  # per radius: the 59 uniform patterns of LBP^{u2}_{8,R}


def _colour_spaces(instance: Any, attribute: attrs.Attribute, value: Sequence[str]) -> None:
    unknown = [v for v in value if v not in COLOUR_SPACES]
    if not value or unknown:
        raise ValueError(f"{attribute.name}: expected one or more of {', '.join(COLOUR_SPACES)}, got {list(value)!r:.200}")


def _radii(instance: Any, attribute: attrs.Attribute, value: Sequence[int]) -> None:
    if not value or any(r < 1 for r in value):
        raise ValueError(f"{attribute.name}: expected one or more radii >= 1 pixel, got {list(value)!r:.200}")


@attrs.frozen
class LbpDescriptorOptions:
    """The descriptor: uniform LBP histograms of each channel of each colour space, per grid cell."""

    image_size: int = attrs.field(default=64, validator=faceauth.schema.positive)
    colour_spaces: tuple[str, ...] = attrs.field(default=("ycrcb", "hsv"), converter=tuple, validator=_colour_spaces)
    radii: tuple[int, ...] = attrs.field(default=(1, 2), converter=tuple, validator=_radii)
    grid: int = attrs.field(default=3, validator=faceauth.schema.positive)


@attrs.frozen
class LinearOptions(LbpDescriptorOptions):
    """The descriptor and the standardised logistic regression on it."""

    C: float = attrs.field(default=0.1, validator=faceauth.schema.positive)  # inverse L2 strength
    class_weight: Literal["balanced", "none"] = "balanced"
    max_iter: int = attrs.field(default=2000, validator=faceauth.schema.positive)


@attrs.frozen
class TextureOptions(LinearOptions):
    """The classifier's texture branch (``trainer.texture``): weight > 0 adds weight x the LBP baseline's
    log-odds to the network's."""

    weight: float = attrs.field(default=0.0, validator=faceauth.schema.non_negative)  # 0: off


LBP_BINS = NEIGHBOURS * (NEIGHBOURS - 1) + 3  # nri_uniform labels 0..58


def lbp_features(image: np.ndarray, options: LbpDescriptorOptions) -> np.ndarray:
    """The concatenated, per-cell normalised LBP histograms of one HxWx3 uint8 RGB face crop."""
    size = options.image_size
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    edges = _cell_edges(size, options.grid)
    parts = []
    for space in options.colour_spaces:
        code = COLOUR_SPACES[space]
        converted = image if code is None else cv2.cvtColor(image, code)
        channels = converted[..., None] if converted.ndim == 2 else converted
        for c in range(channels.shape[2]):
            for radius in options.radii:
                codes = local_binary_pattern(channels[..., c], NEIGHBOURS, radius, method="nri_uniform").astype(int)
                for y0, y1 in pairwise(edges):
                    for x0, x1 in pairwise(edges):
                        counts = np.bincount(codes[y0:y1, x0:x1].ravel(), minlength=LBP_BINS).astype(np.float32)
                        parts.append(counts / max(counts.sum(), 1.0))
    return np.concatenate(parts)


def _cell_edges(size: int, grid: int) -> np.ndarray:
    return np.linspace(0, size, grid + 1).astype(int)


def uniform_labels(points: int = NEIGHBOURS) -> np.ndarray:
    """The ``nri_uniform`` label of each of the 2^points patterns (bit i set: neighbour i >= the centre),
    numbered as scikit-image numbers them: 0 for no bit set, then each uniform pattern by its count of
    set bits and its rotation, points(points-1)+1 for all bits set, points(points-1)+2 for the rest."""
    table = np.empty(2 ** points, dtype=np.int64)
    for code in range(2 ** points):
        bits = [(code >> i) & 1 for i in range(points)]
        ones = sum(bits)
        if sum(a != b for a, b in pairwise(bits)) > 2:
            table[code] = points * (points - 1) + 2
        elif ones in (0, points):
            table[code] = 0 if ones == 0 else points * (points - 1) + 1
        else:
            first_one, first_zero = bits.index(1), bits.index(0)
            table[code] = 1 + (ones - 1) * points + (ones - first_zero if first_one == 0 else points - first_one)
    return table


def _floor_div(x: torch.Tensor, divisor: float) -> torch.Tensor:
    return torch.floor(x / divisor)  # integer arithmetic in float64: exact below 2^53


def _colour_planes(rgb: torch.Tensor, space: str, tables: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """OpenCV's 8-bit conversions of integer-valued RGB [N, 3, H, W] (float64), bit for bit:
    its fixed-point formulas, here in float64 integers."""
    r, g, b = rgb.unbind(1)
    if space == "rgb":
        return [r, g, b]
    if space == "grey":
        return [_floor_div(r * 9798 + g * 19235 + b * 3735 + 16384, 32768)]
    if space == "ycrcb":
        y = _floor_div(r * 4899 + g * 9617 + b * 1868 + 8192, 16384)
        return [y] + [_floor_div((c - y) * k + 128 * 16384 + 8192, 16384).clamp(0, 255)
                      for c, k in ((r, 11682), (b, 9241))]
    high, low = rgb.amax(1), rgb.amin(1)
    spread = high - low
    saturation = _floor_div(spread * tables["saturation"][high.long()] + 2048, 4096)
    at_r, at_g = high == r, (high == g) & (high != r)
    hue = torch.where(at_r, g - b, torch.where(at_g, b - r + 2 * spread, r - g + 4 * spread))
    hue = _floor_div(hue * tables["hue"][spread.long()] + 2048, 4096)
    return [torch.where(hue < 0, hue + 180, hue), saturation, high]


class LbpDescriptor(torch.nn.Module):
    """`lbp_features` as a network, for the classifier's texture branch and its ONNX export: normalised
    images [N, 3, H, W] (`preprocess`'s mean and std) in, the same histograms [N, D] out.

    Every step reproduces the reference (OpenCV's area resize and colour conversions in their
    fixed-point arithmetic, scikit-image's bilinear neighbours with zeros outside the image, in
    float64), so the features equal `lbp_features` of the uint8 crop, tested bit for bit. The input
    side must be `image_size` times a whole number (area resizing by that factor)."""

    def __init__(self, options: LbpDescriptorOptions, input_size: tuple[int, int],
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        height, width = input_size
        size, key = options.image_size, "trainer.texture.image_size"  # the lbp trainer picks a fitting input
        if height != width or height % size:
            raise RecipeError(f"{key}: the texture branch resizes the {height}x{width} input by a whole factor, "
                              f"so the input must be square and a multiple of {key}; got {size}")
        self.factor, self.size, self.options = height // size, size, options
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        spread = np.arange(256, dtype=np.float64)
        with np.errstate(divide="ignore"):
            saturation = np.where(spread > 0, np.round((255 << 12) / spread), 0.0)
            hue = np.where(spread > 0, np.round((180 << 12) / (6.0 * spread)), 0.0)
        self.register_buffer("saturation", torch.from_numpy(saturation), persistent=False)
        self.register_buffer("hue", torch.from_numpy(hue), persistent=False)
        self.register_buffer("labels", torch.from_numpy(uniform_labels()), persistent=False)
        edges = _cell_edges(size, options.grid)
        # Per radius and neighbour: where its four source pixels start (slices of the padded planes) and the
        # bilinear weights of every row and column, computed as the reference computes them (offsets
        # rounded to 5 decimals, weight = coordinate - floor: it varies in the last bits from row to row).
        self.neighbours: list[list[tuple[str, int, int, int, int]]] = []
        for radius in options.radii:
            points = []
            for i in range(NEIGHBOURS):
                angle = 2 * np.pi * i / NEIGHBOURS
                name, starts = f"r{radius}n{i}", []
                for axis, offset in (("row", np.round(-radius * np.sin(angle), 5)),
                                     ("col", np.round(radius * np.cos(angle), 5))):
                    at = np.arange(size) + offset
                    low, high = np.floor(at), np.ceil(at)
                    assert (np.diff(low) == 1).all() and (np.diff(high) == 1).all()  # contiguous: a slice
                    starts += [int(low[0]) + radius + 1, int(high[0]) + radius + 1]
                    shape = (-1, 1) if axis == "row" else (1, -1)
                    self.register_buffer(f"{name}_{axis}", torch.from_numpy(at - low).view(shape), persistent=False)
                    self.register_buffer(f"{name}_{axis}_rest", torch.from_numpy(1 - (at - low)).view(shape),
                                         persistent=False)
                points.append((name, *starts))
            self.neighbours.append(points)
        planes = sum(1 if s == "grey" else 3 for s in options.colour_spaces)
        self.num_features = planes * len(options.radii) * options.grid ** 2 * LBP_BINS
        # The first histogram slot of each (plane, radius, pixel): its cell's, and each slot's cell area.
        cell = np.searchsorted(edges, np.arange(size), side="right") - 1
        cell_of_pixel = cell[:, None] * options.grid + cell[None, :]  # [S, S]
        base = (np.arange(planes * len(options.radii))[:, None, None] * options.grid ** 2 + cell_of_pixel) * LBP_BINS
        self.register_buffer("slot_base", torch.from_numpy(base.reshape(planes, len(options.radii), size, size)),
                             persistent=False)
        area = np.outer(np.diff(edges), np.diff(edges)).ravel().astype(np.float64)  # per cell
        self.register_buffer("slot_area", torch.from_numpy(np.tile(np.repeat(area, LBP_BINS), planes * len(options.radii))),
                             persistent=False)

    def _codes(self, planes: torch.Tensor, radius: int, points: list[tuple[str, int, int, int, int]]) -> torch.Tensor:
        """Uniform-pattern labels [N, C, S, S] of planes [N, C, S, S] at one radius."""
        size = self.size
        padded = torch.nn.functional.pad(planes, (radius + 1,) * 4)
        code = torch.zeros_like(planes)
        for i, (name, row_low, row_high, col_low, col_high) in enumerate(points):
            dr, kr = getattr(self, f"{name}_row"), getattr(self, f"{name}_row_rest")
            dc, kc = getattr(self, f"{name}_col"), getattr(self, f"{name}_col_rest")
            top, bottom = padded[..., row_low:row_low + size, :], padded[..., row_high:row_high + size, :]
            top = kc * top[..., col_low:col_low + size] + dc * top[..., col_high:col_high + size]
            bottom = kc * bottom[..., col_low:col_low + size] + dc * bottom[..., col_high:col_high + size]
            value = kr * top + dr * bottom
            code = code + (value - planes >= 0).to(planes.dtype) * float(2 ** i)
        return self.labels[code.long()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = torch.round(((x.to(torch.float64) * self.std + self.mean) * 255).clamp(0, 255))
        if self.factor > 1:  # OpenCV's area resize of 8-bit images by a whole factor: the block mean, rounded
            f, size = self.factor, self.size  # half up at 2x, else to even
            total = rgb.reshape(-1, 3, size, f, size, f).sum(dim=(3, 5))
            rgb = _floor_div(total + 2, 4) if self.factor == 2 else torch.round(total / self.factor ** 2)
        tables = {"saturation": self.saturation, "hue": self.hue}
        planes = torch.stack([plane for space in self.options.colour_spaces
                              for plane in _colour_planes(rgb, space, tables)], dim=1)  # [N, C, S, S]
        # Each pixel's slot in the histograms, in lbp_features' order (plane, radius, cell, bin), counted by a
        # scatter-add; float64 throughout (exact counts; int8 export quantizes float32 tensors only).
        codes = torch.stack([self._codes(planes, radius, points)
                             for radius, points in zip(self.options.radii, self.neighbours)], dim=2)
        slots = (self.slot_base + codes).flatten(1)  # [N, C * R * S * S]
        counts = torch.zeros(slots.shape[0], self.num_features, dtype=torch.float64, device=x.device)
        counts = counts.scatter_add(1, slots, torch.ones_like(slots, dtype=torch.float64))
        return (counts / self.slot_area).to(torch.float32)


def fit_linear(features: np.ndarray, live: np.ndarray, options: LinearOptions, seed: int) -> dict[str, np.ndarray]:
    """The standardised logistic regression of `live` on `features`: its parameters, whose
    ``(features - mean) / scale @ coef + intercept`` is the log-odds of live."""
    weight = "balanced" if options.class_weight == "balanced" else None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=options.C, class_weight=weight,
                                                               max_iter=options.max_iter, random_state=seed))
    model.fit(features, live)
    scaler, linear = model.named_steps["standardscaler"], model.named_steps["logisticregression"]
    return {"mean": scaler.mean_, "scale": scaler.scale_, "coef": linear.coef_[0], "intercept": linear.intercept_}


def linear_score(features: np.ndarray, parameters: dict[str, np.ndarray]) -> np.ndarray:
    return (features - parameters["mean"]) / parameters["scale"] @ parameters["coef"] + parameters["intercept"][0]


class LbpScore(torch.nn.Module):
    """The LBP baseline as a network: normalised images in, its log-odds of live [N] out (the
    descriptor, then the standardised linear model `fit_linear` fitted, stored as buffers)."""

    def __init__(self, descriptor: LbpDescriptor):
        super().__init__()
        self.descriptor = descriptor
        size = descriptor.num_features
        for name, value in (("mean", torch.zeros(size)), ("scale", torch.ones(size)), ("coef", torch.zeros(size)),
                            ("intercept", torch.zeros(1))):
            self.register_buffer(name, value.to(torch.float64))

    def load(self, parameters: dict[str, np.ndarray]) -> None:
        for name, value in parameters.items():
            getattr(self, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float64)))

    def fit(self, loader: Any, device: torch.device, options: LinearOptions, seed: int, progress: bool = True) -> None:
        """`fit_linear` on the descriptor of every sample of `loader` (all of them, under torchrun too)."""

        @torch.no_grad()
        def describe(x: torch.Tensor) -> np.ndarray:
            return self.descriptor(x).cpu().numpy()

        described = predict(describe, loader, device, progress=progress)  # its "score" is the features [N, D]
        self.load(fit_linear(described["score"], described["label"] == LIVE, options, seed))
        log.info("LBP histograms (%d features) of %d training crops, logistic regression fitted",
                 described["score"].shape[1], len(described["label"]))

    def description(self) -> str:
        o = self.descriptor.options
        return (f"the log-odds of LBP histograms ({'+'.join(o.colour_spaces)}; radii {','.join(map(str, o.radii))}; "
                f"{o.grid}x{o.grid} grid at {o.image_size} px) + logistic regression")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.descriptor(x).to(torch.float64)
        return (((features - self.mean) / self.scale) @ self.coef + self.intercept).to(torch.float32)


def texture_branch(options: TextureOptions, backbone: torch.nn.Module, name: str) -> LbpScore | None:
    """The classifier's texture branch for `backbone` (unfitted), or None when ``weight`` is 0."""
    if options.weight == 0:
        return None
    if getattr(backbone, "temporal", False):
        raise RecipeError(f"trainer.texture.weight: the texture branch describes single images, but backbone.name "
                          f"'{name}' takes clips; set trainer.texture.weight=0")
    pre = backbone.preprocess
    return LbpScore(LbpDescriptor(options, pre.input_size, pre.mean, pre.std))
