"""Crop geometry: box scale factors, several scales, five-point alignment, and the record that travels from
the recipe into the model's metadata and back into every deployment path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceauth.components import Preprocess
from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.deploy.models import FaceFinder, model_geometry
from faceauth.errors import DataError, ExportError, RecipeError
from faceauth.faces import Box, CropCache, CropGeometry, crop_face, crop_faces, crop_geometry
from faceauth.faces.align import align_five_point
from faceauth.plugins.datasets.frames import CropOptions, CroppedFaces, FrameSource, crop_all
from faceauth.training.export import model_metadata
from faceauth.training.run import Run
from tests.conftest import REPO

LANDMARKS = ((40.0, 45.0), (60.0, 44.0), (50.0, 55.0), (42.0, 66.0), (58.0, 65.0))


def gradient(height: int = 100, width: int = 120) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], axis=2).astype(np.uint8)


def test_the_crop_side_is_the_box_side_times_the_scale() -> None:
    image = gradient()
    box = Box(50, 40, 20, 16)  # centre (60, 48), longer side 20
    assert np.array_equal(crop_face(image, box, 2.0, 40), image[28:68, 40:80])
    assert np.array_equal(crop_face(image, box, 1.0, 20), image[38:58, 50:70])


def test_a_window_past_the_frame_is_moved_inside_and_no_pixel_is_invented() -> None:
    image = gradient()  # 100 x 120
    near_corner = Box(100, 2, 16, 16)  # centre (108, 10): a 32-px window would reach past the top and right
    assert np.array_equal(crop_face(image, near_corner, 2.0, 32), image[0:32, 88:120])
    too_big = Box(50, 40, 20, 16)  # x8: a 160-px window, larger than the frame: it shrinks to its shorter side
    assert np.array_equal(crop_face(image, too_big, 8.0, 100), image[0:100, 10:110])
    off_frame = Box(-30, 90, 20, 20)  # a box partly outside the frame still gives a crop of real pixels
    assert np.array_equal(crop_face(image, off_frame, 1.0, 20), image[80:100, 0:20])


@pytest.mark.parametrize("bad", [0, -1, 10.5, [1.0, 0.0], []])
def test_scales_outside_0_10_are_one_line_recipe_errors(bad: object) -> None:
    override = f"data.crop_scale={json.dumps(bad)}"
    with pytest.raises(RecipeError) as info:
        load_recipe(REPO / "recipes" / "liveness_nuaa.yaml", [override], registry=load_registry())
    assert "\n" not in str(info.value) and "data.crop_scale: expected a number in (0, 10]" in str(info.value)


def test_the_old_margin_key_is_named_as_unknown() -> None:
    with pytest.raises(RecipeError, match=r"data\.crop_margin: unknown key .*crop_scale"):
        load_recipe(REPO / "recipes" / "liveness_nuaa.yaml", ["data.crop_margin=0.2"], registry=load_registry())


def write_sources(folder: Path, count: int = 3, landmarks: bool = False) -> list[FrameSource]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(np.roll(gradient(), 7 * i, axis=1)).save(path)
        hint = Box(40, 35, 24, 30, landmarks=LANDMARKS if landmarks else None)
        sources.append(FrameSource(str(path), None, i % 2, "" if i % 2 == 0 else "print", f"s{i}", hint=hint))
    return sources


def test_several_scales_are_one_sample_per_scale_in_the_source_group(tmp_path: Path) -> None:
    sources = write_sources(tmp_path / "img")
    cache = CropCache("geometry-test", {"detector": None}, None, CropGeometry(None, scales=[1.0, 2.5], size=32))
    faces, report = crop_all(sources, cache, "test")
    assert report.made == 3 and len(faces) == 6
    assert faces.labels == [0, 0, 1, 1, 0, 0] and faces.subjects[2:4] == ["s1", "s1"]
    tight, loose = faces[2], faces[3]
    assert tight["video"] == loose["video"] == sources[1].path and tight["label"] == loose["label"] == 1
    image = np.asarray(Image.open(sources[1].path).convert("RGB"))
    for sample, scale in ((tight, 1.0), (loose, 2.5)):  # the cache is lossless: deployment's crop, exactly
        np.testing.assert_array_equal(np.asarray(sample["image"]), crop_face(image, sources[1].hint, scale, 32))
    again, report = crop_all(sources, cache, "test")  # the second pass reads every scale from the cache
    assert report.cached == 3 and report.made == 0 and len(again) == 6
    np.testing.assert_array_equal(np.asarray(again[3]["image"]), np.asarray(loose["image"]))


def test_aligned_crops_use_the_landmarks_and_need_a_detector_that_finds_them(tmp_path: Path) -> None:
    sources = write_sources(tmp_path / "img", count=2, landmarks=True)
    geometry = CropGeometry(None, size=112, align=True)
    faces, _ = crop_all(sources, CropCache("geometry-align", {"detector": None}, None, geometry), "test")
    expected = np.asarray(align_five_point(Image.open(sources[0].path).convert("RGB"), LANDMARKS, 112), int)
    assert np.abs(np.asarray(faces[0]["image"], int) - expected).mean() < 3
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions

    with pytest.raises(RecipeError, match="crop_align: aligned crops need a detector that finds the five landmarks"):
        CropCache("geometry-align", {}, HaarDetector(HaarOptions()), geometry)
    with pytest.raises(ValueError, match="one geometry"):
        CropGeometry(scales=[1.0, 2.0], align=True)
    with pytest.raises(DataError, match="found none"):
        crop_faces(gradient(), Box(10, 10, 30, 30), geometry, "photo.jpg")


def test_the_recipe_geometry_goes_into_the_model_metadata_and_back(tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "recipes" / "liveness_nuaa.yaml",
                         ["data.crop_scale=[2.7, 4.0]", "data.crop_size=80", "detector.min_neighbors=3"],
                         registry=load_registry())
    geometry = crop_geometry(recipe.to_dict())
    assert geometry == CropGeometry("haar", {"scale_factor": 1.1, "min_neighbors": 3, "min_size": 0.1,
                                             "max_width": 640}, scales=(2.7, 4.0), size=80)
    run = Run(recipe, load_registry(), tmp_path)
    preprocess = Preprocess(input_size=(64, 64), mean=(0.5,) * 3, std=(0.5,) * 3)
    metadata = model_metadata(run, preprocess, task="liveness", score="s", threshold=0.0)
    assert model_geometry(metadata, "model.onnx") == geometry
    finder = FaceFinder.for_model(metadata, "model.onnx")
    assert finder.detector.min_neighbors == 3  # the recipe's detector settings, at deployment too
    image = gradient(200, 200)
    crops = crop_faces(image, Box(80, 80, 30, 30), finder.geometry)
    assert [c.shape for c in crops] == [(80, 80, 3)] * 2
    assert model_geometry({}, "old.onnx") == CropGeometry()  # models without the record: the old default


def test_crops_without_a_detector_record_none_and_data_without_crops_no_geometry() -> None:
    geometry = crop_geometry({"data": {"name": "nuaa", "crop_size": 64, "crop_scale": 1.0}, "detector": None})
    assert geometry == CropGeometry(None, scales=(1.0,), size=64)
    shipped = crop_geometry({"data": [{"name": "replay_attack", "crop_size": 32}], "detector": {"name": "boxes"}})
    assert shipped == CropGeometry(None, scales=(1.4,), size=32)
    assert crop_geometry({"data": {"name": "folder", "root": "x"}}) is None
    aligned = crop_geometry({"data": {"name": "identity_folder", "root": "x", "align_size": 112},
                             "detector": {"name": "mtcnn", "weights": "w", "min_face": 20}})
    assert aligned == CropGeometry("mtcnn", {"weights": "w", "min_face": 20}, scales=(1.0,), size=112, align=True)


@pytest.mark.parametrize("text, message", [("{not json", "invalid faceauth.crop"),
                                           ('{"scales": [20]}', "crop_scale: expected a number in")])
def test_damaged_geometry_metadata_is_a_one_line_export_error(text: str, message: str) -> None:
    with pytest.raises(ExportError) as info:
        model_geometry({"faceauth.crop": text}, "model.onnx")
    assert str(info.value).startswith("model.onnx: ") and message in str(info.value) and "\n" not in str(info.value)


def test_an_mtcnn_geometry_without_its_onnx_files_names_the_export_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FACEAUTH_MTCNN_WEIGHTS", raising=False)
    with pytest.raises(DataError, match="mtcnn_export"):
        FaceFinder(CropGeometry("mtcnn", {"weights": str(tmp_path)}, size=112, align=True))
    with pytest.raises(DataError, match="no weights folder"):
        FaceFinder(CropGeometry("mtcnn", {}, size=112, align=True))
    with pytest.raises(DataError, match="deployment cannot run"):
        FaceFinder(CropGeometry("yunet"))


def test_crop_options_default_to_the_old_margin() -> None:
    assert CropOptions().crop_scale == 1.4  # crop_margin 0.2 on each side: 1 + 2 x 0.2
    assert CroppedFaces([], None).scales == 1


def test_fusion_warns_about_components_trained_on_other_crops(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from faceauth.plugins.trainers.fusion.components import Component, warn_other_crops

    def score(images: object) -> np.ndarray:
        return np.zeros(1)

    same = Component("liveness", Path("live.onnx"), "", None, score, geometry=CropGeometry())
    aligned = Component("embedding", Path("arcface.onnx"), "", None, score,
                        geometry=CropGeometry("mtcnn", size=112, align=True))
    with caplog.at_level(logging.WARNING, logger="faceauth"):
        assert warn_other_crops({"data": {"name": "demo_attempts"}}, [same, aligned]) == ["arcface.onnx"]
    assert "trained on other face crops than the attempts'" in caplog.text
    assert warn_other_crops({"data": {"name": "attempt_folder", "crop_size": 112}, "detector": {"name": "mtcnn"}},
                            [aligned]) == ["arcface.onnx"]  # a scaled crop is not an aligned one


def test_nuaa_raw_frames_through_the_recipe_give_one_sample_per_scale(tmp_path: Path) -> None:
    from faceauth.config.build import build_component
    from tests.test_nuaa import SUBJECTS, haar_frames, write_tree

    frames = haar_frames(3)
    base = tmp_path / "NUAA"
    write_tree(base, "raw", subjects=SUBJECTS[:3], image=lambda s: frames[s])
    recipe = load_recipe(REPO / "recipes" / "liveness_nuaa.yaml",
                         [f"data.root={base}", "data.crop_size=24", "data.crop_scale=[1.0, 2.7]"],
                         registry=load_registry())
    splits = build_component(load_registry(), recipe, "data")
    test = splits.test
    assert len(test) == 2 * len(test.sources) and test.labels[0::2] == test.labels[1::2]
    tight, loose = test[0], test[1]
    assert tight["path"] == loose["path"] and tight["image"].size == loose["image"].size == (24, 24)
    # the 2.7 crop holds the 1.0 crop in its middle (1/2.7 of its side)
    inner = np.asarray(loose["image"].resize((65, 65)), int)[23:42, 23:42]
    centre = np.asarray(tight["image"].resize((19, 19)), int)
    assert np.abs(inner - centre).mean() < np.abs(inner - np.asarray(loose["image"].resize((19, 19)), int)).mean()


@pytest.mark.parametrize("settings", [{"factor": 1.0}, {"factor": 1.5}, {"min_face": 0}, {"thresholds": [0.6, 0.7]}])
def test_mtcnn_settings_from_a_models_metadata_that_cannot_run_are_one_line(tmp_path: Path, settings: dict) -> None:
    from faceauth.faces import face_detector

    geometry = CropGeometry("mtcnn", {"weights": str(tmp_path), **settings})
    with pytest.raises(DataError, match=r"^mtcnn: the model's crop geometry holds settings MTCNN cannot run"):
        face_detector(geometry)
