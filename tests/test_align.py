"""Tests for five-point face alignment (faceauth.faces.align)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from faceauth.faces.align import ARCFACE_TEMPLATE_112, align_five_point, similarity_transform


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_template_is_insightfaces_arcface_points():
    assert ARCFACE_TEMPLATE_112.shape == (5, 2)
    assert ARCFACE_TEMPLATE_112[0].tolist() == [38.2946, 51.6963]
    assert ARCFACE_TEMPLATE_112[4].tolist() == [70.7299, 92.2041]
    with pytest.raises(ValueError):
        ARCFACE_TEMPLATE_112[0, 0] = 0


@pytest.mark.parametrize("scale, angle, tx, ty", [(1, 0, 0, 0), (1.7, 0.4, 30, -12), (0.35, -2.5, 200.5, 7.25)])
def test_known_similarity_is_recovered_exactly(scale, angle, tx, ty):
    truth = _similarity(scale, angle, tx, ty)
    src = ARCFACE_TEMPLATE_112
    estimated = similarity_transform(src, _apply(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)
    # and from arbitrary (non-template) points, in the other direction too
    points = np.random.default_rng(1).uniform(0, 300, (9, 2))
    np.testing.assert_allclose(similarity_transform(points, _apply(truth, points)), truth, atol=1e-9)


def test_noisy_points_give_the_least_squares_fit_without_reflection():
    rng = np.random.default_rng(0)
    truth = _similarity(2.0, 1.0, 5, 9)
    dst = _apply(truth, ARCFACE_TEMPLATE_112) + rng.normal(0, 0.5, (5, 2))
    estimated = similarity_transform(ARCFACE_TEMPLATE_112, dst)
    assert np.abs(estimated - truth).max() < 0.7
    linear = estimated[:, :2]
    assert np.linalg.det(linear) > 0 and abs(linear[0, 0] - linear[1, 1]) < 1e-12   # a rotation, not a mirror
    mirrored = ARCFACE_TEMPLATE_112 * [-1, 1]      # the best similarity to a mirror image is still no mirror
    assert np.linalg.det(similarity_transform(ARCFACE_TEMPLATE_112, mirrored)[:, :2]) > 0


def test_bad_point_sets_are_rejected():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        similarity_transform(np.ones((5, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="landmarks must be"):
        align_five_point(np.zeros((20, 20, 3), np.uint8), np.zeros((4, 2)))


def test_aligning_at_the_template_returns_the_image_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(align_five_point(pixels, ARCFACE_TEMPLATE_112)), pixels)
    # a whole-pixel shift inside a bigger frame is undone exactly, too
    frame = np.zeros((160, 150, 3), np.uint8)
    frame[7:119, 5:117] = pixels
    out = align_five_point(Image.fromarray(frame), ARCFACE_TEMPLATE_112 + [5, 7])
    assert out.size == (112, 112) and out.mode == "RGB" and np.array_equal(np.asarray(out), pixels)


def _blob_centres(image: np.ndarray, n: int) -> np.ndarray:
    """Intensity-weighted centres (x, y) of the `n` channels' blobs (one blob per channel index mod 3)."""
    centres = []
    for c in range(n):
        weights = image[..., c].astype(np.float64)
        ys, xs = np.indices(weights.shape)
        centres.append([(xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()])
    return np.array(centres)


@pytest.mark.parametrize("size", [112, 224])
def test_landmarks_land_on_the_template_after_a_rotation_and_zoom(size):
    """Blobs drawn at landmark positions of a rotated, zoomed face end up on the (scaled) template."""
    truth = _similarity(1.6, 0.5, 70, 20)
    landmarks = _apply(truth, ARCFACE_TEMPLATE_112)[:3]   # eyes and nose: one colour channel each
    canvas = np.zeros((260, 260, 3), np.uint8)
    ys, xs = np.indices(canvas.shape[:2])
    for c, (x, y) in enumerate(landmarks):
        canvas[..., c] = np.clip(255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 4.0 ** 2)), 0, 255)
    full = _apply(truth, ARCFACE_TEMPLATE_112)
    aligned = np.asarray(align_five_point(canvas, full, size=size))
    found = _blob_centres(aligned, 3)
    np.testing.assert_allclose(found, ARCFACE_TEMPLATE_112[:3] * size / 112, atol=0.15)
