"""Trainer overhead: images/s of faceauth's classifier trainer vs. a hand-written PyTorch loop.

Both train the same backbone (ResNet-18 by default, or `--backbone` at `--size`; channels-last,
AdamW) on the same demo images with the same transforms, batch size, worker count and thread
count; rounds alternate so drift hits both alike.

    python benchmarks/bench_trainer.py [--steps 30] [--rounds 3] [--backbone cdcn --size 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import logged_images_per_second, run_recipe, table, timed_steps
from torch.utils.data import DataLoader

from faceauth.config.registry import load_registry
from faceauth.plugins.datasets.folder import DemoOptions, build_demo
from faceauth.training.loaders import Transformed
from faceauth.training.samplers import EpochSampler
from faceauth.training.transforms import AugmentOptions, train_transform

BATCH, WORKERS, SIZE = 32, 2, 64


def hand_loop(steps: int, name: str = "resnet18", size: int = SIZE) -> float:
    splits = build_demo(DemoOptions())
    entry = load_registry().get("backbone", name)
    backbone = entry.build(entry.options(input_size=size))
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, 2))
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = Transformed(splits.train, train_transform(backbone.preprocess, AugmentOptions()))
    loader = DataLoader(data, batch_size=BATCH, sampler=EpochSampler(len(data), seed=0, shuffle=True),
                        num_workers=WORKERS, drop_last=True, persistent_workers=True)
    model.train()

    def step(batch: dict[str, Any]) -> int:
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(x)

    return timed_steps(loader, step, steps)


def faceauth_trainer(steps: int, workdir: Path, name: str = "resnet18", size: int = SIZE) -> float:
    recipe = {
        "output_dir": str(workdir), "data": {"name": "demo"},
        "backbone": {"name": name, "input_size": size}, "loss": {"name": "cross_entropy"},
        "trainer": {"name": "classifier", "epochs": 1, "batch_size": BATCH, "num_workers": WORKERS,
                    "progress": False, "max_steps": steps + 5, "log_every": 5},
        "optimizer": {"name": "adamw", "lr": 1e-3}, "scheduler": {"name": "constant"}, "export": None,
    }
    return logged_images_per_second(run_recipe(recipe, workdir).dir, BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=SIZE)
    args = parser.parse_args()
    build_demo(DemoOptions())  # render the demo set before timing anything
    hand, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            hand.append(hand_loop(args.steps, args.backbone, args.size))
            ours.append(faceauth_trainer(args.steps, Path(tmp) / f"r{round_}", args.backbone, args.size))
    h, o = statistics.median(hand), statistics.median(ours)
    print(table([("loop", "images/s (median)", "rounds"),
                 ("hand-written PyTorch", f"{h:.1f}", " ".join(f"{v:.1f}" for v in hand)),
                 ("faceauth classifier", f"{o:.1f}", " ".join(f"{v:.1f}" for v in ours)),
                 ("ratio faceauth/hand", f"{o / h:.3f}", "")]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, {WORKERS} workers, "
          f"{args.size}x{args.size}, {args.backbone}")


if __name__ == "__main__":
    main()
