"""Feeding a split to a model: per-sample seeded transforms, the epoch sampler and the DataLoader.

Randomness in augmentation is seeded per sample from (seed, epoch, position), not per worker, so a
run gives the same batches whatever the number of workers and continues identically on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from faceauth.data import SPOOF
from faceauth.errors import FaceAuthError
from faceauth.training import distributed
from faceauth.training.samplers import EpochSampler

__all__ = ["Transformed", "image_loader", "reraise_worker_errors", "to_device"]


class Transformed(Dataset):
    """Applies `transform` to a sample's ``image`` (or each of its ``frames``) under a per-sample seed.

    Items are requested as ``(index, seed)`` pairs, as `EpochSampler` yields them. `spoof_transform`,
    when given, alters the image (or, through its ``frames`` method, all frames alike) of SPOOF
    samples first: simulated attack artefacts must never touch a bona fide sample.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor],
                 spoof_transform: Any = None):
        self.dataset = dataset
        self.transform = transform
        self.spoof_transform = spoof_transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _same_draws(self, seed: int, frame: Any) -> torch.Tensor:
        # Every frame of a clip gets the same crop, flip and jitter: a flip on some frames only
        # would look like motion, which is what a temporal model learns from.
        torch.default_generator.manual_seed(seed)
        return self.transform(frame)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        sample = dict(self.dataset[index])
        # Seed only the CPU generator, and restore it after: torch.manual_seed would also seed (and,
        # in a worker, probe) every other backend, which costs more than the transform itself.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            spoof = self.spoof_transform if sample.get("label") == SPOOF else None
            if "frames" in sample:
                frames = spoof.frames(sample["frames"]) if spoof is not None else sample["frames"]
                sample["frames"] = torch.stack([self._same_draws(seed, frame) for frame in frames])
            else:
                image = spoof(sample["image"]) if spoof is not None else sample["image"]
                sample["image"] = self.transform(image)
        finally:
            generator.set_state(state)
        return sample


def reraise_worker_errors(batches: Iterator[Any]) -> Iterator[Any]:
    """Re-raise a faceauth error from a DataLoader worker with its own one-line message.

    PyTorch wraps worker exceptions in a multi-line message that starts with "Caught ... in
    DataLoader worker"; the user's line (the file at fault) is the last line of that text.
    """
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except FaceAuthError as exc:
            lines = str(exc).strip().splitlines()
            if len(lines) > 1 and "DataLoader worker" in lines[0]:
                message = lines[-1].split(": ", 1)[-1]
                raise type(exc)(message) from None
            raise
        yield batch


def image_loader(dataset: Any, transform: Callable, *, batch_size: int, num_workers: int, seed: int,
                 shuffle: bool, batch_sampler: Any = None, weights: Any = None,
                 spoof_transform: Any = None) -> DataLoader:
    """A DataLoader over `Transformed(dataset)` fed by an `EpochSampler` (or the given batch sampler).

    The loader has its own generator so iterating it never draws from the global RNG, which the
    model's own randomness (dropout) uses and checkpoints restore.

    Under torchrun each process reads its share: `batch_size` is the global batch, split evenly
    over the processes for training; evaluation shards the samples and the caller gathers results.
    """
    data = Transformed(dataset, transform, spoof_transform)
    common = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed))
    if batch_sampler is not None:
        return DataLoader(data, batch_sampler=batch_sampler, **common)
    world = distributed.world_size()
    per_process = distributed.split_batch(batch_size) if shuffle else max(1, -(-batch_size // world))
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle, weights=weights,
                           rank=distributed.rank(), world_size=world)
    return DataLoader(data, batch_size=per_process, sampler=sampler,
                      drop_last=shuffle and len(dataset) > batch_size, **common)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
