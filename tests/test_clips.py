"""Clip datasets: the video_folder layout on small real videos, clip sampling, short and undecodable
videos, the crop cache, and the rendered demo_clips set."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.data import LIVE, SPOOF
from faceauth.deploy.models import FaceFinder
from faceauth.errors import DataError, RecipeError
from faceauth.faces import WHOLE_FRAME, WholeFrame, crop_geometry
from faceauth.io.video import read_frames
from faceauth.plugins.datasets import clips as clip_module
from faceauth.plugins.datasets import demo_clips
from faceauth.plugins.datasets.clips import ClipSampling, VideoFolderOptions, build_video_folder, clip_indices
from faceauth.plugins.datasets.demo_clips import DemoClipsOptions
from tests.conftest import REPO
from tests.videos import corrupt, write_video

SIDE = 24


def numbered_frames(count: int) -> list[np.ndarray]:
    """Frames whose grey level says their index (20 * i + 10), so a clip tells which frames it holds."""
    return [np.full((SIDE, SIDE, 3), 20 * i + 10, np.uint8) for i in range(count)]


def frame_numbers(frames: list) -> list[int]:
    return [round((np.asarray(f, np.float32).mean() - 10) / 20) for f in frames]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{train,val}: live (a subject folder and a loose 5-frame video), spoof/print/<subject>, loose spoof."""
    root = tmp_path / "videos"
    for rel, count in [("train/live/alice/v1.avi", 12), ("train/live/v2.avi", 5), ("train/spoof/print/bob/v3.avi", 12),
                       ("train/spoof/v4.mp4", 9), ("val/live/v5.avi", 12), ("val/spoof/replay/v6.mov", 12)]:
        write_video(root / rel, numbered_frames(count))
    return root


def load(root: Path, **options) -> object:
    return build_video_folder(VideoFolderOptions(root=str(root), crop_size=16, **options), WholeFrame())


def by_video(dataset) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        found.setdefault(Path(sample["video"]).name, []).append(sample)
    return found


def test_layout_labels_subjects_and_frames(tree: Path) -> None:
    splits = load(tree, clip_length=4)
    assert splits.test is None and splits.classes == ("live", "spoof")
    train = by_video(splits.train)
    assert {name: (s[0]["label"], s[0]["attack_type"], s[0]["subject"]) for name, s in train.items()} == {
        "v1.avi": (LIVE, "", "alice"), "v2.avi": (LIVE, "", ""), "v3.avi": (SPOOF, "print", "bob"),
        "v4.mp4": (SPOOF, "spoof", "")}
    sample = train["v1.avi"][0]
    assert len(sample["frames"]) == 4 and all(f.size == (16, 16) and f.mode == "RGB" for f in sample["frames"])
    assert frame_numbers(sample["frames"]) == [0, 4, 7, 11]  # spread evenly over 12 frames
    assert splits.val.attack_types.count("replay") == 1 and splits.info["clips"]["train"]["clips"] == 4


def test_clip_sampling() -> None:
    assert clip_indices(12, ClipSampling(clip_length=4)) == [[0, 4, 7, 11]]
    assert clip_indices(12, ClipSampling(clip_length=4, clips_per_video=2)) == [[0, 3, 6, 9], [2, 5, 8, 11]]
    assert clip_indices(12, ClipSampling(clip_length=4, clip_stride=2)) == [[0, 2, 4, 6]]
    assert clip_indices(12, ClipSampling(clip_length=4, clip_stride=2, clips_per_video=3)) == [
        [0, 2, 4, 6], [2, 4, 6, 8], [5, 7, 9, 11]]
    assert clip_indices(7, ClipSampling(clip_length=4, clip_stride=2, clips_per_video=3)) == [[0, 2, 4, 6]]  # once
    assert clip_indices(6, ClipSampling(clip_length=4, clip_stride=2)) == []  # needs 7 frames
    assert clip_indices(3, ClipSampling(clip_length=4)) == []


def test_several_strided_clips_per_video_share_its_id(tree: Path) -> None:
    train = by_video(load(tree, clip_length=3, clip_stride=2, clips_per_video=2).train)
    assert [frame_numbers(s["frames"]) for s in train["v1.avi"]] == [[0, 2, 4], [7, 9, 11]]
    assert [frame_numbers(s["frames"]) for s in train["v2.avi"]] == [[0, 2, 4]]  # exactly one clip long


