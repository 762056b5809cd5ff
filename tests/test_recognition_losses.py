"""Face-recognition losses (ArcFace, CosFace, combined margin, batch-hard triplet) and the P x K sampler.

Every test works on tiny hand-built tensors on CPU; the whole file runs in a few seconds.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import faceauth.plugins.trainers.classifier  # noqa: F401  (imports torchvision at collection, not inside the registry test)
from faceauth.config.registry import load_registry
from faceauth.errors import DataError, RecipeError
from faceauth.plugins.losses.margin import (
    ArcFaceOptions,
    CombinedMarginOptions,
    CosFaceOptions,
    MarginSoftmaxLoss,
    build_arcface,
    build_combined_margin,
    build_cosface,
    margin_logits,
)
from faceauth.plugins.losses.triplet import BatchHardTripletLoss, TripletOptions, build_triplet
from faceauth.schema import structure
from faceauth.training.loaders import Transformed
from faceauth.training.samplers import PKSampler

S = 64.0


def _unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def _with_centres(loss: MarginSoftmaxLoss, centres: list[list[float]]) -> MarginSoftmaxLoss:
    with torch.no_grad():
        loss.weight.copy_(torch.tensor(centres, dtype=loss.weight.dtype))
    return loss


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    # (torch.testing.assert_close would import torch.distributed on first use: a second or more)
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=0, atol=atol), (actual, expected)


def _arcface(margin: float = 0.5, scale: float = S, classes: int = 2, features: int = 2) -> MarginSoftmaxLoss:
    return build_arcface(ArcFaceOptions(scale=scale, margin=margin), num_classes=classes, num_features=features)


# --- margin math -----------------------------------------------------------------------------


def test_arcface_logits_at_known_angles():
    # Centres along x and y; embeddings at 60 and 30 degrees (lengths other than 1 on purpose).
    loss = _with_centres(_arcface(), [[3.0, 0.0], [0.0, 0.5]])
    embeddings = torch.tensor([[2 * c for c in _unit(60)], _unit(30)])
    logits = loss.logits(embeddings, torch.tensor([0, 1]))
    expected = torch.tensor([
        [S * math.cos(math.pi / 3 + 0.5), S * math.cos(math.pi / 6)],   # target 0 at 60 degrees
        [S * math.cos(math.pi / 6), S * math.cos(math.pi / 3 + 0.5)],   # target 1 at 60 degrees
    ])
    _assert_close(logits, expected, atol=1e-4)
    _assert_close(loss.cosine(embeddings), torch.tensor([[0.5, math.sqrt(3) / 2], [math.sqrt(3) / 2, 0.5]]), atol=1e-6)


def test_cosface_and_combined_logits_at_known_angles():
    cos = torch.tensor([[0.5, 0.2, -0.3]], dtype=torch.float64)
    target = torch.tensor([0])
    cosface = margin_logits(cos, target, m1=1.0, m2=0.0, m3=0.35, s=S)
    assert cosface[0].tolist() == pytest.approx([S * (0.5 - 0.35), S * 0.2, S * -0.3], abs=1e-9)
    combined = margin_logits(cos, target, m1=0.9, m2=0.4, m3=0.15, s=30.0)
    theta = math.acos(0.5)
    assert combined[0].tolist() == pytest.approx([30 * (math.cos(0.9 * theta + 0.4) - 0.15), 30 * 0.2, 30 * -0.3],
                                                 abs=1e-9)


def test_margin_logits_leaves_rows_without_a_target_unchanged_and_does_not_modify_its_input():
    cos = torch.tensor([[0.5, 0.1], [0.3, 0.9]], dtype=torch.float64)
    before = cos.clone()
    logits = margin_logits(cos, torch.tensor([-1, 1]), m2=0.5, s=2.0)
    assert logits[0].tolist() == pytest.approx([1.0, 0.2])
    assert logits[1].tolist() == pytest.approx([0.6, 2 * math.cos(math.acos(0.9) + 0.5)])
    assert torch.equal(cos, before)


def test_half_precision_cosines_give_float32_logits():
    logits = margin_logits(torch.tensor([[0.5, 0.1]], dtype=torch.float16), torch.tensor([0]), m2=0.5)
    assert logits.dtype == torch.float32
    assert logits[0, 0].item() == pytest.approx(S * math.cos(math.pi / 3 + 0.5), abs=1e-3)


def test_combined_margin_reduces_to_arcface_and_cosface():
    torch.manual_seed(0)
    embeddings, target = torch.randn(16, 8), torch.randint(0, 5, (16,))
    arcface = build_arcface(ArcFaceOptions(), num_classes=5, num_features=8)
    cosface = build_cosface(CosFaceOptions(), num_classes=5, num_features=8)
    as_arc = build_combined_margin(CombinedMarginOptions(m1=1.0, m2=0.5, m3=0.0), num_classes=5, num_features=8)
    as_cos = build_combined_margin(CombinedMarginOptions(m1=1.0, m2=0.0, m3=0.35), num_classes=5, num_features=8)
    for one, other in ((arcface, as_arc), (cosface, as_cos)):
        other.load_state_dict(one.state_dict())
        assert torch.equal(one.logits(embeddings, target), other.logits(embeddings, target))
        assert torch.equal(one(embeddings, target), other(embeddings, target))
    # The defaults of combined_margin are insightface's arcface configuration (1.0, 0.5, 0.0).
    default = build_combined_margin(CombinedMarginOptions(), num_classes=5, num_features=8)
    default.load_state_dict(arcface.state_dict())
    assert torch.equal(default(embeddings, target), arcface(embeddings, target))


def test_loss_is_cross_entropy_of_the_margin_logits():
    torch.manual_seed(1)
    loss = build_arcface(ArcFaceOptions(), num_classes=4, num_features=3)
    embeddings, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    logits = loss.logits(embeddings, target)
    manual = -(logits.log_softmax(dim=1)[torch.arange(6), target]).mean()
    _assert_close(loss(embeddings, target), manual, atol=1e-5)


def test_gradient_reaches_embeddings_and_class_centres():
    torch.manual_seed(2)
    for build, options in ((build_arcface, ArcFaceOptions()), (build_cosface, CosFaceOptions()),
                           (build_combined_margin, CombinedMarginOptions(m1=1.1, m2=0.3, m3=0.1))):
        loss = build(options, num_classes=4, num_features=3)
        embeddings = torch.randn(8, 3, requires_grad=True)
        loss(embeddings, torch.randint(0, 4, (8,))).backward()
        for grad in (embeddings.grad, loss.weight.grad):
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("m1,m2,m3", [(1.0, 0.5, 0.0), (1.0, 1.2, 0.0), (1.35, 0.3, 0.2), (2.0, 0.5, 0.0), (1.0, 0.0, 0.35)])
def test_target_logit_is_finite_and_never_rises_with_the_angle(m1, m2, m3):
    # theta from 0 to pi, through the region m1 * theta + m2 > pi; cos exactly +-1 at both ends.
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    cos = torch.cos(theta).clamp(-1, 1)
    cos[0], cos[-1] = 1.0, -1.0
    cos = cos.unsqueeze(1).requires_grad_()
    target_logit = margin_logits(cos, torch.zeros(len(theta), dtype=torch.long), m1, m2, m3, s=S)[:, 0]
    target_logit.sum().backward()
    assert torch.isfinite(target_logit).all() and torch.isfinite(cos.grad).all()
    assert (target_logit[1:] <= target_logit[:-1] + 1e-9).all()
    assert (cos.grad >= 0).all()  # a larger cosine never lowers the target logit
    assert target_logit[0].item() == pytest.approx(S * (math.cos(m2) - m3), abs=1e-9)  # exact at theta = 0


def test_past_pi_minus_m_arcface_uses_insightfaces_linear_fallback():
    m = 0.5
    edge = math.cos(math.pi - m)
    cos = torch.tensor([[edge + 1e-3], [edge - 1e-3], [-0.95], [-1.0]], dtype=torch.float64)
    logits = margin_logits(cos, torch.zeros(4, dtype=torch.long), m2=m, s=1.0)[:, 0]
    assert logits[0].item() == pytest.approx(math.cos(math.acos(edge + 1e-3) + m), abs=1e-6)
    for row in (1, 2, 3):
        assert logits[row].item() == pytest.approx(cos[row, 0].item() - math.sin(math.pi - m) * m, abs=1e-12)


def test_arcface_toy_problem_loss_decreases():
    torch.manual_seed(3)
    loss = build_arcface(ArcFaceOptions(scale=16.0, margin=0.3), num_classes=3, num_features=4)
    embeddings = torch.nn.Parameter(torch.randn(12, 4))
    target = torch.arange(12) % 3
    parameters = [embeddings, *loss.parameters()]
    values = []
    for _ in range(10):  # plain gradient descent
        value = loss(embeddings, target)
        gradients = torch.autograd.grad(value, parameters)
        with torch.no_grad():
            for parameter, gradient in zip(parameters, gradients):
                parameter -= 0.5 * gradient
        values.append(value.item())
    assert values[-1] < 0.5 * values[0]


def test_margin_loss_owns_a_sharable_weight_and_checks_the_embedding_size():
    loss = build_cosface(CosFaceOptions(), num_classes=7, num_features=5)
    assert dict(loss.named_parameters()).keys() == {"weight"}
    assert loss.weight.shape == (7, 5)
    with pytest.raises(ValueError, match=r"expected embeddings of shape \(N, 5\), got \(2, 4\)"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]))


def test_margin_options_from_recipe_data():
    assert structure(ArcFaceOptions, {}, "loss") == ArcFaceOptions(scale=64.0, margin=0.5)
    assert structure(CosFaceOptions, {"margin": 0.4}, "loss").margin == 0.4
    assert structure(CombinedMarginOptions, {}, "loss") == CombinedMarginOptions(scale=64.0, m1=1.0, m2=0.5, m3=0.0)
    with pytest.raises(RecipeError, match="loss.margin: expected an angle in radians"):
        structure(ArcFaceOptions, {"margin": 4}, "loss")
    with pytest.raises(RecipeError, match="loss.scale: expected a positive number"):
        structure(CosFaceOptions, {"scale": 0}, "loss")


# --- triplet ---------------------------------------------------------------------------------

# Unit vectors at these angles (degrees) and labels: identity 0 at 0, 10, 100; identity 1 at 30,
# 200; identity 2 at 120. Two unit vectors an angle a apart are 2 sin(a / 2) apart.
ANGLES = [0, 10, 100, 30, 200, 120]
LABELS = [0, 0, 0, 1, 1, 2]
# For each anchor: (index of the hardest positive, index of the hardest negative), found by hand.
HARDEST = [(2, 3), (2, 3), (0, 5), (4, 1), (3, 5), (None, 2)]


def _chord(i: int, j: int) -> float:
    return 2 * math.sin(math.radians(abs(ANGLES[i] - ANGLES[j])) / 2)


def _triplet_batch(scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[scale * c for c in _unit(a)] for a in ANGLES], dtype=torch.float64), torch.tensor(LABELS)


@pytest.mark.parametrize("squared", [False, True])
def test_batch_hard_triplet_picks_the_known_hardest_pairs_and_loss_value(squared):
    margin = 0.2
    loss = build_triplet(TripletOptions(margin=margin, squared=squared))
    embeddings, labels = _triplet_batch(scale=3.0)  # normalised inside: the length does not matter
    positive, negative, valid = loss.hardest(embeddings, labels)
    assert valid.tolist() == [True] * 5 + [False]  # identity 2 has one image: no positive
    power = 2 if squared else 1
    expected_terms = []
    for anchor, (p, n) in enumerate(HARDEST[:5]):
        assert positive[anchor].item() == pytest.approx(_chord(anchor, p) ** power, abs=1e-9)
        assert negative[anchor].item() == pytest.approx(_chord(anchor, n) ** power, abs=1e-9)
        expected_terms.append(max(0.0, _chord(anchor, p) ** power - _chord(anchor, n) ** power + margin))
    assert negative[5].item() == pytest.approx(_chord(5, 2) ** power, abs=1e-9)
    assert loss(embeddings, labels).item() == pytest.approx(sum(expected_terms) / 5, abs=1e-9)


def test_batch_hard_triplet_hinge_is_zero_when_separated_and_default_is_not_squared():
    loss = build_triplet(TripletOptions())
    assert (loss.margin, loss.squared) == (0.2, False)
    # Two tight clusters on opposite sides: d(a, p) ~ 0.035, d(a, n) ~ 2.
    embeddings = torch.tensor([_unit(0), _unit(2), _unit(180), _unit(182)], dtype=torch.float64)
    assert loss(embeddings, torch.tensor([0, 0, 1, 1])).item() == 0.0


def test_batch_hard_triplet_gradient_is_finite_with_repeated_images():
    embeddings = torch.tensor([_unit(0), _unit(0), _unit(5), _unit(5)], requires_grad=True)  # each image twice
    value = BatchHardTripletLoss(margin=0.2)(embeddings, torch.tensor([0, 0, 1, 1]))
    value.backward()
    assert value.item() > 0 and torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5]], ids=["all-singletons", "one-identity"])
def test_batch_without_a_valid_triplet_is_a_data_error(labels):
    embeddings = torch.randn(len(labels), 4)
    with pytest.raises(DataError, match="has no valid triplet.*PKSampler"):
        BatchHardTripletLoss()(embeddings, torch.tensor(labels))


# --- P x K sampler ---------------------------------------------------------------------------

# Identity 3 has 3 images and identity 4 has 2 (fewer than K=4: filled by repeats).
SAMPLER_LABELS = [0] * 6 + [1] * 5 + [2] * 4 + [3] * 3 + [4] * 2 + [5] * 8 + [6] * 4


def _epoch(sampler: PKSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_pk_batches_hold_p_identities_with_k_images_each():
    sampler = PKSampler(SAMPLER_LABELS, p=3, k=4, seed=0)
    assert len(sampler) == len(SAMPLER_LABELS) // 12 == 2
    for epoch in range(20):
        batches = _epoch(sampler, epoch)
        assert len(batches) == len(sampler)
        for batch in batches:
            counts = Counter(SAMPLER_LABELS[i] for i in batch)
            assert len(batch) == 12 and len(counts) == 3 and set(counts.values()) == {4}
            for identity in counts:
                images = [i for i in batch if SAMPLER_LABELS[i] == identity]
                owned = {i for i, label in enumerate(SAMPLER_LABELS) if label == identity}
                assert set(images) <= owned
                if len(owned) >= 4:
                    assert len(set(images)) == 4  # no repeats when the identity has K images
                else:
                    assert set(images) == owned  # every image, plus repeats


def test_pk_identities_are_used_evenly_over_batches():
    sampler = PKSampler(SAMPLER_LABELS, p=3, k=2, seed=1, batches_per_epoch=7)  # 21 slots, 7 identities
    identities = Counter(SAMPLER_LABELS[i] for batch in _epoch(sampler, 0) for i in batch)
    assert set(identities.values()) == {6}  # three full passes over the 7 identities, K=2 images each


def test_pk_order_is_a_pure_function_of_seed_and_epoch():
    first = PKSampler(SAMPLER_LABELS, p=2, k=2, seed=7)
    second = PKSampler(SAMPLER_LABELS, p=2, k=2, seed=7)
    assert _epoch(first, 3) == _epoch(second, 3)
    assert _epoch(first, 3) == _epoch(first, 3)  # iterating again repeats the epoch
    _epoch(second, 9)
    assert _epoch(second, 3) == _epoch(first, 3)  # whatever came before
    assert _epoch(first, 3) != _epoch(first, 4)
    assert _epoch(first, 3) != _epoch(PKSampler(SAMPLER_LABELS, p=2, k=2, seed=8), 3)


def test_pk_resumes_mid_epoch_and_can_carry_augmentation_seeds():
    sampler = PKSampler(SAMPLER_LABELS, p=2, k=2, seed=0)
    full = _epoch(sampler, 2)
    sampler.set_epoch(2, start=3)
    assert len(sampler) == len(full) - 3 and list(sampler) == full[3:]
    seeded = PKSampler(SAMPLER_LABELS, p=2, k=2, seed=0, with_seeds=True)
    pairs = _epoch(seeded, 2)
    assert [[index for index, _ in batch] for batch in pairs] == full
    assert all(isinstance(seed, int) for batch in pairs for _, seed in batch)
    assert pairs != _epoch(seeded, 3)


def test_pk_sampler_drives_a_dataloader():
    dataset = TensorDataset(torch.arange(len(SAMPLER_LABELS)), torch.tensor(SAMPLER_LABELS))
    sampler = PKSampler(SAMPLER_LABELS, p=3, k=4, seed=0)
    batches = list(DataLoader(dataset, batch_sampler=sampler))
    assert len(batches) == len(sampler)
    for indices, labels in batches:
        assert indices.shape == (12,) and torch.equal(labels, torch.tensor(SAMPLER_LABELS)[indices])
        BatchHardTripletLoss()(torch.randn(12, 4), labels)  # every P x K batch has valid triplets


class _Faces(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return len(SAMPLER_LABELS)

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.zeros(2), "label": SAMPLER_LABELS[index]}


def test_pk_sampler_with_seeds_feeds_transformed_datasets():
    # faceauth.training.loaders.Transformed takes (index, seed) keys and augments each sample under its seed.
    data = Transformed(_Faces(), lambda image: image + torch.rand(2))
    sampler = PKSampler(SAMPLER_LABELS, p=2, k=3, seed=0, with_seeds=True)
    sampler.set_epoch(1)
    first = list(DataLoader(data, batch_sampler=sampler))
    again = list(DataLoader(data, batch_sampler=sampler))
    assert len(first) == len(sampler)
    for batch, repeat in zip(first, again):
        assert batch["image"].shape == (6, 2) and len(set(batch["label"].tolist())) == 2
        assert torch.equal(batch["image"], repeat["image"])  # same epoch, same augmentation
    assert len({tuple(row.tolist()) for batch in first for row in batch["image"]}) == 6 * len(first)


def test_pk_identity_with_one_image_is_an_error_naming_it():
    labels = [0, 0, 0, 1, 2, 2, 3]
    names = ["alice", "bob", "carol", "dave"]
    with pytest.raises(DataError) as info:
        PKSampler(labels, p=2, k=4, seed=0, names=names)
    message = str(info.value)
    assert "identity 'bob' (label 1) has 1 image;" in message
    assert "k=4" in message and "at least 2 per identity" in message
    assert "1 more identities" in message  # dave
    with pytest.raises(DataError, match="identity with label 1 has 1 image"):
        PKSampler(labels, p=2, k=4, seed=0)


def test_pk_too_few_identities_or_bad_p_k():
    with pytest.raises(DataError, match="2 identities, fewer than P=3"):
        PKSampler([0, 0, 1, 1], p=3, k=2, seed=0)
    for p, k in ((1, 4), (4, 1), (2.5, 2)):
        with pytest.raises(ValueError, match="must be an integer >= 2"):
            PKSampler(SAMPLER_LABELS, p=p, k=k, seed=0)


# --- registration ----------------------------------------------------------------------------


def test_registry_lists_the_recognition_losses():
    registry = load_registry()
    names = registry.names("loss")
    for name in ("arcface", "cosface", "combined_margin", "triplet"):
        assert name in names
        entry = registry.entry("loss", name)
        assert entry.component.consumes == "embeddings"
        assert entry.provider.distribution == "faceauth"
    assert registry.get("loss", "cross_entropy").consumes == "logits"


def test_registered_losses_build_from_their_default_options():
    registry = load_registry()
    for name in ("arcface", "cosface", "combined_margin", "triplet"):
        component = registry.get("loss", name)
        module = component.build(component.options(), num_classes=3, num_features=4)
        value = module(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
        assert value.dim() == 0 and torch.isfinite(value)
