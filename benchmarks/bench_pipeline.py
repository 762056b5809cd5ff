"""Input-pipeline throughput: faceauth's image loader vs. torchvision's ImageFolder + DataLoader.

Both read the demo set's train split (`folder` layout, 600 JPEGs at 112x112) and apply the same
liveness train transform with the presentation-attack augmentations switched on, plus the
simulated print/replay artefacts on spoof samples only, with the same batch size and worker count:

* faceauth: `faceauth.training.loaders.Transformed` through `faceauth.training.loaders.image_loader`, as the
  trainers wire it (per-sample seeds from `EpochSampler`; the spoof artefacts run inside the
  sample's seeded block, on SPOOF samples only);
* torchvision: `ImageFolder` over a temporary tree of symlinks (live/, spoof/ -> the split's folders,
  so spoof/print and spoof/replay are one class), shuffled by the DataLoader, no per-sample seeding.

Rounds alternate the order of the loaders; each figure is over `--batches` batches after two
warm-up batches (worker start): images per wall second, and images per CPU second (main process
plus workers), which a busy shared machine disturbs far less. The table shows medians over rounds
and their ratios. It also times each step alone (CPU time, one thread) at the size it runs at. The
1-minute load average is printed before and after: re-run when it is near or above the core count.

    python benchmarks/bench_pipeline.py [--batches 40] [--rounds 5] [--workers 2] [--size 64]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import load_average, table
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from faceauth.config.registry import load_registry
from faceauth.plugins.datasets.folder import DemoOptions, build_demo
from faceauth.training import loaders
from faceauth.training import transforms as fa_transforms
from faceauth.training.transforms import AugmentOptions, spoof_transform, train_transform

BATCH = 32
# The liveness recipe's defaults with every presentation-attack augmentation on.
AUGMENT = AugmentOptions(gamma=0.2, blur=0.3, blur_sigma=1.5, jpeg=0.5, jpeg_quality=30,
                         print_artefacts=0.25, replay_artefacts=0.25, artefact_strength=0.3)


# --- faceauth -------------------------------------------------------------------------------------


def faceauth_loader(train: Any, transform: Any, spoof: Any, workers: int) -> DataLoader:
    return loaders.image_loader(train, transform, batch_size=BATCH, num_workers=workers, seed=0, shuffle=True,
                             spoof_transform=spoof)


# --- torchvision ----------------------------------------------------------------------------------


class SpoofAwareFolder(ImageFolder):
    """ImageFolder applying the spoof artefacts to the 'spoof' class before its transform."""

    def __init__(self, root: str, transform: Any, spoof: Any):
        super().__init__(root, transform=transform)
        self.spoof, self.spoof_index = spoof, self.class_to_idx["spoof"]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        image = self.loader(path)
        if self.spoof is not None and target == self.spoof_index:
            image = self.spoof(image)
        return self.transform(image), target


def class_tree(split_dir: Path, tmp: Path) -> Path:
    """live/ and spoof/ as symlinks: ImageFolder's two classes over the split's own files."""
    for name in ("live", "spoof"):
        (tmp / name).symlink_to(split_dir / name, target_is_directory=True)
    return tmp


def torchvision_loader(root: Path, transform: Any, spoof: Any, workers: int) -> DataLoader:
    data = SpoofAwareFolder(str(root), transform, spoof)
    return DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


# --- measurements ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process and its live multiprocessing children (the DataLoader workers)."""
    total = time.process_time()
    for child in multiprocessing.active_children():
        try:
            with open(f"/proc/{child.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def images_per_second(loader: DataLoader, batches: int, warmup: int = 2) -> tuple[float, float]:
    """(images per wall second, images per CPU second) over `batches` batches after `warmup`.

    CPU seconds are summed over the main process and the workers: the figure a busy shared machine
    disturbs least. The loader is iterated again from the start when an epoch ends.
    """
    seen, done, wall, cpu = 0, 0, 0.0, 0.0
    while done < warmup + batches:
        for batch in loader:
            if done == warmup:
                seen, wall, cpu = 0, time.perf_counter(), cpu_seconds()
            seen += len(batch["label"] if isinstance(batch, dict) else batch[1])
            done += 1
            if done == warmup + batches:
                break
    rates = seen / (time.perf_counter() - wall), seen / (cpu_seconds() - cpu)
    del loader  # shuts its persistent workers down before the next loader starts
    return rates


def median_cpu_us(fn: Any, repeats: int = 300, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.process_time_ns()
        fn()
        samples.append(time.process_time_ns() - start)
    return statistics.median(samples) / 1e3


def step_costs(train: Any, preprocess: Any) -> list[tuple[str, str]]:
    """Median CPU microseconds of one call of each step, at the size it runs at, on one thread.

    The spoof artefacts run on the decoded 112x112 image; the train-transform steps after the
    resize, at input size. Seeding costs are per sample.
    """
    source = train[len(train) - 1]["image"]
    resized = source.resize(preprocess.input_size[::-1])
    size = f"{preprocess.input_size[0]}x{preprocess.input_size[1]}"
    torch.manual_seed(0)
    steps = [
        ("print artefacts", "112x112", fa_transforms.SpoofArtefacts(1.0, 0.0, AUGMENT.artefact_strength), source),
        ("replay artefacts", "112x112", fa_transforms.SpoofArtefacts(0.0, 1.0, AUGMENT.artefact_strength), source),
        (f"gamma (strength {AUGMENT.gamma})", size, fa_transforms.RandomGamma(AUGMENT.gamma), resized),
        ("blur (p=1)", size, fa_transforms.RandomBlur(1.0, AUGMENT.blur_sigma), resized),
        ("jpeg (p=1)", size, fa_transforms.RandomJpeg(1.0, AUGMENT.jpeg_quality), resized),
        ("color_jitter (existing)", size, v2.ColorJitter(0.15, 0.15, 0.15, 0.0375), resized),
        ("whole train transform", "112x112", train_transform(preprocess, AUGMENT), source),
        ("read_image (JPEG decode)", "112x112", lambda _: train[len(train) - 1], None),
        ("per-sample seeding", "", _generator_seed, None),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        return [(name, where, f"{median_cpu_us(lambda: fn(image)):.0f}") for name, where, fn, image in steps]
    finally:
        torch.set_num_threads(threads)


def _generator_seed(_: Any) -> None:  # as `Transformed.__getitem__` seeds each sample
    state = torch.default_generator.get_state()
    torch.default_generator.manual_seed(1234567)
    torch.default_generator.set_state(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="model input size (the liveness recipe's: 64)")
    parser.add_argument("--no-costs", action="store_true", help="skip the per-augmentation timings")
    args = parser.parse_args()

    splits = build_demo(DemoOptions())  # rendered once into the cache, before any timing
    backbone = load_registry().get("backbone", "resnet18")
    preprocess = backbone.preprocess(backbone.options(input_size=args.size))  # the record's: no network built
    transform, spoof = train_transform(preprocess, AUGMENT), spoof_transform(AUGMENT)
    split_dir = Path(splits.info["root"]) / "train"
    print(f"before: {load_average()} ({os.cpu_count()} CPUs)")
    if not args.no_costs:
        print(table([("step", "at", "CPU us/call (median)"), *step_costs(splits.train, preprocess)]))
        print()

    names = ["faceauth", "torchvision"]
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        root = class_tree(split_dir, Path(tmp))
        make = {
            "faceauth": lambda: faceauth_loader(splits.train, transform, spoof, args.workers),
            "torchvision": lambda: torchvision_loader(root, transform, spoof, args.workers),
        }
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                rates[name].append(images_per_second(make[name](), args.batches))

    wall_base = statistics.median(r[0] for r in rates["torchvision"])
    cpu_base = statistics.median(r[1] for r in rates["torchvision"])
    rows = [("loader", "images/s", "vs. torchvision", "images/CPU-s", "vs. torchvision", "images/s by round")]
    for name in names:
        wall, cpu = statistics.median(r[0] for r in rates[name]), statistics.median(r[1] for r in rates[name])
        rows.append((name, f"{wall:.0f}", f"{wall / wall_base:.3f}x", f"{cpu:.0f}", f"{cpu / cpu_base:.3f}x",
                     " ".join(f"{r[0]:.0f}" for r in rates[name])))
    print(table(rows))
    print(f"after: {load_average()}; torch {torch.__version__}, batch {BATCH}, {args.workers} workers, "
          f"{args.batches} batches/round, {args.rounds} rounds, input {args.size}x{args.size}")
    print(f"augment: {AUGMENT}")


if __name__ == "__main__":
    main()
