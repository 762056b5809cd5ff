"""Image transforms of the built-in trainers: augmentation for training, plain resizing for evaluation.

Every random draw comes from torch's global RNG (`torch.rand`, `torch.randint`, torchvision's
random transforms), which `faceauth.training.loaders.Transformed` seeds per sample; Python's `random` and
numpy's global RNG would make runs irreproducible. A step whose probability or strength is 0 is
left out of the pipeline, so it draws nothing and older recipes keep their exact random stream.

`spoof_transform` simulates print and replay artefacts. It is separate from `train_transform`
because it must only touch SPOOF samples: a live image with a halftone pattern is mislabelled.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

import faceauth
from faceauth.components import Preprocess

__all__ = ["AugmentOptions", "train_transform", "eval_transform", "spoof_transform", "denormalise"]


def _jpeg_quality(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 100:
        raise ValueError(f"{attribute.name}: expected an integer from 1 to 100, got {value!r}")


def _one_attack_at_a_time(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    faceauth.schema.fraction(instance, attribute, value)
    if instance.print_artefacts + value > 1 + 1e-9:
        raise ValueError(f"{attribute.name}: expected print_artefacts + replay_artefacts <= 1 (one simulated "
                         f"attack per sample), got {instance.print_artefacts!r} + {value!r}")


@attrs.frozen
class AugmentOptions:
    hflip: bool = True
    crop_scale: float = attrs.field(default=0.8, validator=faceauth.schema.fraction)  # 1.0: no random crop
    rotation: float = attrs.field(default=8.0, validator=faceauth.schema.non_negative)  # degrees
    color_jitter: float = attrs.field(default=0.15, validator=faceauth.schema.fraction)
    # probability of a grey image (3 equal channels): colour cannot be the cue, on live and spoof alike
    grayscale: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)
    # gamma drawn log-uniformly from [1/(1+gamma), 1+gamma]: exposure / display response
    gamma: float = attrs.field(default=0.0, validator=faceauth.schema.non_negative)
    # each channel's gain drawn from [1 - white_balance, 1 + white_balance]: the camera's white balance
    white_balance: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)
    blur: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)  # probability
    blur_sigma: float = attrs.field(default=1.5, validator=faceauth.schema.positive)  # sigma <= this, input px
    jpeg: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)  # probability
    jpeg_quality: int = attrs.field(default=30, validator=_jpeg_quality)  # quality drawn from [jpeg_quality, 100]
    # spoof samples only (see spoof_transform): probability of a simulated print / replay recapture
    print_artefacts: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)
    replay_artefacts: float = attrs.field(default=0.0, validator=_one_attack_at_a_time)
    artefact_strength: float = attrs.field(default=0.3, validator=faceauth.schema.fraction)
    # probability of erasing one random rectangle (2-33% of the image, filled with the normalised mean,
    # torchvision's RandomErasing defaults): no single region (an eye, a print's edge) carries the decision
    erase: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)


def _normalise(preprocess: Preprocess) -> list[v2.Transform]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(preprocess.mean, preprocess.std)]


def eval_transform(preprocess: Preprocess) -> v2.Compose:
    return v2.Compose([v2.Resize(list(preprocess.input_size), antialias=True), *_normalise(preprocess)])


def _uniforms(count: int) -> list[float]:
    """`count` draws from U[0, 1) off torch's global RNG, in one call."""
    return torch.rand(count, dtype=torch.float64).tolist()


class RandomGamma:
    """Gamma correction with gamma log-uniform in [1/(1+strength), 1+strength], through a lookup table."""

    def __init__(self, strength: float):
        self.strength = strength

    def __call__(self, image: Image.Image) -> Image.Image:
        gamma = (1 + self.strength) ** (2 * _uniforms(1)[0] - 1)
        lut = np.rint(255 * np.linspace(0, 1, 256) ** gamma).astype(int).tolist()
        return image.point(lut * len(image.getbands()))

    def __repr__(self) -> str:
        return f"RandomGamma(strength={self.strength})"


class RandomWhiteBalance:
    """Each RGB channel times its own gain, uniform in [1 - strength, 1 + strength], through lookup tables."""

    def __init__(self, strength: float):
        self.strength = strength

    def __call__(self, image: Image.Image) -> Image.Image:
        gains = [1 + self.strength * (2 * u - 1) for u in _uniforms(3)]
        ramp = np.arange(256)
        lut = [int(v) for gain in gains for v in np.clip(np.rint(ramp * gain), 0, 255)]
        return image.convert("RGB").point(lut)

    def __repr__(self) -> str:
        return f"RandomWhiteBalance(strength={self.strength})"


class RandomBlur:
    """With probability `p`, a Gaussian blur with sigma uniform in [max_sigma / 3, max_sigma] pixels.

    The floor keeps every applied blur visible: a sigma under about 0.4 px changes no 8-bit pixel.
    OpenCV's blur, 3x faster than Pillow's at 64x64, is imported on first use.
    """

    def __init__(self, p: float, max_sigma: float):
        self.p, self.max_sigma = p, max_sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        gate, u = _uniforms(2)  # always two draws, so the stream does not depend on the outcome
        if gate >= self.p:
            return image
        import cv2

        sigma = self.max_sigma * (1 + 2 * u) / 3
        return Image.fromarray(cv2.GaussianBlur(np.asarray(image), (0, 0), sigma))

    def __repr__(self) -> str:
        return f"RandomBlur(p={self.p}, max_sigma={self.max_sigma})"


