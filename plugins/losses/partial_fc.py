"""Partial FC: a margin softmax whose class centres are sharded over the processes, with sampled negatives.

Face recognition trains on 10^5 to 10^6 identities (Glint360K: 360,232; WebFace42M: 2M), whose
centres and logits outgrow one device. Partial FC (An et al., arXiv:2010.05222 and 2203.15565)
splits the centre matrix by class over the torchrun processes: process r holds the centres of
classes [start_r, end_r) (as even a split as possible). Each step:

1. every process gathers the embeddings and labels of the global batch (the embeddings' gradient
   flows back through the gather);
2. it keeps the centres of the classes in the global batch (positives) and a random share of the
   others (negatives), `sample_rate` of all classes in total; with rate 1 every centre, in order;
3. it computes `margin_logits` of the global batch against its sampled centres only, so no process
   ever holds more than (global batch) x (its sampled centres) logits;
4. the softmax cross-entropy is computed across processes: the row maximum and the sum of
   exponentials are all-reduced, and the target logit comes from the one process holding it.

With one process every collective is the identity and the loss, at rate 1, is `MarginSoftmaxLoss`
(`combined_margin`) exactly. The sample comes from one random permutation of all classes, the
same on every process (drawn from torch's RNG, seeded alike on every process), so it does not
depend on the number of processes.

Checkpoints hold the whole centre matrix: `state_dict()` gathers it (a collective: every process
calls it, as the training loop does) and `load_state_dict` takes this process's rows, so a run can
resume with another number of processes. A loss that exposes `sharded_parameters()` tells the
training loop that those parameters differ between processes: DDP must not average them, their
optimizer state is gathered with `gather_shard` and sliced with `take_shard`, and gradient clipping
sums their norms over the processes.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.distributed as dist
import torch.nn.functional as F

from faceauth.plugins.losses.margin import CombinedMarginOptions, margin_logits
from faceauth.training import distributed

__all__ = ["PartialFC", "PartialFCOptions", "shard_bounds", "softmax_cross_entropy", "build_partial_fc"]

# Centres are initialised in blocks of this many classes, each from its own seeded generator, so a
# class's initial centre is the same whichever process holds it.
_INIT_BLOCK = 4096


def shard_bounds(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, end) of the classes process `rank` holds: the first num_classes % world_size get one more."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + int(rank < extra)


def _init_centres(weight: torch.Tensor, start: int, seed: int) -> None:
    """N(0, 0.01) rows for classes start, start + 1, ...; block b of classes draws from seed + b."""
    end = start + len(weight)
    for block in range(start // _INIT_BLOCK, -(-end // _INIT_BLOCK)):
        first = block * _INIT_BLOCK
        rows = torch.empty(_INIT_BLOCK, weight.shape[1]).normal_(
            0.0, 0.01, generator=torch.Generator().manual_seed(seed + block))
        lo, hi = max(first, start), min(first + _INIT_BLOCK, end)
        weight[lo - start:hi - start] = rows[lo - first:hi - first]


def _all_gather_rows(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every process's `tensor` (sizes[r] rows on process r) concatenated in rank order."""
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


