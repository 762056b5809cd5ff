"""Five-point face alignment onto the ArcFace template, with numpy and Pillow only (no OpenCV).

Coordinates follow the convention of face detectors and of OpenCV's ``warpAffine``: (x, y) in
pixels, with the centre of the top-left pixel at (0, 0). ``align_five_point`` therefore produces
the same crop as insightface's ``norm_crop`` (up to interpolation rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

__all__ = ["ARCFACE_TEMPLATE_112", "similarity_transform", "align_five_point"]

#: Where a 112x112 ArcFace crop puts the left eye, right eye, nose tip and mouth corners (x, y).
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)
ARCFACE_TEMPLATE_112.flags.writeable = False


def similarity_transform(src_points: Any, dst_points: Any) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) taking `src_points` to `dst_points`.

    Umeyama's closed form (1991); no reflection. Returns a 2x3 matrix ``M`` with
    ``dst ~= M @ [x, y, 1]``. Points are (N, 2) arrays, N >= 2, not all equal.
    """
    src = np.asarray(src_points, dtype=np.float64)
    dst = np.asarray(dst_points, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"expected two (N, 2) point arrays with N >= 2, got shapes {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if src_var == 0:
        raise ValueError("the source points all coincide; no transform is defined")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    rank = np.linalg.matrix_rank(cov)
    if rank == 1 and np.linalg.det(u) * np.linalg.det(vt) > 0:  # collinear points: keep a proper rotation
        rotation = u @ vt
    elif rank == 1:
        rotation = u @ np.diag([1.0, -1.0]) @ vt
    elif rank == 0:
        rotation = np.eye(2)
    else:
        rotation = u @ np.diag(d) @ vt
    scale = float(s @ d) / src_var if rank == 2 else float(s.sum()) / src_var
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_five_point(image: Image.Image | np.ndarray, landmarks: Any, size: int = 112) -> Image.Image:
    """Warp `image` so its five landmarks (eyes, nose, mouth corners) land on the ArcFace template.

    `landmarks` is (5, 2) in `image` pixels; the result is a ``size`` x ``size`` RGB image (the
    template is scaled by ``size / 112``). Bilinear sampling; outside the image is black.
    """
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must be (5, 2): left eye, right eye, nose, left and right mouth corner; "
                         f"got shape {points.shape}")
    forward = similarity_transform(points, ARCFACE_TEMPLATE_112 * (size / 112.0))
    linear_inv = np.linalg.inv(forward[:, :2])
    shift_inv = -linear_inv @ forward[:, 2]
    # Pillow samples output pixel (i, j) at its centre (i + .5, j + .5) and reads the input with the
    # same half-pixel convention; convert so that integer coordinates are pixel centres.
    shift_inv = shift_inv + 0.5 - linear_inv @ np.array([0.5, 0.5])
    coeffs = np.array([linear_inv[0, 0], linear_inv[0, 1], shift_inv[0], linear_inv[1, 0], linear_inv[1, 1],
                       shift_inv[1]])
    coeffs = np.round(coeffs, 9)  # exact transforms (identity, whole-pixel shifts) then copy pixels exactly
    return image.convert("RGB").transform((size, size), Image.Transform.AFFINE, tuple(coeffs.tolist()),
                                          resample=Image.Resampling.BILINEAR)
