"""Hostile or unlucky input ends in one line naming what is at fault (README: recipes, data, exported models)."""

from __future__ import annotations

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