class _GatherEmbeddings(torch.autograd.Function):
    """All-gather of the embeddings whose backward hands each process the gradient of its own rows,
    multiplied by the number of processes.

    Why the factor: every process computes the same global loss L, but its backward only goes
    through the logits of its own centres, so the gradient reaching the gathered embeddings on
    process r is a part of dL/d(embeddings); the sum over processes (all-reduce) is the whole of it,
    and each process keeps its rows: exactly dL/d(its local embeddings). Its backbone then gets the
    part of dL/d(theta) that comes through its own images, and DDP *averages* those parts over the
    W processes, giving dL/d(theta) / W. Scaling by W here makes the averaged backbone gradient
    exactly dL/d(theta). The centres are not in DDP and get dL/d(centres) unscaled.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return _all_gather_rows(local, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        start = sum(ctx.sizes[:ctx.rank])
        return total[start:start + ctx.sizes[ctx.rank]] * len(ctx.sizes), None


class _SumOverProcesses(torch.autograd.Function):
    """The sum over processes, with the identity as backward.

    Every process computes the same loss from the sum, so the gradient of that loss with respect to
    this process's summand is its gradient with respect to the sum: each process gets the gradient
    of the one global loss with respect to its own tensors, and nothing is reduced again.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        total = local.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log softmax(row)[target] when each process holds some columns of every row.

    `logits` (N, C_local) are this process's columns and `target` (N,) the target's column among
    them, or -1 where another process holds it. With one process this is `F.cross_entropy`.
    """
    rows, columns = logits.shape
    multi = distributed.active()
    with torch.no_grad():  # a constant shift for stability; the loss does not depend on it
        row_max = logits.amax(dim=1) if columns else logits.new_full((rows,), -math.inf)
        if multi:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
    sum_exp = (logits - row_max[:, None]).exp().sum(dim=1)
    present = target >= 0
    if columns:
        picked = logits.gather(1, torch.where(present, target, 0)[:, None]).squeeze(1)
        target_logit = torch.where(present, picked, torch.zeros_like(picked))
    else:
        target_logit = logits.new_zeros(rows)
    if multi:  # exactly one process holds each row's target logit; the others add 0
        sum_exp, target_logit = _SumOverProcesses.apply(torch.stack([sum_exp, target_logit])).unbind(0)
    return (row_max + sum_exp.log() - target_logit).mean()


class PartialFC(torch.nn.Module):
    """The combined-margin softmax (m1, m2, m3, scale as `combined_margin`) with this process's shard
    of the class centres in `weight` (local classes x num_features) and negatives sampled at
    `sample_rate`. Call as ``loss(embeddings, labels)`` with this process's part of the batch; every
    process returns the loss of the global batch. Under several processes the backbone must be in
    DDP and this module's `weight` left out of it: the embeddings' gradient is the world size times
    dL/d(embeddings) so that DDP's average is exact (see `_GatherEmbeddings`).
    """

    def __init__(self, num_classes: int, num_features: int, *, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 scale: float = 64.0, sample_rate: float = 1.0):
        super().__init__()
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        if num_classes < self.world_size or num_features < 1:
            raise ValueError(f"partial_fc: {num_classes} classes of {num_features} features over {self.world_size} "
                             f"processes; every process needs at least one class")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"partial_fc: sample_rate must be in (0, 1], got {sample_rate!r}")
        self.num_classes, self.num_features = num_classes, num_features
        self.m1, self.m2, self.m3, self.scale = float(m1), float(m2), float(m3), float(scale)
        self.sample_rate = float(sample_rate)
        # Centres used per step over all processes (plus any positives beyond); the small tolerance
        # keeps rates such as 0.3 of 10 classes (3.0000000000000004 in floating point) at 3.
        self.num_sampled = min(num_classes, math.ceil(self.sample_rate * num_classes - 1e-9))
        self.start, self.end = shard_bounds(num_classes, self.world_size, self.rank)
        self.weight = torch.nn.Parameter(torch.empty(self.end - self.start, num_features))
        with torch.no_grad():  # one draw from the global RNG, the same on every process
            _init_centres(self.weight, self.start, int(torch.randint(0, 2**62, ()).item()))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_features={self.num_features}, "
                f"classes={self.start}..{self.end - 1} of {self.world_size} processes, "
                f"m1={self.m1:g}, m2={self.m2:g}, m3={self.m3:g}, scale={self.scale:g}, sample_rate={self.sample_rate:g}")

    # the loss ------------------------------------------------------------------------------------
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.num_features or labels.shape != embeddings.shape[:1]:
            raise ValueError(f"partial_fc: expected embeddings (N, {self.num_features}) and labels (N,), "
                             f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}")
        if distributed.world_size() != self.world_size:
            raise RuntimeError(f"partial_fc: built for {self.world_size} processes, now called with "
                               f"{distributed.world_size()}")
        labels = labels.to(embeddings.device).long()
        if self.world_size > 1:
            count = torch.tensor([len(labels)], device=labels.device)
            sizes = [int(n) for n in _all_gather_rows(count, [1] * self.world_size)]
            embeddings = _GatherEmbeddings.apply(embeddings, sizes)
            labels = _all_gather_rows(labels, sizes)
        if ((labels < 0) | (labels >= self.num_classes)).any():
            raise ValueError(f"partial_fc: labels must be in 0..{self.num_classes - 1}, got {labels.min().item()}.."
                             f"{labels.max().item()}")
        index = self.sample(labels)
        weight = self.weight if index is None else self.weight[index]
        target = self.local_targets(labels, index)
        if embeddings.dtype != weight.dtype:
            embeddings = embeddings.to(weight.dtype)
        cos = F.linear(F.normalize(embeddings, dim=1), F.normalize(weight, dim=1))
        return softmax_cross_entropy(margin_logits(cos, target, self.m1, self.m2, self.m3, self.scale), target)

    def sample(self, labels: torch.Tensor) -> torch.Tensor | None:
        """This process's sampled classes as ascending local indices, or None for all (rate 1).

        ceil(sample_rate * num_classes) classes over all processes, or every positive when there are
        more: the classes of the global batch `labels` first, then those of lowest priority in a
        random permutation of all classes. The permutation is drawn on the device from a seed drawn
        from torch's CPU RNG, which every process seeds alike and checkpoints restore alike, so all
        processes draw the same permutation and the sample does not depend on their number.
        """
        if self.sample_rate >= 1.0:
            return None
        positives = labels.unique()
        count = max(self.num_sampled, len(positives))
        generator = torch.Generator(device=labels.device).manual_seed(int(torch.randint(0, 2**62, ()).item()))
        priority = torch.randperm(self.num_classes, generator=generator, device=labels.device)
        priority[positives] = -1
        threshold = priority.kthvalue(count).values  # priorities are distinct but for the positives
        return torch.nonzero(priority[self.start:self.end] <= threshold).squeeze(1)

    def local_targets(self, labels: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """Each label's column among this process's sampled centres, or -1 where it holds none."""
        held = (labels >= self.start) & (labels < self.end)
        local = labels - self.start
        if index is not None:  # positives are always sampled, so the search finds them exactly
            local = torch.searchsorted(index, local)
        return torch.where(held, local, torch.full_like(local, -1))

    # sharding ------------------------------------------------------------------------------------
    def sharded_parameters(self) -> tuple[str, ...]:
        """Parameters that differ between processes: rows [start, end) of a (num_classes, ...) tensor."""
        return ("weight",)

    def gather_shard(self, shard: torch.Tensor) -> torch.Tensor:
        """The whole (num_classes, ...) tensor from every process's rows, on the CPU (one process: `shard`).

        A collective: every process must call it. Only one shard at a time is on the device.
        """
        if self.world_size == 1:
            return shard
        if shard.shape[:1] != (self.end - self.start,):
            raise ValueError(f"partial_fc: expected a shard of {self.end - self.start} rows, got {tuple(shard.shape)}")
        full = torch.empty((self.num_classes, *shard.shape[1:]), dtype=shard.dtype)
        largest = shard_bounds(self.num_classes, self.world_size, 0)
        buffer = shard.new_empty((largest[1] - largest[0], *shard.shape[1:]))
        for source in range(self.world_size):
            start, end = shard_bounds(self.num_classes, self.world_size, source)
            part = buffer[:end - start]
            if source == self.rank:
                part.copy_(shard)
            dist.broadcast(part, source)
            full[start:end] = part.cpu()
        return full

    def take_shard(self, full: torch.Tensor) -> torch.Tensor:
        """This process's rows of a whole (num_classes, ...) tensor."""
        if full.dim() == 0 or full.shape[0] != self.num_classes:
            raise ValueError(f"partial_fc: expected {self.num_classes} rows (one per class), got {tuple(full.shape)}")
        return full[self.start:self.end]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.world_size > 1:
            destination[prefix + "weight"] = self.gather_shard(self.weight.detach())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        full = state_dict.get(key)
        if full is not None and full.dim() == 2 and full.shape[0] == self.num_classes:
            state_dict = {**state_dict, key: self.take_shard(full)}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _sample_rate(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{attribute.name}: expected a rate above 0 and at most 1, got {value!r}")


@attrs.frozen
class PartialFCOptions(CombinedMarginOptions):
    sample_rate: float = attrs.field(default=1.0, validator=_sample_rate)  # share of the centres used per step


def build_partial_fc(options: PartialFCOptions, num_classes: int, num_features: int) -> PartialFC:
    return PartialFC(num_classes, num_features, m1=options.m1, m2=options.m2, m3=options.m3, scale=options.scale,
                     sample_rate=options.sample_rate)
