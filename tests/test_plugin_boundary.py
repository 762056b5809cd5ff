"""Plugins, the built-in ones too, use only the core's public names: those in each module's `__all__`."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCES = sorted([*(REPO / "plugins").rglob("*.py"), *(REPO / "examples").rglob("*.py")])


def _public(module: str) -> set[str]:
    return set(getattr(importlib.import_module(module), "__all__", ()))


def _is_core_module(name: str) -> bool:
    return name.startswith("faceauth.") and not name.startswith("faceauth.plugins")


def core_names_used(path: Path) -> list[tuple[int, str, str]]:
    """(line, core module, name) for each core name the file imports or reads as `module.name`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, str] = {"faceauth": "faceauth"}  # local name -> core module
    used = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faceauth"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if node.module == "faceauth" and importlib.util.find_spec(full) is not None:  # a core module
                    modules[alias.asname or alias.name] = full
                elif _is_core_module(node.module) or node.module == "faceauth":
                    used.append((node.lineno, node.module, alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name) and base.id in modules and modules[base.id] != "faceauth":
                used.append((node.lineno, modules[base.id], node.attr))
            elif (isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "faceauth"
                  and _is_core_module(f"faceauth.{base.attr}")):
                used.append((node.lineno, f"faceauth.{base.attr}", node.attr))
    return used


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_use_only_public_core_names(path: Path) -> None:
    private = [f"{path.relative_to(REPO)}:{line}: {module}.{name}" for line, module, name in core_names_used(path)
               if name not in _public(module)]
    assert not private, "not in the module's __all__: " + "; ".join(private)


def test_the_check_sees_a_private_name(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text("from faceauth import distributed\nfrom faceauth.data import _secret\n"
                      "import faceauth\nx = distributed.active() + faceauth.schema.positive\n")
    assert sorted(core_names_used(source)) == [(2, "faceauth.data", "_secret"), (4, "faceauth.distributed", "active"),
                                              (4, "faceauth.schema", "positive")]
