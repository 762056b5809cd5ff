"""Models that evaluate with no other file, evaluation that reads only the split it needs, and layouts that are
refused rather than guessed (README: "Evaluate and export", "Temporal liveness")."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import faceauth
from faceauth.errors import DataError
from tests.conftest import REPO, TINY_RECIPE
from tests.videos import write_video


def tiny_run(folder: Path, **changes: object) -> faceauth.runs.runner.RunResult:
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(folder / "runs"), **changes}), encoding="utf-8")
    return faceauth.run(recipe)


@pytest.mark.slow
def test_faceauth_eval_takes_a_test_only_folder(tmp_path: Path) -> None:
    from tests.test_hostile_input import liveness_folder

    full = liveness_folder(tmp_path / "full")
    trained = tiny_run(tmp_path, data={"name": "folder", "root": str(full)}, export=None,
                       trainer={**TINY_RECIPE["trainer"], "epochs": 1, "batch_size": 4})
    root = tmp_path / "test_only"
    shutil.copytree(full / "test", root / "test")
    figures = faceauth.evaluate(trained.dir / "checkpoints" / "best.pt", root)
    assert figures["num_live"] == 4 and figures["num_attack"] == 4
    with pytest.raises(DataError, match=r"has no 'val/' folder"):
        faceauth.evaluate(trained.dir / "checkpoints" / "best.pt", root, split="val")


@pytest.mark.slow
def test_a_temporal_model_evaluates_without_the_checkpoint_it_started_from(tmp_path: Path) -> None:
    frames = tiny_run(tmp_path / "frames", backbone={"name": "resnet18", "input_size": 32},
                      trainer={**TINY_RECIPE["trainer"], "epochs": 1}, export=None)
    encoder = tmp_path / "encoder.pt"
    shutil.copyfile(frames.dir / "checkpoints" / "best.pt", encoder)
    temporal = faceauth.run(REPO / "recipes" / "temporal_lstm.yaml", [
        f"output_dir={tmp_path / 'runs'}", "data.train=8", "data.val=6", "data.test=6", "data.frames=8", "data.size=32",
        "data.clip_length=4", "backbone.encoder.input_size=32", f"backbone.encoder_checkpoint={encoder}",
        "backbone.clip_length=4", "backbone.hidden_size=16", "trainer.epochs=1", "trainer.batch_size=4",
        "trainer.num_workers=0", "trainer.progress=false"])
    assert "frame_baseline/acer" in temporal.metrics["test"]
    encoder.unlink()  # the frame encoder's checkpoint is gone: the temporal model carries all it needs
    from_checkpoint = faceauth.evaluate(temporal.dir / "checkpoints" / "best.pt")
    from_onnx = faceauth.evaluate(temporal.onnx_path)
    for key in ("acer", "auc", "num_live", "num_attack"):
        assert from_checkpoint[key] == pytest.approx(temporal.metrics["test"][key], abs=1e-6)
        assert from_onnx[key] == pytest.approx(temporal.metrics["test"][key], abs=1e-4)
    exported = faceauth.export_checkpoint(temporal.dir / "checkpoints" / "best.pt", tmp_path / "again.onnx")
    assert exported.is_file()
    with pytest.raises(faceauth.CheckpointError, match=r"encoder\.pt"):  # training from it still needs the file
        faceauth.run(REPO / "recipes" / "temporal_lstm.yaml", [f"output_dir={tmp_path / 'runs'}",
                                                               f"backbone.encoder_checkpoint={encoder}"])


def test_spoof_subject_folders_are_not_taken_for_attack_types(tmp_path: Path) -> None:
    from faceauth.faces import WholeFrame
    from faceauth.plugins.datasets.clips import VideoFolderOptions, build_video_folder

    frames = [np.full((24, 24, 3), 40 * i, np.uint8) for i in range(6)]
    root = tmp_path / "videos"
    for rel in ("train/live/alice/a.avi", "train/live/bob/b.avi", "train/spoof/alice/c.avi", "train/spoof/bob/d.avi",
                "val/live/carol/e.avi", "val/spoof/print/carol/f.avi"):
        write_video(root / rel, frames)
    with pytest.raises(DataError, match=r"train/spoof/alice: named like the live subject folder live/alice/, but the "
                                        r"level below spoof/ is the attack type"):
        build_video_folder(VideoFolderOptions(root=str(root), crop_size=16), WholeFrame())
    for subject in ("alice", "bob"):  # the documented layout: spoof/<attack type>/<subject>/
        (root / "train" / "spoof" / "replay").mkdir(exist_ok=True)
        shutil.move(root / "train" / "spoof" / subject, root / "train" / "spoof" / "replay" / subject)
    built = build_video_folder(VideoFolderOptions(root=str(root), crop_size=16), WholeFrame())
    assert {built.train[i]["attack_type"] for i in range(len(built.train))} == {"", "replay"}
