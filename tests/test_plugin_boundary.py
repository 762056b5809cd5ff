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

import faceauth
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


def _relative_base(path: Path, level: int) -> str | None:
    """The package a relative import in `path` starts from (plugins only; None elsewhere)."""
    if not path.is_relative_to(REPO / "plugins"):
        return None
    parts = ["faceauth", "plugins", *path.relative_to(REPO / "plugins").with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts[:len(parts) - level]) if path.name != "__init__.py" or level > 1 else ".".join(parts)


def _from_module(node: ast.ImportFrom, path: Path) -> str | None:
    if node.level:
        base = _relative_base(path, node.level)
        return None if base is None else f"{base}.{node.module}" if node.module else base
    return node.module if node.module and node.module.startswith("faceauth") else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every faceauth module `path` imports, at any depth (lazy imports too), and the
    modules behind `faceauth.run`, `faceauth.evaluate`... that the package imports on first use."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("faceauth")]
        elif isinstance(node, ast.ImportFrom) and (module := _from_module(node, path)) is not None:
            for alias in node.names:
                full = f"{module}.{alias.name}"
                lazy = faceauth._LAZY_FUNCTIONS.get(alias.name) if module == "faceauth" else None
                found.append((node.lineno, f"faceauth.{lazy}" if lazy else full if _is_module(full) else module))
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "faceauth"
              and node.attr in faceauth._LAZY_FUNCTIONS):
            found.append((node.lineno, f"faceauth.{faceauth._LAZY_FUNCTIONS[node.attr]}"))
    return found


def _chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """`a.b.c` as ("a", ["b", "c"]), or None when the chain does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return (node.id, parts[::-1]) if isinstance(node, ast.Name) else None


def names_used(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for each name the file imports from a faceauth module or reads as `module.name`
    (through `import faceauth`, `import faceauth.x.y as m`, `from faceauth.x import y` or a relative import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, str] = {"faceauth": "faceauth"}  # local name -> module
    used = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("faceauth") and alias.asname:
                    modules[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and (module := _from_module(node, path)) is not None:
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if _is_module(full):
                    modules[alias.asname or alias.name] = full
                else:
                    used.append((node.lineno, module, alias.name))
    for node in ast.walk(tree):
        chain = _chain(node) if isinstance(node, ast.Attribute) else None
        if chain is None or chain[0] not in modules:
            continue
        module, parts = modules[chain[0]], chain[1]
        for position, part in enumerate(parts):  # the longest module prefix, then the name read from it
            if _is_module(f"{module}.{part}"):
                module = f"{module}.{part}"
                continue
            if position == len(parts) - 1:  # the chain's inner node records it once (m.name, not m.name.attr)
                used.append((node.lineno, module, part))
            break
    return used


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["faceauth", *parts])


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_plugins_use_only_public_core_names(path: Path) -> None:
    private = [f"{path.relative_to(REPO)}:{line}: {module}.{name}" for line, module, name in names_used(path)
               if (module == "faceauth" or _is_core_module(module)) and name not in _public(module)]
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
                      "from faceauth.runs.runner import run\nfrom faceauth.plugins.datasets.folder import _hidden\n"
                      "import faceauth.training.checkpoint as ckpt\ny = ckpt._private + faceauth.training.checkpoint._other\n"
                      "z = faceauth.training.checkpoint.load + faceauth.run\n")
    assert sorted(names_used(source)) == [(2, "faceauth.data", "_secret"), (4, "faceauth.schema", "positive"),
                                          (4, "faceauth.training.distributed", "active"),
                                          (5, "faceauth.runs.runner", "run"),
                                          (6, "faceauth.plugins.datasets.folder", "_hidden"),
                                          (8, "faceauth.training.checkpoint", "_other"),
                                          (8, "faceauth.training.checkpoint", "_private"),
                                          (9, "faceauth", "run"), (9, "faceauth.training.checkpoint", "load")]
    assert (5, "faceauth.runs.runner") in imports_of(source) and (9, "faceauth.runs.runner") in imports_of(source)
    assert "run" not in _public("faceauth")  # so a plugin calling faceauth.run fails the public-name check too
    assert layer_of("faceauth.runs.runner") > layer_of("faceauth.training.loop") > layer_of("faceauth.io.paths")


def test_relative_imports_are_read_in_their_package(tmp_path: Path) -> None:
    inside = REPO / "plugins" / "datasets" / "folder.py"
    node = ast.parse("from .identity import _scan\nfrom ..trainers import classifier\n").body
    assert _from_module(node[0], inside) == "faceauth.plugins.datasets.identity"
    assert _from_module(node[1], inside) == "faceauth.plugins.trainers"


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
