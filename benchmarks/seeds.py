"""Model quality as the project reports it: one recipe (+ overrides) run for several seeds, mean +- std.

Runs `faceauth.run(recipe, overrides + [seed=S])` for each seed, one after the other (with
`--seed-keys seed data.seed` every key named gets S: e.g. the dataset's own seed, which draws NUAA's
held-out validation subjects, so the split varies too, not only the training), and prints a
README table row: test ACER, APCER, BPCER and AUC as mean +- std (sample std, n - 1), the model's
parameters and the wall-clock minutes per run (with the load average, which on a shared machine
says how much those minutes are worth). The per-seed figures and the row are also written as JSON.

    python benchmarks/seeds.py recipes/liveness_nuaa.yaml data.root=/data/NUAA --seeds 0 1 2 \
        --label "CDC network" --out /tmp/seeds.json

Parameters are those of the model that is shipped: the trained network's weights from the run's
best checkpoint (the backbone and the binary head; BatchNorm statistics and training-only auxiliary
heads are not counted), or the linear classifier's weights of the `lbp` baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

FIGURES = ("acer", "apcer", "bpcer", "auc")
TRAINING_ONLY = ("pixel_head.", "fourier_head.")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def parameters(run_dir: Path) -> int:
    """Parameters of the model a run ships (see the module docstring)."""
    if (run_dir / "lbp.npz").is_file():
        with np.load(run_dir / "lbp.npz") as saved:
            return int(saved["coef"].size + saved["intercept"].size)
    from faceauth.training import checkpoint

    state = checkpoint.load(run_dir / "checkpoints" / "best.pt")["model"]
    return sum(v.numel() for k, v in state.items() if not k.endswith(BUFFERS) and not k.startswith(TRAINING_ONLY))


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def seed_overrides(keys: tuple[str, ...] | list[str], seed: int) -> list[str]:
    """The overrides that give every key of `keys` the value `seed`."""
    return [f"{key}={seed}" for key in keys]


def run_seeds(recipe: str, overrides: list[str], seeds: list[int], output_dir: str,
              seed_keys: tuple[str, ...] | list[str] = ("seed",)) -> list[dict[str, Any]]:
    import faceauth

    runs = []
    for seed in seeds:
        started, load = time.perf_counter(), os.getloadavg()[0]
        result = faceauth.run(recipe, [*overrides, *seed_overrides(seed_keys, seed), f"output_dir={output_dir}"])
        if "test" not in result.metrics:
            raise SystemExit(f"{result.dir}: the run has no test figures (stopped: {result.metrics.get('stopped')})")
        runs.append({"seed": seed, "dir": str(result.dir), "minutes": (time.perf_counter() - started) / 60,
                     "load_start": load, "load_end": os.getloadavg()[0], "parameters": parameters(result.dir),
                     **{k: result.metrics["test"][k] for k in FIGURES}, "best_epoch": result.metrics.get("best_epoch"),
                     "val_threshold": result.metrics.get("threshold")})
        print(json.dumps(runs[-1]), flush=True)
    return runs


def row(label: str, runs: list[dict[str, Any]], command: str) -> str:
    cells = [mean_std([r[k] for r in runs]) for k in FIGURES]
    params = runs[0]["parameters"]
    minutes = mean_std([r["minutes"] for r in runs]).replace(" (1 seed)", "")
    return f"| {label} | {' | '.join(cells)} | {params:,} | {minutes} | `{command}` |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed-keys", nargs="+", default=["seed"],
                        help="recipe keys that get each seed (default: seed; e.g. seed data.seed)")
    parser.add_argument("--label", default=None, help="the method's name in the table (default: the recipe's)")
    parser.add_argument("--output-dir", default="runs/seeds")
    parser.add_argument("--out", type=Path, default=None, help="also write the runs and the row here (JSON)")
    args = parser.parse_args()
    from faceauth.errors import FaceAuthError

    try:
        runs = run_seeds(args.recipe, args.overrides, args.seeds, args.output_dir, args.seed_keys)
    except FaceAuthError as exc:
        raise SystemExit(f"seeds.py: error: {exc}") from None
    command = (shlex.join(["faceauth-run", args.recipe, *args.overrides])
               + f"  # {'/'.join(args.seed_keys)} = each of {' '.join(map(str, args.seeds))}")
    line = row(args.label or Path(args.recipe).stem, runs, command)
    loads = ", ".join(f"{r['load_start']:.1f}-{r['load_end']:.1f}" for r in runs)
    print("| method | ACER | APCER | BPCER | AUC | parameters | minutes/run | command |")
    print("|---|---|---|---|---|---|---|---|")
    print(line)
    print(f"{os.cpu_count()} CPU cores, load average over the runs {loads}", file=sys.stderr)
    if args.out:
        from faceauth.io.paths import atomic_write

        with atomic_write(args.out) as handle:
            handle.write(json.dumps({"runs": runs, "row": line, "command": command}, indent=2).encode("utf-8"))


if __name__ == "__main__":
    main()
