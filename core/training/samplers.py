"""The samplers trainers draw from: `EpochSampler` (every split: a seeded order per epoch, with a per-sample
augmentation seed, resumable mid-epoch, sharded under torchrun, optionally weighted) and `PKSampler`
(metric learning).

`PKSampler` builds every batch from P identities with K images each, as batch-hard triplet mining
needs (each anchor then has K - 1 positives and (P - 1) * K negatives in its batch). Use it as
``DataLoader(dataset, batch_sampler=PKSampler(labels, p=..., k=..., seed=...))`` and call
``set_epoch(epoch)`` before each epoch, as with ``DistributedSampler``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import Sampler

from faceauth.errors import DataError

__all__ = ["EpochSampler", "PKSampler"]


class PKSampler(Sampler[list]):
    """Batches of `p` distinct identities x `k` images each, a pure function of (seed, epoch).

    `labels[i]` is the identity of sample i. Optional `names` maps a label to the identity's name
    (a folder name: a sequence indexed by label such as ``Splits.classes``, or a mapping) for error
    messages.

    Policy for small identities: an identity with at least 2 but fewer than `k` images is kept, and
    its K slots are filled with all of its images plus repeats drawn at random from them (so small
    identities are not lost; a repeated image is a positive at distance ~0, which costs nothing).
    An identity with fewer than 2 images cannot give a positive pair: it is a `DataError` naming
    the identity, its image count and what the sampler requires. Fewer than `p` identities is a
    `DataError` too.

    An epoch has ``len(self)`` batches: ``max(1, len(labels) // (p * k))``, so that it draws about
    as many samples as the dataset holds (``batches_per_epoch`` overrides that). Identities are
    visited in shuffled passes (each pass uses every identity once before any repeats), and each
    identity's images in shuffled passes too, so over an epoch they are used as evenly as the
    P x K structure allows. No identity appears twice in one batch, nor (when it has at least `k`
    images) an image twice.

    `set_epoch(epoch, start)` fixes the epoch and skips its first `start` batches (to resume
    mid-epoch). With ``with_seeds=True`` a batch is a list of ``(index, seed)`` pairs, the per-sample
    augmentation seeds `faceauth.training.loaders.Transformed` expects; otherwise a list of indices.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, *,
                 names: Sequence[str] | Mapping[int, str] | None = None,
                 batches_per_epoch: int | None = None, with_seeds: bool = False):
        for key, value, least in (("p", p, 2), ("k", k, 2)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"PKSampler: {key} must be an integer >= {least} (a P x K batch needs "
                                 f"positives and negatives), got {value!r}")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ValueError(f"PKSampler: batches_per_epoch must be >= 1, got {batches_per_epoch!r}")
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        self.with_seeds = with_seeds
        label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
        identities, inverse, counts = np.unique(label_array, return_inverse=True, return_counts=True)
        order = np.argsort(inverse, kind="stable")  # sample indices grouped by identity, in dataset order
        self.identities = identities.tolist()
        self._indices = np.split(order, np.cumsum(counts)[:-1]) if len(identities) else []
        too_small = [label for label, count in zip(self.identities, counts.tolist()) if count < 2]
        if too_small:
            label = too_small[0]
            count = int(counts[self.identities.index(label)])
            others = f" ({len(too_small) - 1} more identities have fewer than 2)" if len(too_small) > 1 else ""
            raise DataError(
                f"identity {self._name(label, names)} has {count} image{'s' if count != 1 else ''}; "
                f"PKSampler(k={self.k}) needs at least 2 per identity (it fills K={self.k} by repeating "
                f"images of identities with 2 to {self.k - 1}){others}")
        if len(self.identities) < self.p:
            raise DataError(f"PKSampler: {len(self.identities)} identities, fewer than P={self.p} per batch")
        self.num_batches = batches_per_epoch or max(1, len(label_array) // (self.p * self.k))
        self.epoch, self.start = 0, 0

    @staticmethod
    def _name(label: int, names: Sequence[str] | Mapping[int, str] | None) -> str:
        name = None
        if isinstance(names, Mapping):
            name = names.get(label)
        elif names is not None and 0 <= label < len(names):
            name = names[label]
        return f"'{name}' (label {label})" if name is not None else f"with label {label}"

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start)

    def _batches(self) -> Iterator[np.ndarray]:
        """Every batch of this epoch in order, as arrays of sample indices (made as they are asked for)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        identity_pass: list[int] = []  # what is left of the current shuffled pass over identities
        image_passes: dict[int, list[int]] = {}  # per identity position: what is left of its pass
        for _ in range(self.num_batches):
            chosen = _take_distinct(identity_pass, self.p, lambda: rng.permutation(len(self.identities)).tolist())
            batch = []
            for position in chosen:
                images = self._indices[position]
                if len(images) >= self.k:
                    pending = image_passes.setdefault(position, [])
                    picked = _take_distinct(pending, self.k, lambda n=len(images): rng.permutation(n).tolist())
                    batch.extend(images[picked].tolist())
                else:
                    repeats = rng.choice(len(images), size=self.k - len(images), replace=True)
                    batch.extend(rng.permutation(np.concatenate([images, images[repeats]])).tolist())
            yield np.asarray(batch, dtype=np.int64)

    def __iter__(self) -> Iterator[list]:
        if self.with_seeds:
            seeds = np.random.default_rng([self.seed, self.epoch, 1]).integers(
                0, 2**62, size=(self.num_batches, self.p * self.k))
        for number, batch in enumerate(self._batches()):
            if number < self.start:
                continue
            indices = batch.tolist()
            if self.with_seeds:
                yield list(zip(indices, seeds[number].tolist()))
            else:
                yield indices


def _take_distinct(pending: list[int], count: int, new_pass) -> list[int]:
    """Take `count` distinct items from the front of `pending` (edited in place), refilling it from
    `new_pass()` when it runs short; items of the new pass already taken stay for later."""
    taken = pending[:count]
    del pending[:count]
    if len(taken) < count:
        fresh = new_pass()
        have = set(taken)
        rest = []
        for item in fresh:
            if len(taken) < count and item not in have:
                taken.append(item)
                have.add(item)
            else:
                rest.append(item)
        pending[:] = rest
    return taken


class EpochSampler(Sampler):
    """Yields ``(index, seed)``: a permutation fixed by (seed, epoch), or the plain order for evaluation.

    `start` skips the first positions of the epoch, which is how a run resumes mid-epoch. With
    `world_size` > 1 each rank takes every `world_size`-th position. With `weights`, an epoch draws
    `size` samples with replacement, each with probability proportional to its weight (class
    balancing).
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1,
                 weights: np.ndarray | None = None):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(self.size, size=self.size, replace=True, p=self.weights)
        else:
            order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, 2**62, size=self.size)
        if self.shuffle and self.world_size > 1:
            # Every process must take the same number of training steps: drop the uneven tail.
            usable = len(order) - len(order) % self.world_size
            order, seeds = order[:usable], seeds[:usable]
        return order[self.rank :: self.world_size], seeds[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, seeds = self._order()
        for position in range(self.start, len(order)):
            yield int(order[position]), int(seeds[position])

    def __len__(self) -> int:
        size = self.size - self.size % self.world_size if self.shuffle else self.size
        return max(0, len(range(self.rank, size, self.world_size)) - self.start)