class RandomJpeg:
    """With probability `p`, a JPEG encode/decode round trip (in memory) at a quality in [min_quality, 100]."""

    def __init__(self, p: float, min_quality: int):
        self.p, self.min_quality = p, min_quality

    def __call__(self, image: Image.Image) -> Image.Image:
        gate = _uniforms(1)[0]
        quality = int(torch.randint(self.min_quality, 101, ()).item())
        if gate >= self.p:
            return image
        return jpeg_round_trip(image, quality)

    def __repr__(self) -> str:
        return f"RandomJpeg(p={self.p}, min_quality={self.min_quality})"


def jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    """Encode and decode in memory with Pillow's defaults otherwise (4:2:0 chroma, as most cameras)."""
    mode = image.mode if image.mode in ("L", "RGB") else "RGB"
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert(mode)


def train_transform(preprocess: Preprocess, augment: AugmentOptions) -> v2.Compose:
    # Order follows the capture chain: geometry (pose, framing) -> light and optics (colour, gamma,
    # blur) -> the codec (JPEG) -> tensor and normalisation. Resizing first makes every later step
    # run at input size (cheap) and fixes blur sigma in input pixels; compression comes last among
    # the image steps because a resample or blur after it would smooth away its 8x8 block artefacts.
    steps: list[Callable[[Any], Any]] = []
    if augment.crop_scale < 1.0:
        steps.append(v2.RandomResizedCrop(list(preprocess.input_size), scale=(augment.crop_scale, 1.0),
                                          ratio=(0.9, 1.1), antialias=True))
    else:
        steps.append(v2.Resize(list(preprocess.input_size), antialias=True))
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.rotation > 0:
        steps.append(v2.RandomRotation(augment.rotation))
    if augment.color_jitter > 0:
        j = augment.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(0.5, j / 4)))
    if augment.grayscale > 0:
        steps.append(v2.RandomGrayscale(augment.grayscale))
    if augment.gamma > 0:
        steps.append(RandomGamma(augment.gamma))
    if augment.white_balance > 0:
        steps.append(RandomWhiteBalance(augment.white_balance))
    if augment.blur > 0:
        steps.append(RandomBlur(augment.blur, augment.blur_sigma))
    if augment.jpeg > 0:
        steps.append(RandomJpeg(augment.jpeg, augment.jpeg_quality))
    steps += _normalise(preprocess)
    if augment.erase > 0:
        steps.append(v2.RandomErasing(augment.erase))
    return v2.Compose(steps)


# --- simulated presentation attacks --------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# Arrays below are planar, (channel, row, column): with the channel last, every broadcast between a
# pattern and the image would run numpy's inner loop over 3 elements, 5-10x slower at 112 x 112.


