"""Building the components a recipe names: a section's validated options into its record's `build`.

What a component's ``build`` receives: its options (an instance of the record's `options` class; nothing
when the record declares none), then the keyword arguments its signature asks for, from:

- ``detector`` (datasets): the recipe's detector, built, or None when the recipe names none;
- ``splits`` (datasets): the names of the splits the caller needs (evaluation asks for one), so a dataset
  can skip preparing the others; a dataset that does not take it builds them all;
- ``components`` (any kind): a `Components`, to build the components named inside its own options;
- whatever its caller passes (a loss gets ``num_classes`` and ``num_features``).

A backbone record's ``preprocess`` receives the same options (and ``components`` when it asks);
`preprocess_of` reads a recipe's preprocessing through it without building the network, and building the
backbone checks that its module agrees.
"""

from __future__ import annotations

import inspect
from typing import Any

from faceauth.components import Preprocess
from faceauth.config.recipe import COMPONENT_SECTIONS, Recipe, resolve_section
from faceauth.config.registry import Registry
from faceauth.data import Splits
from faceauth.errors import FaceAuthError, PluginError, RecipeError

__all__ = ["Components", "build_component", "preprocess_of"]


def accepts(function: Any, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def build_component(registry: Registry, recipe: Recipe, section_key: str, **kwargs: Any) -> Any:
    """Build the component a recipe section names, with its validated options.

    A list of dataset sections builds each and joins their splits. A dataset whose ``build`` takes
    a ``detector`` argument receives the recipe's detector (or None when the recipe names none).
    """
    section = getattr(recipe, section_key)
    if section is None:
        raise RecipeError(f"{recipe.source}: {section_key}: this recipe has no '{section_key}' section")
    kind = COMPONENT_SECTIONS[section_key]
    if isinstance(section, tuple):
        return Splits.concat([_build(registry, recipe, part, kind, **kwargs) for part in section])
    return _build(registry, recipe, section, kind, **kwargs)


def _build(registry: Registry, recipe: Recipe, section: Any, kind: str, **kwargs: Any) -> Any:
    entry = registry.entry(kind, section.name)
    args = (section.options,) if entry.component.options is not None else ()
    if kind == "dataset" and "splits" in kwargs and not accepts(entry.component.build, "splits"):
        kwargs.pop("splits")  # a dataset that cannot build fewer splits builds them all
    if kind == "dataset" and accepts(entry.component.build, "detector"):
        kwargs["detector"] = build_component(registry, recipe, "detector") if recipe.detector is not None else None
    if accepts(entry.component.build, "components"):
        kwargs["components"] = Components(registry, recipe)
    try:
        built = entry.component.build(*args, **kwargs)
    except FaceAuthError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{kind} '{section.name}' from {entry.provider} failed to build: {type(exc).__name__}: {exc}"
        ) from exc
    if kind == "backbone":
        if getattr(entry.component, "preprocess", None) is not None:
            _check_preprocess(built, _declared_preprocess(registry, recipe, section), section.name, entry.provider)
        missing = [name for name in ("num_features", "preprocess") if not hasattr(built, name)]
        if missing:
            raise PluginError(f"backbone '{section.name}' from {entry.provider} has no '{missing[0]}' attribute "
                              f"(see faceauth.components.Backbone)")
    return built


def preprocess_of(registry: Registry, recipe: Recipe, section_key: str = "backbone") -> Any:
    """The `faceauth.components.Preprocess` of the backbone a recipe section names: from its record's
    ``preprocess(options)`` without building the network, or, for a record that declares none, read from
    the built module."""
    section = getattr(recipe, section_key)
    if section is None:
        raise RecipeError(f"{recipe.source}: {section_key}: this recipe has no '{section_key}' section")
    return _preprocess(registry, recipe, section)


def _preprocess(registry: Registry, recipe: Recipe, section: Any) -> Any:
    if getattr(registry.entry("backbone", section.name).component, "preprocess", None) is not None:
        return _declared_preprocess(registry, recipe, section)
    built = _build(registry, recipe, section, "backbone")
    if not hasattr(built, "preprocess"):
        raise PluginError(f"backbone '{section.name}' has no 'preprocess' attribute (see faceauth.components.Backbone)")
    return built.preprocess


def _declared_preprocess(registry: Registry, recipe: Recipe, section: Any) -> Any:
    entry = registry.entry("backbone", section.name)
    declared = entry.component.preprocess
    args = (section.options,) if entry.component.options is not None else ()
    kwargs = {"components": Components(registry, recipe)} if accepts(declared, "components") else {}
    try:
        found = declared(*args, **kwargs)
    except FaceAuthError:
        raise
    except Exception as exc:
        raise PluginError(f"backbone '{section.name}' from {entry.provider}: its preprocess(options) failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(found, Preprocess):
        raise PluginError(f"backbone '{section.name}' from {entry.provider}: its preprocess(options) returned "
                          f"{type(found).__name__}, expected a faceauth.components.Preprocess")
    return found


def _check_preprocess(module: Any, declared: Any, name: str, provider: str) -> None:
    """The built module's ``preprocess`` must be what its record states; a module without one gets it."""
    found = getattr(module, "preprocess", None)
    if found is None:
        module.preprocess = declared
    elif found != declared:
        raise PluginError(f"backbone '{name}' from {provider}: the built module's preprocess ({found}) differs from "
                          f"its record's preprocess(options) ({declared})")


class Components:
    """Given to a component whose ``build`` takes a ``components`` argument, to build the components
    named inside its own options (a temporal model's frame encoder, a fusion model's members).

    ``components.build("backbone", {"name": "resnet18", "input_size": 64}, key="backbone.encoder")``
    validates the section like a recipe section (errors name `key`) and builds it;
    ``components.preprocess(section, key)`` gives a backbone section's preprocessing (see `preprocess_of`).
    """

    def __init__(self, registry: Registry, recipe: Recipe):
        self._registry, self._recipe = registry, recipe

    def build(self, kind: str, section: Any, key: str, **kwargs: Any) -> Any:
        return _build(self._registry, self._recipe, self._resolve(section, key, kind), kind, **kwargs)

    def preprocess(self, section: Any, key: str) -> Any:
        return _preprocess(self._registry, self._recipe, self._resolve(section, key, "backbone"))

    def _resolve(self, section: Any, key: str, kind: str) -> Any:
        try:
            return resolve_section(section, key, kind, self._registry)
        except RecipeError as exc:
            raise RecipeError(f"{self._recipe.source}: {exc}") from None
