"""Temporal liveness: the clip data path, train steps of the `lstm` model, and ONNX vs. eager latency.

1. Data path: render the demo videos, then build the clip dataset and read every clip through the
   evaluation transform, first from the videos (count frames, decode, crop, cache) and then from
   the cache alone; clips/s of each pass.
2. Training: clips/s of train steps of the same `lstm` model (ResNet-18 encoder, AdamW) through
   faceauth's classifier trainer and through a hand-written loop over the same data, transforms,
   batch size and workers; rounds alternate so drift hits both alike.
3. Inference: median latency of one clip of 8 and of 16 frames, eager PyTorch vs. onnxruntime
   (thread spinning disabled) on the exported model, whose clip length is dynamic.

Figures are printed and written to /tmp/temporal_figures.md.

    python benchmarks/bench_temporal.py [--steps 15] [--rounds 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch
from common import eager_and_onnx_seconds, logged_images_per_second, table, timed_steps
from torch.utils.data import DataLoader

import faceauth
from faceauth.config.build import Components
from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.plugins.backbones import temporal
from faceauth.plugins.datasets import clips, demo_clips
from faceauth.plugins.datasets.demo_clips import DemoClipsOptions
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.plugins.trainers.classifier import Classifier, LivenessScore
from faceauth.training.export import Bundle
from faceauth.training.loaders import Transformed
from faceauth.training.samplers import EpochSampler
from faceauth.training.transforms import AugmentOptions, eval_transform, train_transform

BATCH, WORKERS, SIZE, LENGTH = 8, 2, 64, 8
DEMO = {"train": 240, "val": 20, "test": 20}  # enough training clips for the timed steps to stay in one epoch
FIGURES = Path("/tmp/temporal_figures.md")


def plugins() -> list[Any]:
    """`lstm`, `video_folder` and `demo_clips` in code, for as long as the package hooks do not list them."""
    registry, found = load_registry(), []
    if "lstm" not in registry.names("backbone"):
        found.append(types.SimpleNamespace(__name__="bench_temporal_backbone",
                                           faceauth_backbones=faceauth.hookimpl(temporal.backbones)))
    if "demo_clips" not in registry.names("dataset"):
        found.append(types.SimpleNamespace(__name__="bench_clip_datasets", faceauth_datasets=faceauth.hookimpl(
            lambda: [*clips.datasets(), *demo_clips.datasets()])))
    return found


def recipe(workdir: Path, steps: int) -> dict[str, Any]:
    return {
        "output_dir": str(workdir), "data": {"name": "demo_clips", **DEMO, "clip_length": LENGTH},
        "backbone": {"name": "lstm", "encoder": {"name": "resnet18", "input_size": SIZE}, "clip_length": LENGTH},
        "loss": {"name": "cross_entropy"},
        "trainer": {"name": "classifier", "epochs": 1, "batch_size": BATCH, "num_workers": WORKERS,
                    "progress": False, "max_steps": steps + 3, "log_every": 1},
        "optimizer": {"name": "adamw", "lr": 1e-3}, "scheduler": {"name": "constant"}, "export": None,
    }


def build_model(steps: int = 1) -> torch.nn.Module:
    registry = load_registry(plugins())
    components = Components(registry, load_recipe(None, registry=registry, base=recipe(Path("."), steps)))
    torch.manual_seed(0)
    options = temporal.LstmOptions(encoder={"name": "resnet18", "input_size": SIZE}, clip_length=LENGTH)
    return Classifier(temporal.build(options, components), 2)


# ---- 1. data path ------------------------------------------------------------------------------------

def read_all(dataset: Any, preprocess: Any) -> int:
    loader = DataLoader(Transformed(dataset, eval_transform(preprocess)), batch_size=BATCH,
                        sampler=EpochSampler(len(dataset), seed=0, shuffle=False), num_workers=0)
    return sum(len(batch["label"]) for batch in loader)


def data_path() -> list[tuple[str, ...]]:
    options = DemoClipsOptions(**DEMO, clip_length=LENGTH)
    preprocess = build_model().backbone.preprocess
    videos = sum(DEMO.values())
    start = time.perf_counter()
    demo_clips.demo_clips_root(options)
    render = time.perf_counter() - start
    rows = [("render demo videos", f"{videos} videos x {options.frames} frames", f"{render:.1f} s",
             f"{videos / render:.1f} videos/s")]
    for label in ("first pass (decode, crop, cache)", "from the cache"):
        start = time.perf_counter()
        splits = demo_clips.build_demo_clips(options)
        built = time.perf_counter() - start
        count = sum(read_all(d, preprocess) for d in (splits.train, splits.val, splits.test))
        total = time.perf_counter() - start
        rows.append((label, f"{count} clips of {LENGTH}", f"build {built:.2f} s + read {total - built:.2f} s",
                     f"{count / total:.1f} clips/s"))
    return rows


# ---- 2. training -------------------------------------------------------------------------------------

def hand_loop(steps: int) -> float:
    model = build_model()
    splits = demo_clips.build_demo_clips(DemoClipsOptions(**DEMO, clip_length=LENGTH))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = Transformed(splits.train, train_transform(model.backbone.preprocess, AugmentOptions()))
    loader = DataLoader(data, batch_size=BATCH, sampler=EpochSampler(len(data), seed=0, shuffle=True),
                        num_workers=WORKERS, drop_last=True, persistent_workers=True)
    model.train()

    def step(batch: dict[str, Any]) -> int:
        loss = torch.nn.functional.cross_entropy(model(batch["frames"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(batch["label"])

    return timed_steps(loader, step, steps)


def faceauth_trainer(steps: int, workdir: Path, overrides: tuple[str, ...] = ()) -> float:
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(recipe(workdir, steps)))
    result = faceauth.run(path, list(overrides), extra_plugins=plugins())
    return logged_images_per_second(result.dir, BATCH, after_step=3)  # clips/s: the loop counts samples


def training(steps: int, rounds: int) -> list[tuple[str, ...]]:
    variants = {"faceauth classifier": (), "faceauth, trainer.channels_last=false": ("trainer.channels_last=false",)}
    hand: list[float] = []
    ours: dict[str, list[float]] = {name: [] for name in variants}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            hand.append(hand_loop(steps))
            for name, overrides in variants.items():
                if name in failed:
                    continue
                try:
                    ours[name].append(faceauth_trainer(steps, Path(tmp) / f"r{round_}-{len(overrides)}", overrides))
                except Exception as exc:  # noqa: BLE001 - a trainer without clip support: report it, time the rest
                    failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    # On a shared machine other processes slow some rounds down a lot: the best round is the
    # steadier estimate of what each loop costs, the median is shown beside it.
    h = max(hand)
    rows = [("hand-written PyTorch", f"{h:.2f}", f"{statistics.median(hand):.2f}", " ".join(f"{v:.2f}" for v in hand),
             "1.000")]
    for name, values in ours.items():
        if name in failed:
            rows.append((name, "failed", "", failed[name][:90], ""))
        else:
            rows.append((name, f"{max(values):.2f}", f"{statistics.median(values):.2f}",
                         " ".join(f"{v:.2f}" for v in values), f"{max(values) / h:.3f}"))
    return rows


# ---- 3. inference ------------------------------------------------------------------------------------

def inference(repeats: int) -> list[tuple[str, ...]]:
    model = LivenessScore(build_model()).eval()
    generator = torch.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        example = torch.randn(2, LENGTH, 3, SIZE, SIZE, generator=generator)
        bundle = Bundle(module=model, example_inputs=(example,), input_names=("input",),
                        output_names=("score", "logits"),
                        dynamic_axes={"input": {0: "batch", 1: "time"}, "score": {0: "batch"}, "logits": {0: "batch"}},
                        metadata={}, check_inputs=tuple((torch.randn(1, t, 3, SIZE, SIZE, generator=generator),)
                                                        for t in (4, 16)))
        path = OnnxExporter(OnnxOptions()).export(bundle, Path(tmp) / "temporal.onnx")
        for length in (8, 16):
            x = torch.randn(1, length, 3, SIZE, SIZE, generator=generator)
            eager, ort_time = eager_and_onnx_seconds(model, path, x, repeats)
            rows.append((f"1 clip x {length} frames", f"{eager * 1e3:.1f}", f"{ort_time * 1e3:.1f}",
                         f"{eager / ort_time:.2f}x"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FACEAUTH_CACHE"] = cache  # a cold cache: the first pass really decodes
        sections = [
            ("Clip data path (demo_clips, 64x64, no detector)", ("pass", "work", "seconds", "rate"), data_path()),
            ((f"Train steps, lstm (resnet18 {SIZE}x{SIZE} + LSTM 128), batch {BATCH} clips of {LENGTH}, "
              f"{WORKERS} workers, {args.steps} steps after warm-up"),
             ("loop", "clips/s (best)", "median", "rounds", "best / hand"), training(args.steps, args.rounds)),
            (f"Inference latency (median of {args.repeats})", ("input", "eager ms", "onnxruntime ms", "speed-up"),
             inference(args.repeats)),
        ]
    environment = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
                   f"load average {os.getloadavg()[0]:.1f} at the end")
    text = "\n\n".join(f"{title}\n\n{table([header, *rows])}" for title, header, rows in sections)
    print(f"{text}\n\n{environment}")
    FIGURES.write_text(f"# Temporal liveness figures\n\n```\n{text}\n```\n\n{environment}\n", encoding="utf-8")


if __name__ == "__main__":
    main()