def _grating(h: int, w: int, period: float, angle: np.ndarray, offset: tuple[float, float],
             sine: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """cos (and sin) of 2*pi/period * (x cos(angle) + y sin(angle)) on an h x w grid, one plane per angle.

    `angle` has shape (k,); results are (k, h, w). Built from 1-D factors with
    cos(a + b) = cos a cos b - sin a sin b, so no 2-D trigonometry is evaluated.
    """
    k = 2 * math.pi / period
    kx = (k * np.cos(angle)).astype(np.float32)[:, None, None]
    ky = (k * np.sin(angle)).astype(np.float32)[:, None, None]
    ax = kx * (np.arange(w, dtype=np.float32) + np.float32(offset[0]))[None, None, :]   # (k, 1, w)
    ay = ky * (np.arange(h, dtype=np.float32) + np.float32(offset[1]))[None, :, None]   # (k, h, 1)
    cx, sx, cy, sy = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
    cos = cy * cx
    cos -= sy * sx
    if not sine:
        return cos, None
    sin = cy * sx
    sin += sy * cx
    return cos, sin


def _planar(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1).astype(np.float32)  # 0..255


def _from_planar(a: np.ndarray) -> Image.Image:
    """A (3, h, w) float image in 0..255 back to PIL, rounded and clipped."""
    a += 0.5
    planes = np.clip(a, 0, 255, out=a).astype(np.uint8)
    return Image.merge("RGB", [Image.fromarray(plane) for plane in planes])


def _print_artefacts(image: Image.Image, strength: float, u: list[float]) -> Image.Image:
    """A printed photo: faded inks, a rotated colour halftone screen, tinted paper and a grey black."""
    a = _planar(image)
    h, w = a.shape[1:]
    luma = (_LUMA @ a.reshape(3, -1)).reshape(1, h, w)
    keep = np.float32(1 - strength * (0.3 + 0.5 * u[0]))
    a *= keep
    a += (1 - keep) * luma                                                              # faded colour
    # one rotated dot screen per ink; threshold map 0.5 + (cos(k.u) + cos(k.v)) / 4, in 0..255 units
    period = 2.0 + 2.0 * u[1]                                                           # dot pitch, pixels
    angles = np.deg2rad(np.array([15.0, 75.0, 45.0])) + u[2] * math.pi / 2
    offset = (u[3] * period, u[4] * period)
    screen, _ = _grating(h, w, period, angles, offset)
    screen += _grating(h, w, period, angles + math.pi / 2, offset)[0]
    # soft-edged dots: ink = clip((255 - a - 255 * threshold) / (0.2 * 255) + 0.5, 0, 1), as a paper
    # brightness (1 - ink) * 255 = clip(5 a + 318.75 (cos + cos) - 510, 0, 255)
    dots = screen
    dots *= np.float32(318.75)
    dots += 5 * a
    dots -= np.float32(510)
    np.clip(dots, 0, 255, out=dots)
    mix = np.float32(strength * (0.5 + 0.5 * u[5]))
    a *= 1 - mix
    dots *= mix
    a += dots
    # limited ink gamut on yellowish paper: black -> black level, white -> paper colour
    black = strength * (0.05 + 0.15 * u[7])
    paper = np.array([1.0, 0.97 - 0.04 * u[6], 0.86 - 0.08 * u[6]])
    a *= (paper - black).astype(np.float32)[:, None, None]
    a += np.float32(255 * black)
    return _from_planar(a)


def _replay_artefacts(image: Image.Image, strength: float, u: list[float]) -> Image.Image:
    """A screen recaptured: display tone curve, lit black, cool white, RGB sub-pixel grid and moire bands."""
    a = _planar(image)
    h, w = a.shape[1:]
    # tone curve x + c x (1 - x) (a gamma of about 0.7-1.4, without a per-pixel power), then the
    # display's lit black and a cool white point
    curve = np.float32((2 * u[0] - 1) * 0.5 * strength / 255)
    a += curve * a * (255 - a)
    black = strength * (0.02 + 0.1 * u[1])
    white = np.array([1 - 0.1 * strength * u[2], 1.0, 1 + 0.1 * strength * u[2]]) * (1 - black)
    # sub-pixel stripes: channel c peaks a third of a display pixel after channel c-1; darker rows between pixels
    period, angle = 1.5 + 2.0 * u[3], (u[4] - 0.5) * 0.4
    c, s = _grating(h, w, period, np.array([angle]), (u[5] * period, 0.0), sine=True)
    phases = np.array([0.0, 2.0, 4.0]) * math.pi / 3
    depth = 0.6 * strength
    stripes = c * (depth * np.cos(phases)).astype(np.float32)[:, None, None]
    stripes += s * (depth * np.sin(phases)).astype(np.float32)[:, None, None]
    stripes += 1
    rows, _ = _grating(h, w, period, np.array([angle + math.pi / 2]), (0.0, u[6] * period))
    gap = 0.125 * strength
    rows *= np.float32(-gap)
    rows += np.float32(1 - gap)
    # moire: the beat of the display grid against the sensor's, low-frequency bands of shifting colour
    bc, bs = _grating(h, w, 6.0 + 18.0 * u[7], np.array([u[8] * math.pi]), (0.0, 0.0), sine=True)
    depth = 0.25 * strength * u[9]
    bands = bc * (depth * np.cos(2 * phases)).astype(np.float32)[:, None, None]
    bands += bs * (depth * np.sin(2 * phases)).astype(np.float32)[:, None, None]
    bands += 1
    a *= (white.astype(np.float32)[:, None, None] * stripes) * (rows * bands)
    a += np.float32(255 * black)
    return _from_planar(a)


class SpoofArtefacts:
    """Simulated print or replay recapture of a SPOOF image: at most one of them per call.

    Draws 11 uniforms from torch's RNG on every call, whether or not an artefact is applied.
    """

    def __init__(self, print_p: float, replay_p: float, strength: float):
        self.print_p, self.replay_p, self.strength = print_p, replay_p, strength

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.frames([image])[0]

    def frames(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """The same artefact on every frame of a clip (one medium in front of the camera), drawn once."""
        gate, *u = _uniforms(11)
        if gate < self.print_p:
            return [_print_artefacts(image, self.strength, u) for image in images]
        if gate < self.print_p + self.replay_p:
            return [_replay_artefacts(image, self.strength, u) for image in images]
        return list(images)

    def __repr__(self) -> str:
        return f"SpoofArtefacts(print_p={self.print_p}, replay_p={self.replay_p}, strength={self.strength})"


def spoof_transform(augment: AugmentOptions) -> Callable[[Image.Image], Image.Image] | None:
    """The artefacts to add to SPOOF samples' PIL images before `train_transform`; None when disabled.

    Call it inside the sample's seeded block (as `Transformed` runs its transform), never on live samples.
    """
    if augment.artefact_strength == 0 or augment.print_artefacts + augment.replay_artefacts == 0:
        return None
    return SpoofArtefacts(augment.print_artefacts, augment.replay_artefacts, augment.artefact_strength)


def denormalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    return (batch.float().cpu() * std + mean).clamp(0, 1)
