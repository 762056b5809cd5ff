"""Tests for faceauth.config.registry: built-ins, plugin mistakes, environment filters and entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import types
from pathlib import Path

import attrs
import pytest
import tomllib

import faceauth
import faceauth.plugins.trainers.classifier  # noqa: F401  (imports torch at collection, not inside the first test)
from faceauth.commands.cli import run_main
from faceauth.components import KINDS, Backbone, Dataset, Loss
from faceauth.config.registry import ENTRY_POINT_GROUP, load_registry
from faceauth.errors import PluginError, suggest

REPO = Path(__file__).resolve().parents[1]

VERSION = importlib.metadata.version("faceauth")

# A subset: more built-ins may be added without touching this test.
BUILTINS = {
    "dataset": ["demo", "folder"],
    "backbone": ["resnet18", "resnet34", "resnet50"],
    "loss": ["cross_entropy"],
    "trainer": ["classifier"],
    "exporter": ["onnx"],
}


def _build(*args, **kwargs):
    return None


@attrs.frozen
class TinyOptions:
    width: int = 4


class TinyBackbonePlugin:
    """Registers a backbone named `name` (default 'tiny')."""

    def __init__(self, name: str = "tiny"):
        self.name = name

    @faceauth.hookimpl
    def faceauth_backbones(self):
        return [Backbone(name=self.name, build=_build, options=TinyOptions)]


def _module_plugin(module_name: str, backbone_name: str) -> types.ModuleType:
    module = types.ModuleType(module_name)

    @faceauth.hookimpl
    def faceauth_backbones():
        return [Backbone(name=backbone_name, build=_build)]

    module.faceauth_backbones = faceauth_backbones
    return module


# --- built-ins -------------------------------------------------------------------------------


def test_builtins_are_all_registered_by_faceauth_with_its_version():
    registry = load_registry()
    for kind, names in BUILTINS.items():
        assert set(names) <= set(registry.names(kind))
        for entry in registry.entries(kind):
            assert entry.provider.distribution == "faceauth"
            assert entry.provider.version == VERSION
            assert entry.component.kind == kind


def test_providers_of_names_distribution_and_version():
    registry = load_registry()
    assert registry.providers_of({"backbone": ("backbone", "resnet18"), "loss": ("loss", "cross_entropy")}) == {
        "backbone": f"faceauth {VERSION}",
        "loss": f"faceauth {VERSION}",
    }


def test_list_shows_every_kind_and_every_builtin_with_its_distribution(capsys):
    assert run_main(["--list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for heading in ("datasets:", "backbones:", "losses:", "trainers:", "exporters:"):
        assert heading in lines
    for names in BUILTINS.values():
        for name in names:
            line = next(line for line in lines if line.split()[:1] == [name])
            assert f"faceauth {VERSION}" in line


def test_extra_plugins_are_registered_and_credited_to_code():
    registry = load_registry([TinyBackbonePlugin()])
    entry = registry.entry("backbone", "tiny")
    assert entry.component.options is TinyOptions
    assert entry.provider.distribution == "(registered in code)"
    assert registry.names("backbone") == sorted([*load_registry().names("backbone"), "tiny"])


def test_a_plugin_may_implement_only_some_hooks_and_return_none():
    class Quiet:
        @faceauth.hookimpl
        def faceauth_losses(self):
            return None

    registry = load_registry([Quiet()])
    assert registry.names("loss") == load_registry().names("loss")


# --- name clashes and unknown names ----------------------------------------------------------


def test_same_name_twice_in_one_kind_names_both_providers():
    first, second = _module_plugin("acme_nets", "tiny"), _module_plugin("other_nets", "tiny")
    with pytest.raises(PluginError) as info:
        load_registry([first, second])
    message = str(info.value)
    assert "backbone 'tiny' is registered twice" in message
    assert "acme_nets" in message and "other_nets" in message
    assert "\n" not in message


def test_clash_with_a_builtin_names_faceauth_as_one_provider():
    with pytest.raises(PluginError) as info:
        load_registry([TinyBackbonePlugin("resnet18")])
    message = str(info.value)
    assert f"faceauth {VERSION} (faceauth:backbones)" in message
    assert "TinyBackbonePlugin" in message


def test_same_name_in_different_kinds_is_allowed():
    class LossNamedLikeABackbone:
        @faceauth.hookimpl
        def faceauth_losses(self):
            return [Loss(name="resnet18", build=_build)]

    registry = load_registry([LossNamedLikeABackbone()])
    assert "resnet18" in registry.names("loss")
    assert "resnet18" in registry.names("backbone")


def test_unknown_name_lists_known_names_and_suggests_the_closest():
    registry = load_registry()
    with pytest.raises(PluginError) as info:
        registry.get("backbone", "resnet19")
    message = str(info.value)
    assert "unknown backbone 'resnet19'" in message
    assert f"known: {', '.join(registry.names('backbone'))})" in message
    assert "did you mean 'resnet18'?" in message


def test_unknown_name_far_from_any_gets_no_suggestion():
    registry = load_registry()
    with pytest.raises(PluginError) as info:
        registry.get("loss", "zzzz")
    assert "did you mean" not in str(info.value)
    assert f"known: {', '.join(registry.names('loss'))})" in str(info.value)


def test_suggest():
    assert suggest("epoch", ["epochs", "batch_size"]) == "; did you mean 'epochs'?"
    assert suggest("xyz", ["epochs", "batch_size"]) == ""
    assert suggest("anything", []) == ""


# --- misbehaving plugins ---------------------------------------------------------------------


def test_record_of_the_wrong_kind_is_rejected():
    class WrongKind:
        @faceauth.hookimpl
        def faceauth_datasets(self):
            return [Backbone(name="not_a_dataset", build=_build)]

    with pytest.raises(PluginError) as info:
        load_registry([WrongKind()])
    message = str(info.value)
    assert "WrongKind" in message
    assert "faceauth_datasets" in message
    assert "expected faceauth.components.Dataset records" in message


def test_hook_returning_something_other_than_a_list_is_rejected():
    class NotAList:
        @faceauth.hookimpl
        def faceauth_datasets(self):
            return Dataset(name="single", build=_build)

    with pytest.raises(PluginError, match="must return a list of records, got Dataset"):
        load_registry([NotAList()])


def test_hook_that_raises_is_reported_with_the_plugin_and_the_cause():
    class Exploding:
        @faceauth.hookimpl
        def faceauth_losses(self):
            raise RuntimeError("no GPU driver")

    with pytest.raises(PluginError) as info:
        load_registry([Exploding()])
    message = str(info.value)
    assert "Exploding" in message
    assert "raised in faceauth_losses" in message
    assert "RuntimeError: no GPU driver" in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_invalid_record_built_inside_a_hook_is_reported_as_the_plugins_fault():
    class BadName:
        @faceauth.hookimpl
        def faceauth_backbones(self):
            return [Backbone(name="Has Spaces", build=_build)]

    with pytest.raises(PluginError, match="BadName.*raised in faceauth_backbones"):
        load_registry([BadName()])


def test_misspelled_hook_name_is_rejected():
    class Misspelled:
        @faceauth.hookimpl
        def faceauth_backbone(self):  # singular: not a faceauth hook
            return [Backbone(name="lost", build=_build)]

    with pytest.raises(PluginError) as info:
        load_registry([Misspelled()])
    message = str(info.value)
    assert "faceauth_backbone" in message
    assert "Misspelled" in message
    assert "\n" not in message


def test_hook_with_arguments_the_spec_lacks_is_rejected():
    class ExtraArgument:
        @faceauth.hookimpl
        def faceauth_backbones(self, depth):
            return []

    with pytest.raises(PluginError, match="ExtraArgument.*could not be registered"):
        load_registry([ExtraArgument()])


def test_unmarked_misspelled_function_is_ignored():
    """Only functions carrying the hookimpl marker are hooks; helpers may be named anything."""

    class Helper:
        def faceauth_backbone(self):
            raise AssertionError("never called")

    assert load_registry([Helper()]).names("backbone") == load_registry().names("backbone")


# --- environment filters ---------------------------------------------------------------------


def test_disabling_faceauth_leaves_every_kind_empty(monkeypatch):
    monkeypatch.setenv("FACEAUTH_DISABLE_PLUGINS", "faceauth")
    registry = load_registry()
    assert all(registry.names(kind) == [] for kind in KINDS)
    with pytest.raises(PluginError, match=r"unknown backbone 'resnet18' \(known: none\)"):
        registry.get("backbone", "resnet18")


def test_allow_list_without_faceauth_leaves_every_kind_empty(monkeypatch):
    monkeypatch.setenv("FACEAUTH_PLUGINS", "someotherdist")
    registry = load_registry()
    assert all(registry.names(kind) == [] for kind in KINDS)


def test_allow_list_with_faceauth_and_spaces_loads_the_builtins(monkeypatch):
    monkeypatch.setenv("FACEAUTH_PLUGINS", " someotherdist , faceauth ")
    assert set(BUILTINS["backbone"]) <= set(load_registry().names("backbone"))


def test_disabled_distributions_do_not_affect_plugins_registered_in_code(monkeypatch):
    monkeypatch.setenv("FACEAUTH_DISABLE_PLUGINS", "faceauth")
    registry = load_registry([TinyBackbonePlugin()])
    assert registry.names("backbone") == ["tiny"]


def test_distribution_names_in_filters_are_normalised(monkeypatch):
    monkeypatch.setenv("FACEAUTH_DISABLE_PLUGINS", "FaceAuth")
    assert load_registry().names("backbone") == []


# --- entry points ----------------------------------------------------------------------------


def _faceauth_entry_points() -> list[importlib.metadata.EntryPoint]:
    return [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.dist is not None and ep.dist.name == "faceauth"]


def _component_count(plugin: object, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("FACEAUTH_PLUGINS", "no-such-distribution")  # only `plugin` itself
    registry = load_registry([plugin])
    return sum(len(registry.names(kind)) for kind in KINDS)


def test_installed_entry_points_match_pyproject():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared_eps = declared["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {ep.name: ep.value for ep in _faceauth_entry_points()}
    assert installed == declared_eps, "installed metadata is stale: reinstall with `pip install -e .`"


@pytest.mark.parametrize("ep", _faceauth_entry_points(), ids=lambda ep: ep.name)
def test_every_builtin_entry_point_loads_and_registers_something(ep, monkeypatch):
    plugin = ep.load()
    assert _component_count(plugin, monkeypatch) >= 1


def test_every_entry_point_declared_in_pyproject_imports_and_registers_something(monkeypatch):
    """Catches a renamed module even when the installed metadata predates the rename."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    values = declared["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert values, "no built-in entry points declared"
    for name, value in values.items():
        module = importlib.import_module(value)
        assert _component_count(module, monkeypatch) >= 1, f"entry point {name} = {value} registers nothing"


def test_builtins_come_only_through_entry_points():
    """Every built-in is credited to one of faceauth's entry points (no hidden registration path)."""
    registry = load_registry()
    plugin_names = {f"faceauth:{ep.name}" for ep in _faceauth_entry_points()}
    for kind in KINDS:
        for entry in registry.entries(kind):
            assert entry.provider.plugin in plugin_names
