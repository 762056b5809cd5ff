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
    from faceauth.config.registry import load_registry

    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUTH_PLUGINS", "faceauth")
        return load_registry()


def assert_one_line(message: str) -> None:
    assert "\n" not in message and len(message) < ONE_LINE, message[:2000]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=values)
def test_any_value_anywhere_in_a_recipe_is_accepted_or_one_short_line(registry: object, key: str, value: object) -> None:
    import yaml

    from faceauth.config.recipe import load_recipe

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
    from faceauth.config.recipe import load_recipe

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

    from faceauth.config.recipe import read_yaml

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

    from faceauth.config.recipe import load_recipe

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
    from faceauth.deploy.authenticator import Authenticator

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

    from faceauth.deploy.models import file_sha256

    model = onnx.load(folder / "model.onnx")
    props = {p.key: p.value for p in model.metadata_props}
    components = json.loads(props["faceauth.components"])
    for record in components:
        if record["file"] == file:
            record["sha256"] = file_sha256(folder / file)
    with_metadata(folder / "model.onnx", folder / "model.onnx", {"faceauth.components": json.dumps(components)})


def test_faceauth_eval_of_a_model_with_a_damaged_recipe_is_one_line(models_dir: Path, tmp_path: Path,  # noqa: F811
                                                                    capsys: pytest.CaptureFixture) -> None:
    from faceauth.commands.cli import eval_main

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
    from faceauth.deploy.models import open_component

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
    from faceauth.deploy.authenticator import Authenticator

    with pytest.raises(ExportError, match=r"threshold: expected a finite number, got nan"):
        Authenticator.from_dir(models_dir, detect=False, threshold=float("nan"))


