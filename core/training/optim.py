"""Optimisers and learning-rate schedules from the recipe's ``optimizer`` and ``scheduler`` sections.

Schedules are stepped once per training step, so warm-up and cosine decay are smooth whatever the
epoch length. The learning rate has one owner, ``optimizer.lr``: a schedule scales each parameter group's
own base rate (what the optimizer was built with) and is never given it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from faceauth.config.recipe import OptimizerConfig, SchedulerConfig

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0)
    return torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas[:2]), weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule `config` names over ``steps_per_epoch * epochs`` steps, for each parameter group of
    `optimizer` from its own base learning rate (``initial_lr`` once a schedule ran, else ``lr``) down to
    ``scheduler.min_lr``."""
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    bases = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [_factor(config, base, warmup, total, steps_per_epoch)
                                                         for base in bases])


def _factor(config: SchedulerConfig, base_lr: float, warmup: int, total: int,
            steps_per_epoch: int) -> Callable[[int], float]:
    floor = config.min_lr / base_lr if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.name == "constant":
            return 1.0
        if config.name == "step":
            return config.gamma ** (step // max(1, config.step_epochs * steps_per_epoch))
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor
