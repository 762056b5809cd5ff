"""Recipes: YAML files that choose components by registered name and set their options.

A recipe has fixed top-level keys (see `Recipe`). Each component section holds ``name`` (a
registered component of that kind) and that component's options; the component's options class
validates them, so a typo anywhere is caught before anything runs. Command-line overrides
``a.b.c=value`` are applied to the raw data first, the value parsed as YAML; ``~a.b`` deletes a key.
An override that changes a section's ``name`` drops the options the recipe gave the old component
that the new one does not know (keys given on the command line are still checked).

Built-in recipes ship inside the package (`faceauth.recipes`) and are found by name.
"""

from __future__ import annotations

import copy
import importlib.resources
import itertools
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from faceauth import schema
from faceauth.components import resolve as resolve_reference
from faceauth.config.registry import Registry
from faceauth.errors import PluginError, RecipeError, quote, suggest

__all__ = ["Recipe", "Section", "OptimizerConfig", "SchedulerConfig", "load_recipe", "apply_overrides", "read_yaml",
           "builtin_recipes", "find_recipe"]

log = logging.getLogger(__name__)

COMPONENT_SECTIONS = {"data": "dataset", "backbone": "backbone", "loss": "loss", "trainer": "trainer",
                      "export": "exporter", "detector": "detector", "test_data": "dataset"}
# Sections a recipe may leave out (or set to null).
OPTIONAL_SECTIONS = ("export", "detector", "test_data")
# Sections that may also be a list of sections: several datasets used together.
LIST_SECTIONS = ("data", "test_data")


@attrs.frozen
class OptimizerConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = attrs.field(default=0.01, validator=schema.positive)
    momentum: float = attrs.field(default=0.9, validator=schema.fraction)
    weight_decay: float = attrs.field(default=5e-4, validator=schema.non_negative)
    nesterov: bool = False
    betas: tuple[float, ...] = (0.9, 0.999)


@attrs.frozen
class SchedulerConfig:
    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = attrs.field(default=0.0, validator=schema.non_negative)
    step_epochs: int = attrs.field(default=10, validator=schema.positive)
    gamma: float = attrs.field(default=0.1, validator=schema.positive)
    min_lr: float = attrs.field(default=0.0, validator=schema.non_negative)


@attrs.frozen
class _Core:
    """The top-level keys that are not component sections."""

    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None
    device: str = "auto"
    deterministic: bool = False
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()


@attrs.frozen
class Section:
    """One component section: the registered name and its validated options (or None)."""

    name: str
    options: Any

    def to_dict(self) -> dict[str, Any]:
        options = schema.unstructure(self.options) if self.options is not None else {}
        return {"name": self.name, **options}


@attrs.frozen
class Recipe:
    seed: int
    output_dir: str
    run_name: str | None
    device: str
    deterministic: bool
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    data: Section | tuple[Section, ...]
    backbone: Section
    loss: Section
    trainer: Section
    export: Section | None
    detector: Section | None = None
    test_data: Section | tuple[Section, ...] | None = None
    source: str = attrs.field(default="<recipe>", eq=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("seed", "output_dir", "run_name", "device", "deterministic"):
            out[name] = getattr(self, name)
        for name in COMPONENT_SECTIONS:
            section = getattr(self, name)
            if isinstance(section, tuple):
                out[name] = [s.to_dict() for s in section]
            else:
                out[name] = section.to_dict() if section is not None else None
        out["optimizer"] = schema.unstructure(self.optimizer)
        out["scheduler"] = schema.unstructure(self.scheduler)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def component_names(self) -> dict[str, tuple[str, str]]:
        """{section label: (kind, name)} of every component the recipe uses ("data[1]" for lists)."""
        names = {}
        for section_key, kind in COMPONENT_SECTIONS.items():
            section = getattr(self, section_key)
            if isinstance(section, tuple):
                names.update({f"{section_key}[{i}]" if i else section_key: (kind, s.name) for i, s in enumerate(section)})
            elif section is not None:
                names[section_key] = (kind, section.name)
        return names


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, but `1e-3` is a number (YAML 1.1 would make it a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


# A recipe is a few hundred values; aliases may repeat a section, but never expand it past this many nodes
# (a YAML "billion laughs" alias bomb expands a few hundred bytes into gigabytes).
MAX_EXPANDED_NODES = 10_000
MAX_RECIPE_BYTES = 1 << 20
MAX_FLOW_DEPTH = 64


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes `node` becomes once every alias is expanded, counted without expanding (each node once)."""
    known = sizes.get(id(node))
    if known is not None:
        if known < 0:
            raise yaml.YAMLError("an alias refers to a node that contains it (a recursive structure)")
        return known
    sizes[id(node)] = -1
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size
    if size > MAX_EXPANDED_NODES:
        raise yaml.YAMLError(f"aliases expand it past {MAX_EXPANDED_NODES} values (an alias bomb?)")
    return size


def parse_yaml(text: str) -> Any:
    """YAML text as data; aliases that expand past `MAX_EXPANDED_NODES` values are refused before any is built."""
    depth = 0
    for depth in itertools.accumulate((char in "[{") - (char in "]}") for char in text if char in "[]{}"):
        if depth > MAX_FLOW_DEPTH:  # PyYAML's scanner slows quadratically with the depth, and recurses
            raise yaml.YAMLError(f"nested more than {MAX_FLOW_DEPTH} levels deep")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {})
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise yaml.YAMLError(quote(str(exc), 120)) from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file, or a RecipeError naming the file (and line and column)."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {path.stat().st_size} bytes; a recipe file is at most {MAX_RECIPE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read recipe file: {exc}") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys to values, got {type(data).__name__}")
    return data


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `raw` with each ``a.b.c=value`` applied (the value is parsed as YAML) and each
    ``~a.b.c`` deleted."""
    result = copy.deepcopy(dict(raw))
    for item in overrides:
        if item.startswith("~"):
            _delete(result, item)
            continue
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise RecipeError(f"override {quote(item)}: expected key=value, for example trainer.epochs=10")
        try:
            value = parse_yaml(text) if text.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(f"override {quote(item)}: the value is not valid YAML ({problem})") from None
        node = result
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(f"override {quote(item)}: {where} is {quote(child)}, not a section with keys")
            node = child
        node[parts[-1]] = value
    return result


def _delete(result: dict[str, Any], item: str) -> None:
    key = item[1:].strip()
    parts = key.split(".")
    if not key or "=" in key or any(not part for part in parts):
        raise RecipeError(f"override '{item}': expected ~key to delete a key, for example ~backbone.dropout")
    node: Any = result
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth])
            keys = ", ".join(map(str, node))[:300] if isinstance(node, dict) else "none"
            raise RecipeError(f"override '{item[:200]}': {key[:200]} names nothing in the recipe "
                              f"({'keys of ' + where[:200] if where else 'top-level keys'}: {keys or 'none'})")
        if depth == len(parts) - 1:
            del node[part]
        else:
            node = node[part]


def _drop_foreign_options(raw: dict[str, Any], before: Mapping[str, Any], overrides: list[str],
                          registry: Registry) -> dict[str, Any]:
    """After an override switched a section's component (``backbone.name=x``), drop the options the
    recipe gave the old component that the new one does not know, and say which in one line.
    Keys given on the command line stay, so they are still checked."""
    given = [item.partition("=")[0].strip() for item in overrides if not item.startswith("~")]
    for key, kind in COMPONENT_SECTIONS.items():
        section, old = raw.get(key), before.get(key)
        if not (isinstance(section, dict) and isinstance(old, dict) and f"{key}.name" in given
                and section.get("name") != old.get("name")):
            continue
        try:
            options = options_class(registry, kind, str(section.get("name")))
        except PluginError:
            continue  # an unknown name: resolving the section names the known ones
        known = set(schema.field_names(options)) if options is not None else set()
        dropped = [name for name in section if name != "name" and name not in known and name in old
                   and not any(g == f"{key}.{name}" or g.startswith(f"{key}.{name}.") for g in given)]
        for name in dropped:
            del section[name]
        if dropped:
            log.info("%s.name=%s: dropped %s from the recipe (not options of %s '%s')", key, section["name"],
                     ", ".join(f"{key}.{name}" for name in dropped), kind, section["name"])
    return raw


def builtin_recipes() -> dict[str, Any]:
    """{name: file} of the recipes that ship inside the package (``faceauth-run NAME`` runs one)."""
    try:
        folder = importlib.resources.files("faceauth.recipes")
    except ModuleNotFoundError:
        return {}
    return {entry.name.rsplit(".", 1)[0]: entry for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith((".yaml", ".yml"))}


def find_recipe(name: str | Path) -> Path:
    """The recipe file `name` names: a file, or else (a bare name) a built-in recipe (``liveness_resnet18``)."""
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path  # read_yaml names any problem with the file
    builtin = builtin_recipes()
    key = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if key in builtin:
        return Path(str(builtin[key]))
    raise RecipeError(f"{str(name)[:200]}: recipe file not found, and no built-in recipe of that name "
                      f"(built-in: {', '.join(builtin) or 'none'})")


def resolve_section(raw: Any, key: str, kind: str, registry: Registry) -> Section:
    if not isinstance(raw, Mapping) or "name" not in raw:
        known = ", ".join(registry.names(kind))
        raise RecipeError(f"{key}: expected a mapping with 'name' (a registered {kind}: {known}), got {quote(raw)}")
    name = raw["name"]
    if not isinstance(name, (str, int)) or isinstance(name, bool) or len(str(name)) > 100:
        known = ", ".join(registry.names(kind))
        raise RecipeError(f"{key}.name: expected the name of a registered {kind} ({known}), got {quote(name)}")
    try:
        component = registry.get(kind, str(name))
    except PluginError as exc:
        raise RecipeError(f"{key}.name: {exc}") from None
    options = {k: v for k, v in raw.items() if k != "name"}
    if component.options is None:
        if options:
            raise RecipeError(f"{key}.{schema.key_name(next(iter(options)))}: {kind} '{name}' takes no options")
        return Section(str(name), None)
    return Section(str(name), schema.structure(options_class(registry, kind, str(name)), options, key))


def options_class(registry: Registry, kind: str, name: str) -> type | None:
    """The options class of a registered component, imported now when its record points to it lazily."""
    entry = registry.entry(kind, name)
    try:
        return resolve_reference(entry.component.options)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"{kind} '{name}' from {entry.provider}: its options class failed to import: "
                          f"{type(exc).__name__}: {exc}") from exc


def resolve(raw: Mapping[str, Any], registry: Registry, source: str = "<recipe>") -> Recipe:
    """Validate raw recipe data against the core schema and each chosen component's options."""
    core_raw = {k: v for k, v in raw.items() if k not in COMPONENT_SECTIONS}
    for key in core_raw:
        if key not in schema.field_names(_Core):
            known = [*schema.field_names(_Core), *COMPONENT_SECTIONS]
            raise RecipeError(f"{source}: {schema.key_name(key)}: unknown key (known: {', '.join(known)})"
                              f"{suggest(str(key)[:100], known)}")
    try:
        core = schema.structure(_Core, core_raw, "$")
        sections: dict[str, Section | None] = {}
        for key, kind in COMPONENT_SECTIONS.items():
            if raw.get(key) is None and key in OPTIONAL_SECTIONS:
                sections[key] = None
            elif key not in raw:
                raise RecipeError(f"{key}: required section is missing (a mapping with 'name')")
            elif key in LIST_SECTIONS and isinstance(raw[key], list):
                if not raw[key]:
                    raise RecipeError(f"{key}: an empty list; give one dataset section or a list of them")
                sections[key] = tuple(resolve_section(item, f"{key}[{i}]", kind, registry)
                                      for i, item in enumerate(raw[key]))
            else:
                sections[key] = resolve_section(raw[key], key, kind, registry)
    except RecipeError as exc:
        message = str(exc).removeprefix("$.")
        raise RecipeError(f"{source}: {message}") from None
    return Recipe(**attrs.asdict(core, recurse=False), **sections, source=source)


def load_recipe(path: str | Path | Mapping[str, Any] | None, overrides: Iterable[str] = (), *, registry: Registry,
                base: Mapping[str, Any] | None = None) -> Recipe:
    """Read `path` (a file or a built-in recipe's name; or take the mapping it is, or start from
    `base`), apply `overrides`, and validate the result."""
    if isinstance(path, Mapping):
        path, base = None, path
    elif path is not None and not isinstance(path, (str, Path)):
        raise RecipeError(f"a recipe is a YAML file, a built-in recipe's name or a mapping, not {type(path).__name__}")
    if path is not None:
        path = find_recipe(path)
    before = read_yaml(path) if path is not None else dict(base or {})
    overrides = list(overrides)
    raw = _drop_foreign_options(apply_overrides(before, overrides), before, overrides, registry)
    source = str(path) if path is not None else "<recipe>"
    try:
        return resolve(raw, registry, source=source)
    except RecipeError as exc:
        # Name the override when the faulty key came from the command line, not the file.
        message = str(exc).removeprefix(f"{source}: ")
        for item in reversed(overrides):
            key = item.partition("=")[0].strip()
            if message.startswith((f"{key}:", f"{key}.", f"{key}[")):
                raise RecipeError(f"override {quote(item)}: {message}") from None
        raise
