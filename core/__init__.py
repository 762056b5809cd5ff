"""faceauth: train, measure and ship the models of a facial authentication system.

The core defines the plugin hooks (`faceauth.hookspecs`), the component records
(`faceauth.components`), the registries, recipes and the runner; every concrete dataset, network,
loss, trainer and exporter is a plugin. Modules that need PyTorch load on first use, so deployment
code can use the ONNX side without it.
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
    "run",
    "evaluate",
    "Authenticator",
    "Liveness",
    "export_checkpoint",
    "FaceAuthError",
    "RecipeError",
    "PluginError",
    "DataError",
    "TrainingError",
    "ExportError",
    "CheckpointError",
]

_LAZY_MODULES = {"align", "authenticator", "checkpoint", "console", "data", "faces", "images", "video", "metrics", "optim", "paths", "recipe", "registry", "runner", "weights",
                 "export", "tools", "liveness", "predict", "report"}
_LAZY_FUNCTIONS = {"Authenticator": "authenticator", "Liveness": "liveness", "run": "runner", "evaluate": "tools", "export_checkpoint": "tools"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f"faceauth.{_LAZY_FUNCTIONS[name]}"), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"faceauth.{name}")
    raise AttributeError(f"module 'faceauth' has no attribute {name!r}")
