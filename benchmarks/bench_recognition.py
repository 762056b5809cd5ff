"""Recognition backbones: train-step images/s of the embedding trainer vs. a hand-written PyTorch loop,
and inference latency of the exported embedding models, onnxruntime vs. eager PyTorch.

Training: for each backbone, faceauth's `embedding` trainer (through `faceauth.run`) and a
hand-written loop train the same network (registry-built, channels-last) with the same ArcFace
module (scale 32, margin 0.3), SGD, demo identities, train transforms, batch size, DataLoader
workers and thread count. Rounds alternate between the two; the first steps of each are warm-up
and are not counted. A step's time is the interval between the ends of consecutive steps (data
loading included): for the trainer, from the wall times TensorBoard recorded at each step; for the
loop, from its own clock. images/s = batch / the median step time over all rounds, which keeps a
burst of load from another process on the machine from deciding the figure.

Inference: each model is exported as the trainer exports it (normalised embedding) through the
`onnx` exporter plugin, then timed at batch 1 and 32, one engine at a time, onnxruntime with its
thread spinning disabled.

    python benchmarks/bench_recognition.py [--backbones mobilefacenet,iresnet18] [--rounds 2] [--no-onnx]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from common import eager_and_onnx_seconds, load_average, logged_step_seconds, run_recipe, step_times, table
from torch.utils.data import DataLoader

from faceauth.config.registry import load_registry
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.training.loaders import Transformed
from faceauth.training.samplers import EpochSampler

WORKERS, WARMUP = 2, 2
# backbone: (batch size, timed steps). Training costs 6.6 (mobilefacenet), 2.9 (resnet18 at 112),
# 15.6 (iresnet18), 37.8 (iresnet50) and 8.5 (facenet at 160) GFLOP per image, so on 2 CPU cores
# the big networks take small batches to keep a round within half a minute.
TRAINING = {"mobilefacenet": (16, 5), "resnet18": (32, 5), "iresnet18": (8, 4), "iresnet50": (4, 4),
            "facenet": (8, 4)}
EXPORTED = ("mobilefacenet", "iresnet50", "facenet")
DATA = {"name": "demo_identities", "val_identities": 0.0}   # 480 images of 40 people, all trained on
LOSS = {"name": "arcface", "scale": 32.0, "margin": 0.3}
OPTIMIZER = {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0005}


def _build(kind: str, section: dict, **kwargs):
    record = load_registry().get(kind, section["name"])
    options = record.options(**{k: v for k, v in section.items() if k != "name"})
    return record.build(options, **kwargs)


# --- training -----------------------------------------------------------------------------------


def hand_loop(name: str, batch: int, steps: int) -> list[float]:
    """Seconds of each timed step of a hand-written training loop."""
    from faceauth.plugins.trainers.embedding import EmbeddingOptions
    from faceauth.training.transforms import train_transform

    torch.manual_seed(0)
    splits = _build("dataset", DATA)
    model = _build("backbone", {"name": name}).to(memory_format=torch.channels_last)
    head = _build("loss", LOSS, num_classes=len(splits.classes), num_features=model.num_features)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=OPTIMIZER["lr"], momentum=OPTIMIZER["momentum"],
                                weight_decay=OPTIMIZER["weight_decay"])
    data = Transformed(splits.train, train_transform(model.preprocess, EmbeddingOptions().augment))
    loader = DataLoader(data, batch_size=batch, sampler=EpochSampler(len(data), seed=0, shuffle=True),
                        num_workers=WORKERS, drop_last=True, persistent_workers=True)
    model.train()
    head.train()

    def step(batch_: dict) -> int:
        x = batch_["image"].contiguous(memory_format=torch.channels_last)
        loss = head(model(x), batch_["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(x)

    return [seconds for _, seconds in step_times(loader, step, steps, WARMUP)]


def faceauth_trainer(name: str, batch: int, steps: int, workdir: Path) -> list[float]:
    """Seconds of each timed step of the embedding trainer, from its TensorBoard wall times."""
    recipe = {
        "seed": 0, "output_dir": str(workdir), "device": "cpu", "data": DATA, "backbone": {"name": name},
        "loss": LOSS, "optimizer": OPTIMIZER, "scheduler": {"name": "constant"}, "export": None,
        "trainer": {"name": "embedding", "epochs": 1, "batch_size": batch, "num_workers": WORKERS,
                    "progress": False, "max_steps": steps + WARMUP, "log_every": 1},
    }
    result = run_recipe(recipe, workdir)
    return logged_step_seconds(result.dir, after_step=WARMUP)


def bench_training(names: list[str], rounds: int, workdir: Path, steps_override: int | None
                   ) -> list[tuple[str, ...]]:
    images = len(_build("dataset", DATA).train)
    rows = [("backbone", "input", "batch", "hand images/s", "faceauth images/s", "ratio",
             "per round (hand / faceauth)")]
    for name in names:
        batch, steps = TRAINING[name]
        steps = steps_override or steps
        if steps + WARMUP > images // batch:  # the trainer must stop inside its first epoch
            raise SystemExit(f"{name}: {steps + WARMUP} steps of {batch} exceed the {images} demo images")
        hand: list[list[float]] = []
        ours: list[list[float]] = []
        for round_ in range(rounds):
            hand.append(hand_loop(name, batch, steps))
            ours.append(faceauth_trainer(name, batch, steps, workdir / f"{name}-{round_}"))

        def rate(times: list[float]) -> float:
            return batch / statistics.median(times)

        h, o = rate([t for r in hand for t in r]), rate([t for r in ours for t in r])
        size = _build("backbone", {"name": name}).preprocess.input_size[0]
        rows.append((name, str(size), str(batch), f"{h:.1f}", f"{o:.1f}", f"{o / h:.3f}",
                     " ".join(f"{rate(r):.1f}" for r in hand) + " / " + " ".join(f"{rate(r):.1f}" for r in ours)))
        print(" ".join(rows[-1]), file=sys.stderr, flush=True)  # progress; the table comes at the end
    return rows


# --- inference ----------------------------------------------------------------------------------


def bench_onnx(names: list[str], repeats: dict[int, int], workdir: Path, threads: int | None
               ) -> list[tuple[str, ...]]:
    from faceauth.plugins.trainers.embedding import EmbeddingModel
    from faceauth.training.export import Bundle

    rows = [("backbone", "batch", "eager PyTorch ms", "onnxruntime ms", "speed-up")]
    for name in names:
        torch.manual_seed(0)
        backbone = _build("backbone", {"name": name})
        model = EmbeddingModel(backbone).eval()
        h, w = backbone.preprocess.input_size
        bundle = Bundle(module=model, example_inputs=(torch.randn(2, 3, h, w),), input_names=("input",),
                        output_names=("embedding",),
                        dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, metadata={})
        path = OnnxExporter(OnnxOptions()).export(bundle, workdir / f"{name}.onnx")
        for batch, count in repeats.items():
            x = torch.randn(batch, 3, h, w)
            eager, ort_time = eager_and_onnx_seconds(model, path, x, count, warmup=1, threads=threads)
            rows.append((f"{name} ({h}x{w})", str(batch), f"{eager * 1e3:.1f}", f"{ort_time * 1e3:.1f}",
                         f"{eager / ort_time:.2f}x"))
            print(" ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(TRAINING), help=f"of {', '.join(TRAINING)}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round (default: per backbone)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads of both loops and eager inference (default: PyTorch's); 1 is steadier "
                             "when other processes load the machine")
    parser.add_argument("--onnx-backbones", default=",".join(EXPORTED))
    parser.add_argument("--repeats", default="1:15,32:4", help="batch:repeats of the latency timings")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.backbones.split(",") if n]
    unknown = [n for n in names if n not in TRAINING]
    if unknown:
        parser.error(f"--backbones: unknown {', '.join(unknown)} (known: {', '.join(TRAINING)})")
    repeats = {int(b): int(r) for b, r in (item.split(":") for item in args.repeats.split(","))}
    if args.threads:
        torch.set_num_threads(args.threads)
    _build("dataset", DATA)  # render the demo identities before anything is timed
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_train:
            print(table(bench_training(names, args.rounds, Path(tmp), args.steps)))
            print(f"embedding trainer vs hand loop: ArcFace (s=32, m=0.3), SGD, channels-last, {WORKERS} workers, "
                  f"{WARMUP} warm-up steps, median step time over {args.rounds} alternating rounds\n")
        if not args.no_onnx:
            onnx_names = [n for n in args.onnx_backbones.split(",") if n]
            print(table(bench_onnx(onnx_names, repeats, Path(tmp), args.threads)))
            print(f"exported embedding models (onnx exporter, opset {OnnxOptions().opset}); median of "
                  f"{', '.join(f'{r} at batch {b}' for b, r in repeats.items())} calls")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load_before} before and "
          f"{load_average()} after")
    print(f"command: python benchmarks/bench_recognition.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
