"""Tests for the trainers' image transforms: the presentation-attack augmentations, their options,
and the rule that every random draw comes from torch's (per-sample seeded) RNG."""

from __future__ import annotations

import pickle
import random

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

import faceauth
from faceauth.components import Preprocess
from faceauth.errors import RecipeError
from faceauth.plugins.trainers.classifier import ClassifierOptions
from faceauth.plugins.trainers.embedding import EmbeddingOptions
from faceauth.training import transforms
from faceauth.training.loaders import Transformed
from faceauth.training.transforms import (
    AugmentOptions,
    RandomBlur,
    RandomGamma,
    RandomJpeg,
    RandomWhiteBalance,
    SpoofArtefacts,
    spoof_transform,
    train_transform,
)

PRE = Preprocess(input_size=(48, 48), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
ALL_ON = AugmentOptions(gamma=0.3, white_balance=0.2, blur=0.5, jpeg=0.5, print_artefacts=0.5, replay_artefacts=0.5,
                        erase=0.5)


def face_like(size: int = 64, seed: int = 0) -> Image.Image:
    """A smooth test image: a gradient backdrop, a soft disc and a little noise (so JPEG has work)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, size, dtype=np.float32)
    img = np.stack([0.2 + 0.6 * t[None, :].repeat(size, 0), 0.3 + 0.4 * t[:, None].repeat(size, 1),
                    np.full((size, size), 0.5, np.float32)], -1)
    yy, xx = np.mgrid[:size, :size]
    disc = np.clip(size / 4 - np.hypot(xx - size / 2, yy - size / 2), 0, 1)[..., None]
    img = img * (1 - disc) + np.float32([0.8, 0.6, 0.5]) * disc + rng.normal(0, 0.01, img.shape)
    return Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32)


def high_frequency(image: Image.Image) -> float:
    """Mean squared discrete Laplacian: the energy of pixel-scale structure."""
    a = pixels(image)
    lap = 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    return float((lap**2).mean())


def seeded(fn, image, seed: int):
    torch.manual_seed(seed)
    return fn(image)


# --- each augmentation: on at probability 1, off at 0 -------------------------------------------


@pytest.mark.parametrize("make", [
    lambda p: RandomBlur(p, 1.5),
    lambda p: RandomJpeg(p, 30),
    lambda p: SpoofArtefacts(p, 0.0, 0.3),
    lambda p: SpoofArtefacts(0.0, p, 0.3),
], ids=["blur", "jpeg", "print", "replay"])
def test_augmentation_applies_at_probability_one_and_never_at_zero(make):
    image = face_like()
    for seed in range(5):
        assert np.abs(pixels(seeded(make(1.0), image, seed)) - pixels(image)).mean() > 0.5
        assert np.array_equal(pixels(seeded(make(0.0), image, seed)), pixels(image))


def test_gamma_changes_the_image_and_keeps_black_and_white():
    image = face_like()
    out = [pixels(seeded(RandomGamma(0.5), image, seed)) for seed in range(5)]
    assert all(np.abs(o - pixels(image)).mean() > 0.5 for o in out)
    extremes = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8))
    assert np.array_equal(pixels(seeded(RandomGamma(0.5), extremes, 3)), pixels(extremes))


def test_white_balance_scales_each_channel_by_its_own_gain_within_the_range():
    grey = Image.fromarray(np.full((8, 8, 3), 100, np.uint8))
    gains = []
    for seed in range(20):
        out = pixels(seeded(RandomWhiteBalance(0.3), grey, seed))
        assert (out == out[0, 0]).all()  # one gain per channel, the same at every pixel
        gains.append(out[0, 0] / 100)
    gains = np.array(gains)
    assert gains.min() >= 0.7 - 0.01 and gains.max() <= 1.3 + 0.01
    assert np.abs(gains[:, 0] - gains[:, 1]).max() > 0.1  # channels drawn apart: a colour cast, not a brightness
    assert np.array_equal(pixels(seeded(RandomWhiteBalance(0.3), Image.new("RGB", (2, 2)), 0)), np.zeros((2, 2, 3)))


def test_erase_blanks_one_rectangle_of_the_normalised_image():
    image = face_like()
    options = AugmentOptions(hflip=False, crop_scale=1.0, rotation=0.0, color_jitter=0.0)
    plain = seeded(train_transform(PRE, options), image, 3)
    erased = seeded(train_transform(PRE, attrs.evolve(options, erase=1.0)), image, 3)
    changed = (erased != plain).any(dim=0)
    rows, cols = changed.any(dim=1).nonzero().flatten(), changed.any(dim=0).nonzero().flatten()
    box = erased[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert 0.02 * 48 * 48 <= box[0].numel() <= 0.34 * 48 * 48 and (box == 0).all()  # one rectangle of the mean


def test_disabled_options_add_no_steps_so_existing_runs_keep_their_random_stream():
    """Off by default: the pipeline (and so every draw from the RNG) is what it was before these options."""
    default = train_transform(PRE, AugmentOptions())
    zeros = train_transform(PRE, AugmentOptions(gamma=0.0, blur=0.0, jpeg=0.0))
    assert [type(t) for t in default.transforms] == [type(t) for t in zeros.transforms]
    assert not any(isinstance(t, (RandomGamma, RandomWhiteBalance, RandomBlur, RandomJpeg)) for t in default.transforms)
    assert spoof_transform(AugmentOptions()) is None
    assert spoof_transform(AugmentOptions(print_artefacts=0.5, artefact_strength=0.0)) is None
    assert isinstance(spoof_transform(AugmentOptions(replay_artefacts=0.2)), SpoofArtefacts)


def test_pipeline_order_is_geometry_light_optics_codec_tensor():
    steps = [type(t).__name__ for t in train_transform(PRE, ALL_ON).transforms]
    assert steps == ["RandomResizedCrop", "RandomHorizontalFlip", "RandomRotation", "ColorJitter", "RandomGamma",
                     "RandomWhiteBalance", "RandomBlur", "RandomJpeg", "ToImage", "ToDtype", "Normalize",
                     "RandomErasing"]


def test_train_transform_with_the_new_steps_differs_from_without():
    image = face_like()
    plain = seeded(train_transform(PRE, AugmentOptions()), image, 7)
    for options in (AugmentOptions(blur=1.0, blur_sigma=2.0), AugmentOptions(jpeg=1.0, jpeg_quality=5),
                    AugmentOptions(gamma=0.5), AugmentOptions(white_balance=0.3)):
        out = seeded(train_transform(PRE, options), image, 7)
        assert out.shape == plain.shape == (3, 48, 48)
        assert not torch.equal(out, plain)


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_tensors_different_seed_different_tensors():
    image = face_like()
    transform, spoof = train_transform(PRE, ALL_ON), spoof_transform(ALL_ON)

    def sample(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return transform(spoof(image))

    runs = [sample(seed) for seed in (3, 4, 3)]
    assert torch.equal(runs[0], runs[2])
    assert not torch.equal(runs[0], runs[1])


def test_deterministic_through_transformed_whatever_the_global_rng_state():
    """What resume relies on: (index, seed) alone fixes the sample, wherever the global RNG stands."""
    transform, spoof = train_transform(PRE, ALL_ON), spoof_transform(ALL_ON)
    data = Transformed([{"image": face_like(seed=i), "label": 1} for i in range(3)],
                       lambda image: transform(spoof(image)))
    first = [data[(i, 100 + i)]["image"] for i in range(3)]
    torch.manual_seed(12345)
    torch.rand(17)
    again = [data[(i, 100 + i)]["image"] for i in reversed(range(3))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_draws_only_from_torch_rng():
    """Python's and numpy's global RNGs are untouched (they are not seeded per sample)."""
    random.seed(1)
    np.random.seed(1)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    transform, spoof = train_transform(PRE, ALL_ON), spoof_transform(ALL_ON)
    for seed in range(20):
        torch.manual_seed(seed)
        transform(spoof(face_like()))
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def test_transforms_pickle_for_dataloader_workers():
    transform, spoof = pickle.loads(pickle.dumps((train_transform(PRE, ALL_ON), spoof_transform(ALL_ON))))
    image = face_like()
    assert torch.equal(seeded(transform, image, 1), seeded(train_transform(PRE, ALL_ON), image, 1))
    assert np.array_equal(pixels(seeded(spoof, image, 1)), pixels(seeded(spoof_transform(ALL_ON), image, 1)))


# --- JPEG quality ---------------------------------------------------------------------------------


def test_jpeg_quality_is_drawn_from_min_to_100(monkeypatch):
    drawn = []
    monkeypatch.setattr(transforms, "jpeg_round_trip", lambda image, quality: drawn.append(quality) or image)
    torch.manual_seed(0)
    jpeg = RandomJpeg(1.0, 90)
    for _ in range(300):
        jpeg(face_like(8))
    assert min(drawn) == 90 and max(drawn) == 100


def test_lower_jpeg_quality_loses_more():
    """Measured on luma: 4:2:0 chroma subsampling costs colour detail at any quality."""
    image = face_like(64)

    def loss(out: Image.Image) -> float:
        return float(np.abs(pixels(out.convert("L")) - pixels(image.convert("L"))).mean())

    assert loss(transforms.jpeg_round_trip(image, 5)) > 2 * loss(transforms.jpeg_round_trip(image, 95))
    # a quality drawn from [5, 100] is on average far lossier than one from [95, 100]
    mean_loss = {q: np.mean([loss(seeded(RandomJpeg(1.0, q), image, s)) for s in range(20)]) for q in (5, 95)}
    assert mean_loss[5] > 2 * mean_loss[95] > 0


# --- simulated attacks ----------------------------------------------------------------------------


@pytest.mark.parametrize("print_p, replay_p", [(1.0, 0.0), (0.0, 1.0)], ids=["print", "replay"])
def test_spoof_artefacts_add_high_frequency_energy(print_p, replay_p):
    for seed in range(8):
        image = face_like(112, seed)
        out = seeded(SpoofArtefacts(print_p, replay_p, 0.3), image, seed)
        assert out.size == image.size and out.mode == "RGB"
        assert high_frequency(out) > 2 * high_frequency(image)


def test_spoof_artefacts_grow_with_strength():
    image = face_like(112)
    energy = [high_frequency(seeded(SpoofArtefacts(0.5, 0.5, s), image, 2)) for s in (0.1, 0.4, 1.0)]
    assert energy[0] < energy[1] < energy[2]


def test_spoof_artefacts_pick_print_or_replay_in_proportion():
    image = face_like(16)
    calls = {"print": 0, "replay": 0}

    def counting(kind):
        original = getattr(transforms, f"_{kind}_artefacts")

        def wrapper(*args):
            calls[kind] += 1
            return original(*args)
        return wrapper

    spoof = SpoofArtefacts(0.25, 0.5, 0.3)
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        for kind in calls:
            mp.setattr(transforms, f"_{kind}_artefacts", counting(kind))
        for _ in range(800):
            spoof(image)
    assert 150 < calls["print"] < 250 and 340 < calls["replay"] < 460


def test_spoof_artefacts_are_the_same_on_every_frame_of_a_clip():
    clip = [face_like(32, seed) for seed in range(3)]
    spoof = SpoofArtefacts(0.5, 0.5, 0.5)
    for seed in range(4):
        torch.manual_seed(seed)
        frames = spoof.frames(clip)
        alone = [seeded(spoof, frame, seed) for frame in clip]
        assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(frames, alone))


def test_spoof_artefacts_accept_non_square_and_grey_images():
    for image in (face_like(64).crop((0, 0, 64, 40)), face_like(32).convert("L")):
        out = seeded(SpoofArtefacts(0.5, 0.5, 0.5), image, 1)
        assert out.mode == "RGB" and out.size == image.size


# --- options --------------------------------------------------------------------------------------


def _error(data: dict, options: type = ClassifierOptions) -> str:
    with pytest.raises(RecipeError) as info:
        faceauth.schema.structure(options, {"augment": data}, "trainer")
    return str(info.value)


@pytest.mark.parametrize("key, value, expected", [
    ("blur", 1.5, "expected a number between 0 and 1, got 1.5"),
    ("jpeg", -0.1, "expected a number between 0 and 1, got -0.1"),
    ("print_artefacts", 2, "expected a number between 0 and 1, got 2.0"),
    ("replay_artefacts", 1.5, "expected a number between 0 and 1, got 1.5"),
    ("artefact_strength", 1.2, "expected a number between 0 and 1, got 1.2"),
    ("gamma", -0.2, "expected a number >= 0, got -0.2"),
    ("erase", 2, "expected a number between 0 and 1, got 2.0"),
    ("white_balance", 1.5, "expected a number between 0 and 1, got 1.5"),
    ("blur_sigma", 0, "expected a positive number, got 0.0"),
    ("jpeg_quality", 0, "expected an integer from 1 to 100, got 0"),
    ("jpeg_quality", 101, "expected an integer from 1 to 100, got 101"),
])
def test_bad_values_name_the_key(key, value, expected):
    assert _error({key: value}) == f"trainer.augment.{key}: {expected}"


def test_print_and_replay_probabilities_cannot_exceed_one():
    assert _error({"print_artefacts": 0.6, "replay_artefacts": 0.5}) == (
        "trainer.augment.replay_artefacts: expected print_artefacts + replay_artefacts <= 1 "
        "(one simulated attack per sample), got 0.6 + 0.5")


def test_jpeg_quality_must_be_an_integer():
    assert _error({"jpeg_quality": 50.5}) == "trainer.augment.jpeg_quality: expected an integer, got 50.5"


def test_valid_options_structure_for_both_trainers():
    data = {"gamma": 0.2, "blur": 0.3, "blur_sigma": 2, "jpeg": 0.4, "jpeg_quality": 20, "print_artefacts": 0.3,
            "replay_artefacts": 0.3, "artefact_strength": 0.5}
    liveness = faceauth.schema.structure(ClassifierOptions, {"augment": data}, "trainer").augment
    assert liveness == AugmentOptions(**{**data, "blur_sigma": 2.0})
    assert faceauth.schema.unstructure(liveness)["jpeg_quality"] == 20
    embedding = faceauth.schema.structure(EmbeddingOptions, {}, "trainer").augment
    assert (embedding.crop_scale, embedding.rotation, embedding.color_jitter) == (1.0, 0.0, 0.1)
    assert train_transform(PRE, embedding)(face_like()).shape == (3, 48, 48)
