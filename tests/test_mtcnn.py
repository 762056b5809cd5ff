"""The `mtcnn` detector: weights in the facenet-pytorch layout, the cascade, its ONNX twin, bad weight files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from faceauth.components import resolve
from faceauth.config.registry import load_registry
from faceauth.errors import PluginError, RecipeError
from faceauth.faces import Box
from faceauth.faces.mtcnn import MtcnnOnnx, MtcnnPipeline, MtcnnSettings, nms_opencv
from faceauth.plugins.detectors.mtcnn import MtcnnDetector, MtcnnOptions, load_networks, nms_torch
from faceauth.plugins.detectors.mtcnn_export import export_onnx
from faceauth.plugins.detectors.mtcnn_export import main as export_main
from faceauth.schema import structure
from tests.conftest import SHARED_DATA

# The key names and shapes of facenet-pytorch's pnet.pt / rnet.pt / onet.pt, written out independently of
# the plugin's networks so that a layout mistake there fails here.
LAYOUT = {
    "pnet": {"conv1": (10, 3, 3, 3), "prelu1": (10,), "conv2": (16, 10, 3, 3), "prelu2": (16,),
             "conv3": (32, 16, 3, 3), "prelu3": (32,), "conv4_1": (2, 32, 1, 1), "conv4_2": (4, 32, 1, 1)},
    "rnet": {"conv1": (28, 3, 3, 3), "prelu1": (28,), "conv2": (48, 28, 3, 3), "prelu2": (48,),
             "conv3": (64, 48, 2, 2), "prelu3": (64,), "dense4": (128, 576), "prelu4": (128,),
             "dense5_1": (2, 128), "dense5_2": (4, 128)},
    "onet": {"conv1": (32, 3, 3, 3), "prelu1": (32,), "conv2": (64, 32, 3, 3), "prelu2": (64,),
             "conv3": (64, 64, 3, 3), "prelu3": (64,), "conv4": (128, 64, 2, 2), "prelu4": (128,),
             "dense5": (256, 1152), "prelu5": (256,), "dense6_1": (2, 256), "dense6_2": (4, 256),
             "dense6_3": (10, 256)},
}


def random_state(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for layer, shape in LAYOUT[net].items():
        if layer.startswith("prelu"):
            state[f"{layer}.weight"] = torch.full(shape, 0.25)
            continue
        fan_in = int(np.prod(shape[1:]))
        state[f"{layer}.weight"] = torch.randn(shape, generator=generator) / fan_in ** 0.5
        state[f"{layer}.bias"] = torch.randn(shape[0], generator=generator) * 0.1
    return state


def write_weights(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, net in enumerate(LAYOUT):
        torch.save(random_state(net, seed + i), folder / f"{net}.pt")
    return folder


def face_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    image[20:70, 40:80] = [200, 160, 140]
    return image


LOOSE = MtcnnSettings(min_face=24, thresholds=(0.3, 0.3, 0.3))  # random networks still propose boxes


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random weights in the published layout, with their ONNX export beside them (exported once per module)."""
    weights = write_weights(tmp_path_factory.mktemp("mtcnn") / "w", seed=3)
    written = export_onnx(weights)
    assert sorted(p.name for p in written) == ["onet.onnx", "pnet.onnx", "rnet.onnx"]
    return weights


def test_random_weights_in_the_published_layout_load_and_detect_boxes_with_landmarks(tmp_path: Path) -> None:
    weights = write_weights(tmp_path / "w")
    detector = MtcnnDetector(MtcnnOptions(weights=str(weights), min_face=24, thresholds=(0.3, 0.3, 0.3)))
    faces = detector.detect(face_image())
    assert faces, "loose thresholds on random networks should keep some box"
    assert all(isinstance(b, Box) and b.landmarks is not None and len(b.landmarks) == 5 for b in faces)
    areas = [b.w * b.h for b in faces]
    assert areas == sorted(areas, reverse=True)  # largest first, as the Haar detector orders them


def test_pyramid_follows_the_factor_from_the_min_face_scale() -> None:
    pipeline = MtcnnPipeline(None, None, None, nms_opencv, MtcnnSettings(min_face=20))  # type: ignore[arg-type]
    scales = pipeline.pyramid(120, 200)
    assert scales[0] == pytest.approx(0.6)
    assert np.allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 120 * scales[-1] >= 12 > 120 * scales[-1] * 0.709


