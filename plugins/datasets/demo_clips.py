"""`demo_clips`: short procedural face videos for temporal liveness, rendered once into the cache.

What tells them apart is how they move, on top of the image artefacts of the ``demo`` set:

* live: every frame is rendered anew, the head moving a little (yaw, pitch, roll), the eyes
  blinking, the light drifting;
* print: one face rendered, re-captured by `demo_render.print_attack`, then moved as one rigid
  plane: every frame is the same picture under an affine warp;
* replay: likewise a rigid picture (`demo_render.replay_attack`), plus screen flicker (a global
  brightness oscillation) and moiré that shifts from frame to frame (the screen is rendered at twice
  the size and sampled down by the warp without a low-pass filter, so the aliasing of its pixel grid
  changes with every sub-pixel move).

Every video, whatever its class, gets the same kind of hand-held camera motion (a small affine
drift) and fresh sensor noise in each frame, so neither is a cue. Files are real videos (Motion-JPEG
``.avi``) in the ``video_folder`` layout, ``root/<split>/{live,spoof/print,spoof/replay}/s<id>/v<n>.avi``,
with disjoint identities per split, and they are read by the ``video_folder`` code (frames used
whole, as the `whole_frame` detector takes them: they are face crops already; the recipe's
detector is not used).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import attrs
import numpy as np

import faceauth
from faceauth.data import Splits
from faceauth.faces import WholeFrame
from faceauth.io.paths import atomic_folder, cache_dir
from faceauth.io.video import write_video
from faceauth.plugins.datasets.clips import ClipOptions, ClipSampling, load_video_folder
from faceauth.plugins.datasets.demo_render import (
    FaceIdentity,
    print_attack,
    render_face,
    replay_attack,
    sample_identity,
)

__all__ = ["DemoClipsOptions", "build_demo_clips", "demo_clips_root", "render_video", "write_clip_demo"]

VERSION = 1  # bump when the rendering changes, so cached sets are not reused
KINDS = ("live", "print", "replay")
FPS = 10.0


@attrs.frozen(kw_only=True)
class DemoClipsOptions(ClipSampling):
    train: int = attrs.field(default=60, validator=faceauth.schema.positive)  # videos per split
    val: int = attrs.field(default=20, validator=faceauth.schema.positive)
    test: int = attrs.field(default=20, validator=faceauth.schema.positive)
    frames: int = attrs.field(default=16, validator=faceauth.schema.positive)  # frames per video
    size: int = attrs.field(default=64, validator=faceauth.schema.positive)
    seed: int = 0


# ---- motion ----------------------------------------------------------------------------------------

def _wave(rng: np.random.Generator, frames: int, amplitude: float) -> np.ndarray:
    """A smooth oscillation over the video: 0.3 to 1.2 cycles of a sine of random phase."""
    t = np.arange(frames) / max(frames - 1, 1)
    cycles, phase = rng.uniform(0.3, 1.2), rng.uniform(0, 2 * math.pi)
    return amplitude * np.sin(2 * math.pi * cycles * t + phase)


def _camera_path(rng: np.random.Generator, frames: int, size: int) -> list[tuple[float, float, float, float]]:
    """Hand-held camera motion, the same distribution for every class: (dx px, dy px, degrees, scale)."""
    shift = rng.uniform(0.3, 2.0) * size / 64
    dx = _wave(rng, frames, shift) + rng.normal(0, 0.15, frames)
    dy = _wave(rng, frames, shift) + rng.normal(0, 0.15, frames)
    angle = _wave(rng, frames, rng.uniform(0, 2.0))
    scale = 1 + _wave(rng, frames, rng.uniform(0, 0.03))
    return list(zip(dx.tolist(), dy.tolist(), angle.tolist(), scale.tolist()))


def _pose(rng: np.random.Generator) -> dict:
    """The pose, eyes, light and framing a video starts from (as the image demo draws them)."""
    return {"yaw": float(np.clip(rng.normal(0, 0.25), -0.6, 0.6)),
            "pitch": float(np.clip(rng.normal(0, 0.15), -0.4, 0.4)),
            "roll": float(np.clip(rng.normal(0, 0.12), -0.35, 0.35)),
            "eye_open": float(rng.uniform(0.75, 1.0)),
            "light": (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 0.4)), float(rng.uniform(0.6, 1.25))),
            "scale": float(rng.uniform(0.8, 1.15))}


def _blink(rng: np.random.Generator, frames: int, open_: float) -> np.ndarray:
    """Eye openness per frame: open, with one blink (half-closed, closed, half-open) in 3 videos of 4."""
    eyes = np.full(frames, open_)
    if frames >= 3 and rng.uniform() < 0.75:
        start = int(rng.integers(0, frames - 2))
        eyes[start:start + 3] = (0.45 * open_, 0.08, 0.5 * open_)
    return eyes


def _live(person: FaceIdentity, rng: np.random.Generator, frames: int, size: int) -> list[np.ndarray]:
    """A person in front of the camera: each frame rendered with its own pose, eyes and light."""
    pose = _pose(rng)
    yaw, pitch, roll = (pose[k] + _wave(rng, frames, a) for k, a in
                        (("yaw", rng.uniform(0.04, 0.15)), ("pitch", rng.uniform(0.02, 0.08)),
                         ("roll", rng.uniform(0.02, 0.06))))
    eyes = _blink(rng, frames, pose["eye_open"])
    lx, ly, gain = pose["light"]
    drift_x, drift_gain = rng.uniform(-0.4, 0.4), rng.uniform(-0.15, 0.15)
    capture = int(rng.integers(2**62))  # one backdrop, framing and camera for the whole video
    out = []
    for t in range(frames):
        ramp = t / max(frames - 1, 1) - 0.5
        light = (lx + drift_x * ramp, ly, gain * (1 + drift_gain * ramp))
        out.append(render_face(person, np.random.default_rng(capture), size, yaw=float(yaw[t]), pitch=float(pitch[t]),
                               roll=float(roll[t]), eye_open=float(eyes[t]), light=light, scale=pose["scale"]))
    return out


def _attack_still(kind: str, person: FaceIdentity, rng: np.random.Generator, size: int) -> np.ndarray:
    """One re-captured picture at twice the output size (the warp samples it down, aliasing its fine grid)."""
    pose = _pose(rng)
    pose["scale"] *= 1.2  # attack media frame the face closer, offsetting margin and bezel (as in the image demo)
    face = render_face(person, rng, 2 * size, **pose)
    return (print_attack if kind == "print" else replay_attack)(face, rng)


def _warp(image: np.ndarray, motion: tuple[float, float, float, float], size: int) -> np.ndarray:
    """`image` moved, rotated and scaled as a plane, sampled (bilinear, no prefilter) to size x size."""
    import cv2

    dx, dy, angle, scale = motion
    source = image.shape[0]
    matrix = cv2.getRotationMatrix2D((source / 2, source / 2), angle, scale * size / source)
    matrix[:, 2] += (size / 2 - source / 2 + dx, size / 2 - source / 2 + dy)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def render_video(kind: str, person: FaceIdentity, rng: np.random.Generator, frames: int, size: int) -> list[np.ndarray]:
    """The frames (HxWx3 uint8 RGB) of one demo video of `kind` ("live", "print" or "replay")."""
    if kind == "live":
        pictures = _live(person, rng, frames, size)
    else:
        pictures = [_attack_still(kind, person, rng, size)] * frames
    path = _camera_path(rng, frames, size)
    flicker = np.ones(frames)
    if kind == "replay":  # the screen's refresh beating against the camera's frame rate
        t = np.arange(frames)
        flicker += rng.uniform(0.03, 0.08) * np.sin(2 * math.pi * rng.uniform(0.12, 0.45) * t + rng.uniform(0, 6.3))
    sigma = rng.uniform(1.5, 3.0)
    out = []
    for picture, motion, gain in zip(pictures, path, flicker):
        frame = _warp(picture, motion, size).astype(np.float32) * np.float32(gain)
        frame += rng.standard_normal(frame.shape, np.float32) * np.float32(sigma)
        out.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    return out


# ---- files -----------------------------------------------------------------------------------------

def _write_split(out: Path, split: str, count: int, ids: range, frames: int, size: int, seed: int) -> None:
    split_id = zlib.crc32(split.encode())  # stable across runs, unlike hash()
    people = [sample_identity(np.random.default_rng([seed, 11, k])) for k in ids]
    for i in range(count):
        rng = np.random.default_rng([seed, 12, split_id, i])  # per video, so order does not matter
        kind, who = KINDS[i % 3], (i // 3) % len(ids)
        folder = out / ("live" if kind == "live" else f"spoof/{kind}") / f"s{ids[who]:04d}"
        write_video(folder / f"v{i:04d}.avi", render_video(kind, people[who], rng, frames, size), FPS)


def write_clip_demo(root: Path, *, counts: dict[str, int], frames: int, size: int, seed: int) -> None:
    """Render the demo videos under `root`, atomically (a temporary folder renamed when complete).

    One identity per 6 videos, disjoint across splits, each seen live and in both attacks. Raises
    FileExistsError if `root` exists.
    """
    root = Path(root)
    with atomic_folder(root) as tmp:
        first_id = 0
        for split, count in counts.items():
            ids = range(first_id, first_id + max(1, count // 6))
            _write_split(tmp / split, split, count, ids, frames, size, seed)
            first_id = ids.stop


def demo_clips_root(options: DemoClipsOptions) -> Path:
    """Render the demo videos once per distinct setting; later calls reuse the cached files."""
    root = cache_dir("demo", f"clips-v{VERSION}-{options.train}-{options.val}-{options.test}-f{options.frames}"
                             f"-{options.size}-s{options.seed}")
    if not root.is_dir():
        try:
            write_clip_demo(root, counts={"train": options.train, "val": options.val, "test": options.test},
                            frames=options.frames, size=options.size, seed=options.seed)
        except FileExistsError:  # rendered by another process meanwhile
            pass
    return root


def build_demo_clips(options: DemoClipsOptions) -> Splits:
    sampling = attrs.asdict(options, filter=lambda a, _: a.name in attrs.fields_dict(ClipSampling))
    clip_options = ClipOptions(**sampling, crop_size=options.size, on_bad_video="error")
    return load_video_folder(demo_clips_root(options), clip_options, WholeFrame(), name="demo_clips", key="demo_clips")