def test_short_videos_are_padded_or_skipped_and_counted(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    padded = load(tree, clip_length=6)
    assert frame_numbers(by_video(padded.train)["v2.avi"][0]["frames"]) == [0, 1, 2, 3, 4, 4]
    assert padded.info["clips"]["train"]["padded"] == 1
    with caplog.at_level(logging.WARNING):
        skipped = load(tree, clip_length=10, short_video="skip")
    assert set(by_video(skipped.train)) == {"v1.avi", "v3.avi"}  # v2 (5 frames) and v4 (9 frames) skipped
    assert skipped.info["clips"]["train"]["short_skipped"] == 2
    assert "2 videos shorter than 10 frames skipped" in caplog.text


def test_clip_longer_than_every_video_names_the_option(tree: Path) -> None:
    with pytest.raises(DataError, match=r"data\.clip_length=13: every video of video_folder train is shorter than "
                                        r"a clip \(13 frames; the longest has 12\).*data\.short_video=pad"):
        load(tree, clip_length=13, short_video="skip")
    with pytest.raises(DataError, match=r"lower data\.clip_length or data\.clip_stride"):
        load(tree, clip_length=4, clip_stride=5, short_video="skip")


def test_layout_errors_name_the_folder(tree: Path) -> None:
    for video in (tree / "val" / "spoof").rglob("*.mov"):
        video.unlink()
    with pytest.raises(DataError, match=r"val/spoof: no video files"):
        load(tree)
    shutil.rmtree(tree / "val" / "spoof")
    with pytest.raises(DataError, match=r"val: missing folder 'spoof/'"):
        load(tree)
    shutil.rmtree(tree / "val")
    with pytest.raises(DataError, match=r"data\.root: .* has no 'val/' folder"):
        load(tree)
    with pytest.raises(DataError, match=r"data\.root: .* is not a directory"):
        load(tree / "nothing")


def test_undecodable_video_is_skipped_with_its_name_or_stops(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = corrupt(tree / "train" / "live" / "broken.avi")
    with caplog.at_level(logging.WARNING):
        splits = load(tree, clip_length=4)
    assert str(bad) in caplog.text and splits.info["clips"]["train"]["bad_videos"] == [str(bad)]
    assert splits.info["skipped_videos"] == [str(bad)]  # named at the top, as the frame loaders do
    assert len(splits.train) == 4
    with pytest.raises(DataError, match=r"broken\.avi: cannot open video|broken\.avi: the video has no decodable"):
        load(tree, clip_length=4, on_bad_video="error")


def test_a_second_build_decodes_nothing(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load(tree, clip_length=4, clips_per_video=2)
    expected = [frame_numbers(first.train[i]["frames"]) for i in range(len(first.train))]
    import cv2

    def no_decoding(*args, **kwargs):
        raise AssertionError("a video was opened although every crop and frame count is cached")

    monkeypatch.setattr(cv2, "VideoCapture", no_decoding)
    second = load(tree, clip_length=4, clips_per_video=2)
    assert [frame_numbers(second.train[i]["frames"]) for i in range(len(second.train))] == expected


def test_faceless_frames_are_held_from_the_nearest_frame_with_a_face(tree: Path) -> None:
    class EvenFramesOnly:  # a detector that finds the face only in frames of an even grey level index
        def detect(self, image, hint=None):
            from faceauth.faces import Box

            index = round((float(image.mean()) - 10) / 20)
            return [Box(0, 0, image.shape[1], image.shape[0])] if index % 2 == 0 else []

    splits = clip_module.load_video_folder(tree, VideoFolderOptions(root=str(tree), clip_length=4, crop_size=16),
                                           EvenFramesOnly())
    # v1 samples frames 0, 4, 7, 11: 7 is replaced by 4 (nearest, earlier first on a tie), 11 by 4
    assert frame_numbers(by_video(splits.train)["v1.avi"][0]["frames"]) == [0, 4, 4, 4]
    assert splits.info["clips"]["train"]["held_frames"] > 0


def test_video_folder_asks_for_a_detector_and_whole_frame_names_the_faces_it_crops(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"^detector: video_folder crops each video frame to its face; name a "
                                          r"detector .*detector\.name=whole_frame for videos whose frames show a face"):
        build_video_folder(VideoFolderOptions(root=str(_wide_videos(tmp_path)), crop_size=16))


def _wide_videos(tmp_path: Path) -> Path:
    """Videos of 40 x 24 frames, a ramp left to right and one top to bottom: a centre square and a
    squashed whole frame differ."""
    x, y = np.meshgrid(np.linspace(0, 250, 40), np.linspace(0, 120, 24))
    frame = np.stack([x, y, x / 2 + y], -1).astype(np.uint8)
    root = tmp_path / "wide"
    for rel in ("train/live/a.avi", "train/spoof/b.avi", "val/live/c.avi", "val/spoof/d.avi"):
        write_video(root / rel, [frame] * 4)
    return root


def test_whole_frame_crops_are_what_deployment_crops_from_the_exported_geometry(tmp_path: Path) -> None:
    root = _wide_videos(tmp_path)
    splits = build_video_folder(VideoFolderOptions(root=str(root), crop_size=16, clip_length=2), WholeFrame())
    trained = np.asarray(by_video(splits.train)["a.avi"][0]["frames"][0])
    geometry = crop_geometry({"data": {"name": "video_folder", "crop_size": 16, "crop_scale": 1.4},
                              "detector": {"name": WHOLE_FRAME}})
    assert geometry.detector == WHOLE_FRAME  # what the exported model's faceauth.crop records
    frame = read_frames(root / "train" / "live" / "a.avi", [0])[0]
    (deployed,) = FaceFinder(geometry).crops(frame, "a.avi")
    np.testing.assert_array_equal(deployed, trained)  # the crop cache is lossless
    assert abs(int(trained[8, 0, 0]) - int(frame[12, 8, 0])) <= 12  # the centre square, not the squashed frame


# ---- demo_clips ----------------------------------------------------------------------------------

SMALL = {"train": 6, "val": 3, "test": 3, "frames": 6, "size": 32, "clip_length": 4}


def test_demo_clips_layout_and_samples() -> None:
    splits = demo_clips.build_demo_clips(DemoClipsOptions(**SMALL))
    root = Path(splits.info["root"])
    assert sorted(p.relative_to(root).as_posix() for p in (root / "val").rglob("*.avi")) == [
        "val/live/s0001/v0000.avi", "val/spoof/print/s0001/v0001.avi", "val/spoof/replay/s0001/v0002.avi"]
    assert set(splits.train.attack_types) == {"", "print", "replay"} and len(splits.test) == 3
    sample = splits.train[0]
    assert len(sample["frames"]) == 4 and sample["frames"][0].size == (32, 32) and sample["subject"] == "s0000"
    assert set(splits.train.subjects).isdisjoint(splits.val.subjects)  # identities differ across splits


def test_demo_clips_render_deterministically_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = DemoClipsOptions(**SMALL, seed=7)
    roots = []
    for cache in ("a", "b"):
        monkeypatch.setenv("FACEAUTH_CACHE", str(tmp_path / cache))
        roots.append(demo_clips.demo_clips_root(options))
    files = [sorted(p.relative_to(r) for p in r.rglob("*.avi")) for r in roots]
    assert files[0] == files[1] and len(files[0]) == 12
    assert all((roots[0] / f).read_bytes() == (roots[1] / f).read_bytes() for f in files[0])

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again although the set is cached")

    monkeypatch.setattr(demo_clips, "render_video", no_render)
    assert demo_clips.demo_clips_root(options) == roots[1]


def test_live_faces_are_rendered_per_frame_and_attacks_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    render = demo_clips.render_face
    monkeypatch.setattr(demo_clips, "render_face", lambda *a, **k: calls.append(1) or render(*a, **k))
    person = demo_clips.sample_identity(np.random.default_rng(0))
    counts = {}
    for kind in demo_clips.KINDS:
        calls.clear()
        frames = demo_clips.render_video(kind, person, np.random.default_rng(1), 5, 32)
        counts[kind] = len(calls)
        assert len(frames) == 5 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
        assert not np.array_equal(frames[0], frames[1])  # camera motion and sensor noise move every video
    assert counts == {"live": 5, "print": 1, "replay": 1}


# ---- the recipe ----------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    [],
    ["data.name=video_folder", "data.root=/data/videos", "detector.name=haar"],
    ["data.name=video_folder", "data.root=/data/videos"],  # the recipe's whole_frame: videos of face crops
    ["backbone.encoder_checkpoint=runs/liveness/checkpoints/best.pt", "backbone.freeze_encoder=true"],
])
def test_the_temporal_recipe_and_its_documented_overrides_resolve(overrides: list[str]) -> None:
    recipe = load_recipe(REPO / "recipes" / "temporal_lstm.yaml", overrides, registry=load_registry())
    assert recipe.backbone.name == "lstm" and recipe.backbone.options.encoder["input_size"] == 64
    assert recipe.data.options.clip_length == recipe.backbone.options.clip_length == 8
