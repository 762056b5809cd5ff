"""The layers of the code, read from its imports.

- Plugins (the built-in ones and the example package) use only the core's public names, those in each
  module's `__all__`, and only the layers meant for them: never the orchestration (`faceauth.runs`) or
  the commands (`faceauth.commands`).
- A plugin module takes only public names from another plugin module (no ``_private`` ones).
- Inside the core, a module imports only from its own layer or lower ones (`LAYERS`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO

PLUGIN_SOURCES = sorted([*(REPO / "plugins").rglob("*.py"), *(REPO / "examples").rglob("*.py")])
CORE = REPO / "core"
CORE_SOURCES = sorted(CORE.rglob("*.py"))

# The core's layers, lowest first: a module's layer is that of the longest prefix naming it.
LAYERS = {
    "faceauth.errors": 0, "faceauth.components": 0, "faceauth.hookspecs": 0, "faceauth.schema": 0,
    "faceauth": 0, "faceauth.__main__": 6,
    "faceauth.io": 1, "faceauth.data": 2,
    "faceauth.config": 3, "faceauth.faces": 3, "faceauth.metrics": 3,
    "faceauth.training": 4, "faceauth.deploy": 4,
    "faceauth.runs": 5,
    "faceauth.commands": 6,
}
NOT_FOR_PLUGINS = ("faceauth.runs", "faceauth.commands", "faceauth.__main__")


def layer_of(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return LAYERS[".".join(parts[:end])]
    raise KeyError(module)


def _public(module: str) -> set[str]:
    return set(getattr(importlib.import_module(module), "__all__", ()))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _is_core_module(name: str) -> bool:
    return name.startswith("faceauth.") and not name.startswith("faceauth.plugins")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every faceauth module `path` imports, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("faceauth")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faceauth"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((node.lineno, full if _is_module(full) else node.module))
    return found


def names_used(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for each name the file imports from a faceauth module or reads as `module.name`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, str] = {"faceauth": "faceauth"}  # local name -> module
    used = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faceauth"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _is_module(full):
                    modules[alias.asname or alias.name] = full
                else:
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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["faceauth", *parts])


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_use_only_public_core_names(path: Path) -> None:
    private = [f"{path.relative_to(REPO)}:{line}: {module}.{name}" for line, module, name in names_used(path)
               if _is_core_module(module) and name not in _public(module)]
    assert not private, "not in the module's __all__: " + "; ".join(private)


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_stay_below_the_orchestration(path: Path) -> None:
    above = [f"{path.relative_to(REPO)}:{line}: {module}" for line, module in imports_of(path)
             if module.startswith(NOT_FOR_PLUGINS)]
    assert not above, "a plugin imports the orchestration or a command: " + "; ".join(above)


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_take_no_private_name_of_another_plugin(path: Path) -> None:
    own = "faceauth.plugins." + ".".join(path.relative_to(REPO / "plugins").with_suffix("").parts) \
        if path.is_relative_to(REPO / "plugins") else None
    private = [f"{path.relative_to(REPO)}:{line}: {module}.{name}" for line, module, name in names_used(path)
               if module.startswith("faceauth.plugins") and module != own and name.startswith("_")]
    assert not private, "another plugin's private name: " + "; ".join(private)


@pytest.mark.parametrize("path", CORE_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_core_modules_import_only_their_layer_or_lower(path: Path) -> None:
    module = _module_name(path)
    mine = layer_of(module)
    upward = [f"{path.relative_to(REPO)}:{line}: {name} (layer {layer_of(name)} > {mine})"
              for line, name in imports_of(path) if not name.startswith("faceauth.plugins") and layer_of(name) > mine]
    assert not upward, f"{module} (layer {mine}) imports upward: " + "; ".join(upward)


def test_the_core_imports_no_plugin() -> None:
    found = [f"{path.relative_to(REPO)}:{line}: {name}" for path in CORE_SOURCES for line, name in imports_of(path)
             if name.startswith("faceauth.plugins")]
    assert not found, "; ".join(found)


def test_the_checks_see_what_they_forbid(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text("from faceauth.training import distributed\nfrom faceauth.data import _secret\n"
                      "import faceauth\nx = distributed.active() + faceauth.schema.positive\n"
                      "from faceauth.runs.runner import run\nfrom faceauth.plugins.datasets.folder import _hidden\n")
    assert sorted(names_used(source)) == [(2, "faceauth.data", "_secret"), (4, "faceauth.schema", "positive"),
                                          (4, "faceauth.training.distributed", "active"),
                                          (5, "faceauth.runs.runner", "run"),
                                          (6, "faceauth.plugins.datasets.folder", "_hidden")]
    assert (5, "faceauth.runs.runner") in imports_of(source)
    assert layer_of("faceauth.runs.runner") > layer_of("faceauth.training.loop") > layer_of("faceauth.io.paths")


# Modules longer than about 400 lines, each with the reason it stays one module (issue 17: rooms with one job).
MAX_LINES = 420
LONGER = {
    "plugins/datasets/recordio.py": "one file format: the record reader, its index (with its cache) and the writer "
                                    "share the framing constants and are tested as one round trip",
    "plugins/datasets/demo_render.py": "the synthetic face renderer of the demo sets: one drawing pipeline whose "
                                       "parts (face, print and replay attacks, camera) are only used together",
    "plugins/datasets/identity.py": "the identity-folder layout: its scan, the scan's change-detecting cache and the "
                                    "splits built from it",
}


def test_long_modules_state_why() -> None:
    sources = [*CORE_SOURCES, *sorted((REPO / "plugins").rglob("*.py"))]
    lengths = {str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines()) for path in sources}
    unstated = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in LONGER}
    stale = [name for name in LONGER if lengths.get(name, 0) <= MAX_LINES]
    assert not unstated, f"modules over {MAX_LINES} lines without a stated reason: {unstated}"
    assert not stale, f"no longer over {MAX_LINES} lines (remove them from LONGER): {stale}"


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists its packages by name: a new folder left out imports here and fails once installed."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {"faceauth" + "".join(f".{part}" for part in init.parent.relative_to(CORE).parts)
             for init in CORE.rglob("__init__.py")}
    found |= {"faceauth.plugins" + "".join(f".{part}" for part in init.parent.relative_to(REPO / "plugins").parts)
              for init in (REPO / "plugins").rglob("__init__.py")}
    assert found - listed == set(), "package folders missing from pyproject.toml's packages"
