"""Tests for the casia_fasd dataset on miniature CASIA-FASD trees of real (tiny) .avi files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import faceauth
from faceauth.config.registry import load_registry
from faceauth.data import LIVE, SPOOF
from faceauth.errors import DataError, RecipeError
from faceauth.faces import crop_face
from faceauth.io.video import read_frames
from faceauth.plugins.datasets.casia_fasd import STEMS, CasiaFasdOptions, build
from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions, ShippedBoxes
from faceauth.schema import structure
from tests.conftest import REPO
from tests.videos import (
    HAAR_FACE,
    HAAR_FRAME,
    corrupt,
    face_frames,
    haar_face,
    record_opened_videos,
    rendered_face,
    write_face_file,
    write_video,
)

FRAMES = 8


def make_casia(root: Path, train=(1, 2, 3), test=(1, 2), stems=tuple(STEMS), *, boxes: bool = True,
               face_size: int = 32, blank: dict[str, set[int]] | None = None) -> Path:
    """root/{train,test}_release/<subject>/<stem>.avi, 8 frames of 96x72, one rendered face per subject.

    With `boxes`, root/face-locations/ holds each video's boxes; `blank` maps "release/subject/stem"
    to frames drawn without a face (and without a row).
    """
    for release, subjects in (("train_release", train), ("test_release", test)):
        for subject in subjects:
            face = rendered_face(subject + (100 if release == "test_release" else 0), face_size)
            for stem in stems:
                key = f"{release}/{subject}/{stem}"
                frames, face_boxes = face_frames(face, FRAMES, blank=(blank or {}).get(key, ()))
                write_video(root / release / str(subject) / f"{stem}.avi", frames)
                if boxes:
                    write_face_file(root / "face-locations" / release / str(subject) / f"{stem}.face", face_boxes)
    return root


def options(root: Path, **kwargs) -> CasiaFasdOptions:
    return CasiaFasdOptions(root=str(root), crop_size=32, **kwargs)


def _stem(source_path: str) -> str:
    return Path(source_path).stem


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_casia(tmp_path / "casia")


def test_labels_attack_types_and_subject_disjoint_validation(tree: Path) -> None:
    splits = build(options(tree, frames_per_video=2))
    assert splits.classes == ("live", "spoof") and splits.info["task"] == "liveness"
    for split in (splits.train, splits.val, splits.test):
        for source in split.sources:
            assert source.attack_type == STEMS[_stem(source.path)]
            assert source.label == (SPOOF if source.attack_type else LIVE)
    assert {s.attack_type for s in splits.test.sources} == {"", "warped_photo", "cut_photo", "video_replay"}
    train, val, test = (set(d.subjects) for d in (splits.train, splits.val, splits.test))
    assert splits.info["val_subjects"] == sorted(val) and len(val) == 1      # 20% of 3 subjects, at least one
    assert train | val == {"train:1", "train:2", "train:3"} and not train & val
    assert test == {"test:1", "test:2"}                                   # CASIA's test people are other people
    assert splits.info["videos"] == {"train": 24, "val": 12, "test": 24}
    assert len(splits.train) == 24 * 2 and splits.info["no_face"] == {"train": 0, "val": 0, "test": 0}
    item = splits.val[0]
    assert item["image"].size == (32, 32) and item["subject"] in val and item["path"].endswith("#0")

    again = build(options(tree, frames_per_video=2))
    assert set(again.val.subjects) == val                                 # seeded
    others = {frozenset(build(options(tree, frames_per_video=1, seed=s)).val.subjects) for s in range(1, 6)}
    assert len(others | {frozenset(val)}) > 1


def test_frames_per_video_and_stride(tree: Path) -> None:
    def frames(**kwargs) -> list[int]:
        test = build(options(tree, **kwargs)).test
        return [s.frame for s in test.sources if s.path.endswith("test_release/1/HR_1.avi")]

    assert frames(frames_per_video=3) == [0, 4, 7]                        # spread over the whole video
    assert frames(frames_per_video=3, frame_stride=2) == [0, 2, 4]
    assert frames(frames_per_video=50) == list(range(FRAMES))


def test_face_location_boxes_are_used(tree: Path) -> None:
    splits = build(options(tree, frames_per_video=2))
    item, source = splits.test[3], splits.test.sources[3]
    frame = read_frames(source.path, [source.frame])[0]
    assert source.hint is not None
    expected = crop_face(frame, source.hint, 1.4, 32).astype(float)
    elsewhere = crop_face(frame, type(source.hint)(60, 0, 32, 32), 1.4, 32).astype(float)
    crop = np.asarray(item["image"], float)
    assert np.abs(crop - expected).mean() < 6 < np.abs(crop - elsewhere).mean()
    boxes = build(options(tree, frames_per_video=2), detector=ShippedBoxes())   # the `boxes` detector: same crops
    assert np.abs(np.asarray(boxes.test[3]["image"], float) - crop).mean() < 3


def test_boxes_are_hints_to_a_detector(tree: Path) -> None:
    class Recorder:
        def __init__(self):
            self.hints = []

        def detect(self, image, hint=None):
            self.hints.append(hint)
            return [hint] if hint is not None else []

    recorder = Recorder()
    build(options(tree, frames_per_video=1), detector=recorder)
    assert len(recorder.hints) == 60 and all(h is not None for h in recorder.hints)


def test_no_detector_and_no_face_files_asks_for_a_detector(tmp_path: Path) -> None:
    root = make_casia(tmp_path / "casia", train=(1, 2), test=(1,), stems=("1", "3"), boxes=False)
    with pytest.raises(DataError, match=r"detector\.name.*haar"):
        build(options(root))


def test_haar_detector_finds_the_faces(tmp_path: Path) -> None:
    root = tmp_path / "casia"
    width, height = HAAR_FRAME
    frames = [np.full((height, width, 3), 128, np.uint8) for _ in range(4)]
    for frame in frames:
        frame[20:20 + HAAR_FACE, 40:40 + HAAR_FACE] = haar_face()
    for release, subjects in (("train_release", (1, 2)), ("test_release", (1,))):
        for subject in subjects:
            for stem in ("1", "7"):
                write_video(root / release / str(subject) / f"{stem}.avi", frames)
    splits = build(options(root, frames_per_video=2), detector=HaarDetector(HaarOptions()))
    assert splits.info["no_face"] == {"train": 0, "val": 0, "test": 0}
    assert len(splits.train) == 4 and {s.attack_type for s in splits.test.sources} == {"", "video_replay"}


def test_unknown_stem_names_the_file_and_the_valid_stems(tree: Path) -> None:
    write_video(tree / "train_release" / "2" / "9.avi", face_frames(rendered_face(1, 32), 2)[0])
    expected = r"train_release/2/9\.avi: unknown CASIA-FASD video name '9' \(valid stems: 1, 2, HR_1, 3, 4, HR_2"
    with pytest.raises(DataError, match=expected):
        build(options(tree))


def test_malformed_face_file_names_file_and_line(tree: Path) -> None:
    face_file = tree / "face-locations" / "test_release" / "2" / "5.face"
    face_file.write_text("0 4 20 32 32\n1 6 20 32 32\n2 8 twenty 32 32\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test_release/2/5\.face, line 3: expected 'frame x y width height'"):
        build(options(tree))


def test_corrupt_video_is_skipped_and_named_or_stops_the_build(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = corrupt(tree / "train_release" / "1" / "4.avi")
    with caplog.at_level(logging.WARNING):
        splits = build(options(tree, frames_per_video=2))
    assert splits.info["skipped_videos"] == [str(bad)]
    assert any(str(bad) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert all(s.path != str(bad) for d in (splits.train, splits.val) for s in d.sources)
    with pytest.raises(DataError, match=str(bad)):
        build(options(tree, frames_per_video=2, on_bad_video="error"))


def test_frames_without_a_face_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_casia(tmp_path / "casia", stems=("1", "3"), blank={"test_release/2/3": {0, 7}})
    with caplog.at_level(logging.INFO):
        splits = build(options(root, frames_per_video=2))
    assert splits.info["no_face"] == {"train": 0, "val": 0, "test": 2}
    assert len(splits.test) == 4 * 2 - 2
    assert any("2 frames without a face skipped" in r.getMessage() for r in caplog.records)


def test_cached_second_build_decodes_no_video(tree: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    first = build(options(tree, frames_per_video=3))
    opened = record_opened_videos(monkeypatch)
    second = build(options(tree, frames_per_video=3))
    assert opened == []
    assert [s.source_id for s in second.train.sources] == [s.source_id for s in first.train.sources]
    assert second.test[5]["image"].size == (32, 32) and opened == []
    changed = write_video(tree / "test_release" / "1" / "7.avi", face_frames(rendered_face(3, 32), 5)[0])
    with caplog.at_level(logging.WARNING):
        third = build(options(tree, frames_per_video=3))
    assert opened == [str(changed)] * 2                                   # recounted, then its new frame 2 cropped
    assert [s.frame for s in third.test.sources if s.path == str(changed)] == [0, 2, 4]
    assert any("changed since" in r.getMessage() and str(changed) in r.getMessage() for r in caplog.records)


def test_damaged_crop_is_rebuilt(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEAUTH_CACHE", str(tmp_path / "own-cache"))
    splits = build(options(tree, frames_per_video=1))
    crops = sorted(Path(splits.info["crop_cache"]).rglob("*.png"))
    assert len(crops) == 60
    for crop in crops:
        crop.write_bytes(b"damaged")
    image = splits.train[0]["image"]
    assert image.size == (32, 32)
    assert sum(1 for c in crops if c.read_bytes() != b"damaged") == 1
    with Image.open(next(c for c in crops if c.read_bytes() != b"damaged")) as rebuilt:
        assert rebuilt.size == (32, 32)


def test_damaged_frame_count_cache_is_recounted(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEAUTH_CACHE", str(tmp_path / "own-cache"))
    build(options(tree, frames_per_video=1))
    (counts,) = (tmp_path / "own-cache" / "crops").glob("casia_fasd-frame-counts-*.json")
    assert len(json.loads(counts.read_text())["videos"]) == 60
    counts.write_text("{not json", encoding="utf-8")
    assert len(build(options(tree, frames_per_video=1)).train) == 24
    assert len(json.loads(counts.read_text())["videos"]) == 60


def test_options_are_validated() -> None:
    assert structure(CasiaFasdOptions, {"root": "/data/casia"}, "data").frames_per_video == 10
    for bad, message in (({}, r"data\.root: required key is missing"),
                         ({"root": "/x", "val_subjects": 0}, r"data\.val_subjects: expected a number between 0 and 1"),
                         ({"root": "/x", "frames_per_video": 0}, r"data\.frames_per_video: expected a positive"),
                         ({"root": "/x", "on_bad_video": "ignore"},
                          r"data\.on_bad_video: expected one of 'skip', 'error'")):
        with pytest.raises(RecipeError, match=message):
            structure(CasiaFasdOptions, bad, "data")


@pytest.mark.parametrize("clip_length", [None, 4])
def test_a_split_without_videos_is_named(tmp_path: Path, clip_length: int | None) -> None:
    root = make_casia(tmp_path / "casia", test=(), stems=("1", "3"))
    (root / "test_release").mkdir()
    with pytest.raises(DataError, match=r"casia_fasd test: no videos for this split in .*casia"):
        build(options(root, clip_length=clip_length))


def test_missing_release_folder(tmp_path: Path) -> None:
    (tmp_path / "casia" / "train_release").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no 'test_release/' folder"):
        build(options(tmp_path / "casia"))


# ---- clips for temporal models -----------------------------------------------------------------

def test_clips_share_boxes_and_crops_with_frames(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = build(options(tree, frames_per_video=4))
    opened = record_opened_videos(monkeypatch)
    clips = build(options(tree, clip_length=4))
    assert opened == []                          # the same 4 frames per video: counted and cropped by the frame build
    assert clips.info["clip_length"] == 4 and clips.info["videos"] == {"train": 24, "val": 12, "test": 24}
    assert clips.info["clips"]["test"]["clips"] == 24 and len(clips.train) == 24
    assert set(clips.val.subjects) == set(frames.val.subjects)           # the same subject-disjoint validation
    index = next(i for i, c in enumerate(clips.test.clips) if c.video.endswith("test_release/1/HR_1.avi"))
    clip = clips.test.clips[index]
    assert [f.frame for f in clip.frames] == [0, 2, 5, 7] and clip.attack_type == "" and clip.subject == "test:1"
    item = clips.test[index]
    assert len(item["frames"]) == 4 and item["frames"][0].size == (32, 32) and item["video"] == clip.video
    same = frames.test.sources.index(next(s for s in frames.test.sources if s.source_id == clip.frames[0].source_id))
    assert np.array_equal(np.asarray(item["frames"][0]), np.asarray(frames.test[same]["image"]))
    assert {c.attack_type for c in clips.test.clips} == {"", "warped_photo", "cut_photo", "video_replay"}


def test_clip_sampling_settings(tree: Path) -> None:
    strided = build(options(tree, clip_length=3, clip_stride=2, clips_per_video=2))
    assert sorted([f.frame for f in c.frames] for c in strided.test.clips if c.video.endswith("test_release/2/5.avi")) \
        == [[0, 2, 4], [3, 5, 7]]
    padded = build(options(tree, clip_length=10))
    assert padded.info["clips"]["train"]["padded"] == 24
    assert [f.frame for f in padded.test.clips[0].frames] == [*range(FRAMES), 7, 7]
    with pytest.raises(DataError, match=r"data\.clip_length=10: every video of casia_fasd train is shorter than a clip "
                                        r"\(10 frames; the longest has 8\)"):
        build(options(tree, clip_length=10, short_video="skip"))


def test_faceless_clip_frames_are_held_from_a_neighbour(tmp_path: Path) -> None:
    root = make_casia(tmp_path / "casia", stems=("1", "3"), blank={"test_release/2/3": {0, 1}, "test_release/1/1": set(range(FRAMES))})
    splits = build(options(root, clip_length=4))
    report = splits.info["clips"]["test"]
    assert report["held_frames"] == 1 and report["no_face_clips"] == 1      # frame 0 held from frame 2; a faceless video
    assert len(splits.test) == 3


def test_clip_and_frame_settings_are_not_mixed() -> None:
    for key, value in (("clips_per_video", 2), ("clip_stride", 2), ("short_video", "skip")):
        with pytest.raises(RecipeError, match=rf"data\.{key}: is a clip setting, but clip_length is null"):
            structure(CasiaFasdOptions, {"root": "/x", key: value}, "data")
    for key, value in (("frames_per_video", 4), ("frame_stride", 2)):
        with pytest.raises(RecipeError, match=rf"data\.{key}: is a frame setting, but clip_length is 8"):
            structure(CasiaFasdOptions, {"root": "/x", "clip_length": 8, key: value}, "data")
    assert structure(CasiaFasdOptions, {"root": "/x", "clip_length": 8, "clips_per_video": 2}, "data").clip_sampling()


# ---- through the registry and the runner -----------------------------------------------------------------

@pytest.mark.parametrize("name, overrides", [
    ("liveness_casia_fasd", ["data.root=/data/casia"]),
    ("liveness_cross_casia_replay", ["data.root=/data/casia", "test_data.root=/data/replay"]),
    ("liveness_cross_replay_casia", ["data.root=/data/replay", "test_data.root=/data/casia"]),
])
def test_recipes_resolve(name: str, overrides: list[str]) -> None:
    from faceauth.config.recipe import load_recipe

    path = REPO / "recipes" / f"{name}.yaml"
    registry = load_registry()
    recipe = load_recipe(path, overrides, registry=registry)
    assert recipe.detector.name == "haar" and recipe.data.options.root.startswith("/data/")
    if recipe.test_data is not None:
        assert {recipe.data.name, recipe.test_data.name} == {"casia_fasd", "replay_attack"}
    with pytest.raises(RecipeError, match=r"data\.root: required key is missing"):
        load_recipe(path, [], registry=registry)


@pytest.mark.slow
def test_training_run_reports_apcer_per_attack_type(tree: Path, tmp_path: Path) -> None:
    recipe = {
        "seed": 0, "output_dir": str(tmp_path / "runs"),
        "data": {"name": "casia_fasd", "root": str(tree), "frames_per_video": 3, "crop_size": 32},
        "detector": {"name": "boxes"},
        "backbone": {"name": "resnet18", "input_size": 32},
        "loss": {"name": "cross_entropy"},
        "trainer": {"name": "classifier", "epochs": 1, "batch_size": 16, "num_workers": 0, "progress": False},
        "optimizer": {"name": "adamw", "lr": 0.001},
        "export": None,
    }
    path = tmp_path / "casia.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = faceauth.run(path)
    test = json.loads((result.dir / "metrics.json").read_text())["test"]
    assert {"apcer_warped_photo", "apcer_cut_photo", "apcer_video_replay", "bpcer", "hter"} <= set(test)
