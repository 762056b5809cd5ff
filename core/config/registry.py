"""Loading plugins and turning their hook results into one registry per component kind.

Plugins come from the entry-point group ``faceauth`` (faceauth's own built-ins included) and from
`extra_plugins` passed in code. Which distributions load can be narrowed with two environment
variables, read on every load:

- ``FACEAUTH_PLUGINS=dist1,dist2``: load only these distributions (an allow-list);
- ``FACEAUTH_DISABLE_PLUGINS=dist1,dist2``: load everything except these.

A plugin that fails to import or raises while registering is reported by distribution and entry
point, with the variable that runs without it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import pluggy

from faceauth import hookspecs
from faceauth.components import KINDS, Component
from faceauth.errors import PluginError, quote, suggest
from faceauth.io.console import installed_version

__all__ = ["ENTRY_POINT_GROUP", "Provider", "Registry", "load_registry", "version"]

ENTRY_POINT_GROUP = "faceauth"
ALLOW_ENV = "FACEAUTH_PLUGINS"
DISABLE_ENV = "FACEAUTH_DISABLE_PLUGINS"

IN_CODE = "(registered in code)"

_REGISTRATION_HOOKS = {
    "dataset": "faceauth_datasets",
    "backbone": "faceauth_backbones",
    "loss": "faceauth_losses",
    "trainer": "faceauth_trainers",
    "exporter": "faceauth_exporters",
    "detector": "faceauth_detectors",
}


@attrs.frozen
class Provider:
    """Who registered a component: the plugin's name, its distribution and that distribution's version."""

    plugin: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} ({self.plugin})"


@attrs.frozen
class Entry:
    component: Component
    provider: Provider


def version() -> str:
    """The installed faceauth's version ("unknown" when it runs from a source tree without metadata)."""
    return installed_version("faceauth") or "unknown"


def normalise(distribution: str) -> str:
    """A distribution name in PEP 503 form, so `FaceAuth_Example` matches `faceauth-example`."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {normalise(item.strip()) for item in raw.split(",") if item.strip()}


def _entry_points() -> Iterator[tuple[importlib.metadata.EntryPoint, str, str]]:
    allow, deny = _env_list(ALLOW_ENV), _env_list(DISABLE_ENV) or set()
    seen: set[tuple[str, str]] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        version = ep.dist.version if ep.dist is not None else "unknown"
        # The same distribution can be visible twice on sys.path (an editable install plus a
        # source tree); load each entry point once.
        if (dist, ep.name) in seen:
            continue
        seen.add((dist, ep.name))
        if (allow is not None and normalise(dist) not in allow) or normalise(dist) in deny:
            continue
        yield ep, dist, version


class Registry:
    """Every registered component, by kind and name, with the plugin that provides it."""

    def __init__(self, plugin_manager: pluggy.PluginManager, providers: dict[str, Provider]):
        self.plugin_manager = plugin_manager
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind, hook_name in _REGISTRATION_HOOKS.items():
            hook = getattr(plugin_manager.hook, hook_name)
            for impl in hook.get_hookimpls():
                provider = providers[impl.plugin_name]
                for component in self._call(impl, provider, hook_name):
                    self._add(kind, component, provider, hook_name)

    @staticmethod
    def _call(impl: Any, provider: Provider, hook_name: str) -> list[Any]:
        try:
            result = impl.function()
        except Exception as exc:
            raise PluginError(
                f"plugin {provider} raised in {hook_name}: {type(exc).__name__}: {exc}{_how_to_skip(provider)}"
            ) from exc
        if result is None:
            return []
        if not isinstance(result, (list, tuple)):
            raise PluginError(f"plugin {provider}: {hook_name} must return a list of records, got {type(result).__name__}")
        return list(result)

    def _add(self, kind: str, component: Any, provider: Provider, hook_name: str) -> None:
        expected = KINDS[kind]
        if not isinstance(component, expected):
            raise PluginError(
                f"plugin {provider}: {hook_name} returned {component!r}; expected faceauth.components.{expected.__name__} records"
            )
        existing = self._entries[kind].get(component.name)
        if existing is not None:
            raise PluginError(
                f"{kind} '{component.name}' is registered twice: by {existing.provider} and by {provider}; "
                f"uninstall or disable one ({DISABLE_ENV}=<distribution>)"
            )
        self._entries[kind][component.name] = Entry(component, provider)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def get(self, kind: str, name: str) -> Component:
        return self.entry(kind, name).component

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[kind][name]
        except KeyError:
            known = self.names(kind)
            raise PluginError(
                f"unknown {kind} {quote(name, 80)} (known: {', '.join(known) or 'none'}){suggest(name, known)}"
            ) from None

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][name] for name in self.names(kind)]

    def providers_of(self, names: dict[str, tuple[str, str]]) -> dict[str, str]:
        """{label: "distribution version"} for {label: (kind, name)}, for checkpoints and metadata."""
        return {label: f"{self.entry(kind, name).provider.distribution} {self.entry(kind, name).provider.version}"
                for label, (kind, name) in names.items()}

    def hook(self) -> Any:
        """The event hooks (``faceauth_train_start`` ...), called as ``registry.hook().faceauth_epoch_end(...)``."""
        return self.plugin_manager.hook


def _how_to_skip(provider: Provider) -> str:
    if provider.distribution == IN_CODE:
        return ""
    return f" (set {DISABLE_ENV}={provider.distribution} to run without it)"


def load_registry(extra_plugins: Iterable[Any] = ()) -> Registry:
    """Load every enabled entry-point plugin plus `extra_plugins` and build the registry."""
    pm = pluggy.PluginManager("faceauth")
    pm.add_hookspecs(hookspecs)
    providers: dict[str, Provider] = {}
    for ep, dist, version in _entry_points():
        name = f"{dist}:{ep.name}"
        provider = Provider(name, dist, version)
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {provider} (entry point '{ep.name} = {ep.value}') failed to import: "
                f"{type(exc).__name__}: {exc}{_how_to_skip(provider)}"
            ) from exc
        _register(pm, plugin, provider)
        providers[name] = provider
    for index, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        provider = Provider(name, IN_CODE, "-")
        _register(pm, plugin, provider)
        providers[name] = provider
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin = providers.get(pm.get_name(exc.plugin) or "", exc.plugin)
        raise PluginError(f"plugin {plugin}: {exc} (hooks are named faceauth_*; see CONTRIBUTING.md)") from exc
    return Registry(pm, providers)


def _register(pm: pluggy.PluginManager, plugin: Any, provider: Provider) -> None:
    try:
        pm.register(plugin, name=provider.plugin)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {provider} could not be registered: {exc}") from exc
