"""Hostile or unlucky input ends in one line naming what is at fault (README: recipes, data, exported models)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceauth.errors import DataError, PluginError


def test_an_opencv_without_haar_cascades_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    from faceauth.faces import HaarCascade
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions

    monkeypatch.delattr(cv2, "CascadeClassifier")  # as in OpenCV 5.x, whose wheels this venv cannot install
    with pytest.raises(DataError, match=r"has no Haar cascades .*opencv-python-headless<5") as caught:
        HaarCascade()
    assert "\n" not in str(caught.value)
    with pytest.raises(PluginError, match=r"detector 'haar': .*opencv-python-headless<5"):
        HaarDetector(HaarOptions())
