"""``faceauth-run``, ``faceauth-eval`` and ``faceauth-export``: thin layers over `faceauth.run`,
`faceauth.evaluate` and `faceauth.export_checkpoint`.

A `FaceAuthError` (bad input, a failing plugin) is printed as one line and exits with status 1;
``--debug`` shows the traceback instead (`faceauth.io.console.guard`). A run stopped by Ctrl-C exits
with status 130 after saving a resumable checkpoint. The tools show faceauth's own log lines (the
``faceauth`` logger), not other libraries'; every command has ``--version``.

Start-up stays fast: this module imports no PyTorch, and ``--help``, ``--version`` and ``--list``
never do (plugins register their components without importing them).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from faceauth.io.console import EXIT_INTERRUPTED, add_version_option, guard

__all__ = ["run_main", "eval_main", "export_main", "print_components"]


def print_components(extra_plugins: Sequence[Any] = ()) -> None:
    from faceauth.components import KINDS
    from faceauth.config.recipe import builtin_recipes
    from faceauth.config.registry import load_registry

    registry = load_registry(extra_plugins)
    for kind in KINDS:
        print(f"{kind}s:" if kind != "loss" else "losses:")  # the hook names' plurals
        for entry in registry.entries(kind):
            print(f"  {entry.component.name:<22} {entry.provider.distribution} {entry.provider.version:<8} "
                  f"{entry.component.description}")
    print("recipes (faceauth-run NAME):")
    for name in builtin_recipes():
        print(f"  {name}")


def _summary(result: Any) -> str:
    lines = [f"run directory: {result.dir}"]
    for split in ("val", "test", "cross_test"):
        figures = result.metrics.get(split) or {}
        shown = {k: figures[k] for k in ("acer", "apcer", "bpcer", "far", "frr", "hter", "sfar", "eer", "auc",
                                         "accuracy") if k in figures}
        if shown:
            lines.append(f"{split}: " + "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    if result.onnx_path is not None:
        lines.append(f"exported: {result.onnx_path}")
    if result.metrics.get("stopped"):
        lines.append(f"stopped: {result.metrics['stopped']}; continue with: faceauth-run --resume {result.dir}")
    if result.metrics.get("stopped_early"):
        lines.append(f"stopped early: {result.metrics['stopped_early']}")
    return "\n".join(lines)


def run_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="faceauth-run", description="Run a faceauth recipe: train, validate, test and export.",
        epilog="Overrides: any recipe key as a.b.c=value (the value is YAML), e.g. trainer.epochs=50 "
               "optimizer.lr=0.001 data.root=/data/liveness; ~a.b deletes a key; backbone.name=X switches a "
               "component and drops the recipe's options X does not know. resume=RUN_DIR equals --resume RUN_DIR.")
    parser.add_argument("recipe", nargs="?",
                        help="recipe YAML file or a built-in recipe's name (see --list; not needed with --resume)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--list", action="store_true", help="list registered components and their plugins")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_version_option(parser)
    args = parser.parse_intermixed_args(argv)
    tokens = ([args.recipe] if args.recipe else []) + list(args.overrides)
    first = tokens[0] if tokens else ""
    is_recipe = (("=" not in first and not first.startswith("~")) or first.endswith((".yaml", ".yml"))
                 or os.path.isfile(first))
    recipe = tokens.pop(0) if tokens and is_recipe else None
    resume = args.resume
    overrides = []
    for token in tokens:
        if token.startswith("resume="):
            resume = token.partition("=")[2]
        else:
            overrides.append(token)

    def action() -> int:
        if args.list:
            print_components()
            return 0
        from faceauth.config.recipe import load_recipe
        from faceauth.config.registry import load_registry
        from faceauth.runs.runner import run

        if args.print_recipe:
            registry = load_registry()
            if resume:
                from faceauth.training import checkpoint

                base = checkpoint.recipe_of(checkpoint.load(checkpoint.resolve(resume, checkpoint.RESUME_CHECKPOINT)))
                print(load_recipe(None, overrides, registry=registry, base=base).to_yaml(), end="")
            else:
                if recipe is None:
                    parser.error("a recipe file or a built-in recipe's name is required")
                print(load_recipe(recipe, overrides, registry=registry).to_yaml(), end="")
            return 0
        if recipe is None and resume is None:
            parser.error("a recipe file or a built-in recipe's name (or --resume RUN_DIR) is required")
        result = run(recipe, overrides, resume=resume)
        print(_summary(result))
        return EXIT_INTERRUPTED if result.interrupted else 0

    return guard("faceauth-run", args.debug, action)


def eval_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceauth-eval",
                                     description="Evaluate a checkpoint or an exported .onnx model on a dataset split.")
    parser.add_argument("model", help="checkpoint (.pt), run directory, or exported .onnx")
    parser.add_argument("--data", help="dataset root (replaces data.root of the stored recipe)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--ijb", metavar="ROOT",
                        help="an IJB-B / IJB-C release (loose_crop/, meta/): its 1:1 protocol (embedding models)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the stored recipe")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--report", metavar="DIR", help="write the liveness report (report.md, scores.csv, "
                                                        "DET/ROC/score figures) into DIR")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_version_option(parser)
    args = parser.parse_intermixed_args(argv)

    def action() -> int:
        from faceauth.runs.models import evaluate

        figures = evaluate(args.model, args.data, split=args.split, overrides=args.overrides, ijb=args.ijb,
                           report=args.report)
        if args.json:
            print(json.dumps(figures, indent=2, sort_keys=True))
        else:
            for key, value in figures.items():
                print(f"{key:<24} {value:.6g}")
        return 0

    return guard("faceauth-eval", args.debug, action)


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceauth-export", description="Export a checkpoint to ONNX.")
    parser.add_argument("model", help="checkpoint (.pt) or run directory")
    parser.add_argument("--output", "-o", required=True, help="where to write the .onnx file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the stored recipe (e.g. export.opset=17)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_version_option(parser)
    args = parser.parse_intermixed_args(argv)

    def action() -> int:
        from faceauth.runs.models import export_checkpoint

        print(export_checkpoint(args.model, args.output, overrides=args.overrides))
        return 0

    return guard("faceauth-export", args.debug, action)
