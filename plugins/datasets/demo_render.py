"""Procedural synthetic faces: the built-in ``demo`` liveness dataset.

Recipes must run out of the box with nothing to download, so this module draws
simple but face-shaped images with numpy + Pillow only, and fakes the two
classic presentation attacks by simulating their physics:

* ``print_attack``: halftone dots, faded inks on yellowish paper, paper texture
  and a visible paper margin, re-captured at a slight angle;
* ``replay_attack``: an RGB sub-pixel grid sampled without an optical low-pass
  filter (hence genuine moire), display gamma/contrast, glare and a dark bezel.

Nuisance factors (backdrop, lighting, pose, scale, blur, sensor noise) come from
the same distributions for every class, so a classifier has to find the
artefacts rather than a shortcut. All randomness flows through explicit
``numpy.random.Generator`` objects seeded per image, so output is reproducible
byte for byte and does not depend on generation order.
"""

from __future__ import annotations

import colorsys
import math
import pathlib
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from faceauth.io.paths import atomic_folder

__all__ = ["FaceIdentity", "sample_identity", "render_face", "print_attack",
           "replay_attack", "write_liveness_demo"]

RGB = tuple[float, float, float]
_KINDS = ("live", "print", "replay")


@dataclass(frozen=True)
class FaceIdentity:
    """Everything that stays constant for one person across captures.

    Lengths are in face-frame units (the image spans [-1, 1] at ``scale=1``);
    colours are RGB in [0, 1].
    """

    face_w: float
    face_h: float
    jaw: float          # how much the lower face narrows towards the chin
    skin: RGB
    eye_dx: float       # half the distance between the eye centres
    eye_y: float
    eye_a: float        # eye half-width
    eye_b: float        # eye half-height when fully open
    iris: RGB
    brow_y: float       # height of the brow above the eye
    brow_w: float
    brow_t: float       # brow thickness
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    mouth_h: float
    smile: float        # curvature of the mouth
    lip: RGB
    hair: RGB
    hair_style: int     # 0 short, 1 long, 2 shaved, 3 fringe
    hairline: float
    ear: float
    shirt: RGB
    bg_hue: float       # the person's usual surroundings (jittered per capture)


def _hsv(h: float, s: float, v: float) -> RGB:
    return colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))


def _mix(a, b, t: float) -> RGB:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def _dark(c, k: float) -> RGB:
    return tuple(x * k for x in c)


_HAIR = [(0.06, 0.05, 0.05), (0.30, 0.18, 0.10), (0.85, 0.70, 0.40),
         (0.62, 0.25, 0.10), (0.62, 0.62, 0.62), (0.45, 0.33, 0.22)]
_IRIS = [(0.30, 0.18, 0.08), (0.20, 0.35, 0.55), (0.30, 0.45, 0.25), (0.12, 0.08, 0.05)]


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw one person's constants."""
    u = rng.uniform
    skin = _mix((0.97, 0.82, 0.70), (0.35, 0.22, 0.15), u(0, 1))
    skin = tuple(min(c * u(0.95, 1.05), 1.0) for c in skin)
    face_w = u(0.36, 0.46)
    return FaceIdentity(
        face_w=face_w, face_h=u(0.50, 0.60), jaw=u(0.1, 0.45), skin=skin,
        eye_dx=face_w * u(0.40, 0.50), eye_y=u(-0.12, -0.04), eye_a=u(0.065, 0.09),
        eye_b=u(0.030, 0.045), iris=_IRIS[int(rng.integers(len(_IRIS)))],
        brow_y=u(0.07, 0.11), brow_w=u(0.08, 0.11), brow_t=u(0.012, 0.025),
        brow_tilt=u(-0.25, 0.2), nose_len=u(0.14, 0.22), nose_w=u(0.035, 0.06),
        mouth_y=u(0.24, 0.32), mouth_w=u(0.10, 0.16), mouth_h=u(0.022, 0.04),
        smile=u(-1.0, 3.0), lip=_mix(skin, (0.65, 0.2, 0.25), u(0.35, 0.7)),
        hair=_dark(_HAIR[int(rng.integers(len(_HAIR)))], u(0.85, 1.15)),
        hair_style=int(rng.integers(4)), hairline=u(-0.42, -0.30), ear=u(0.06, 0.09),
        shirt=_hsv(u(0, 1), u(0.2, 0.8), u(0.25, 0.9)), bg_hue=u(0, 1))


