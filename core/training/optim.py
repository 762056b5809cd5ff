"""Optimisers and learning-rate schedules from the recipe's ``optimizer`` and ``scheduler`` sections.

Schedules are stepped once per training step, so warm-up and cosine decay are smooth whatever the
epoch length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from faceauth.config.recipe import OptimizerConfig, SchedulerConfig

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0)
    return torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas[:2]), weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: SchedulerConfig, base_lr: float,
                    steps_per_epoch: int, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(1, steps_per_epoch * epochs)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    floor = config.min_lr / base_lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.name == "constant":
            return 1.0
        if config.name == "step":
            return config.gamma ** (step // max(1, config.step_epochs * steps_per_epoch))
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
