"""faceauth: train, measure and ship the models of a facial authentication system.

The package's layers, lowest first (a module imports only from its own layer or lower ones;
``tests/test_plugin_boundary.py`` checks it, and CONTRIBUTING.md draws the same table):

0. the plugin API, here at the top level: the hooks (`hookspecs`), the component records
   (`components`), option validation (`schema`) and errors (`errors`);
1. `faceauth.io`: files, images, videos, ONNX sessions and metadata, the terminal;
2. `faceauth.data`: what a dataset returns (samples, splits, the liveness score convention);
3. `faceauth.config` (recipes, the registry, building components), `faceauth.faces` (detection, crops,
   alignment), `faceauth.metrics` (metrics and reports);
4. `faceauth.training` (the toolkit trainers build on) and `faceauth.deploy` (exported models at
   deployment, without PyTorch);
5. `faceauth.runs`: running a recipe, the models a trainer takes as input, evaluating and exporting what
   a run produced;
6. `faceauth.commands`: the console scripts.

Plugins (`faceauth.plugins` and third-party packages) use layers 0 to 4 only. `__all__` lists the plugin
API; for Python callers the package also offers `faceauth.run`, `faceauth.evaluate`,
`faceauth.export_checkpoint`, `faceauth.Authenticator` and `faceauth.Liveness`, imported on first use,
so deployment code can use the ONNX side without PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

from faceauth import components, errors, schema
from faceauth.errors import (
    CheckpointError,
    DataError,
    ExportError,
    FaceAuthError,
    PluginError,
    RecipeError,
    TrainingError,
)
from faceauth.hookspecs import hookimpl

__all__ = [
    "hookimpl",
    "components",
    "errors",
    "schema",
    "data",
    "FaceAuthError",
    "RecipeError",
    "PluginError",
    "DataError",
    "TrainingError",
    "ExportError",
    "CheckpointError",
]

_LAZY_MODULES = {"data", "io", "config", "faces", "metrics", "training", "deploy", "runs", "commands"}
_LAZY_FUNCTIONS = {"run": "runs.runner", "evaluate": "runs.models", "export_checkpoint": "runs.models",
                   "Authenticator": "deploy.authenticator", "Liveness": "deploy.liveness"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f"faceauth.{_LAZY_FUNCTIONS[name]}"), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"faceauth.{name}")
    raise AttributeError(f"module 'faceauth' has no attribute {name!r}")