class _Grid:
    """Face-frame coordinates (u right, v down) of every pixel of a square image.

    Inverting the roll/scale/shift once lets every feature be drawn in an
    upright face frame; small features then only touch their own window.
    """

    def __init__(self, n: int, roll: float, scale: float, shift):
        self.n, self.half = n, n / 2 * scale
        self.c, self.s = math.cos(roll), math.sin(roll)
        self.centre = [float(n / 2 + d * n / 2) for d in shift]
        t = np.arange(n, dtype=np.float32) / np.float32(self.half)
        dx, dy = t[None, :] - self.centre[0] / self.half, t[:, None] - self.centre[1] / self.half
        self.u = self.c * dx + self.s * dy      # python-float scalars keep float32
        self.v = -self.s * dx + self.c * dy
        self.px = 1.0 / self.half               # one pixel in face units: edge softness

    def window(self, x: float, y: float, r: float):
        px = self.centre[0] + self.half * (self.c * x - self.s * y)
        py = self.centre[1] + self.half * (self.s * x + self.c * y)
        rr, n = r * self.half + 3, self.n
        return tuple(slice(int(min(max(q - rr, 0), n)), int(min(max(q + rr + 1, 0), n))) for q in (py, px))

    def ellipse(self, x, y, a, b, angle=0.0, bend=0.0, feather=1.5, win=None):
        """Anti-aliased ellipse mask and its window; ``bend`` curves it like a smile."""
        if win is None:   # tight bounding circle, including how far ``bend`` moves the ends
            win = self.window(x, y, math.hypot(a, b + abs(bend) * a * a))
        u, v = self.u[win] - x, self.v[win] - y
        if angle:
            u, v = math.cos(angle) * u + math.sin(angle) * v, -math.sin(angle) * u + math.cos(angle) * v
        if bend:
            v = v + bend * u * u
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        return win, np.clip((1 - d) * min(a, b) / (feather * self.px) + 0.5, 0, 1)


class _Canvas(_Grid):
    """A planar (3, n, n) float image plus head coverage (for shading).

    Planar layout keeps numpy's inner loops contiguous when a 2-D mask is
    broadcast over colour; with HxWx3 the inner loop would be 3 elements long.
    """

    def __init__(self, background: np.ndarray, roll, scale, shift):
        super().__init__(background.shape[0], roll, scale, shift)
        self.img = np.ascontiguousarray(background.transpose(2, 0, 1))
        self.head = np.zeros(background.shape[:2], np.float32)

    def fill(self, win, color, m, head=False):
        view = self.img[:, win[0], win[1]]
        t = np.asarray(color, np.float32)[:, None, None] - view
        t *= m
        view += t
        if head:
            np.maximum(self.head[win], m, out=self.head[win])

    def paint(self, color, x, y, a, b, alpha=1.0, head=False, **kw):
        win, m = self.ellipse(x, y, a, b, **kw)
        self.fill(win, color, m * alpha, head)


def _to_pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8))


def _resize(a: np.ndarray, n: int, how=Image.LANCZOS) -> np.ndarray:
    """Resample a float [0,1] image (2-D or HxWx3) through 8-bit PIL."""
    return np.asarray(_to_pil(a).resize((n, n), how), np.float32) * np.float32(1 / 255)


def _half(a: np.ndarray) -> np.ndarray:
    """2x2 box downsample over the last two axes: exact area antialiasing for 2x renders."""
    return 0.25 * (a[..., ::2, ::2] + a[..., 1::2, ::2] + a[..., ::2, 1::2] + a[..., 1::2, 1::2])


