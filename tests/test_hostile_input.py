"""Hostile or unlucky input ends in one line naming what is at fault (README: recipes, data, exported models)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from faceauth.errors import DataError, PluginError


def test_an_opencv_without_haar_cascades_is_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    from faceauth.faces import HaarCascade
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions

    monkeypatch.delattr(cv2, "CascadeClassifier")  # as in OpenCV 5.x, whose wheels this venv cannot install
    with pytest.raises(DataError, match=r"has no Haar cascades .*opencv-python-headless<5") as caught:
        HaarCascade()
    assert "\n" not in str(caught.value)
    with pytest.raises(PluginError, match=r"detector 'haar': .*opencv-python-headless<5"):
        HaarDetector(HaarOptions())


# recipes ----------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from faceauth.errors import RecipeError, quote  # noqa: E402
from tests.conftest import TINY_RECIPE  # noqa: E402

ONE_LINE = 1000  # a message names the key and quotes a few hundred characters of the value at most

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**30) | st.floats()
    | st.text(max_size=20) | st.text(min_size=2000, max_size=3000),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=6),
    max_leaves=30)
KEYS = ["seed", "output_dir", "device", "deterministic", "optimizer", "optimizer.lr", "optimizer.betas", "scheduler.name",
        "data", "data.name", "data.train", "backbone", "backbone.name", "backbone.input_size", "loss", "loss.class_weights",
        "trainer", "trainer.epochs", "trainer.augment", "trainer.augment.jpeg_quality", "export", "export.opset",
        "detector", "test_data", "nonsense", "trainer.nonsense"]


@pytest.fixture(scope="module")
def registry() -> object:
    from faceauth.registry import load_registry

    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUTH_PLUGINS", "faceauth")
        return load_registry()


def assert_one_line(message: str) -> None:
    assert "\n" not in message and len(message) < ONE_LINE, message[:2000]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=values)
def test_any_value_anywhere_in_a_recipe_is_accepted_or_one_short_line(registry: object, key: str, value: object) -> None:
    import yaml

    from faceauth.recipe import load_recipe

    base = yaml.safe_load(yaml.safe_dump(TINY_RECIPE))
    node, *path = [base], *key.split(".")
    node = base
    for part in key.split(".")[:-1]:
        node = node.setdefault(part, {}) if isinstance(node.get(part), dict) else node.setdefault(part, {})
    node[key.split(".")[-1]] = value
    try:
        load_recipe(None, registry=registry, base=base)
    except RecipeError as exc:
        assert_one_line(str(exc))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), text=st.text(max_size=300) | st.text(alphabet="[]{}&*ab:, -'\"!\n", max_size=300))
def test_any_override_text_is_accepted_or_one_short_line(registry: object, key: str, text: str) -> None:
    from faceauth.recipe import load_recipe

    try:
        load_recipe(None, [f"{key}={text}"], registry=registry, base=TINY_RECIPE)
    except RecipeError as exc:
        assert_one_line(str(exc))


def laughs(levels: int, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nseed: *l{levels - 1}\n"


@pytest.mark.parametrize("text, problem", [
    (laughs(9), "aliases expand it past 10000 values"),  # 9**9 values from 600 bytes
    (laughs(30, 2), "aliases expand it past 10000 values"),  # 2**30 from a deep chain
    ("seed: &a [1, *a]\n", "a node that contains it"),
    ("seed: " + "[" * 20000 + "]" * 20000 + "\n", "nested more than 64 levels deep"),
    ("".join(" " * i + "a:\n" for i in range(600)), "nested too deeply"),
    ("seed: " + "9" * 6000 + "\n", "Exceeds the limit"),
])
def test_alias_bombs_and_monsters_are_refused_before_validation(tmp_path: Path, text: str, problem: str) -> None:
    import time
    import tracemalloc

    from faceauth.recipe import read_yaml

    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    traced = "expand" in problem  # tracemalloc slows PyYAML's own deep recursion twenty-fold: measure where it counts
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(RecipeError, match=problem) as caught:
        read_yaml(path)
    seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1] if traced else 0
    tracemalloc.stop()
    assert_one_line(str(caught.value))
    assert peak < 200e6 and seconds < 30  # bounded: the expansion is never built (9**9 values would be gigabytes)


def test_shared_sections_through_aliases_still_work(tmp_path: Path, registry: object) -> None:
    import yaml

    from faceauth.recipe import load_recipe

    text = yaml.safe_dump({k: v for k, v in TINY_RECIPE.items() if k != "data"})
    text += "data: &demo {name: demo, train: 48, val: 24, test: 24, size: 48}\ntest_data: *demo\n"
    (tmp_path / "aliases.yaml").write_text(text, encoding="utf-8")
    recipe = load_recipe(tmp_path / "aliases.yaml", registry=registry)
    assert recipe.test_data == recipe.data


def test_quote_is_bounded_for_any_value() -> None:
    nested: list = []
    for _ in range(10000):
        nested = [nested]
    looped: list = [1]
    looped.append(looped)
    for value in (nested, looped, "x" * 10**6, 10**10000, {str(i): i for i in range(10**5)}, b"\x00" * 10**6):
        text = quote(value)
        assert len(text) <= 200 and "\n" not in text


# exported-model metadata --------------------------------------------------------------------------------
from faceauth.errors import ExportError, FaceAuthError  # noqa: E402
from tests.test_authenticator import models_dir  # noqa: E402,F401 - the fusion models directory fixture


def with_metadata(source: Path, target: Path, changes: dict[str, str | None]) -> Path:
    """A copy of the ONNX model `source` at `target` with metadata keys set (None: removed)."""
    import onnx

    model = onnx.load(source)
    props = {p.key: p.value for p in model.metadata_props}
    props.update(changes)
    del model.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, target)
    return target


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


DAMAGED = [
    ("liveness.onnx", "preprocess.input_size", "30000,30000", "preprocess.input_size"),
    ("liveness.onnx", "preprocess.input_size", "0,0", "preprocess.input_size"),
    ("liveness.onnx", "preprocess.input_size", "48,48", "input of shape"),
    ("liveness.onnx", "preprocess.std", "0,0,0", "positive finite stds"),
    ("liveness.onnx", "preprocess.mean", "nan,0,0", "finite means"),
    ("liveness.onnx", "preprocess.mean", "abc", "preprocess.mean"),
    ("liveness.onnx", "preprocess.std", None, "no preprocess.std"),
    ("liveness.onnx", "faceauth.threshold", "nan", "faceauth.threshold"),
    ("liveness.onnx", "faceauth.threshold", "abc", "faceauth.threshold"),
    ("model.onnx", "faceauth.threshold", "inf", "faceauth.threshold"),
    ("model.onnx", "faceauth.components", '[{"role": "embedding", "sha256": "00"}]', "faceauth.components[0]"),
    ("model.onnx", "faceauth.components", '[{"role": "liveness", "file": "../../etc/passwd", "sha256": "' + "0" * 64 + '"}]',
     "not a file name in the models directory"),
    ("model.onnx", "faceauth.components", nested(50_000), "faceauth.components"),
    ("model.onnx", "faceauth.features", '{"a": 1}', "faceauth.features"),
    ("model.onnx", "faceauth.features", '["match/0"]', "feature order"),
]


@pytest.mark.parametrize("file, key, value, named", DAMAGED)
def test_damaged_model_metadata_is_one_line_never_a_decision(models_dir: Path, tmp_path: Path,  # noqa: F811
                                                             file: str, key: str, value: str | None,
                                                             named: str) -> None:
    from faceauth.authenticator import Authenticator

    folder = Path(shutil.copytree(models_dir, tmp_path / "models"))
    with_metadata(models_dir / file, folder / file, {key: value})
    if file != "model.onnx":  # the fusion model records its components' hashes: record the edited one
        _record_hash(folder, file)
    with pytest.raises(FaceAuthError) as caught:
        Authenticator.from_dir(folder, detect=False)
    assert named in str(caught.value) and str(folder / file) in str(caught.value)
    assert_one_line(str(caught.value))


def _record_hash(folder: Path, file: str) -> None:
    import json

    import onnx

    from faceauth.authenticator import file_sha256

    model = onnx.load(folder / "model.onnx")
    props = {p.key: p.value for p in model.metadata_props}
    components = json.loads(props["faceauth.components"])
    for record in components:
        if record["file"] == file:
            record["sha256"] = file_sha256(folder / file)
    with_metadata(folder / "model.onnx", folder / "model.onnx", {"faceauth.components": json.dumps(components)})


def test_faceauth_eval_of_a_model_with_a_damaged_recipe_is_one_line(models_dir: Path, tmp_path: Path,  # noqa: F811
                                                                    capsys: pytest.CaptureFixture) -> None:
    from faceauth.cli import eval_main

    for value, named in (("[1, 2]", "is [1, 2]; expected a mapping"), (nested(100_000), "not readable JSON"),
                         (None, "no faceauth.recipe")):
        model = with_metadata(models_dir / "liveness.onnx", tmp_path / "liveness.onnx", {"faceauth.recipe": value})
        assert eval_main([str(model)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("faceauth-eval: error: ") and named in err and len(err) < ONE_LINE and "\n" not in err


metadata_text = (st.text(max_size=30) | st.sampled_from(["nan", "inf", "-1", "0", "1e308", "30000,30000", "0,0",
                                                         "64,64", "0.5,0.5,0.5", "0,0,0", "[1, 2]", "{}", "[]",
                                                         nested(5000), "BGR", "RGB"]) | st.none())
METADATA_KEYS = ["preprocess.input_size", "preprocess.mean", "preprocess.std", "preprocess.channel_order",
                 "faceauth.threshold", "faceauth.task", "faceauth.recipe"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(METADATA_KEYS), metadata_text, min_size=1, max_size=3))
def test_any_component_metadata_gives_a_model_or_one_line(models_dir: Path, tmp_path: Path,  # noqa: F811
                                                          changes: dict[str, str | None]) -> None:
    from faceauth.authenticator import open_component

    model = with_metadata(models_dir / "liveness.onnx", tmp_path / "liveness.onnx", changes)
    try:
        component = open_component(model, "liveness")
    except FaceAuthError as exc:
        assert_one_line(str(exc))
        return
    scores = component([np.full((40, 40, 3), 128, np.uint8)])  # a usable model scores a crop
    assert scores.shape == (1,) and np.isfinite(scores).all()
    assert component.threshold is None or np.isfinite(component.threshold)


def test_a_nan_threshold_given_by_hand_is_refused(models_dir: Path) -> None:  # noqa: F811
    from faceauth.authenticator import Authenticator

    with pytest.raises(ExportError, match=r"threshold: expected a finite number, got nan"):
        Authenticator.from_dir(models_dir, detect=False, threshold=float("nan"))
