"""The deployment path from many threads gives the single-thread answer (README: "Fusion and the authenticator").

Images are real files (JPEG and PNG written here; the real faces of ../shared/data with --realdata), decoded,
searched by the Haar cascade, cropped and scored by onnxruntime in every thread at once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceauth.deploy.authenticator import Authenticator
from faceauth.faces import HaarCascade
from tests.conftest import SHARED_DATA
from tests.test_authenticator import models_dir  # noqa: F401 - the module's fixture, used here too
from tests.videos import HAAR_FRAME, haar_face

THREADS = 8


def photos(folder: Path, count: int) -> list[Path]:
    """`count` (up to 6) photos with one face each, varied in position, background and format (JPEG, PNG)."""
    width, height = HAAR_FRAME
    face = haar_face()
    paths = []
    for i, (grey, shift) in enumerate([(80, 0), (96, 8), (110, 0), (80, 8), (96, 0), (110, 8)][:count]):
        frame = np.full((height, width, 3), grey, np.uint8)
        frame[20:20 + face.shape[0], 40 + shift:40 + shift + face.shape[1]] = face
        path = folder / (f"photo_{i}.jpg" if i % 2 else f"photo_{i}.png")
        Image.fromarray(frame).save(path, quality=95)
        paths.append(path)
    return paths


def in_threads(fn, items: list) -> list:  # noqa: ANN001
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(fn, items))


def test_one_cascade_detects_alike_from_many_threads(tmp_path: Path) -> None:
    images = [np.asarray(Image.open(p).convert("RGB")) for p in photos(tmp_path, 6)]
    cascade = HaarCascade()
    alone = [cascade.detect(image) for image in images]
    assert all(alone), "every photo must have a face found, or the comparison says little"
    work = images * 12
    assert in_threads(cascade.detect, work) == [alone[i % len(images)] for i in range(len(work))]


def test_the_authenticator_decides_alike_from_many_threads(models_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    paths = photos(tmp_path, 6)
    auth = Authenticator.from_dir(models_dir)
    template = auth.enroll([paths[0]])
    attempts = [(paths[i % 3], paths[3 + i % 3]) for i in range(6)]
    alone = [auth.verify([enrolled], probe) for enrolled, probe in attempts]
    alone_template = [auth.verify(template, probe) for _, probe in attempts]
    work = list(range(8 * len(attempts)))

    def attempt(k: int) -> object:
        enrolled, probe = attempts[k % len(attempts)]
        return auth.verify(template, probe) if k % 2 else auth.verify([enrolled], probe)

    results = in_threads(attempt, work)
    for k, decision in enumerate(results):
        expected = (alone_template if k % 2 else alone)[k % len(attempts)]
        assert decision.score == expected.score and decision.features == expected.features


@pytest.mark.realdata
def test_real_faces_from_many_threads(models_dir: Path) -> None:  # noqa: F811
    folder = SHARED_DATA / "misc_samples"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    paths = sorted(folder.glob("*/*.jpg"))
    cascade = HaarCascade()
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    alone = [cascade.detect(image) for image in images]
    assert in_threads(cascade.detect, images * 8) == alone * 8
    auth = Authenticator.from_dir(models_dir)
    faces = [p for p, boxes in zip(paths, alone) if boxes]
    expected = [auth.verify([faces[0]], p).score for p in faces]
    assert in_threads(lambda p: auth.verify([faces[0]], p).score, faces * 8) == expected * 8