def _background(rng, n: int, hue: float | None = None) -> np.ndarray:
    """A room-like HxWx3 backdrop: gradient, blotches, a few soft-edged rectangles.

    The rectangles put straight edges and dark bands into live images too, so
    an edge alone does not prove a paper or a bezel.
    """
    hue = rng.uniform(0, 1) if hue is None else hue + rng.normal(0, 0.06)
    base = np.asarray(_hsv(hue, rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.9)), np.float32)
    # the smooth part is built on a 5x5 grid and upsampled: far cheaper than full-size maths
    t = np.linspace(-1, 1, 5, dtype=np.float32)
    gx, gy = rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25)
    small = base * (1 + gx * t[None, :, None] + gy * t[:, None, None])
    img = _resize(small * (1 + rng.uniform(-0.08, 0.08, (5, 5, 3))), n, Image.BICUBIC)
    px, feather = np.arange(n, dtype=np.float32), n / 100
    for _ in range(int(rng.integers(0, 3))):
        (x0, x1), (y0, y1) = np.sort(rng.uniform(0, n, 2)).tolist(), np.sort(rng.uniform(0, n, 2)).tolist()
        xs, ys = slice(int(x0), int(math.ceil(x1))), slice(int(y0), int(math.ceil(y1)))
        fx = np.clip(np.minimum(px[xs] - x0, x1 - px[xs]) / feather, 0, 1)
        fy = np.clip(np.minimum(px[ys] - y0, y1 - px[ys]) / feather, 0, 1)
        col = np.asarray(_hsv(rng.uniform(0, 1), rng.uniform(0, 0.5), rng.uniform(0.05, 0.95)), np.float32)
        m = (fy[:, None] * fx[None, :] * rng.uniform(0.5, 1))[..., None]
        img[ys, xs] += (col - img[ys, xs]) * m
    return img


def _camera(img: np.ndarray, rng, size: int) -> np.ndarray:
    """Sensor model shared by live and re-captured images (so it is no cue)."""
    im = _to_pil(img)
    if im.size[0] != size:
        im = im.resize((size, size), Image.LANCZOS)
    im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 0.8)))
    a = np.asarray(im, np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32) * rng.uniform(0.85, 1.15)
    sigma = rng.uniform(1.0, 5.0)
    a += rng.standard_normal(a.shape, np.float32) * sigma
    a += rng.standard_normal(a.shape[:2], np.float32)[..., None] * (sigma * 0.7)  # luma noise
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def render_face(identity: FaceIdentity, rng: np.random.Generator, size: int = 112, *,
                yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, eye_open: float = 1.0,
                light: tuple[float, float, float] = (0.3, -0.5, 1.0), scale: float = 1.0) -> np.ndarray:
    """Render one live capture as a ``size`` x ``size`` x 3 uint8 RGB array.

    ``yaw``/``pitch``/``roll`` are radians (positive yaw turns the face towards
    the image's right, positive pitch lifts the chin); ``eye_open`` is 0..1;
    ``light`` is (dx, dy, gain): the light's direction in the image plane
    (dy < 0 = from above) and its strength; ``scale`` is the face size. ``rng``
    drives only the capture: backdrop detail, gaze, framing jitter, blur, noise.
    """
    shift = rng.normal(0, 0.03, 2)
    cv = _Canvas(_background(rng, 2 * size, identity.bg_hue), roll, scale, shift)  # 2x: antialiasing
    sy, cy, sp, cp = math.sin(yaw), math.cos(yaw), math.sin(pitch), math.cos(pitch)

    def at(x, y, depth):  # project a point on the head; depth = how far it sticks out
        return x * cy + depth * sy, y * cp - depth * sp

    _draw_head(cv, identity, sy)
    _draw_eyes(cv, identity, at, sy, eye_open, rng.normal(0, 0.2, 2))
    _draw_nose_mouth(cv, identity, at, sy, light[0])
    # shading is smooth, so apply it after the 2x -> 1x downsample (4x fewer pixels)
    shade = _shading(_Grid(size, roll, scale, shift), identity, light, _half(cv.head))
    return _camera(_half(cv.img).transpose(1, 2, 0) * shade, rng, size)


