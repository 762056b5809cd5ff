"""Liveness training practice: class balancing, several datasets at once, and cross-dataset testing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import faceauth
from faceauth.training.samplers import EpochSampler
from tests.conftest import TINY_RECIPE


def test_weighted_sampler_balances_classes_deterministically() -> None:
    labels = np.array([0] * 10 + [1] * 90)
    weights = 1.0 / np.bincount(labels)[labels]
    sampler = EpochSampler(len(labels), seed=3, shuffle=True, weights=weights)
    sampler.set_epoch(0)
    first = [index for index, _ in sampler]
    assert first == [index for index, _ in sampler]
    share_live = np.mean(labels[first] == 0)
    assert 0.35 < share_live < 0.65  # 10% of the data, about half of the draws
    sampler.set_epoch(1)
    assert [index for index, _ in sampler] != first


@pytest.mark.slow
def test_two_training_sets_balanced_and_a_cross_dataset_test(tmp_path: Path) -> None:
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "runs"), "export": None,
              "data": [TINY_RECIPE["data"], {**TINY_RECIPE["data"], "seed": 1}],
              "test_data": {**TINY_RECIPE["data"], "seed": 2},
              "trainer": {**TINY_RECIPE["trainer"], "epochs": 1, "balance": "sampler"}}
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = faceauth.run(path)
    assert {"test", "cross_test"} <= set(result.metrics)
    assert 0.0 <= result.metrics["cross_test"]["hter"] <= 1.0
    assert result.metrics["cross_test"]["threshold"] == pytest.approx(result.metrics["threshold"])
    versions = faceauth.training.checkpoint.load(result.dir)["versions"]["components"]
    assert {"data", "data[1]", "test_data"} <= set(versions)


def test_spoof_artefacts_touch_spoof_samples_only() -> None:
    from PIL import Image

    from faceauth.data import LIVE, SPOOF
    from faceauth.training.loaders import Transformed
    from faceauth.training.transforms import AugmentOptions, spoof_transform

    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    samples = [{"image": grey, "label": LIVE}, {"image": grey, "label": SPOOF}]
    artefacts = spoof_transform(AugmentOptions(print_artefacts=0.5, replay_artefacts=0.5, artefact_strength=1.0))
    data = Transformed(samples, lambda image: torch.tensor(np.asarray(image), dtype=torch.float32), artefacts)
    live, spoof = data[(0, 7)]["image"], data[(1, 7)]["image"]
    assert float(live.std()) == 0.0 and float(spoof.std()) > 0.0
    assert np.array_equal(data[(1, 7)]["image"].numpy(), spoof.numpy())  # seeded per sample
