"""GPU training throughput of IResNet-50 + ArcFace: the model-step ceiling, and whole epochs of the trainer.

Step ceiling: synthetic 112x112 tensors already on the device, so the figure is the model's training
step alone (forward, margin loss, backward, SGD) — what a data pipeline must feed. For scale,
insightface reports about 5,400 samples/s for this model on 8 A100s (about 675 per GPU).

``--end-to-end`` also generates ``--images`` random-face JPEGs at 112x112 (once, into ``--data``) as
identity folders and as a RecordIO pack, then measures, for each layout:
- the data path: the trainer's own training loader (decode + the recipe's augmentations + collate +
  pinned copy to the device), images/s over one whole epoch, nothing trained;
- the whole trainer: ``recipes/embeddings_arcface_r50.yaml`` run by ``faceauth.run`` for
  ``--epochs`` epochs; images/s over whole epochs (the wall time between epoch ends, so epoch starts,
  validation and checkpoints count), and the median of its own per-epoch training rate;
each as a ratio to the step ceiling measured in the same call. On a CPU it refuses unless
``--allow-cpu`` (then it only checks that the script runs, on a tiny set).

    python benchmarks/bench_gpu.py [--batch 256] [--steps 50] [--dtype bfloat16|float16] [--channels-last] [--backbone iresnet50]
    python benchmarks/bench_gpu.py --end-to-end --images 50000 --workers 14 --batch 256 --channels-last
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import faceauth
from faceauth.config.registry import load_registry

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embeddings_arcface_r50.yaml"


def step_ceiling(device: torch.device, backbone: str, batch: int, steps: int, classes: int, dtype_name: str,
                 channels_last: bool, compile_model: bool) -> float:
    """Samples/s of the bare training step on synthetic inputs already on `device`."""
    registry = load_registry()
    backbone_record, loss_record = registry.get("backbone", backbone), registry.get("loss", "arcface")
    model = backbone_record.build(backbone_record.options()).to(device)
    head = loss_record.build(loss_record.options(), num_classes=classes, num_features=512).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    step_model = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    dtype = getattr(torch, dtype_name)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    x = torch.randn(batch, 3, 112, 112, device=device).to(memory_format=memory_format)
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = head(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(5 if device.type == "cuda" else 1):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _face(rng: np.random.Generator) -> np.ndarray:
    """A 112x112 RGB image with a face-like layout and per-image colour, so JPEG sizes are realistic."""
    yy, xx = np.mgrid[0:112, 0:112]
    skin = rng.uniform(90, 230, 3)
    image = np.clip(rng.normal(0, 12, (112, 112, 3)) + rng.uniform(20, 120, 3), 0, 255)
    face = ((xx - 56) / 38.0) ** 2 + ((yy - 60) / 48.0) ** 2 < 1
    image[face] = np.clip(skin + rng.normal(0, 10, (int(face.sum()), 3)), 0, 255)
    for cx in (40, 72):
        image[(xx - cx) ** 2 + (yy - 50) ** 2 < 25] = rng.uniform(0, 60, 3)
    image[(np.abs(xx - 56) < 14) & (np.abs(yy - 86) < 3)] = rng.uniform(60, 140, 3)
    return image.astype(np.uint8)


def generate(root: Path, images: int, per_identity: int = 50) -> tuple[Path, Path]:
    """Identity folders ``root/folders/<id>/<n>.jpg`` and the same images as ``root/recordio/train.rec``."""
    import cv2

    from faceauth.plugins.datasets.recordio import write_recordio

    folders, packed = root / "folders", root / "recordio"
    marker = root / f"done-{images}-{per_identity}"
    if marker.exists():
        return folders, packed
    rng = np.random.default_rng(0)
    payloads = []
    for i in range(images):
        ok, data = cv2.imencode(".jpg", _face(rng)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        identity = folders / f"id{i // per_identity:05d}"
        identity.mkdir(parents=True, exist_ok=True)
        (identity / f"{i % per_identity:03d}.jpg").write_bytes(data.tobytes())
        payloads.append((i // per_identity, data.tobytes()))
    packed.mkdir(parents=True, exist_ok=True)
    write_recordio(packed / "train", payloads)
    marker.touch()
    return folders, packed


class EpochClock:
    """A plugin recording the wall time of every epoch end (validation and checkpoints included)."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.rates: list[float] = []

    @faceauth.hookimpl
    def faceauth_train_start(self, run: Any) -> None:
        self.marks = [time.perf_counter()]

    @faceauth.hookimpl
    def faceauth_epoch_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.marks.append(time.perf_counter())
        self.rates.append(metrics.get("train/images_per_second", float("nan")))