def _draw_head(cv: _Canvas, p: FaceIdentity, sy: float) -> None:
    fh, fw = p.face_h, p.face_w
    if p.hair_style == 1:                                   # long hair falls behind the body
        cv.paint(p.hair, -0.1 * sy, fh * 0.2, fw * 1.3, fh * 1.15, head=True)
    cv.paint(p.shirt, 0, fh + 0.75, fw * 2.4, 0.65)                                  # shoulders
    cv.paint(_dark(p.skin, 0.85), 0, fh * 0.8, fw * 0.55, fh * 0.6, head=True)       # neck
    for side in (-1, 1):
        cv.paint(_dark(p.skin, 0.9), side * fw * 0.97 - 0.2 * sy, p.eye_y + 0.05, p.ear, p.ear * 1.7,
                 head=True)
    # face outline: an ellipse whose lower half narrows towards the chin
    win = cv.window(0, 0, fh)
    u, v = cv.u[win], cv.v[win]
    w = fw * (1 - p.jaw * np.clip(v / fh, 0, 1) ** 2)
    d = np.sqrt((u / w) ** 2 + (v / fh) ** 2)
    cv.fill(win, p.skin, np.clip((1 - d) * fw / (1.5 * cv.px) + 0.5, 0, 1), head=True)
    # hair on top: a cap slightly larger than the skull, cut at a curved hairline
    win, cap = cv.ellipse(-0.05 * sy, -0.03, fw * 1.08, fh * 1.06)
    line = p.hairline + (0.12 if p.hair_style == 3 else 0) + 0.5 * cv.u[win] ** 2
    cut = np.clip((line - cv.v[win]) / (2 * cv.px), 0, 1)
    cv.fill(win, p.hair, cap * cut * (0.35 if p.hair_style == 2 else 1.0), head=True)


def _draw_eyes(cv: _Canvas, p: FaceIdentity, at, sy, eye_open, gaze) -> None:
    ea, eb = p.eye_a * (1 - 0.3 * abs(sy)), p.eye_b * max(eye_open, 0.08)
    for side in (-1, 1):
        cv.paint(_mix(p.skin, p.lip, 0.5), *at(side * p.face_w * 0.55, p.mouth_y - 0.1, 0.3),
                 0.09, 0.06, alpha=0.25, feather=8)                                 # cheek
        ex, ey = at(side * p.eye_dx, p.eye_y, 0.35)
        cv.paint(_dark(p.skin, 0.8), ex, ey - 0.008, ea * 1.1, p.eye_b * 1.3, alpha=0.5, feather=4)
        win, white = cv.ellipse(ex, ey, ea, eb)
        cv.fill(win, (0.93, 0.93, 0.93), white)
        for rad, col in ((0.55, p.iris), (0.25, (0.03, 0.03, 0.03))):   # seen only through the lids
            _, m = cv.ellipse(ex + gaze[0] * ea * 0.4, ey + gaze[1] * eb * 0.3, ea * rad, ea * rad, win=win)
            cv.fill(win, col, m * white)
        cv.paint((0.1, 0.07, 0.06), ex, ey - eb, ea * 1.02, 0.006 + 0.004 * (1 - eye_open),
                 alpha=0.8, bend=-eb / ea ** 2 * 0.6)                               # lash line
        cv.paint(_dark(p.hair, 0.8), ex, ey - p.brow_y, p.brow_w, p.brow_t,
                 angle=side * p.brow_tilt, bend=-2.0)


