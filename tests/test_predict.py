"""`faceauth.Liveness` and ``faceauth-predict`` on a tiny exported liveness model, real image and video files.

The model is the untrained ResNet-18 tests.test_fusion exports once per session (threshold 0.5 in its
metadata); the scores carry no meaning, so the tests check rows, aggregation, thresholds and errors.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceauth.commands.predict import predict_main
from faceauth.deploy.liveness import Liveness, Prediction
from faceauth.errors import DataError, ExportError
from faceauth.io import video as fa_video
from tests.conftest import run_without_torch
from tests.test_fusion import component_models, session_cache
from tests.videos import HAAR_FRAME, face_frames, haar_face, write_video


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUTH_PLUGINS", "faceauth")
        return component_models(session_cache(tmp_path_factory))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crops/ (face crops, PNG and JPEG, one in a subfolder), photo.png with a face, wall.png without,
    face.avi (a face the Haar cascade finds in every frame) and wall.avi (no face)."""
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    (root / "crops" / "more").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "more/c.png"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "crops" / name)
    (root / "crops" / "notes.txt").write_text("not an image")
    width, height = HAAR_FRAME
    face = haar_face()
    photo = np.full((height, width, 3), 96, np.uint8)
    photo[20:20 + face.shape[0], 40:40 + face.shape[1]] = face
    Image.fromarray(photo).save(root / "photo.png")
    Image.fromarray(np.full((height, width, 3), 96, np.uint8)).save(root / "wall.png")
    frames, _ = face_frames(face, 14, size=HAAR_FRAME, move=1)
    write_video(root / "face.avi", frames)
    write_video(root / "wall.avi", [np.full((height, width, 3), 96, np.uint8)] * 6)
    return root


def test_images_and_folders_give_one_row_each_in_path_order(models: dict[str, Path], inputs: Path) -> None:
    model = Liveness(models["liveness"], detect=False)
    assert model.threshold == pytest.approx(0.5)  # faceauth.threshold of the exported model
    rows = list(model.predict(inputs / "crops"))
    assert [Path(r.path).relative_to(inputs / "crops").as_posix() for r in rows] == ["a.png", "b.jpg", "more/c.png"]
    images = [np.asarray(Image.open(r.path).convert("RGB")) for r in rows]
    expected = model.model(images)  # the component scorer the Authenticator uses
    np.testing.assert_allclose([r.score for r in rows], expected, atol=1e-6)
    for row in rows:
        assert row.face and row.frames == 1 and row.decision == ("live" if row.score >= 0.5 else "spoof")
    # the batch size changes nothing; an array is one more input
    assert [r.score for r in Liveness(models["liveness"], detect=False, batch_size=2).predict(inputs / "crops")] == \
        pytest.approx([r.score for r in rows], abs=1e-6)
    assert next(model.predict(images[0])).score == pytest.approx(rows[0].score, abs=1e-6)
    # the operator's threshold replaces the stored one
    assert all(r.live for r in Liveness(models["liveness"], detect=False, threshold=-1.0).predict(inputs / "crops"))
    assert not any(r.live for r in Liveness(models["liveness"], detect=False, threshold=2.0).predict(inputs / "crops"))
    for bad in ("abc", float("nan"), None.__class__):  # the Python API refuses what the command line refuses
        with pytest.raises(ExportError, match=r"^threshold: expected a finite number, got "):
            Liveness(models["liveness"], detect=False, threshold=bad)


def test_faces_are_found_as_the_authenticator_finds_them(models: dict[str, Path], inputs: Path) -> None:
    from faceauth.deploy.models import FaceFinder

    model = Liveness(models["liveness"])
    found, none = model.predict(inputs / "photo.png"), model.predict(inputs / "wall.png")
    found, none = next(found), next(none)
    finder = FaceFinder.for_model(model.metadata, "liveness.onnx")  # the model's crop geometry, as verify uses it
    crops = finder.crops(np.asarray(Image.open(inputs / "photo.png").convert("RGB")), "photo")
    assert found.face and found.score == pytest.approx(float(model.model(crops).mean()), abs=1e-6)
    assert none == Prediction(str(inputs / "wall.png"), False, None, "no face", 1)


