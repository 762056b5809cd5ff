"""The celeba_spoof loader on miniature CelebA-Spoof trees in the release's exact on-disk format."""

from __future__ import annotations

import functools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceauth.config.build import build_component
from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.data import LIVE, SPOOF
from faceauth.errors import DataError
from faceauth.faces import Box
from faceauth.plugins.datasets.celeba_spoof import ATTACK_TYPES, load_celeba_spoof, read_box
from faceauth.plugins.datasets.demo_render import render_face, sample_identity
from faceauth.plugins.datasets.frames import CropOptions
from faceauth.plugins.detectors.haar import ShippedBoxes

REPO = Path(__file__).resolve().parents[1]
FRAME = (160, 120)          # image width, height: not square, so x and y scale differently
FACE_AT = (48, 28, 64, 64)  # where the rendered face is pasted, in pixels
CROP = CropOptions(crop_scale=1.0, crop_size=32)


def to_frame224(box: tuple[float, float, float, float], width: int = FRAME[0], height: int = FRAME[1]) -> str:
    x, y, w, h = box
    return f"{x * 224 / width:.3f} {y * 224 / height:.3f} {w * 224 / width:.3f} {h * 224 / height:.3f} 0.99"


def labels(label: int, spoof_type: int, illumination: int = 0, environment: int = 0) -> list[int]:
    return [0] * 40 + [spoof_type, illumination, environment, label]


@functools.lru_cache(maxsize=None)
def frame_with_face(seed: int) -> np.ndarray:
    """A rendered face pasted at FACE_AT on a grey frame (rendered once per seed)."""
    frame = np.full((FRAME[1], FRAME[0], 3), 96, np.uint8)
    x, y, w, h = FACE_AT
    rng = np.random.default_rng(seed)
    frame[y:y + h, x:x + w] = render_face(sample_identity(rng), rng, size=w)
    return frame