# data files ---------------------------------------------------------------------------------------------
def png_bomb(path: Path, side: int = 30000) -> Path:
    """A valid PNG header of side x side pixels (a few hundred bytes; decoding it would take gigabytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + b"\0" * side
    data = zlib.compress(row * 8, 9)  # the start of the image: enough for a header reader
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def liveness_folder(root: Path, names: dict[str, str] | None = None) -> Path:
    """A tiny real `folder` dataset (JPEGs) of rendered faces; `names` maps a split-relative folder to another name."""
    from tests.videos import rendered_face

    for s, split in enumerate(("train", "val", "test")):
        for kind, folder in (("live", "live"), ("spoof", "spoof/print")):
            where = root / split / folder
            where.mkdir(parents=True, exist_ok=True)
            for i in range(4):
                face = rendered_face(100 * s + 10 * (kind == "spoof") + i, 48)
                if kind == "spoof":
                    face = (face // 2 + 60).astype(np.uint8)
                Image.fromarray(face).save(where / f"{kind}_{i}.jpg")
    return root


from PIL import Image  # noqa: E402


def test_decompression_bombs_and_undecodable_images_name_the_file(tmp_path: Path) -> None:
    from faceauth.data import read_image
    from faceauth.deploy.models import as_rgb

    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100_000
    for read in (read_image, as_rgb):
        with pytest.raises(DataError, match=rf"{bomb}: image refused: more than \d+ pixels"):
            read(bomb)
    warned = png_bomb(tmp_path / "large.png", side=10000)  # between 1x and 2x Pillow's limit: Pillow only warns
    with pytest.raises(DataError, match=r"large\.png: image refused"):
        read_image(warned)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match=r"truncated\.jpg: cannot read image"):
        read_image(truncated)


@pytest.mark.slow
def test_a_bomb_in_a_training_folder_stops_the_run_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    from faceauth.commands.cli import run_main

    root = liveness_folder(tmp_path / "data")
    bomb = png_bomb(root / "train" / "live" / "zz_bomb.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "data": {"name": "folder", "root": str(root)},
                                      "output_dir": str(tmp_path / "runs")}), encoding="utf-8")
    assert run_main([str(recipe), "trainer.epochs=1"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()  # the console's progress lines, then one error line
    assert lines[-1].startswith(f"faceauth-run: error: {bomb}: image refused")
    assert sum("error" in line for line in lines) == 1
    assert not (tmp_path / "runs").exists()  # no empty run directory left behind


@pytest.mark.slow
def test_names_that_are_not_utf8_work_end_to_end(tmp_path: Path) -> None:
    import json

    import yaml

    import faceauth

    root = liveness_folder(tmp_path / "data")
    odd = os.fsdecode(b"pr\xefnt-\xff")  # Latin-1 bytes: not UTF-8
    for split in ("train", "val", "test"):
        os.rename(root / split / "spoof" / "print", root / split / "spoof" / odd)
        os.rename(root / split / "live" / "live_0.jpg", root / split / "live" / os.fsdecode(b"l\xe9ve_0.jpg"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "data": {"name": "folder", "root": str(root)},
                                      "output_dir": str(tmp_path / "runs"), "export": None}), encoding="utf-8")
    result = faceauth.run(recipe, ["trainer.epochs=1"])
    metrics = json.loads((result.dir / "metrics.json").read_text(encoding="utf-8"))
    assert any(key.startswith("apcer_") and "pr" in key for key in metrics["test"]), metrics["test"]
    assert list(result.dir.glob("events.out.tfevents.*"))


import os  # noqa: E402


def test_dataset_paths_that_leave_the_root_are_refused(tmp_path: Path) -> None:
    import json

    from faceauth.plugins.datasets.celeba_spoof import read_labels
    from faceauth.plugins.datasets.pairs import read_lfw_pairs

    labels = tmp_path / "train_label.json"
    for key in ("Data/../../spoof/x.jpg", "/etc/Data/train/1/live/x.jpg", "Data/train/../live/x.jpg"):
        labels.write_text(json.dumps({key: [0] * 40 + [0, 0, 0, 0]}), encoding="utf-8")
        with pytest.raises(DataError, match=r"leaves the dataset root|expected a path like"):
            read_labels(labels)
    lfw = tmp_path / "lfw"
    (lfw / "Ann").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(lfw / "Ann" / "Ann_0001.jpg")
    (tmp_path / ".._0001.jpg").write_bytes(b"outside the root")
    for line in ("..\t1\t1", "Ann\t1\t..\t1", "../lfw/Ann\t1\t1"):
        (tmp_path / "pairs.txt").write_text(line + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=r"pairs\.txt:1: .*(leaves the dataset root|not a folder name)"):
            read_lfw_pairs(tmp_path / "pairs.txt", lfw)


@pytest.mark.slow
def test_identity_folders_whose_names_are_not_utf8_train_and_export(tmp_path: Path) -> None:
    import yaml

    import faceauth
    from faceauth.plugins.datasets.identity_demo import DemoIdentitiesOptions, demo_identities_root

    root = Path(shutil.copytree(demo_identities_root(DemoIdentitiesOptions(identities=8, images_per_identity=4,
                                                                           size=48)), tmp_path / "people"))
    first = sorted(p for p in root.iterdir() if p.is_dir())[0]
    os.rename(first, root / os.fsdecode(b"Ren\xe9e_" + os.fsencode(first.name)))  # Latin-1: not UTF-8
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "seed": 0, "output_dir": str(tmp_path / "runs"),
        "data": {"name": "identity_folder", "root": str(root), "val_identities": 0.25, "pairs_per_identity": 4},
        "backbone": {"name": "resnet18", "input_size": 32}, "loss": {"name": "arcface"},
        "trainer": {"name": "embedding", "epochs": 1, "batch_size": 8, "num_workers": 0, "progress": False},
        "optimizer": {"name": "sgd", "lr": 0.05}, "export": {"name": "onnx"}}), encoding="utf-8")
    result = faceauth.run(recipe)
    assert result.onnx_path.is_file() and result.metrics["val"]  # measured on the held-out identities' pairs


@pytest.mark.parametrize("crop", ['{"size": 30000}', '{"size": "abc"}', nested(50_000), '{"detector_options": [1]}',
                                  '{"scales": []}', "[1, 2]"])
def test_damaged_crop_geometry_is_one_line(crop: str) -> None:
    from faceauth.faces import CropGeometry

    with pytest.raises(ExportError, match=r"model\.onnx: invalid faceauth\.crop metadata") as caught:
        CropGeometry.from_json(crop, "model.onnx")
    assert_one_line(str(caught.value))


@pytest.mark.parametrize("recipe, named", [
    ('{"data": {"name": "video_folder", "frames_per_video": 10000000000}}', "data.frames_per_video"),
    ('{"data": {"clip_length": "abc"}}', "data.clip_length"),
    (None, None), ("[1, 2]", None), (nested(100_000), None),  # no usable recipe: the default sampling
])
def test_the_liveness_class_reads_damaged_recipes_safely(models_dir: Path, tmp_path: Path,  # noqa: F811
                                                         recipe: str | None, named: str | None) -> None:
    from faceauth.deploy.liveness import Liveness

    model = with_metadata(models_dir / "liveness.onnx", tmp_path / "liveness.onnx", {"faceauth.recipe": recipe})
    if named is None:
        assert Liveness(model, detect=False).sampling["frames_per_video"] == 10
        return
    with pytest.raises(ExportError, match=rf"liveness\.onnx: faceauth\.recipe .*{named}") as caught:
        Liveness(model, detect=False)
    assert_one_line(str(caught.value))


@pytest.mark.parametrize("options, named", [({"scale_factor": 1.0}, "scale_factor"), ({"scale_factor": "abc"}, "scale_factor"),
                                            ({"min_neighbors": -1}, "min_neighbors"), ({"max_width": 0}, "max_width"),
                                            ({"min_size": float("nan")}, "min_size")])
def test_haar_settings_opencv_cannot_run_are_one_line(options: dict, named: str) -> None:
    from faceauth.faces import CropGeometry, face_detector

    with pytest.raises(DataError, match=rf"Haar cascade {named}: expected") as caught:
        face_detector(CropGeometry(detector="haar", detector_options=options))
    assert_one_line(str(caught.value))
