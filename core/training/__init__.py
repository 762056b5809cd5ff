"""The public training toolkit a trainer builds on, built-in or third-party.

- `run`: the `Run` a trainer's ``fit`` receives and the `FitResult` it returns; `protocol`: the `Trainer`
  protocol every trainer implements;
- `loop`: the epoch loop (`TrainingLoop`, its `Task` protocol and `LoopOptions`): steps, mixed precision,
  validation, model selection, checkpoints, exact resume, stops, torchrun;
- `loaders`, `transforms`, `samplers`: seeded per-sample augmentation, the epoch sampler, identity-balanced
  batches; `optim`: the recipe's optimizer and schedule;
- `checkpoint`, `weights`, `distributed`, `export`: checkpoint files, pretrained weights, processes and
  devices, and the `Bundle` a trainer hands to an exporter.
"""
