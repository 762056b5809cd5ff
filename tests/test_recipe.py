"""Tests for faceauth.config.recipe: reading files, command-line overrides, resolution and the round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import faceauth
import faceauth.plugins.trainers.classifier  # noqa: F401  (imports torch at collection, not inside the first test)
from faceauth.commands.cli import run_main
from faceauth.components import Loss
from faceauth.config.recipe import apply_overrides, load_recipe, read_yaml, resolve
from faceauth.config.registry import load_registry
from faceauth.errors import RecipeError

REPO = Path(__file__).resolve().parents[1]
HEADLINE = REPO / "recipes" / "liveness_resnet18.yaml"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _recipe_error(*args, **kwargs) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- apply_overrides -------------------------------------------------------------------------


def test_override_values_are_parsed_as_yaml():
    raw = {"a": {"b": 1, "keep": "me"}}
    result = apply_overrides(raw, [
        "a.b=2", "a.f=2.5", "a.t=true", "a.s=hello world", "a.q='007'", "a.l=[1, 2, x]",
        "a.m={k: 1}", "a.n=null", "a.e=", "a.p=/data/x=y",
    ])
    assert result == {"a": {"b": 2, "keep": "me", "f": 2.5, "t": True, "s": "hello world", "q": "007",
                            "l": [1, 2, "x"], "m": {"k": 1}, "n": None, "e": None, "p": "/data/x=y"}}


def test_overrides_create_nested_keys_and_fill_null_sections():
    result = apply_overrides({"export": None}, ["x.y.z=1", "export.name=onnx"])
    assert result == {"x": {"y": {"z": 1}}, "export": {"name": "onnx"}}


def test_later_override_wins_and_input_is_not_mutated():
    raw = {"a": {"b": {"c": 1}}}
    assert apply_overrides(raw, ["a.b.c=2", "a.b.c=3"]) == {"a": {"b": {"c": 3}}}
    assert raw == {"a": {"b": {"c": 1}}}


def test_key_and_value_are_split_at_the_first_equals_and_key_is_stripped():
    assert apply_overrides({}, [" a.b =x=1"]) == {"a": {"b": "x=1"}}


@pytest.mark.parametrize("item", ["trainer.epochs", "=3", "a..b=1", ".a=1", "a.=1", " =1"])
def test_malformed_override_is_rejected(item):
    with pytest.raises(RecipeError) as info:
        apply_overrides({}, [item])
    assert str(info.value) == f"override '{item}': expected key=value, for example trainer.epochs=10"


def test_override_through_a_scalar_names_the_offending_key():
    with pytest.raises(RecipeError) as info:
        apply_overrides({"seed": 0}, ["seed.x=1"])
    assert str(info.value) == "override 'seed.x=1': seed is 0, not a section with keys"


def test_override_through_a_list_names_the_offending_key():
    with pytest.raises(RecipeError) as info:
        apply_overrides({"optimizer": {"betas": [0.9, 0.99]}}, ["optimizer.betas.0=0.5"])
    assert str(info.value) == "override 'optimizer.betas.0=0.5': optimizer.betas is [0.9, 0.99], not a section with keys"


def test_override_with_invalid_yaml_value_is_rejected():
    with pytest.raises(RecipeError, match=r"^override 'optimizer.lr=\[1': the value is not valid YAML"):
        apply_overrides({}, ["optimizer.lr=[1"])


def test_override_with_invalid_yaml_value_gives_one_line():
    with pytest.raises(RecipeError) as info:
        apply_overrides({}, ["optimizer.lr=[1"])
    assert "\n" not in str(info.value)


@settings(max_examples=100, deadline=None)
@given(st.integers())
def test_any_int_override_sets_that_int(value):
    assert apply_overrides({}, [f"a.b={value}"]) == {"a": {"b": value}}


# --- read_yaml -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(RecipeError) as info:
        read_yaml(path)
    assert str(info.value) == f"{path}: recipe file not found"


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(RecipeError, match=f"^{tmp_path}: cannot read recipe file"):
        read_yaml(tmp_path)


def test_invalid_yaml_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\ndata:\n\tname: demo\n", encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        read_yaml(path)
    assert str(info.value) == f"{path}: invalid YAML at line 3, column 1: found character '\\t' that cannot start any token"


def test_unclosed_flow_mapping_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\nbackbone: {name: resnet18\nloss: x\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"invalid YAML at line 3, column 5: expected ',' or '}'"):
        read_yaml(path)


def test_top_level_list_is_rejected(tmp_path):
    path = _write(tmp_path / "list.yaml", [{"seed": 0}])
    with pytest.raises(RecipeError) as info:
        read_yaml(path)
    assert str(info.value) == f"{path}: a recipe must be a mapping of keys to values, got list"


def test_empty_file_reads_as_empty_mapping_and_then_lacks_data(tmp_path, registry):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    assert read_yaml(path) == {}
    assert _recipe_error(path, registry=registry) == f"{path}: data: required section is missing (a mapping with 'name')"


# --- resolve / load_recipe -------------------------------------------------------------------


def test_headline_recipe_resolves(registry):
    recipe = load_recipe(HEADLINE, registry=registry)
    assert recipe.component_names() == {"data": ("dataset", "folder"), "backbone": ("backbone", "resnet18"),
                                        "loss": ("loss", "cross_entropy"), "trainer": ("trainer", "classifier"),
                                        "export": ("exporter", "onnx")}
    assert recipe.data.options.root is None
    assert recipe.backbone.options.input_size == 64
    assert recipe.trainer.options.epochs == 4 and recipe.trainer.options.monitor == "acer"
    assert recipe.optimizer.name == "adamw" and recipe.optimizer.lr == 0.001
    assert recipe.scheduler.warmup_epochs == 0.5
    assert recipe.source == str(HEADLINE)


def test_several_datasets_and_optional_sections(registry):
    recipe = load_recipe(HEADLINE, ["data=[{name: folder, root: /a}, {name: folder, root: /b}]",
                                    "test_data={name: folder, root: /c}"], registry=registry)
    assert [s.options.root for s in recipe.data] == ["/a", "/b"]
    assert recipe.test_data.options.root == "/c" and recipe.detector is None
    assert set(recipe.component_names()) >= {"data", "data[1]", "test_data"}
    assert load_recipe(None, registry=registry, base=recipe.to_dict()) == recipe
    with pytest.raises(RecipeError, match=r"data\[1\]\.root: expected a string or null, got 5"):
        load_recipe(HEADLINE, ["data=[{name: folder}, {name: folder, root: 5}]"], registry=registry)
    with pytest.raises(RecipeError, match="data: an empty list"):
        load_recipe(HEADLINE, ["data=[]"], registry=registry)


def test_headline_recipe_accepts_the_overrides_its_comment_advertises(registry):
    overrides = ["data.root=/path/to/liveness_dataset", "trainer.batch_size=32", "trainer.epochs=50",
                 "optimizer.lr=0.001", "output_dir=./checkpoints", "backbone.input_size=112"]
    recipe = load_recipe(HEADLINE, overrides, registry=registry)
    assert recipe.data.options.root == "/path/to/liveness_dataset"
    assert recipe.trainer.options.epochs == 50 and recipe.backbone.options.input_size == 112
    assert recipe.output_dir == "./checkpoints"


def test_tiny_recipe_fixture_resolves(tiny_recipe, registry):
    recipe = load_recipe(tiny_recipe, registry=registry)
    assert recipe.data.name == "demo" and recipe.trainer.options.epochs == 2


def test_unknown_key_in_file_names_the_file_not_an_override(tmp_path, registry):
    raw = yaml.safe_load(HEADLINE.read_text(encoding="utf-8"))
    raw["trainer"]["epoch"] = 3
    path = _write(tmp_path / "typo.yaml", raw)
    message = _recipe_error(path, ["trainer.epochs=2"], registry=registry)
    assert message.startswith(f"{path}: trainer.epoch: unknown key (known: epochs, ")
    assert message.endswith("did you mean 'epochs'?")
    assert "override" not in message


def test_unknown_key_from_override_names_the_override(registry):
    message = _recipe_error(HEADLINE, ["trainer.epochs=2", "trainer.epoch=3"], registry=registry)
    assert message.startswith("override 'trainer.epoch=3': trainer.epoch: unknown key (known: epochs, ")
    assert message.endswith("did you mean 'epochs'?")


def test_unknown_top_level_key_in_file_and_from_override(tmp_path, registry):
    path = _write(tmp_path / "top.yaml", {**yaml.safe_load(HEADLINE.read_text(encoding="utf-8")), "sed": 1})
    message = _recipe_error(path, registry=registry)
    assert message.startswith(f"{path}: sed: unknown key (known: seed, output_dir,")
    assert message.endswith("did you mean 'seed'?")
    assert _recipe_error(HEADLINE, ["sed=1"], registry=registry).startswith("override 'sed=1': sed: unknown key")


def test_wrong_value_from_override_names_the_override(registry):
    assert _recipe_error(HEADLINE, ["trainer.epochs=fifty"], registry=registry) == \
        "override 'trainer.epochs=fifty': trainer.epochs: expected an integer, got 'fifty'"
    assert _recipe_error(HEADLINE, ["optimizer.lr=-1"], registry=registry) == \
        "override 'optimizer.lr=-1': optimizer.lr: expected a positive number, got -1.0"
    assert _recipe_error(HEADLINE, ["trainer.augment.crop_scale=2"], registry=registry) == \
        "override 'trainer.augment.crop_scale=2': trainer.augment.crop_scale: expected a number between 0 and 1, got 2.0"


def test_override_replacing_a_whole_section_is_named(registry):
    message = _recipe_error(HEADLINE, ["scheduler={name: cosine, warmup: 1}"], registry=registry)
    assert message.startswith("override 'scheduler={name: cosine, warmup: 1}': scheduler.warmup: unknown key")


def test_bad_list_element_from_override_names_the_override(registry):
    message = _recipe_error(HEADLINE, ["optimizer.betas=[0.9, x]"], registry=registry)
    assert message == "override 'optimizer.betas=[0.9, x]': optimizer.betas[1]: expected a number, got 'x'"


def test_scientific_notation_override_is_a_number(registry):
    assert load_recipe(HEADLINE, ["optimizer.lr=1e-3"], registry=registry).optimizer.lr == 0.001


def test_unknown_component_name_suggests_the_closest(tmp_path, registry):
    raw = yaml.safe_load(HEADLINE.read_text(encoding="utf-8"))
    raw["backbone"]["name"] = "resnet19"
    path = _write(tmp_path / "bb.yaml", raw)
    assert _recipe_error(path, registry=registry) == (
        f"{path}: backbone.name: unknown backbone 'resnet19' (known: {', '.join(registry.names('backbone'))}); "
        "did you mean 'resnet18'?")
    assert _recipe_error(HEADLINE, ["loss.name=crossentropy"], registry=registry) == (
        f"override 'loss.name=crossentropy': loss.name: unknown loss 'crossentropy' (known: {', '.join(registry.names('loss'))}); "
        "did you mean 'cross_entropy'?")


def test_options_are_checked_against_the_chosen_component(registry):
    # data.root is a `folder` option; `demo` has no such key
    message = _recipe_error(HEADLINE, ["data.name=demo", "data.root=/x"], registry=registry)
    assert message.startswith("override 'data.root=/x': data.root: unknown key (known: train, val, test, size, seed)")


def test_section_without_name_lists_the_registered_names(registry):
    message = _recipe_error(HEADLINE, ["loss={label_smoothing: 0.1}"], registry=registry)
    assert f"loss: expected a mapping with 'name' (a registered loss: {', '.join(registry.names('loss'))})" in message


def test_missing_component_section(tmp_path, registry):
    raw = yaml.safe_load(HEADLINE.read_text(encoding="utf-8"))
    del raw["trainer"]
    path = _write(tmp_path / "notrainer.yaml", raw)
    assert _recipe_error(path, registry=registry) == f"{path}: trainer: required section is missing (a mapping with 'name')"


def test_export_section_is_optional(registry):
    recipe = load_recipe(HEADLINE, ["export=null"], registry=registry)
    assert recipe.export is None
    assert "exporter" not in recipe.component_names()


class _PlainLossPlugin:
    @faceauth.hookimpl
    def faceauth_losses(self):
        return [Loss(name="plain", build=lambda **kwargs: None)]


def test_component_without_options_accepts_none_and_rejects_any():
    registry = load_registry([_PlainLossPlugin()])
    assert load_recipe(HEADLINE, ["loss={name: plain}"], registry=registry).loss.options is None
    message = _recipe_error(HEADLINE, ["loss={name: plain, smoothing: 0.1}"], registry=registry)
    assert message == "override 'loss={name: plain, smoothing: 0.1}': loss.smoothing: loss 'plain' takes no options"
    assert load_recipe(HEADLINE, ["loss.name=plain"], registry=registry).loss.name == "plain"


# --- round trip ------------------------------------------------------------------------------


ROUND_TRIP_OVERRIDES = [
    "run_name=exp1", "seed=7", "deterministic=true", "optimizer.betas=[0.8, 0.9]", "optimizer.name=sgd",
    "scheduler.name=step", "loss.class_weights=[1, 2]", "trainer.augment.hflip=false", "trainer.max_steps=5",
    "backbone.pretrained=/weights/r18.pth", "data.root=/data/liveness",
]


def test_to_dict_round_trips_through_resolve(registry):
    recipe = load_recipe(HEADLINE, ROUND_TRIP_OVERRIDES, registry=registry)
    assert resolve(recipe.to_dict(), registry) == recipe
    assert resolve(yaml.safe_load(recipe.to_yaml()), registry) == recipe


def test_round_trip_without_export(registry):
    recipe = load_recipe(HEADLINE, ["export=null"], registry=registry)
    assert recipe.to_dict()["export"] is None
    assert resolve(recipe.to_dict(), registry) == recipe


def test_to_dict_holds_every_default(registry):
    data = load_recipe(HEADLINE, registry=registry).to_dict()
    assert data["trainer"]["augment"]["crop_scale"] == 0.8
    assert data["export"] == {"name": "onnx", "opset": 18, "tolerance": pytest.approx(1e-4), "quantize": "none",
                              "calibration_samples": 256, "int8_max_change": 0.01, "require_speedup": True}
    assert data["run_name"] is None and data["device"] == "auto"


def test_resolving_from_base_data_without_a_file(registry):
    base = load_recipe(HEADLINE, registry=registry).to_dict()
    recipe = load_recipe(None, ["trainer.epochs=9"], registry=registry, base=base)
    assert recipe.trainer.options.epochs == 9 and recipe.source == "<recipe>"


# --- --print-recipe --------------------------------------------------------------------------


def test_print_recipe_prints_the_resolved_yaml_with_overrides(tiny_recipe, capsys):
    assert run_main(["--print-recipe", str(tiny_recipe), "trainer.epochs=7", "optimizer.lr=0.5"]) == 0
    captured = capsys.readouterr()
    printed = yaml.safe_load(captured.out)
    assert printed["trainer"]["epochs"] == 7
    assert printed["optimizer"]["lr"] == 0.5
    assert printed["trainer"]["batch_size"] == 16  # from the file
    assert printed["backbone"]["dropout"] == 0.0  # a default filled in
    assert captured.err == ""
    assert not (tiny_recipe.parent / "runs").exists()  # printing never creates a run directory


def test_print_recipe_output_is_itself_a_valid_recipe(tiny_recipe, capsys, registry, tmp_path):
    assert run_main(["--print-recipe", str(tiny_recipe), "seed=3"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out, encoding="utf-8")
    assert load_recipe(printed, registry=registry) == load_recipe(tiny_recipe, ["seed=3"], registry=registry)


def test_a_nested_section_set_in_part_keeps_its_own_defaults(registry):
    # The embedding trainer's augmentation defaults keep faces aligned (no crop, no rotation);
    # changing one key must not bring back the generic defaults for the others.
    recipe = load_recipe(REPO / "recipes" / "embeddings_mobilefacenet.yaml", ["trainer.augment.hflip=false"],
                         registry=registry)
    augment = recipe.trainer.options.augment
    assert augment.hflip is False and augment.crop_scale == 1.0 and augment.rotation == 0.0


def test_gpu_path_options_are_validated(registry):
    recipe = load_recipe(HEADLINE, ["trainer.amp_dtype=bfloat16", "trainer.compile=true"], registry=registry)
    assert recipe.trainer.options.amp_dtype == "bfloat16" and recipe.trainer.options.compile is True
    with pytest.raises(RecipeError, match=r"trainer.amp_dtype: expected one of 'auto', 'float16', 'bfloat16', got 'float8'"):
        load_recipe(HEADLINE, ["trainer.amp_dtype=float8"], registry=registry)