def write_image(root: Path, key: str, seed: int, box_line: str | None = "default") -> Path:
    """An image at root/key with its `_BB.txt` (None: no box file)."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame_with_face(seed)).save(path, quality=92)
    if box_line is not None:
        path.with_name(f"{path.stem}_BB.txt").write_text(
            (to_frame224(FACE_AT) if box_line == "default" else box_line) + "\n", encoding="utf-8")
    return path


def write_tree(root: Path, train_subjects: int = 10, test_subjects: int = 3, per_class: int = 2,
               shared: tuple[str, ...] = ()) -> dict[str, dict[str, list[int]]]:
    """root/Data/{train,test}/<subject>/{live,spoof}/<n>.jpg, boxes, and root/metas/intra_test/*_label.json.

    Subjects are numbered from 1000 (train) and 9000 (test); spoof types cycle through 1..10.
    """
    label_files: dict[str, dict[str, list[int]]] = {"train": {}, "test": {}}
    seed = 0
    for split, first, count in (("train", 1000, train_subjects), ("test", 9000, test_subjects)):
        subjects = [str(first + i) for i in range(count)] + list(shared if split == "test" else ())
        for subject in subjects:
            for n in range(per_class):
                seed += 1
                key = f"Data/{split}/{subject}/live/{n:06d}.jpg"
                write_image(root, key, seed)
                label_files[split][key] = labels(LIVE, 0, 0, 0)
                seed += 1
                key = f"Data/{split}/{subject}/spoof/{n:06d}.png"
                write_image(root, key, seed)
                kind = len([v for f in label_files.values() for v in f.values() if v[43] == SPOOF])
                label_files[split][key] = labels(SPOOF, 1 + kind % 10, 1 + kind % 4, 1 + kind % 2)
    write_labels(root, label_files)
    return label_files


def write_labels(root: Path, label_files: dict[str, dict[str, list[int]]]) -> None:
    metas = root / "metas" / "intra_test"
    metas.mkdir(parents=True, exist_ok=True)
    for split, entries in label_files.items():
        (metas / f"{split}_label.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, list[int]]]]:
    root = tmp_path_factory.mktemp("celeba") / "CelebA_Spoof"
    return root, write_tree(root)


@pytest.fixture
def tree(template, tmp_path: Path) -> tuple[Path, dict[str, dict[str, list[int]]]]:
    """A fresh copy of the 10 + 3 subject tree (its own paths, so its own crops)."""
    root = tmp_path / "CelebA_Spoof"
    shutil.copytree(template[0], root)
    return root, json.loads(json.dumps(template[1]))


def _subject(path: str) -> str:
    return Path(path).parts[-3]


# --- labels, attack types, splits ---------------------------------------------------------------------------


def test_labels_attack_types_and_subject_disjoint_validation(tree):
    root, label_files = tree
    splits = load_celeba_spoof(root, val_subjects=0.2, seed=1, crop=CROP, detector=ShippedBoxes())
    assert splits.classes == ("live", "spoof") and splits.info["task"] == "liveness"
    train_subjects, val_subjects = set(splits.train.subjects), set(splits.val.subjects)
    assert len(val_subjects) == 2 and not train_subjects & val_subjects
    assert train_subjects | val_subjects == {str(1000 + i) for i in range(10)}
    assert set(splits.test.subjects) == {"9000", "9001", "9002"}
    assert sorted(splits.info["val_subjects"]) == sorted(val_subjects)
    assert splits.info["counts"] == {"train": {"live": 16, "spoof": 16}, "val": {"live": 4, "spoof": 4},
                                     "test": {"live": 6, "spoof": 6}}
    seen_types = set()
    for dataset, split in ((splits.train, "train"), (splits.val, "train"), (splits.test, "test")):
        for index in range(len(dataset)):
            sample = dataset[index]
            key = Path(sample["path"]).relative_to(root).as_posix()
            expected = label_files[split][key]
            assert sample["label"] == expected[43] and sample["subject"] == _subject(sample["path"])
            assert sample["attack_type"] == ("" if expected[43] == LIVE else ATTACK_TYPES[expected[40]])
            assert (sample["spoof_type"], sample["illumination"], sample["environment"]) == tuple(expected[40:43])
            assert sample["image"].size == (32, 32) and sample["image"].mode == "RGB"
            seen_types.add(sample["attack_type"])
    assert seen_types == {"", *ATTACK_TYPES.values()}
    assert ATTACK_TYPES == {1: "photo", 2: "poster", 3: "a4", 4: "face_mask", 5: "upper_body_mask",
                            6: "region_mask", 7: "pc", 8: "pad", 9: "phone", 10: "3d_mask"}
    again = load_celeba_spoof(root, val_subjects=0.2, seed=1, crop=CROP, detector=ShippedBoxes())
    assert set(again.val.subjects) == val_subjects  # seeded


def test_limit_keeps_at_most_n_images_per_split_deterministically(tree):
    root, _ = tree
    first = load_celeba_spoof(root, limit=6, seed=0, crop=CROP)
    second = load_celeba_spoof(root, limit=6, seed=0, crop=CROP)
    assert [len(first.train), len(first.val), len(first.test)] == [6, 4, 6]  # val has only 4 images
    for split in ("train", "val", "test"):
        paths = [s.path for s in first.get(split).sources]
        assert paths == [s.path for s in second.get(split).sources] and paths == sorted(paths)
    other = load_celeba_spoof(root, limit=6, seed=5, crop=CROP)
    assert [s.path for s in other.train.sources] != [s.path for s in first.train.sources]


# --- boxes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, status, expected", [
    ("56 28 112 56 0.9", "ok", (112.0, 15.0, 224.0, 30.0, 0.9)),   # x, w * 448/224; y, h * 120/224
    ("56 28 112 56", "ok", (112.0, 15.0, 224.0, 30.0, 1.0)),       # no score: 1
    ("-28 -56 112 112 0.5", "negative", (0.0, 0.0, 168.0, 30.0, 0.5)),
    ("168 112 112 224 0.5", "outside", (336.0, 60.0, 112.0, 60.0, 0.5)),
    ("10 10 0 50 0.5", "degenerate", None),
    ("10 10 50 -3 0.5", "degenerate", None),
    ("300 300 50 50 0.5", "degenerate", None),                      # entirely outside the image
    ("", "empty", None),
    ("\n  \n", "empty", None),
])
def test_boxes_scale_from_the_224_frame_and_clamp(tmp_path, line, status, expected):
    path = tmp_path / "000001_BB.txt"
    path.write_text(line, encoding="utf-8")
    box, found = read_box(path, 448, 120)
    assert found == status
    if expected is None:
        assert box is None
    else:
        assert (box.x, box.y, box.w, box.h, box.score) == pytest.approx(expected)


def test_missing_box_file_means_no_box(tmp_path):
    assert read_box(tmp_path / "absent_BB.txt", 100, 100) == (None, "missing")


@pytest.mark.parametrize("line", ["10 20 30", "a b c d e", "1 2 3 4 5 6", "1 2 nan 4 0.5"])
def test_malformed_box_file_names_file_and_line(tmp_path, line):
    path = tmp_path / "000007_BB.txt"
    path.write_text(f"\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"000007_BB\.txt: line 2: expected 'x y w h score'"):
        read_box(path, 224, 224)


def test_crop_follows_the_scaled_box(tmp_path):
    """A red square where the scaled box lies, blue elsewhere: a crop without margin is all red."""
    root = tmp_path / "CelebA_Spoof"
    image = np.zeros((224, 448, 3), np.uint8)
    image[..., 2] = 255
    image[50:130, 40:120] = (255, 0, 0)  # the box (20, 50, 40, 80) in the 224 frame, scaled by (2, 1)
    entries = {}
    for split, subject in (("train", "1"), ("train", "2"), ("test", "3")):
        for kind, label in (("live", LIVE), ("spoof", SPOOF)):
            path = root / f"Data/{split}/{subject}/{kind}/000001.jpg"
            path.parent.mkdir(parents=True)
            Image.fromarray(image).save(path, quality=95)
            path.with_name("000001_BB.txt").write_text("20 50 40 80 0.98\n", encoding="utf-8")
            entries.setdefault(split, {})[f"Data/{split}/{subject}/{kind}/000001.jpg"] = labels(label, 3 * label)
    write_labels(root, entries)
    splits = load_celeba_spoof(root, val_subjects=0.5, crop=CropOptions(crop_scale=1.0, crop_size=40))
    crop = np.asarray(splits.test[0]["image"]).astype(float)
    assert crop[..., 0].mean() > 240 and crop[..., 2].mean() < 15


def test_negative_degenerate_empty_and_missing_boxes_are_counted(tmp_path, caplog):
    root = tmp_path / "CelebA_Spoof"
    write_tree(root, train_subjects=4, test_subjects=2)
    data = root / "Data"
    (data / "train/1000/live/000000_BB.txt").write_text("-10 -5 150 150 0.9\n")     # negative: clamped, kept
    (data / "train/1001/live/000000_BB.txt").write_text("50 50 0 0 0.9\n")          # degenerate: no face
    (data / "train/1002/spoof/000000_BB.txt").write_text("")                         # empty: no face
    (data / "test/9000/spoof/000001_BB.txt").unlink()                                # missing: no face
    (data / "test/9001/live/000000_BB.txt").write_text("400 400 20 20 0.9\n")       # outside entirely: no face
    with caplog.at_level(logging.INFO, logger="faceauth"):
        splits = load_celeba_spoof(root, val_subjects=0.25, crop=CROP, detector=ShippedBoxes())
    assert splits.info["boxes"] == {"ok": 19, "negative": 1, "degenerate": 2, "empty": 1, "missing": 1}
    assert sum(splits.info["no_face"].values()) == 4
    assert len(splits.train) + len(splits.val) + len(splits.test) == 24 - 4
    text = caplog.text
    assert "24 face boxes: 19 inside the image, 1 negative (clamped), 0 past the edge (clamped), 2 degenerate, " \
           "1 empty files, 1 missing files" in text
    assert "frames without a face skipped" in text


def test_another_detector_replaces_the_shipped_boxes(tree):
    """A detector that ignores the hint: crops come from its box, in a cache of their own."""

    class LeftHalf:
        options = None

        def detect(self, image, hint=None):
            return [Box(0, 0, image.shape[1] / 2, image.shape[0])]

    root, _ = tree
    boxes = load_celeba_spoof(root, crop=CROP, limit=8)
    other = load_celeba_spoof(root, crop=CROP, limit=8, detector=LeftHalf())
    assert other.train.cache.folder != boxes.train.cache.folder
    assert not np.array_equal(np.asarray(other.train[0]["image"]), np.asarray(boxes.train[0]["image"]))


# --- bad input ----------------------------------------------------------------------------------------------


def test_missing_root_and_label_file(tree, tmp_path):
    root, _ = tree
    with pytest.raises(DataError, match=r"data\.root: .*nowhere is not a directory \(expected root/Data/"):
        load_celeba_spoof(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data\.root: .*empty has no Data/ folder"):
        load_celeba_spoof(tmp_path / "empty")
    (root / "metas/intra_test/test_label.json").unlink()
    with pytest.raises(DataError, match=r"test_label\.json: label file not found \(expected root/Data"):
        load_celeba_spoof(root)


def test_malformed_json_names_line_and_column(tree):
    root, _ = tree
    (root / "metas/intra_test/train_label.json").write_text('{\n "Data/train/1000/live/000000.jpg": [0, 1,\n}')
    with pytest.raises(DataError, match=r"train_label\.json: line 3 column 1: invalid JSON"):
        load_celeba_spoof(root)
    (root / "metas/intra_test/train_label.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"train_label\.json: expected a JSON object mapping image paths to lists "
                                        r"of 44 labels, got a list"):
        load_celeba_spoof(root)


@pytest.mark.parametrize("value, message", [
    ([0] * 43, "expected a list of 44 integers"),
    ([0] * 43 + ["1"], "expected a list of 44 integers"),
    ([0] * 43 + [True], "expected a list of 44 integers"),
    ({"label": 1}, "expected a list of 44 integers"),
    ([0] * 43 + [2], r"label\[43\] \(live 0 / spoof 1\) must be 0 or 1, got 2"),
    ([0] * 40 + [11, 0, 0, 1], r"label\[40\] \(spoof type\) must be 0 to 10, got 11"),
])
def test_bad_label_entry_names_its_key(tree, value, message):
    root, label_files = tree
    label_files["train"]["Data/train/1003/spoof/000001.png"] = value
    write_labels(root, label_files)
    with pytest.raises(DataError, match=r"train_label\.json: entry 'Data/train/1003/spoof/000001\.png': " + message):
        load_celeba_spoof(root)


def test_bad_label_key_is_named(tree):
    root, label_files = tree
    label_files["test"]["images/9000/x.jpg"] = labels(LIVE, 0)
    write_labels(root, label_files)
    with pytest.raises(DataError, match=r"entry 'images/9000/x\.jpg': expected a path like Data/train/<subject>/"):
        load_celeba_spoof(root)


def test_missing_images_are_counted_and_skipped_and_all_missing_is_an_error(tree, caplog):
    root, label_files = tree
    for n in range(5):
        label_files["test"][f"Data/test/9001/spoof/ghost{n}.jpg"] = labels(SPOOF, 2)
    write_labels(root, label_files)
    with caplog.at_level(logging.WARNING, logger="faceauth"):
        splits = load_celeba_spoof(root, crop=CROP)
    assert len(splits.test) == 12
    assert "test_label.json: 5 of 17 listed images do not exist and are skipped (e.g. Data/test/9001/spoof/" \
           "ghost0.jpg, Data/test/9001/spoof/ghost1.jpg, Data/test/9001/spoof/ghost2.jpg)" in caplog.text
    for path in (root / "Data" / "test").rglob("*.jpg"):
        path.unlink()
    for path in (root / "Data" / "test").rglob("*.png"):
        path.unlink()
    with pytest.raises(DataError, match=r"test_label\.json: none of its 17 listed images exists \(e\.g\. "
                                        r"Data/test/9000/live/000000\.jpg\) under .*is data\.root the folder"):
        load_celeba_spoof(root, crop=CROP)


def test_malformed_box_file_stops_the_build_naming_it(tree):
    root, _ = tree
    (root / "Data/train/1004/live/000001_BB.txt").write_text("12 34 fifty 60 0.9\n")
    with pytest.raises(DataError, match=r"1004/live/000001_BB\.txt: line 1: expected 'x y w h score'"):
        load_celeba_spoof(root, crop=CROP)


def test_subject_in_train_and_test_is_named_in_a_warning(tmp_path, caplog):
    root = tmp_path / "CelebA_Spoof"
    write_tree(root, train_subjects=3, test_subjects=1, per_class=1, shared=("1001",))
    with caplog.at_level(logging.WARNING, logger="faceauth"):
        load_celeba_spoof(root, val_subjects=0.3, crop=CROP)
    assert "celeba_spoof: 1 subjects are in both train and test: 1001" in caplog.text


# --- through a recipe -----------------------------------------------------------------------------------------


def test_recipe_builds_with_the_boxes_detector(tree):
    root, _ = tree
    recipe = load_recipe(REPO / "recipes" / "liveness_celeba_spoof.yaml",
                         [f"data.root={root}", "data.crop_size=32", "data.limit=8"], registry=load_registry())
    assert recipe.detector.name == "boxes" and recipe.backbone.name == "resnet18"
    splits = build_component(load_registry(), recipe, "data")
    assert len(splits.train) == 8 and splits.train[0]["image"].size == (32, 32)