def _draw_nose_mouth(cv: _Canvas, p: FaceIdentity, at, sy, light_dx) -> None:
    nx, ny = at(0, p.eye_y + p.nose_len * 0.55, 0.5)
    away = -0.02 if light_dx >= 0 else 0.02                                # shadow opposite the light
    cv.paint(_dark(p.skin, 0.8), nx + away, ny, p.nose_w * 0.35, p.nose_len * 0.45, alpha=0.5, feather=5)
    tx, ty = at(0, p.eye_y + p.nose_len, 0.6)
    cv.paint(_dark(p.skin, 0.92), tx, ty, p.nose_w, p.nose_w * 0.6, alpha=0.7, feather=4)
    for side in (-1, 1):
        cv.paint(_dark(p.skin, 0.45), tx + side * p.nose_w * 0.5, ty + 0.012, p.nose_w * 0.28,
                 p.nose_w * 0.15, alpha=0.8)                                        # nostrils
    mx, my = at(0, p.mouth_y, 0.4)
    cv.paint(p.lip, mx, my, p.mouth_w * (1 - 0.2 * abs(sy)), p.mouth_h, bend=-p.smile)
    cv.paint(_dark(p.lip, 0.45), mx, my, p.mouth_w * 0.95, 0.005, bend=-p.smile)


def _shading(g: _Grid, p: FaceIdentity, light, head: np.ndarray) -> np.ndarray:
    """Lambertian shading of the head as an ellipsoid, plus a gentle room gradient."""
    dx, dy, gain = light
    nx, ny = g.u / (p.face_w * 1.15), (g.v - 0.05) / (p.face_h * 1.1)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
    norm = math.sqrt(dx * dx + dy * dy + 1)
    lam = np.clip((nx * dx + ny * dy + nz) / norm, 0, 1)
    room = 1 + 0.12 * (dx * g.u + dy * g.v) / norm
    return (gain * (head * (0.45 + 0.65 * lam) + (1 - head) * room))[..., None]