def layout_overrides(name: str, root: Path, args: argparse.Namespace, output: Path) -> list[str]:
    return [f"backbone.name={args.backbone}", f"data.name={'identity_folder' if name == 'folders' else 'recordio'}", f"data.root={root}",
            f"trainer.batch_size={args.batch}", f"trainer.num_workers={args.workers}", f"trainer.epochs={args.epochs}",
            f"trainer.amp_dtype={args.dtype}", f"trainer.channels_last={str(args.channels_last).lower()}",
            "trainer.progress=false", f"output_dir={output}", "export=null",
            *(["data.val_identities=0.2"] if args.allow_cpu and not torch.cuda.is_available() else [])]


def data_path_rate(overrides: list[str], device: torch.device, max_batches: int | None) -> tuple[float, int]:
    """Images/s of the training loader a run of these overrides builds, over one whole epoch, copied to
    `device`; and the images one training epoch has."""
    from faceauth.config.recipe import load_recipe
    from faceauth.plugins.trainers.embedding import EmbeddingTask
    from faceauth.training.run import Run

    registry = load_registry()
    recipe = load_recipe(RECIPE, overrides, registry=registry)
    with tempfile.TemporaryDirectory() as scratch:
        run = Run(recipe, registry, Path(scratch))
        trainer = run.build("trainer")
        task = EmbeddingTask(run, trainer.options, trainer)
        loader = task.train_loader
        task.set_epoch(0, 0)
        seen, start = 0, time.perf_counter()
        for index, batch in enumerate(loader):
            batch["image"].to(device, non_blocking=True)
            seen += len(batch["label"])
            if max_batches is not None and index + 1 >= max_batches:
                break
        _sync(device)
        rate = seen / (time.perf_counter() - start)
        per_epoch = len(loader) * loader.batch_size
        run.close()
    return rate, per_epoch


def trainer_rate(overrides: list[str], per_epoch: int) -> tuple[float, float, float]:
    """Whole-epoch images/s (epoch-end to epoch-end), the trainer's median per-epoch training rate, and run seconds."""
    clock = EpochClock()
    start = time.perf_counter()
    faceauth.run(RECIPE, overrides, extra_plugins=[clock])
    total = time.perf_counter() - start
    epochs = np.diff(clock.marks)
    whole = float(per_epoch / np.median(epochs)) if len(epochs) else float("nan")
    return whole, float(statistics.median(clock.rates)) if clock.rates else float("nan"), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--backbone", default="iresnet50", help="any registered image backbone (the recipe's is iresnet50)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--workers", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "faceauth-bench-gpu")
    parser.add_argument("--allow-cpu", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device: run this on a GPU machine (or --allow-cpu to check the script)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":  # a check that the script runs, not a measurement
        args.batch, args.steps, args.images, args.workers, args.epochs = 8, 2, 96, 0, 1
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    ceiling = step_ceiling(device, args.backbone, args.batch, args.steps, args.classes, args.dtype, args.channels_last,
                           args.compile)
    print(f"{args.backbone} + arcface ({args.classes} classes), batch {args.batch}, {args.dtype}, "
          f"channels_last={args.channels_last}, compile={args.compile}, on {name}: {ceiling:.1f} samples/s")
    if not args.end_to_end:
        return
    folders, packed = generate(args.data, args.images, per_identity=50 if device.type == "cuda" else 8)
    rows = []
    with tempfile.TemporaryDirectory() as output:
        for layout, root in (("folders", folders), ("recordio", packed)):
            overrides = layout_overrides(layout, root, args, Path(output))
            loader, per_epoch = data_path_rate(overrides, device, None if device.type == "cuda" else 4)
            whole, median, seconds = trainer_rate(overrides, per_epoch)
            rows.append((layout, loader, whole, median, seconds))
    print(f"\n{'layout':<10} {'data path':>10} {'x ceiling':>9} {'epochs':>9} {'x ceiling':>9} "
          f"{'step median':>11} {'x ceiling':>9} {'run s':>7}")
    for layout, loader, whole, median, seconds in rows:
        print(f"{layout:<10} {loader:>10.1f} {loader / ceiling:>9.2f} {whole:>9.1f} {whole / ceiling:>9.2f} "
              f"{median:>11.1f} {median / ceiling:>9.2f} {seconds:>7.1f}")


if __name__ == "__main__":
    main()