def test_opencv_and_torchvision_nms_keep_the_same_boxes() -> None:
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 100, (60, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, (60, 2)).astype(np.float32)], axis=1)
    scores = rng.permutation(60).astype(np.float32) / 60
    for iou in (0.3, 0.5, 0.7):
        assert list(nms_opencv(boxes, scores, iou)) == list(nms_torch(boxes, scores, iou))


def test_onnx_export_runs_the_same_cascade_without_torch_networks(exported: Path) -> None:
    weights = exported
    torch_boxes, torch_points = MtcnnDetector(MtcnnOptions(weights=str(weights), min_face=24,
                                                           thresholds=(0.3, 0.3, 0.3))).detect_boxes(face_image(2))
    onnx_boxes, onnx_points = MtcnnOnnx(weights, LOOSE).detect_boxes(face_image(2))
    assert len(torch_boxes) > 0
    np.testing.assert_allclose(onnx_boxes, torch_boxes, atol=1e-3)
    np.testing.assert_allclose(onnx_points, torch_points, atol=1e-3)


def test_export_command_reports_missing_weights_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert export_main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pnet.pt not found" in err


def test_onnx_detector_without_onnx_files_names_the_command(tmp_path: Path) -> None:
    weights = write_weights(tmp_path / "w")
    with pytest.raises(PluginError, match="mtcnn_export"):
        MtcnnDetector(MtcnnOptions(weights=str(weights), runtime="onnx"))


@pytest.mark.parametrize("damage", ["renamed", "reshaped", "extra"])
def test_weights_of_another_layout_are_one_line_with_counts_and_examples(tmp_path: Path, damage: str) -> None:
    weights = write_weights(tmp_path / "w")
    state = random_state("rnet")
    if damage == "renamed":
        state["fc.weight"] = state.pop("dense4.weight")
    elif damage == "reshaped":
        state["dense4.weight"] = torch.zeros(128, 575)
    else:
        state["features.conv9.weight"] = torch.zeros(1)
    torch.save(state, weights / "rnet.pt")
    with pytest.raises(PluginError) as info:
        load_networks(weights)
    message = str(info.value)
    assert "\n" not in message and "rnet.pt" in message and ("16 keys" in message or "17 keys" in message)
    expected = {"renamed": "missing, e.g. dense4.weight", "reshaped": "dense4.weight (128, 575)",
                "extra": "unexpected, e.g. features.conv9.weight"}[damage]
    assert expected in message


def test_a_pickled_module_is_refused_not_unpickled(tmp_path: Path) -> None:
    weights = write_weights(tmp_path / "w")
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), weights / "onet.pt")
    with pytest.raises(PluginError, match="onet.pt cannot be read as a weights-only state dict"):
        load_networks(weights)


def test_missing_file_names_what_the_folder_needs(tmp_path: Path) -> None:
    weights = write_weights(tmp_path / "w")
    (weights / "pnet.pt").unlink()
    with pytest.raises(PluginError, match="pnet.pt not found.*facenet-pytorch"):
        load_networks(weights)


def test_recipe_options_are_checked() -> None:
    assert resolve(load_registry().get("detector", "mtcnn").options) is MtcnnOptions
    with pytest.raises(RecipeError, match="thresholds"):
        structure(MtcnnOptions, {"weights": "w", "thresholds": [0.6, 0.7]}, "detector")
    with pytest.raises(RecipeError, match="weights: required"):
        structure(MtcnnOptions, {}, "detector")


def test_box_landmarks_are_five_points_and_survive_clamping() -> None:
    points = [(10, 10), (20, 10), (15, 15), (11, 20), (19, 20)]
    box = Box(-5, 0, 40, 30, 0.9, landmarks=np.array(points))
    assert box.landmarks == tuple((float(x), float(y)) for x, y in points)
    assert box.clamp(30, 30).landmarks == box.landmarks
    with pytest.raises(ValueError, match="5 finite"):
        Box(0, 0, 1, 1, landmarks=[(0, 0)] * 4)


REAL = SHARED_DATA / "misc_samples" / "davidsandberg_facenet_lfw_colour"


