"""The nuaa loader on miniature NUAA trees in the release's exact on-disk format (folders, names, lists)."""

from __future__ import annotations

import functools
import io
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceauth.config.build import build_component
from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.data import LIVE, SPOOF, read_image
from faceauth.errors import DataError, RecipeError
from faceauth.plugins.datasets.demo_render import render_face, sample_identity
from faceauth.plugins.datasets.nuaa import VARIANTS, load_nuaa, parse_name
from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ("0001", "0002", "0003", "0004", "0005", "0006")
LIVE_ONLY = "0006"          # like NUAA's subject 0013: live images, no attack
SESSIONS = ("01", "02", "03")
FRAMES = (0, 30)


@functools.lru_cache(maxsize=None)
def face(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render_face(sample_identity(rng), rng, size=size)


def name(subject: str, session: str, frame: int, glasses: str = "00", variation: str = "01") -> str:
    return f"{subject}_{glasses}_{variation}_{session}_{frame}.jpg"


def write_tree(base: Path, variant: str = "detected", subjects=SUBJECTS, image=None) -> list[Path]:
    """base/<Client*>/<subject>/<name>.jpg and base/<Imposter*>/<subject>/<name>.jpg, all sessions."""
    layout = VARIANTS[variant]
    written = []
    for folder in (layout.client, layout.imposter):
        for s, subject in enumerate(subjects):
            if folder == layout.imposter and subject == LIVE_ONLY:
                continue
            for session in SESSIONS:
                for frame in FRAMES:
                    path = base / folder / subject / name(subject, session, frame)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(face(s) if image is None else image(s)).save(path, quality=92)
                    written.append(path)
    return written


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("nuaa") / "Detectedface"
    write_tree(base)
    return base


@pytest.fixture
def tree(template: Path, tmp_path: Path) -> Path:
    base = tmp_path / "NUAA" / "Detectedface"
    shutil.copytree(template, base)
    return base


def _fields(dataset) -> list[dict[str, str]]:
    return [parse_name(s.path) for s in dataset.sources]


def _class_folder(path: str) -> str:
    return Path(path).parts[-3]


# --- protocols -------------------------------------------------------------------------------------------------


def test_sessions_protocol_trains_on_01_02_and_tests_on_03(tree, caplog):
    with caplog.at_level(logging.INFO, logger="faceauth"):
        splits = load_nuaa(tree, variant="detected", val_subjects=0.2, seed=0)
    assert splits.info["protocol"] == "sessions" and splits.info["variant"] == "detected"
    for split, sessions in (("train", {"01", "02"}), ("val", {"01", "02"}), ("test", {"03"})):
        assert {f["session"] for f in _fields(splits.get(split))} == sessions, split
    assert len(splits.test) == 11 * 2 and len(splits.train) + len(splits.val) == 11 * 4
    train, val = set(splits.train.subjects), set(splits.val.subjects)
    assert len(val) == 1 and not train & val and train | val == set(SUBJECTS)
    for index in range(len(splits.train)):
        sample = splits.train[index]
        live = _class_folder(sample["path"]) == "ClientFace"
        assert sample["label"] == (LIVE if live else SPOOF)
        assert sample["attack_type"] == ("" if live else "print")
        assert sample["subject"] == Path(sample["path"]).parent.name
        assert sample["image"].size == (48, 48)  # the detected variant is read as it is
    assert "nuaa: 6 subjects are in both train and test: 0001, 0002, 0003, 0004, 0005, 0006 (NUAA's protocols " \
           "split by session, not by person" in caplog.text
    assert "nuaa detected, sessions protocol: train 36 (live 20, spoof 16" in caplog.text


def test_validation_subjects_are_seeded_disjoint_and_hold_both_classes(tree):
    drawn = []
    for seed in range(8):
        splits = load_nuaa(tree, variant="detected", val_subjects=0.4, seed=seed)
        val = set(splits.val.subjects)
        assert len(val) == 2 and LIVE_ONLY not in val and not val & set(splits.train.subjects)
        assert set(splits.val.labels) == {LIVE, SPOOF}
        drawn.append(tuple(sorted(val)))
    assert len(set(drawn)) > 1
    assert set(load_nuaa(tree, variant="detected", val_subjects=0.4, seed=3).val.subjects) == set(drawn[3])


def test_validation_by_a_held_out_session_keeps_every_subject(tree):
    splits = load_nuaa(tree, variant="detected", validation="session", seed=0)
    for split, sessions in (("train", {"01"}), ("val", {"02"}), ("test", {"03"})):
        assert {f["session"] for f in _fields(splits.get(split))} == sessions, split
    assert set(splits.train.subjects) == set(splits.val.subjects) == set(SUBJECTS)
    assert splits.info["validation"] == "session" and splits.info["val_sessions"] == ["02"]
    other = load_nuaa(tree, variant="detected", validation="session", val_session="01")
    assert {f["session"] for f in _fields(other.val)} == {"01"}
    assert {f["session"] for f in _fields(other.train)} == {"02"}


def test_validation_session_missing_from_training_is_named(tree):
    for path in tree.rglob("*_02_*.jpg"):
        path.unlink()
    with pytest.raises(DataError, match=r"^data\.val_session: nuaa \(sessions\) training data under .* has training "
                                        r"sessions 01; validation 'session' needs session 02 and another one"):
        load_nuaa(tree, variant="detected", validation="session")


def write_lists(base: Path, suffix: str = "face", *, missing: int = 0) -> dict[str, set[str]]:
    """The release's list files, Windows style: backslashes, CRLF, extra fields after the path.

    train: sessions 01 of subjects 0001-0004; test: session 03 of subjects 0001-0003. Returns the
    listed paths (relative to base) per split.
    """
    listed: dict[str, set[str]] = {"train": set(), "test": set()}
    for kind, folder in (("client", VARIANTS["detected"].client), ("imposter", VARIANTS["detected"].imposter)):
        for split, subjects, session in (("train", SUBJECTS[:4], "01"), ("test", SUBJECTS[:3], "03")):
            lines = ["   "]
            for subject in subjects:
                for frame in FRAMES:
                    lines.append(f"{subject}\\{name(subject, session, frame)} 101 87 140 140")
                    listed[split].add(f"{folder}/{subject}/{name(subject, session, frame)}")
            if split == "train":  # one line given from the variant folder rather than the class folder
                lines[1] = f"{folder}\\{lines[1]}"
            for n in range(missing):
                lines.append(f"0001\\{name('0001', session, 900 + n)}")
            (base / f"{kind}_{split}_{suffix}.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return listed


def test_lists_protocol_reads_the_shipped_lists(tree):
    listed = write_lists(tree)
    splits = load_nuaa(tree, variant="detected", protocol="lists", val_subjects=0.25, seed=1)
    relative = {split: {Path(s.path).relative_to(tree).as_posix() for s in splits.get(split).sources}
                for split in ("train", "val", "test")}
    assert relative["train"] | relative["val"] == listed["train"] and not relative["train"] & relative["val"]
    assert relative["test"] == listed["test"]
    assert len(set(splits.val.subjects)) == 1 and not set(splits.val.subjects) & set(splits.train.subjects)
    assert {f["session"] for f in _fields(splits.test)} == {"03"}


def test_list_lines_naming_missing_images_are_counted_and_all_missing_is_an_error(tree, caplog):
    write_lists(tree, missing=4)
    with caplog.at_level(logging.WARNING, logger="faceauth"):
        splits = load_nuaa(tree, variant="detected", protocol="lists", val_subjects=0.25)
    assert len(splits.test) == 12
    assert "client_test_face.txt: 4 of 10 listed images do not exist and are skipped (e.g. line 8: " in caplog.text
    assert "ClientFace/0001/0001_00_01_03_900.jpg, line 9: " in caplog.text
    shutil.rmtree(tree / "ImposterFace" / "0001")
    shutil.rmtree(tree / "ImposterFace" / "0002")
    shutil.rmtree(tree / "ImposterFace" / "0003")
    with pytest.raises(DataError, match=r"imposter_test_face\.txt: none of its 10 listed images exists \(e\.g\. "
                                        r"line 2: .*ImposterFace/0001/0001_00_01_03_0\.jpg\)"):
        load_nuaa(tree, variant="detected", protocol="lists", val_subjects=0.25)


def test_missing_list_file_is_named(tree):
    write_lists(tree)
    (tree / "imposter_train_face.txt").unlink()
    with pytest.raises(DataError, match=r"imposter_train_face\.txt: list file not found \(protocol 'lists' needs "
                                        r"\{client,imposter\}_\{train,test\}_face\.txt beside ImposterFace/\)"):
        load_nuaa(tree, variant="detected", protocol="lists")


# --- names and layout ------------------------------------------------------------------------------------------


def test_file_names_parse_into_their_five_fields():
    assert parse_name("ClientRaw/0010/0010_01_05_03_115.jpg") == {
        "subject": "0010", "glasses": "01", "variation": "05", "session": "03", "frame": "115"}


@pytest.mark.parametrize("bad", ["0001_00_01_01_0 (1).jpg", "0001_00_01_01.jpg", "img_0001.jpg"])
def test_unparsable_file_name_is_named(tree, bad):
    shutil.copy(tree / "ClientFace/0001" / name("0001", "01", 0), tree / "ClientFace/0001" / bad)
    with pytest.raises(DataError, match=rf"ClientFace/0001/{re.escape(bad)}: cannot parse the NUAA file name "
                                        r".* \(expected <subject>_<glasses>_<variation>_<session>_<frame>\.jpg"):
        load_nuaa(tree, variant="detected")


def test_unparsable_name_in_a_list_names_the_line(tree):
    write_lists(tree)
    path = tree / "client_test_face.txt"
    path.write_bytes(path.read_bytes() + b"0002\\0002-snapshot.jpg\r\n")
    with pytest.raises(DataError, match=r"client_test_face\.txt: line 8: cannot parse the NUAA file name "
                                        r"'0002-snapshot\.jpg'"):
        load_nuaa(tree, variant="detected", protocol="lists")


def test_unknown_session_and_wrong_subject_folder_are_named(tree):
    odd = tree / "ImposterFace/0002" / name("0002", "04", 0)
    shutil.copy(tree / "ImposterFace/0002" / name("0002", "01", 0), odd)
    with pytest.raises(DataError, match=r"0002_00_01_04_0\.jpg: session 04 is not one of NUAA's sessions 01, 02, 03"):
        load_nuaa(tree, variant="detected")
    odd.unlink()
    shutil.copy(tree / "ImposterFace/0002" / name("0002", "01", 0), tree / "ImposterFace/0003" / name("0002", "01", 5))
    with pytest.raises(DataError, match=r"the file name says subject 0002 but it is in folder 0003/"):
        load_nuaa(tree, variant="detected")


def test_root_may_be_the_release_folder_or_the_variant_folder(tree, tmp_path):
    by_release = load_nuaa(tree.parent, variant="detected")
    by_variant = load_nuaa(tree, variant="detected")
    assert [s.path for s in by_release.test.sources] == [s.path for s in by_variant.test.sources]
    with pytest.raises(DataError, match=r"data\.root: .* has no ClientNormalized/ and ImposterNormalized/ folders "
                                        r"\(expected root/ClientNormalized/<subject>/\*\.jpg or "
                                        r"root/NormalizedFace/ClientNormalized/"):
        load_nuaa(tree.parent, variant="normalized")
    with pytest.raises(DataError, match=r"data\.root: .*absent is not a directory"):
        load_nuaa(tmp_path / "absent", variant="detected")


def test_raw_frames_need_a_detector(tmp_path):
    with pytest.raises(RecipeError, match=r"detector: NUAA's raw frames need a face detector; add `detector: "
                                          r"\{name: haar\}`"):
        load_nuaa(tmp_path, variant="raw")


# --- raw frames through the recipe, with the Haar detector ------------------------------------------------------


@functools.lru_cache(maxsize=None)
def haar_frames(count: int) -> tuple[np.ndarray, ...]:
    """`count` 320x240 frames whose rendered face the default Haar settings find after a JPEG round trip."""
    detector, found = HaarDetector(HaarOptions()), []
    for seed in range(200):
        frame = np.full((240, 320, 3), 110, np.uint8)
        frame[70:166, 112:208] = face(seed, 96)
        encoded = io.BytesIO()
        Image.fromarray(frame).save(encoded, format="JPEG")
        if detector.detect(np.asarray(read_image(encoded))):
            found.append(frame)
            if len(found) == count:
                return tuple(found)
    raise AssertionError("the Haar cascade found too few rendered faces")


def test_raw_frames_are_detected_cropped_and_faceless_frames_counted(tmp_path, caplog):
    frames = haar_frames(3)
    base = tmp_path / "NUAA"
    write_tree(base, "raw", subjects=SUBJECTS[:3], image=lambda s: frames[s])
    blank = np.full((240, 320, 3), 110, np.uint8)
    for path in (base / "ClientRaw/0002" / name("0002", "01", 60), base / "ImposterRaw/0003" / name("0003", "03", 60)):
        Image.fromarray(blank).save(path)
    recipe = load_recipe(REPO / "recipes" / "liveness_nuaa.yaml", [f"data.root={base}", "data.crop_size=32"],
                         registry=load_registry())
    assert recipe.detector.name == "haar" and recipe.data.options.protocol == "sessions"
    with caplog.at_level(logging.INFO, logger="faceauth"):
        splits = build_component(load_registry(), recipe, "data")
    assert sum(splits.info["no_face"].values()) == 2
    assert len(splits.train) + len(splits.val) + len(splits.test) == 3 * 2 * 3 * 2
    sample = splits.test[0]
    assert sample["image"].size == (32, 32) and parse_name(sample["path"])["session"] == "03"
    assert "frames without a face skipped" in caplog.text


def test_recipe_options_are_validated():
    with pytest.raises(RecipeError, match=r"data\.val_subjects: expected a number between 0 and 1"):
        load_recipe(REPO / "recipes" / "liveness_nuaa.yaml", ["data.val_subjects=0"], registry=load_registry())
    with pytest.raises(RecipeError, match=r"data\.variant: expected one of 'raw', 'detected', 'normalized'"):
        load_recipe(REPO / "recipes" / "liveness_nuaa.yaml", ["data.variant=faces"], registry=load_registry())


def test_detected_variant_through_the_recipe_ignores_the_detector(tree, caplog):
    recipe = load_recipe(REPO / "recipes" / "liveness_nuaa.yaml", [f"data.root={tree.parent}", "data.variant=detected"],
                         registry=load_registry())
    with caplog.at_level(logging.INFO, logger="faceauth"):
        splits = build_component(load_registry(), recipe, "data")
    assert splits.info["no_face"] == {} and len(splits.test) == 22
    assert "nuaa detected: the images are already faces; the recipe's detector is not used" in caplog.text