def test_a_video_scores_the_mean_of_its_sampled_frames(models: dict[str, Path], inputs: Path) -> None:
    model = Liveness(models["liveness"])
    assert model.sampling["frames_per_video"] == 10 and not model.clips
    row = model.predict_video(inputs / "face.avi")
    indices = fa_video.sample_indices(fa_video.frame_count(inputs / "face.avi"), 10)
    crops = [model.finder.find(f) for f in fa_video.read_frames(inputs / "face.avi", indices)]
    scored = [c for c in crops if c is not None]
    assert row.face and row.frames == len(scored) >= 5  # frames where the cascade misses the face are left out
    per_frame = [float(model.model(c).mean()) for c in scored]  # each frame: the mean over its crop scales
    assert row.score == pytest.approx(float(np.mean(per_frame)), abs=1e-6)
    assert model.predict_video(inputs / "wall.avi") == Prediction(str(inputs / "wall.avi"), False, None, "no face", 0)


def test_cli_rows_in_csv_and_json_lines(models: dict[str, Path], inputs: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    argv = [str(models["liveness"]), str(inputs / "photo.png"), str(inputs / "wall.png"), str(inputs / "face.avi")]
    assert predict_main(argv) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["path"] for r in rows] == argv[1:] and list(rows[0]) == ["path", "face", "score", "decision", "frames"]
    assert [r["face"] for r in rows] == ["1", "0", "1"] and rows[1]["score"] == "" and rows[1]["decision"] == "no face"
    assert float(rows[0]["score"]) == pytest.approx(next(Liveness(models["liveness"]).predict(argv[1])).score, abs=1e-6)
    assert predict_main([*argv, "--format", "jsonl", "--threshold", "-5", "--output", str(tmp_path / "out.jsonl")]) == 0
    assert capsys.readouterr().out == ""
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["decision"] for line in lines] == ["live", "no face", "live"] and lines[2]["frames"] >= 5


def test_cli_bad_input_is_one_line_and_exit_status_1(models: dict[str, Path], inputs: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    fa_video_bad = tmp_path / "broken.mp4"
    fa_video_bad.write_bytes(b"not a video " * 64)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    live = str(models["liveness"])
    cases = (
        ([live, str(fa_video_bad)], "broken.mp4: cannot open video"),
        ([live, str(tmp_path / "empty")], "empty: no images or videos in this folder"),
        ([live, str(tmp_path / "broken.png")], "broken.png: cannot read image"),
        ([live, str(tmp_path / "nothing.png")], "nothing.png: no such file or folder"),
        ([str(models["embedding"]), str(inputs / "photo.png")],
         "embedding.onnx is an embedding model (faceauth.task='embedding'); expected a liveness model"),
        ([live, str(inputs / "photo.png"), "--threshold", "high"], "--threshold (in the unit of the model's score): expected a finite number"),
        ([live, str(inputs / "photo.png"), "--threshold", "nan"], "--threshold (in the unit of the model's score): expected a finite number"),
        ([live, str(inputs / "photo.png"), "--providers", "NoSuchExecutionProvider"],
         "execution provider 'NoSuchExecutionProvider' is not installed (installed: "),
    )
    for argv, message in cases:
        assert predict_main([*argv, "--output", str(tmp_path / "rows.csv")]) == 1, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("faceauth-predict: error: ")
        assert message in err, err
        assert not (tmp_path / "rows.csv").exists()  # nothing written on bad input
    with pytest.raises(ExportError, match="CPUExecutionProvider"):
        Liveness(models["liveness"], providers=["CUDAExecutionProvider-typo"])
    with pytest.raises(DataError, match="no images or videos"):
        list(Liveness(models["liveness"]).predict(tmp_path / "empty"))


def test_the_predict_path_imports_no_torch(models: dict[str, Path], inputs: Path) -> None:
    script = (
        "import faceauth\n"
        f"rows = list(faceauth.Liveness({str(models['liveness'])!r}).predict({str(inputs)!r}))\n"
        "from faceauth.commands.predict import predict_main\n"
        f"code = predict_main([{str(models['liveness'])!r}, {str(inputs / 'face.avi')!r}, '--format', 'jsonl'])\n"
        "print('EXIT', code, 'ROWS', len(rows))\n"
    )
    assert "EXIT 0 ROWS 7" in run_without_torch(script)  # 3 crops, face.avi, photo.png, wall.avi, wall.png
