"""The command-line tools: thin layers over `faceauth.run`, `faceauth.evaluate` and `faceauth.export_checkpoint`.

A `FaceAuthError` (bad input, a failing plugin) is printed as one line and exits with status 1;
``--debug`` shows the traceback instead. A run stopped by Ctrl-C exits with status 130 after saving
a resumable checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from faceauth.errors import FaceAuthError

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def _guard(prog: str, debug: bool, action: Callable[[], int]) -> int:
    # Plugins report progress and skipped samples through the "faceauth" loggers.
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format=f"{prog}: %(message)s")
    try:
        return action()
    except FaceAuthError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


def print_components(extra_plugins: Sequence[Any] = ()) -> None:
    from faceauth.components import KINDS
    from faceauth.registry import load_registry

    registry = load_registry(extra_plugins)
    for kind in KINDS:
        print(f"{kind}s:" if kind != "loss" else "losses:")  # the hook names' plurals
        for entry in registry.entries(kind):
            print(f"  {entry.component.name:<22} {entry.provider.distribution} {entry.provider.version:<8} "
                  f"{entry.component.description}")


def _summary(result: Any) -> str:
    lines = [f"run directory: {result.dir}"]
    for split in ("val", "test", "cross_test"):
        figures = result.metrics.get(split) or {}
        shown = {k: figures[k] for k in ("acer", "apcer", "bpcer", "hter", "eer", "auc", "accuracy") if k in figures}
        if shown:
            lines.append(f"{split}: " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    if result.onnx_path is not None:
        lines.append(f"exported: {result.onnx_path}")
    if result.metrics.get("stopped"):
        lines.append(f"stopped: {result.metrics['stopped']}; continue with: faceauth-run --resume {result.dir}")
    return "\n".join(lines)


def run_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="faceauth-run", description="Run a faceauth recipe: train, validate, test and export.",
        epilog="Overrides: any recipe key as a.b.c=value (the value is YAML), e.g. trainer.epochs=50 "
               "optimizer.lr=0.001 data.root=/data/liveness. resume=RUN_DIR equals --resume RUN_DIR.")
    parser.add_argument("recipe", nargs="?", help="recipe YAML file (not needed with --resume)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--list", action="store_true", help="list registered components and their plugins")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)
    tokens = ([args.recipe] if args.recipe else []) + list(args.overrides)
    first = tokens[0] if tokens else ""
    is_recipe = "=" not in first or first.endswith((".yaml", ".yml")) or os.path.isfile(first)
    recipe = tokens.pop(0) if tokens and is_recipe else None
    resume = args.resume
    overrides = []
    for token in tokens:
        if token.startswith("resume="):
            resume = token.partition("=")[2]
        else:
            overrides.append(token)

    def action() -> int:
        from faceauth.recipe import load_recipe
        from faceauth.registry import load_registry
        from faceauth.runner import run

        if args.list:
            print_components()
            return 0
        if args.print_recipe:
            registry = load_registry()
            if resume:
                from faceauth import checkpoint

                base = checkpoint.load(resume)["recipe"]
                print(load_recipe(None, overrides, registry=registry, base=base).to_yaml(), end="")
            else:
                if recipe is None:
                    parser.error("a recipe file is required")
                print(load_recipe(recipe, overrides, registry=registry).to_yaml(), end="")
            return 0
        if recipe is None and resume is None:
            parser.error("a recipe file (or --resume RUN_DIR) is required")
        result = run(recipe, overrides, resume=resume)
        print(_summary(result))
        return EXIT_INTERRUPTED if result.interrupted else 0

    return _guard("faceauth-run", args.debug, action)


def eval_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceauth-eval",
                                     description="Evaluate a checkpoint or an exported .onnx model on a dataset split.")
    parser.add_argument("model", help="checkpoint (.pt), run directory, or exported .onnx")
    parser.add_argument("--data", help="dataset root (replaces data.root of the stored recipe)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the stored recipe")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--report", metavar="DIR", help="write the liveness report (report.md, scores.csv, "
                                                        "DET/ROC/score figures) into DIR")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)

    def action() -> int:
        from faceauth.tools import evaluate

        figures = evaluate(args.model, args.data, split=args.split, overrides=args.overrides, report=args.report)
        if args.json:
            print(json.dumps(figures, indent=2, sort_keys=True))
        else:
            for key, value in figures.items():
                print(f"{key:<24} {value:.6g}")
        return 0

    return _guard("faceauth-eval", args.debug, action)


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceauth-export", description="Export a checkpoint to ONNX.")
    parser.add_argument("model", help="checkpoint (.pt) or run directory")
    parser.add_argument("--output", "-o", required=True, help="where to write the .onnx file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the stored recipe (e.g. export.opset=17)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)

    def action() -> int:
        from faceauth.tools import export_checkpoint

        print(export_checkpoint(args.model, args.output, overrides=args.overrides))
        return 0

    return _guard("faceauth-export", args.debug, action)
