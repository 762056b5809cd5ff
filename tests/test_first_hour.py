"""What a new user meets first: recipes by name, overrides that switch components and delete keys,
mappings as recipes, `--version`, a start-up that imports no PyTorch, faceauth's own log lines."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from pathlib import Path

import attrs
import pytest
import yaml

import faceauth
from faceauth.commands.cli import eval_main, export_main, run_main
from faceauth.commands.predict import predict_main
from faceauth.components import Dataset, Lazy, lazy, resolve
from faceauth.config.recipe import builtin_recipes, find_recipe, load_recipe
from faceauth.config.registry import load_registry
from faceauth.errors import PluginError, RecipeError
from faceauth.io.console import versions
from tests.conftest import REPO, TINY_RECIPE

# ---- built-in recipes ----------------------------------------------------------------------------

def test_builtin_recipes_are_the_recipes_folder_and_found_by_name(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(builtin_recipes()) == {p.stem for p in (REPO / "recipes").glob("*.yaml")}
    monkeypatch.chdir(tmp_path)  # no file of that name here: the built-in one is found
    assert find_recipe("liveness_resnet18").read_bytes() == (REPO / "recipes" / "liveness_resnet18.yaml").read_bytes()
    recipe = load_recipe("liveness_resnet18", ["trainer.epochs=1"], registry=load_registry())
    assert recipe.backbone.name == "resnet18" and Path(recipe.source).stem == "liveness_resnet18"
    local = tmp_path / "liveness_resnet18.yaml"  # a file of that name wins over the built-in recipe
    local.write_text(yaml.safe_dump({**TINY_RECIPE, "seed": 7}), encoding="utf-8")
    assert load_recipe("liveness_resnet18.yaml", registry=load_registry()).seed == 7


def test_unknown_recipe_name_is_one_line_listing_the_builtin_ones(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_main(["liveness_resnet81", "--print-recipe"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "liveness_resnet81: recipe file not found, and no built-in recipe" in err
    assert "liveness_resnet18" in err and "temporal_lstm" in err


def test_list_shows_the_builtin_recipes(capsys: pytest.CaptureFixture) -> None:
    assert run_main(["--list"]) == 0
    out = capsys.readouterr().out
    recipes = out[out.index("recipes (faceauth-run NAME):"):].split()[3:]
    assert recipes == sorted(builtin_recipes()) and "liveness_resnet18" in recipes


# ---- overrides -----------------------------------------------------------------------------------

def test_switching_a_component_drops_the_recipe_options_it_does_not_know(caplog: pytest.LogCaptureFixture) -> None:
    registry = load_registry()
    with caplog.at_level(logging.INFO, logger="faceauth"):
        recipe = load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", ["backbone.name=mobilefacenet"],
                             registry=registry)
    assert recipe.backbone.name == "mobilefacenet"
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert lines == ["backbone.name=mobilefacenet: dropped backbone.input_size from the recipe "
                     "(not options of backbone 'mobilefacenet')"]
    # A key given on the command line is still checked against the new component.
    with pytest.raises(RecipeError, match=r"override 'backbone.input_size=64': backbone.input_size: unknown key"):
        load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", ["backbone.name=mobilefacenet", "backbone.input_size=64"],
                    registry=registry)
    # The replace-a-whole-section form still works.
    assert load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", ["backbone={name: mobilefacenet}"],
                       registry=registry).backbone.name == "mobilefacenet"


@attrs.frozen
class _NoRootOptions:
    count: int = 4


def test_a_third_party_dataset_by_name_does_not_inherit_the_recipe_root() -> None:
    plugin = types.SimpleNamespace(__name__="no_root", faceauth_datasets=faceauth.hookimpl(
        lambda: [Dataset(name="no_root", build=lambda options: None, options=_NoRootOptions)]))
    recipe = load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", ["data.name=no_root", "data.count=2"],
                         registry=load_registry([plugin]))
    assert recipe.data.name == "no_root" and recipe.data.options == _NoRootOptions(count=2)


def test_tilde_deletes_a_key_and_a_key_that_names_nothing_is_one_line(capsys: pytest.CaptureFixture) -> None:
    registry = load_registry()
    base = load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", registry=registry)
    deleted = load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", ["~backbone.input_size", "~export"],
                          registry=registry)
    assert base.backbone.options.input_size != 112 and deleted.backbone.options.input_size == 112  # the default
    assert deleted.export is None
    with pytest.raises(RecipeError, match=r"override '~backbone.imput_size': backbone.imput_size names nothing "
                                          r"in the recipe \(keys of backbone: name, input_size"):
        load_recipe(REPO / "recipes" / "liveness_resnet18.yaml", ["~backbone.imput_size"], registry=registry)
    assert run_main(["liveness_resnet18", "~nothing.here", "--print-recipe"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "override '~nothing.here': nothing.here names nothing" in err


# ---- mappings as recipes -------------------------------------------------------------------------

def test_a_mapping_is_a_recipe_and_anything_else_is_one_line() -> None:
    registry = load_registry()
    recipe = load_recipe({**TINY_RECIPE}, ["trainer.epochs=1"], registry=registry)
    assert recipe.trainer.options.epochs == 1 and recipe.backbone.options.input_size == 32
    with pytest.raises(RecipeError, match=r"^<recipe>: data: required section is missing"):
        load_recipe({"seed": 1}, registry=registry)
    with pytest.raises(RecipeError, match=r"^a recipe is a YAML file, a built-in recipe's name or a mapping, not list$"):
        faceauth.run([TINY_RECIPE])  # type: ignore[arg-type]


# ---- lazy registration ---------------------------------------------------------------------------

def test_builtin_records_point_at_their_modules_lazily() -> None:
    from faceauth.plugins.backbones import IRESNET_DEPTHS, iresnet, resnet

    registry = load_registry()
    record = registry.get("backbone", "resnet34")
    assert isinstance(record.build, Lazy) and resolve(record.options) is resnet.ResNetOptions
    assert IRESNET_DEPTHS == tuple(iresnet.DEPTHS)
    for kind in ("dataset", "backbone", "loss", "trainer", "exporter", "detector"):
        for entry in registry.entries(kind):
            resolve(entry.component.options)  # every reference names a real class
            assert callable(resolve(entry.component.build))
    assert lazy("faceauth.plugins.backbones.resnet:ResNetFeatures", 18)(resnet.ResNetOptions()).num_features == 512


def test_a_lazy_reference_that_does_not_import_names_the_plugin() -> None:
    plugin = types.SimpleNamespace(__name__="broken_refs", faceauth_datasets=faceauth.hookimpl(
        lambda: [Dataset(name="broken", build=lazy("no_such_module:build"), options=lazy("no_such_module:Options"))]))
    registry = load_registry([plugin])
    with pytest.raises(PluginError, match=r"dataset 'broken' from .*broken_refs.*options class failed to import: "
                                          r"ModuleNotFoundError"):
        load_recipe({**TINY_RECIPE, "data": {"name": "broken"}}, registry=registry)


def test_cli_and_listing_import_no_torch() -> None:
    code = ("import sys; import faceauth.commands.cli; assert 'torch' not in sys.modules, 'cli';"
            "from faceauth.commands.cli import run_main; run_main(['--list']);"
            "assert 'torch' not in sys.modules, 'list'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resnet18" in done.stdout


# ---- --version and logging -----------------------------------------------------------------------

@pytest.mark.parametrize("main", [run_main, eval_main, export_main, predict_main])
def test_every_command_has_version(main, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out]
    assert names[:6] == ["faceauth", "python", "torch", "torchvision", "onnxruntime", "onnx"]
    assert out[0].split()[-1] == faceauth.config.registry.version()


def test_versions_name_the_plugin_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    plugins = {ep.dist.name for ep in importlib.metadata.entry_points(group="faceauth")} - {"faceauth"}
    assert {name.removeprefix("plugin ") for name, _ in versions() if name.startswith("plugin ")} == plugins


def test_commands_show_faceauth_logs_only(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def action_logging(*args, **kwargs):
        logging.getLogger("onnxscript.optimizer").info("Removed 182 unused nodes")
        logging.getLogger("faceauth.plugins.datasets.folder").info("skipped 2 unreadable images")
        raise faceauth.RecipeError("stop here")

    monkeypatch.setattr("faceauth.runs.runner.run", action_logging)
    assert run_main([str(REPO / "recipes" / "liveness_resnet18.yaml")]) == 1
    err = capsys.readouterr().err
    assert "faceauth-run: skipped 2 unreadable images" in err and "Removed 182" not in err
    assert not logging.getLogger("faceauth").handlers  # the command's handler is gone afterwards