@pytest.mark.realdata
def test_published_weights_find_one_face_with_plausible_landmarks_on_real_photos() -> None:
    folder = os.environ.get("FACEAUTH_MTCNN_WEIGHTS")
    if not folder or not (Path(folder) / "pnet.pt").is_file():
        pytest.skip("set FACEAUTH_MTCNN_WEIGHTS to a folder with facenet-pytorch's pnet.pt, rnet.pt, onet.pt")
    photos = sorted(REAL.rglob("*.jpg"))[:6] if REAL.is_dir() else []
    if not photos:
        pytest.skip(f"{REAL} not found")
    from PIL import Image

    detector = MtcnnDetector(MtcnnOptions(weights=folder))
    onnx = MtcnnOnnx(folder) if (Path(folder) / "pnet.onnx").is_file() else None
    for photo in photos:
        image = np.asarray(Image.open(photo).convert("RGB"))
        faces = detector.detect(image)
        assert len(faces) >= 1, photo
        face = faces[0]
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
        assert face.score > 0.9 and lx < nx < rx and max(ly, ry) < ny < min(mly, mry) and mlx < mrx, photo
        assert face.x <= lx and rx <= face.x + face.w and face.y <= ly and mly <= face.y + face.h, photo
        if onnx is not None:
            twin = onnx.detect(image)[0]
            assert np.abs(np.array(twin.landmarks) - np.array(face.landmarks)).max() < 0.5, photo


def test_deployment_finds_and_aligns_mtcnn_faces_without_importing_torch(exported: Path, tmp_path: Path) -> None:
    from tests.conftest import run_without_torch

    weights = exported
    np.save(tmp_path / "image.npy", face_image(2))
    script = (
        "import numpy as np\n"
        "from faceauth.deploy.models import FaceFinder\n"
        "from faceauth.faces import CropGeometry\n"
        f"geometry = CropGeometry('mtcnn', {{'weights': {str(weights)!r}, 'min_face': 24, "
        "'thresholds': [0.3, 0.3, 0.3]}, size=112, align=True)\n"
        f"crops = FaceFinder(geometry).crops(np.load({str(tmp_path / 'image.npy')!r}), 'image')\n"
        "print('CROPS', [c.shape for c in crops])\n"
    )
    assert "CROPS [(112, 112, 3)]" in run_without_torch(script)


def test_identity_folder_photos_are_aligned_by_detected_landmarks_cached_once(exported: Path, tmp_path: Path) -> None:
    from PIL import Image

    from faceauth.faces import first_face
    from faceauth.faces.align import align_five_point
    from faceauth.plugins.datasets.identity import load_identity_folder

    root = tmp_path / "people"
    for person in range(3):
        (root / f"p{person}").mkdir(parents=True)
        for shot in range(2):
            Image.fromarray(face_image(10 * person + shot)).save(root / f"p{person}" / f"{shot}.png")
    detector = MtcnnDetector(MtcnnOptions(weights=str(exported), min_face=24, thresholds=(0.3, 0.3, 0.3),
                                          runtime="onnx"))

    class Counted:  # the real detector, counting its calls
        landmarks, options, calls = True, detector.options, 0

        def detect(self, image: np.ndarray, hint: object = None) -> list[Box]:
            Counted.calls += 1
            return detector.detect(image)

    splits = load_identity_folder(root, val_identities=0.0, detector=Counted(), align_size=56)
    assert Counted.calls == 6 and len(splits.train) > 0
    sample = splits.train[0]
    raw = np.asarray(Image.open(sample["path"]).convert("RGB"))
    box = first_face(detector.detect(raw), raw.shape[1], raw.shape[0])
    assert np.array_equal(np.asarray(sample["image"]), np.asarray(align_five_point(raw, box.landmarks, 56)))
    load_identity_folder(root, val_identities=0.0, detector=Counted(), align_size=56)
    assert Counted.calls == 6  # the second build reads the cached landmarks


def test_identity_folder_with_a_detector_without_landmarks_is_a_recipe_error(tmp_path: Path) -> None:
    from PIL import Image

    from faceauth.plugins.datasets.identity import load_identity_folder
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions

    for person in range(2):
        (tmp_path / f"p{person}").mkdir()
        Image.fromarray(face_image(person)).save(tmp_path / f"p{person}" / "0.png")
    with pytest.raises(RecipeError, match="aligns faces by their five landmarks"):
        load_identity_folder(tmp_path, val_identities=0.0, detector=HaarDetector(HaarOptions()))
