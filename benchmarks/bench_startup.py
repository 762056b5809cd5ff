"""Start-up time of the command-line tools, each a fresh process: ``faceauth-run --help``, ``--version``,
``--list``, ``--print-recipe liveness_resnet18`` (which builds the recipe's options classes, so it
imports their modules), and a bare ``python -c pass`` as the interpreter's own floor.

The figures are seconds (median and fastest of the repeats), not ratios: the targets are absolute
(``--help`` under 1 s, ``--list`` under 3 s). The load average is printed before and after, since
on a shared machine it moves the figures more than anything else.

    python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import load_average, table

BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "faceauth-run --help": [str(BIN / "faceauth-run"), "--help"],
    "faceauth-run --version": [str(BIN / "faceauth-run"), "--version"],
    "faceauth-run --list": [str(BIN / "faceauth-run"), "--list"],
    "faceauth-run liveness_resnet18 --print-recipe": [str(BIN / "faceauth-run"), "liveness_resnet18", "--print-recipe"],
}


def seconds(command: list[str], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"before: {load_average()}")
    rows = [("command", "median s", "fastest s")]
    for name, command in COMMANDS.items():
        seconds(command, 1)  # warm the file cache
        samples = seconds(command, args.repeats)
        rows.append((name, f"{statistics.median(samples):.2f}", f"{min(samples):.2f}"))
    print(table(rows))
    print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
