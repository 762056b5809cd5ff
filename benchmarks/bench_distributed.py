"""Several processes: training samples/s of one recipe under torchrun with 1 process and with 2.

Both runs launch the documented way, ``torchrun --standalone --nproc_per_node=N -m faceauth
RECIPE`` (as ``python -m torch.distributed.run``, the venv's torchrun), with the same recipe: the
example plugin's `tiny_cnn` (group norm, so the split of a batch does not change the result) on its
`stripes` images, global batch 64, SGD, no augmentation, no DataLoader workers, one epoch. On a
2-core machine the fair comparison gives each run both cores: 1 process with 2 PyTorch threads
against 2 processes with 1 thread each (OMP_NUM_THREADS, set explicitly); 1 process with 1 thread
shows what the second thread adds.

What is timed, from the run's own outputs: with `trainer.log_every: 1` rank 0 writes every step's
loss to TensorBoard, and all ranks wait for each other at every step (DDP's gradient all-reduce),
so the interval between consecutive logged wall times is one global step, data loading included.
samples/s = global batch / the median step time after the warm-up steps (of all rounds, and per
round); start-up (imports, the process group, building the model) is left out. The trainer's own `train/images_per_second`
(samples of the whole epoch over its wall time, warm-up included, summed over ranks) and the wall
time of each torchrun command (start-up included) are shown beside it. Rounds alternate between
the configurations so a burst of load on the shared machine hits all of them.

    python benchmarks/bench_distributed.py [--rounds 3] [--steps 60] [--width 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import load_average, logged_step_seconds, logged_values, table

BATCH, WARMUP = 64, 3
# (processes, threads per process): the first two use both cores; 1 x 1 shows what the second thread adds
CONFIGS = ((1, 2), (2, 1), (1, 1))


def recipe(steps: int, width: int, output_dir: Path) -> dict:
    return {
        "seed": 0, "output_dir": str(output_dir),
        "data": {"name": "stripes", "train": BATCH * (steps + WARMUP), "val": 64, "test": 64, "size": 32},
        "backbone": {"name": "tiny_cnn", "width": width, "norm": "group"},
        "loss": {"name": "cross_entropy"},
        "trainer": {"name": "classifier", "epochs": 1, "batch_size": BATCH, "num_workers": 0, "progress": False,
                    "channels_last": False, "log_every": 1,
                    "augment": {"hflip": False, "crop_scale": 1.0, "rotation": 0.0, "color_jitter": 0.0}},
        "optimizer": {"name": "sgd", "lr": 0.05}, "scheduler": {"name": "constant"}, "export": None,
    }


def torchrun(processes: int, threads: int, path: Path, run_name: str) -> float:
    """Run the recipe under torchrun; returns the command's wall seconds."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "faceauth", str(path), f"run_name={run_name}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FACEAUTH_PLUGINS": "faceauth,faceauth-example-plugin"}
    start = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run, after the warm-up steps")
    parser.add_argument("--width", type=int, default=64, help="tiny_cnn width (channels of its first layer)")
    args = parser.parse_args()
    load_before = load_average()
    steps: dict[tuple[int, int], list[list[float]]] = {c: [] for c in CONFIGS}
    epoch: dict[tuple[int, int], list[float]] = {c: [] for c in CONFIGS}
    wall: dict[tuple[int, int], list[float]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "distributed.yaml"
        path.write_text(yaml.safe_dump(recipe(args.steps, args.width, Path(tmp) / "runs")))
        for round_ in range(args.rounds):
            for config in CONFIGS:
                name = f"p{config[0]}_t{config[1]}_r{round_}"
                wall[config].append(torchrun(*config, path, name))
                run_dir = Path(tmp) / "runs" / name
                steps[config].append(logged_step_seconds(run_dir, after_step=WARMUP))
                epoch[config] += logged_values(run_dir, "train/images_per_second")
    rate = {c: BATCH / statistics.median([t for r in rounds for t in r]) for c, rounds in steps.items()}
    rows = [("processes x threads", "samples/s (median step)", "per round", "trainer's epoch samples/s",
             "torchrun wall s")]
    for config in CONFIGS:
        rows.append((f"{config[0]} x {config[1]}", f"{rate[config]:.0f}",
                     " ".join(f"{BATCH / statistics.median(r):.0f}" for r in steps[config]),
                     " ".join(f"{v:.0f}" for v in epoch[config]),
                     " ".join(f"{v:.1f}" for v in wall[config])))
    print(table(rows))
    print(f"ratio 2 processes x 1 thread / 1 process x 2 threads (median step): {rate[2, 1] / rate[1, 2]:.2f}x")
    print(f"tiny_cnn width {args.width} (group norm), stripes 32x32, global batch {BATCH}, {args.steps} timed steps "
          f"after {WARMUP} warm-up per run, {args.rounds} alternating rounds, no DataLoader workers; threads set "
          f"with OMP_NUM_THREADS")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {load_before} before and {load_average()} after")
    print(f"command: python benchmarks/bench_distributed.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