def _coeffs(dst, src) -> tuple:
    """PIL PERSPECTIVE coefficients mapping output points ``dst`` to input ``src``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    return tuple(np.linalg.solve(np.asarray(rows, float), np.asarray(rhs, float)))


def _place(obj: np.ndarray, rng, size: int, extent: float) -> np.ndarray:
    """Warp an opaque HxWx3 object (a print, a device) onto a fresh room backdrop.

    The object is tilted in 3-D (a random quadrilateral) and spans about
    ``extent`` of the frame. Bilinear sampling without a prefilter is
    deliberate: it is how a sensor aliases fine print/screen structure.
    """
    h, w = obj.shape[:2]
    half = np.array([w, h]) * (extent * size / 2 / max(h, w))
    ang = rng.normal(0, 0.08)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    corners = corners * (1 + rng.uniform(-0.07, 0.07, (4, 1)))        # perspective keystone
    dst = corners @ rot.T + size / 2 + rng.uniform(-0.06, 0.06, 2) * size
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    rgba = np.dstack([obj, np.ones((h, w), np.float32)])
    warped = _to_pil(rgba).transform((size, size), Image.PERSPECTIVE, _coeffs(dst, src), Image.BILINEAR)
    warped = np.asarray(warped, np.float32) / 255
    a = warped[..., 3:]
    return _background(rng, size) * (1 - a) + warped[..., :3] * a


def _screen(n: int, period: float, ang: float) -> np.ndarray:
    """Halftone threshold map 0.5 + (cos(k.x') + cos(k.y')) / 4 on axes rotated by ``ang``.

    Built from 1-D factors via cos(a + b) = cos a cos b - sin a sin b, which
    avoids 2-D trigonometry (otherwise the costliest step of a print).
    """
    i = np.arange(n, dtype=np.float32)
    c, s = math.cos(ang) * 2 * math.pi / period, math.sin(ang) * 2 * math.pi / period
    o = np.multiply.outer                                   # rows are y, columns x
    first = o(np.cos(s * i), np.cos(c * i)) - o(np.sin(s * i), np.sin(c * i))    # cos(cx + sy)
    second = o(np.cos(c * i), np.cos(s * i)) + o(np.sin(c * i), np.sin(s * i))   # cos(cy - sx)
    return 0.5 + 0.25 * (first + second)


def _glare(rng, n: int, strength: float) -> np.ndarray:
    """An elliptical specular highlight on a flat n x n surface."""
    t = np.linspace(-1, 1, n, dtype=np.float32)
    cx, cy, sx, sy = rng.uniform(-0.6, 0.6, 2).tolist() + rng.uniform(0.15, 0.45, 2).tolist()
    gx, gy = np.exp(-((t - cx) / sx) ** 2), np.exp(-((t - cy) / sy) ** 2)
    return (strength * rng.uniform(0.5, 1.0) * np.multiply.outer(gy, gx))[..., None]


def print_attack(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Re-capture ``face`` (HxHx3 uint8) as a printed photo; returns the same shape."""
    size = face.shape[0]
    extent, margin = rng.uniform(0.8, 1.05), rng.uniform(0.06, 0.12)
    n = int(2 * size * extent * (1 - 2 * margin))           # print texels: 2 per output pixel
    photo = _resize(face / 255, n, Image.BICUBIC)
    luma = (photo @ np.float32([0.299, 0.587, 0.114]))[..., None]
    photo = luma + (photo - luma) * np.float32(rng.uniform(0.4, 0.75))   # faded inks
    # colour halftone: one rotated dot screen per ink, period 2.2-3.5 output px
    # (coarser than real print so that the dots survive downscaling to 64 px)
    period = 2 * rng.uniform(2.2, 3.5)
    for c, ang in enumerate(np.deg2rad([15.0, 75.0, 0.0]) + rng.uniform(0, 0.5)):
        ink = np.clip((1 - photo[..., c] - _screen(n, period, float(ang))) / 0.12 + 0.5, 0, 1)
        photo[..., c] += (1 - ink - photo[..., c]) * np.float32(rng.uniform(0.35, 0.6))
    shift, axis = int(rng.integers(1, 3)), int(rng.integers(2))
    photo[..., 2] = np.roll(photo[..., 2], shift, axis=axis)        # ink misregistration
    paper = np.float32(_hsv(rng.uniform(0.1, 0.16), rng.uniform(0.06, 0.2), rng.uniform(0.85, 1.0)))
    black = np.float32(rng.uniform(0.1, 0.2))
    m = int(round(n * margin / (1 - 2 * margin)))
    k = n + 2 * m
    sheet = np.empty((k, k, 3), np.float32)
    sheet[:] = paper
    sheet[m:m + n, m:m + n] = black + (paper - black) * photo    # limited ink gamut on tinted paper
    blotches = _resize(rng.uniform(0, 1, (6, 6)), k, Image.BICUBIC)[..., None]
    sheet *= 0.95 + 0.1 * blotches + 0.025 * rng.standard_normal((k, k, 1), np.float32)
    sheet *= 1 + np.float32(rng.uniform(-0.2, 0.2)) * np.linspace(-1, 1, k, dtype=np.float32)[:, None, None]
    if rng.uniform() < 0.3:
        sheet += _glare(rng, k, 0.15)                      # weak gloss, so glare alone is no cue
    return _camera(_place(np.clip(sheet, 0, 1), rng, size, extent), rng, size)


