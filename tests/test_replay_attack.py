"""Tests for the replay_attack dataset on miniature Replay-Attack trees of real (tiny) .mov files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from faceauth.data import LIVE, SPOOF
from faceauth.errors import DataError
from faceauth.plugins.datasets.replay_attack import ReplayAttackOptions, build, parse_name
from faceauth.plugins.detectors.haar import ShippedBoxes
from tests.videos import corrupt, face_frames, record_opened_videos, rendered_face, write_face_file, write_video

FRAMES = 8
CLIENTS = {"train": (1, 2), "devel": (3,), "test": (4, 5)}
VIDEOS = (  # (folder, name with {c} for the client number), as bob.db.replay lists them
    ("real", "client{c:03d}_session01_webcam_authenticate_adverse_1"),
    ("real", "client{c:03d}_session01_webcam_authenticate_controlled_2"),
    ("attack/fixed", "attack_highdef_client{c:03d}_session01_highdef_photo_adverse"),
    ("attack/fixed", "attack_print_client{c:03d}_session01_highdef_photo_controlled"),
    ("attack/hand", "attack_highdef_client{c:03d}_session01_highdef_photo_adverse"),   # same name, other support
    ("attack/hand", "attack_mobile_client{c:03d}_session01_mobile_video_adverse"),
)


def make_replay(root: Path, clients: dict[str, tuple[int, ...]] = CLIENTS, *, boxes: bool = True) -> Path:
    """root/{train,devel,test}/{real,attack/fixed,attack/hand}/*.mov and root/face-locations/ beside them."""
    for split, numbers in clients.items():
        for number in numbers:
            frames, face_boxes = face_frames(rendered_face(number, 32), FRAMES)
            for folder, name in VIDEOS:
                relative = Path(split) / folder / (name.format(c=number) + ".mov")
                write_video(root / relative, frames)
                if boxes:
                    write_face_file((root / "face-locations" / relative).with_suffix(".face"), face_boxes)
    return root


def options(root: Path, **kwargs) -> ReplayAttackOptions:
    return ReplayAttackOptions(root=str(root), crop_size=32, **kwargs)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_replay(tmp_path / "replay")


def test_splits_labels_attack_types_and_clients(tree: Path) -> None:
    splits = build(options(tree, frames_per_video=2))
    assert splits.info["videos"] == {"train": 12, "val": 6, "test": 12} and splits.info["val_split"] == "devel"
    assert set(splits.train.subjects) == {"client001", "client002"} and set(splits.val.subjects) == {"client003"}
    assert set(splits.test.subjects) == {"client004", "client005"}
    for split in (splits.train, splits.val, splits.test):
        for source in split.sources:
            real = "/real/" in source.path
            assert source.label == (LIVE if real else SPOOF)
            assert source.attack_type == ("" if real else Path(source.path).stem.split("_")[1])
    assert {s.attack_type for s in splits.test.sources} == {"", "print", "mobile", "highdef"}
    supports = {Path(s.path).parent.name for s in splits.train.sources if s.attack_type == "highdef"}
    assert supports == {"fixed", "hand"}
    assert len(splits.train) == 12 * 2 and splits.info["no_face"] == {"train": 0, "val": 0, "test": 0}
    assert splits.train[0]["image"].size == (32, 32) and splits.train[0]["subject"] == "client001"


@pytest.mark.parametrize("name, real, expected", [
    ("client001_session01_webcam_authenticate_adverse_1", True, ("client001", "")),
    ("client117_session01_webcam_authenticate_controlled_2", True, ("client117", "")),
    ("attack_highdef_client001_session01_highdef_photo_adverse", False, ("client001", "highdef")),
    ("attack_print_client009_session01_highdef_photo_controlled", False, ("client009", "print")),
    ("attack_mobile_client101_session01_mobile_video_adverse", False, ("client101", "mobile")),
])
def test_names(name: str, real: bool, expected: tuple[str, str]) -> None:
    assert parse_name(Path(f"x/{name}.mov"), real) == expected


@pytest.mark.parametrize("name, real, message", [
    ("attack_print_client001_session01_highdef_photo_adverse", True, "not a Replay-Attack real-access name"),
    ("client001_session01_webcam_authenticate_adverse_1", False, "not a Replay-Attack attack name"),
    ("attack_mask_client001_session01_highdef_photo_adverse", False,
     r"unknown Replay-Attack attack device 'mask' \(known: print, mobile, highdef\)"),
])
def test_bad_names(name: str, real: bool, message: str) -> None:
    with pytest.raises(DataError, match=rf"{name}\.mov: {message}"):
        parse_name(Path(f"x/{name}.mov"), real)


def test_frames_per_video_and_stride(tree: Path) -> None:
    def frames(**kwargs) -> list[int]:
        val = build(options(tree, **kwargs)).val
        video = "real/client003_session01_webcam_authenticate_adverse_1.mov"
        return [s.frame for s in val.sources if s.path.endswith(video)]

    assert frames(frames_per_video=4) == [0, 2, 5, 7]
    assert frames(frames_per_video=4, frame_stride=3) == [0, 3, 6]


def test_face_boxes_are_the_hints_and_the_boxes_detector_uses_them(tree: Path) -> None:
    splits = build(options(tree, frames_per_video=2), detector=ShippedBoxes())
    source = splits.test.sources[1]
    assert source.frame == 7 and source.hint is not None and (source.hint.x, source.hint.w) == (18, 32)


def test_malformed_face_line_names_file_and_line(tree: Path) -> None:
    face_file = tree / "face-locations/devel/attack/hand/attack_mobile_client003_session01_mobile_video_adverse.face"
    face_file.write_text("0 4 20 32 32\n\n2 8 20 32\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{face_file}, line 3: expected 'frame x y width height'"):
        build(options(tree))


def test_empty_or_zero_face_rows_mean_no_face(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    test = tree / "face-locations" / "test"
    (test / "real" / "client004_session01_webcam_authenticate_adverse_1.face").write_text("", encoding="utf-8")
    (test / "attack" / "fixed" / "attack_print_client005_session01_highdef_photo_controlled.face").write_text(
        "0 0 0 0 0\n7 18 20 32 32\n", encoding="utf-8")
    with caplog.at_level(logging.INFO):
        splits = build(options(tree, frames_per_video=2))
    assert splits.info["no_face"] == {"train": 0, "val": 0, "test": 3}
    assert len(splits.test) == 12 * 2 - 3
    assert any("3 frames without a face skipped" in r.getMessage() for r in caplog.records)


def test_missing_face_file_is_warned_about_and_its_frames_have_no_face(tree: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    gone = tree / "face-locations/train/attack/hand/attack_mobile_client002_session01_mobile_video_adverse.face"
    gone.unlink()
    with caplog.at_level(logging.WARNING):
        splits = build(options(tree, frames_per_video=2))
    assert splits.info["no_face"]["train"] == 2
    assert any("1 of 30 videos have no face-location file" in r.getMessage() and str(gone) in r.getMessage()
               for r in caplog.records)


def test_a_client_in_two_splits_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_replay(tmp_path / "replay", {"train": (1, 2), "devel": (3,), "test": (2, 4)})
    with caplog.at_level(logging.WARNING):
        build(options(root, frames_per_video=1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("replay_attack: 1 subjects are in both train and test: client002" in w for w in warnings)


def test_corrupt_video_is_skipped_and_named(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = corrupt(tree / "train" / "attack" / "fixed" / "attack_print_client001_session01_highdef_photo_controlled.mov")
    with caplog.at_level(logging.WARNING):
        splits = build(options(tree, frames_per_video=2))
    assert splits.info["skipped_videos"] == [str(bad)] and len(splits.train) == 11 * 2
    assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    with pytest.raises(DataError, match=str(bad)):
        build(options(tree, frames_per_video=2, on_bad_video="error"))


def test_cached_second_build_decodes_no_video(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build(options(tree, frames_per_video=3))
    opened = record_opened_videos(monkeypatch)
    second = build(options(tree, frames_per_video=3))
    assert opened == [] and len(second.test) == len(first.test) == 36
    assert second.test[7]["image"].size == (32, 32) and opened == []


def test_layout_errors(tmp_path: Path) -> None:
    root = make_replay(tmp_path / "replay", {"train": (1,), "devel": (2,), "test": (3,)})
    for folder in (root / "test" / "real").iterdir():
        folder.unlink()
    (root / "test" / "real").rmdir()
    with pytest.raises(DataError, match=r"/test: missing folder 'real/'"):
        build(options(root))
    with pytest.raises(DataError, match=r"replay/train has no 'train/' folder \(expected root/\{train,devel,test\}"):
        build(options(tmp_path / "replay" / "train"))
    with pytest.raises(DataError, match=r"detector\.name"):
        build(options(make_replay(tmp_path / "plain", {"train": (1,), "devel": (2,), "test": (3,)}, boxes=False)))


def test_clips_of_each_split_keep_clients_and_attack_types(tree: Path) -> None:
    splits = build(options(tree, clip_length=4, clips_per_video=2))
    assert splits.info["clips"]["train"] == {"videos": 12, "clips": 24, "padded": 0, "short_skipped": 0,
                                             "bad_videos": [], "held_frames": 0, "no_face_clips": 0}
    assert set(splits.val.subjects) == {"client003"} and len(splits.test) == 24
    assert {c.attack_type for c in splits.test.clips} == {"", "print", "mobile", "highdef"}
    assert sorted({tuple(f.frame for f in c.frames) for c in splits.test.clips}) == [(0, 2, 4, 6), (1, 3, 5, 7)]
    assert all(f.hint is not None for c in splits.train.clips for f in c.frames)   # the shipped boxes


@pytest.mark.slow
def test_temporal_recipe_on_replay_attack_clips_scores_each_video(tree: Path, tmp_path: Path) -> None:
    import faceauth
    from tests.conftest import REPO

    result = faceauth.run(REPO / "recipes" / "temporal_lstm.yaml", [
        f"output_dir={tmp_path}", "data.name=replay_attack", f"data.root={tree}", "data.clip_length=4",
        "data.crop_size=32", "detector.name=boxes", "backbone.encoder.input_size=32", "backbone.clip_length=4",
        "backbone.hidden_size=8", "trainer.epochs=1", "trainer.batch_size=4", "trainer.num_workers=0",
        "trainer.progress=false", "export=null"])
    test = result.metrics["test"]
    assert test["num_live"] == 4 and test["num_attack"] == 8                  # one score per test video
    assert {"apcer_print", "apcer_mobile", "apcer_highdef", "acer", "auc"} <= set(test)
    written = json.loads((result.dir / "metrics.json").read_text())["datasets"]["data"]
    assert written["clip_length"] == 4 and written["clips"]["test"]["clips"] == 12 and written["root"] == str(tree)


def test_clips_and_backbones_must_agree(tree: Path, tmp_path: Path) -> None:
    import faceauth
    from tests.conftest import REPO

    common = [f"output_dir={tmp_path / 'runs'}", "data.name=replay_attack", f"data.root={tree}", "data.crop_size=32",
              "detector.name=boxes", "trainer.epochs=1", "trainer.num_workers=0", "export=null"]
    with pytest.raises(faceauth.RecipeError, match=r"data\.clip_length: data gives clips of frames, but backbone "
                                                   r"'resnet18' takes single images"):
        faceauth.run(REPO / "recipes" / "liveness_resnet18.yaml", [*common, "data.clip_length=4"])
    with pytest.raises(faceauth.RecipeError, match=r"data\.name: backbone 'lstm' takes clips of frames, but data "
                                                   r"gives single images; set data\.clip_length"):
        faceauth.run(REPO / "recipes" / "temporal_lstm.yaml", [*common, "data.clip_length=null"])
    assert not (tmp_path / "runs").exists()  # nothing was trained, no run directory left