def replay_attack(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Re-capture ``face`` (HxHx3 uint8) as shown on a phone/tablet screen."""
    size = face.shape[0]
    extent, pitch = rng.uniform(0.75, 0.95), rng.uniform(1.6, 3.0)   # display pixel in output px
    ndisp = max(8, int(size * extent / pitch))
    disp = _resize(face / 255, ndisp, Image.BICUBIC)
    disp = np.clip(disp, 1e-4, 1) ** np.float32(rng.uniform(0.6, 1.5))                     # gamma
    disp = 0.5 + (disp - 0.5) * np.float32(rng.uniform(0.8, 1.3))                           # contrast
    disp *= np.float32([rng.uniform(0.85, 1.0), 1.0, rng.uniform(1.0, 1.15)])               # cool white
    disp = np.float32(rng.uniform(0.03, 0.12)) + disp * np.float32(rng.uniform(0.8, 0.95))  # lit black
    # every display pixel = 3x3 texels: one column per R, G, B stripe, a dimmer gap row
    cell = np.tile(3 * np.eye(3, dtype=np.float32), (3, 1, 1))   # (row, column, channel)
    cell[2] *= 0.6
    cell = 1 + (cell - 1) * np.float32(rng.uniform(0.12, 0.3))
    tex = (disp[:, None, :, None, :] * cell[None, :, None, :, :]).reshape(3 * ndisp, 3 * ndisp, 3)
    k = tex.shape[0]
    tex += _glare(rng, k, 0.4)
    bezel = (rng.uniform(0.02, 0.16, 4) * k).astype(int)   # top, bottom, left, right
    bezel[int(rng.integers(4))] = int(rng.uniform(0.1, 0.2) * k)   # at least one is wide
    dev = np.empty((k + bezel[0] + bezel[1], k + bezel[2] + bezel[3], 3), np.float32)
    ramp = np.linspace(-1, 1, dev.shape[1], dtype=np.float32)[None, :, None]
    dev[:] = rng.uniform(0.02, 0.15) * (1 + 0.3 * ramp)    # dark plastic with a soft reflection
    dev[bezel[0]:bezel[0] + k, bezel[2]:bezel[2] + k] = tex
    extent = min(extent * max(dev.shape[:2]) / k, 1.2)
    return _camera(_place(np.clip(dev, 0, 1), rng, size, extent), rng, size)


def _capture_pose(rng) -> dict:
    """Random pose/expression/lighting, the same for live and attack source photos."""
    return dict(yaw=float(np.clip(rng.normal(0, 0.25), -0.6, 0.6)),
                pitch=float(np.clip(rng.normal(0, 0.15), -0.4, 0.4)),
                roll=float(np.clip(rng.normal(0, 0.12), -0.35, 0.35)),
                eye_open=float(rng.uniform(0, 0.4) if rng.uniform() < 0.15 else rng.uniform(0.7, 1.0)),
                light=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 0.4)), float(rng.uniform(0.6, 1.25))),
                scale=float(rng.uniform(0.8, 1.15)))


def write_liveness_demo(root: pathlib.Path, *, counts: dict[str, int] | None = None,
                        size: int = 112, seed: int = 0) -> None:
    """Write the demo liveness dataset under ``root``, atomically.

    Layout: ``root/<split>/live/*.jpg`` and ``root/<split>/spoof/{print,replay}/*.jpg``,
    named ``<identity:04d>_<index:04d>.jpg``; ``counts`` defaults to
    train 600 / val 200 / test 200. Identities are disjoint across splits (one
    per 20 images) and each is seen live and in both attacks. Raises
    FileExistsError if ``root`` exists: caching is the caller's decision.
    """
    counts = {"train": 600, "val": 200, "test": 200} if counts is None else counts
    root = pathlib.Path(root)
    with atomic_folder(root) as tmp:
        first_id = 0
        for split, count in counts.items():
            n_ids = max(1, count // 20)
            _write_split(tmp / split, split, count, range(first_id, first_id + n_ids), size, seed)
            first_id += n_ids


def _write_split(out: pathlib.Path, split: str, count: int, ids: range, size: int, seed: int) -> None:
    for sub in ("live", "spoof/print", "spoof/replay"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    split_id = zlib.crc32(split.encode())                   # stable across runs, unlike hash()
    people = [sample_identity(np.random.default_rng([seed, 1, k])) for k in ids]
    for i in range(count):
        rng = np.random.default_rng([seed, 2, split_id, i])  # per image, so order does not matter
        kind, who = _KINDS[i % 3], (i // 3) % len(ids)
        pose = _capture_pose(rng)
        if kind != "live":
            pose["scale"] *= 1.2   # attack media frame the face closer, offsetting margin/bezel
        img = render_face(people[who], rng, size, **pose)
        if kind != "live":
            img = (print_attack if kind == "print" else replay_attack)(img, rng)
        sub = "live" if kind == "live" else f"spoof/{kind}"
        # 4:4:4 chroma keeps sub-pixel colour structure that 4:2:0 would smear
        Image.fromarray(img).save(out / sub / f"{ids[who]:04d}_{i:04d}.jpg", quality=95, subsampling=0)
