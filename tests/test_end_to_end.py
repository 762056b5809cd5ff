"""The headline path on a tiny demo configuration: train, validate, test, export, evaluate, resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import faceauth
from faceauth.commands.cli import eval_main, export_main, run_main
from faceauth.io.onnx import onnx_session, read_metadata
from faceauth.training import checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> faceauth.runs.runner.RunResult:
    from tests.conftest import TINY_RECIPE

    root = tmp_path_factory.mktemp("e2e")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(root / "runs")}), encoding="utf-8")
    return faceauth.run(recipe, ["run_name=first"])


def test_run_directory_holds_everything(finished_run: faceauth.runs.runner.RunResult) -> None:
    run_dir = finished_run.dir
    assert run_dir.name == "first"
    resolved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert resolved["trainer"]["epochs"] == 2 and resolved["backbone"]["pretrained"] is None
    for tag in ("last", "best"):
        payload = checkpoint.load(run_dir / "checkpoints" / f"{tag}.pt")
        assert {"model", "optimizer", "scheduler", "rng", "recipe", "versions", "epoch"} <= set(payload)
        assert payload["versions"]["faceauth"] == faceauth.config.registry.version()
        assert payload["versions"]["components"]["backbone"].startswith("faceauth ")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["val"]) >= {"acer", "apcer", "bpcer", "hter", "eer", "auc", "threshold"}
    assert metrics["test"]["threshold"] == pytest.approx(metrics["threshold"])
    assert metrics == json.loads(json.dumps(finished_run.metrics, default=str))


def test_tensorboard_events(finished_run: faceauth.runs.runner.RunResult) -> None:
    events = EventAccumulator(str(finished_run.dir), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/lr", "val/acer", "val/auc", "val/bpcer", "test/acer", "test/hter"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("val/acer")] == [1, 2]
    assert "train/samples" in tags["images"]
    assert any(t.startswith("val/pr_live") for t in tags["tensors"])


def test_onnx_model_matches_and_carries_metadata(finished_run: faceauth.runs.runner.RunResult) -> None:
    path = finished_run.dir / "model.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    meta = read_metadata(path)
    assert meta["preprocess.input_size"] == "32,32"
    assert float(meta["faceauth.threshold"]) == pytest.approx(finished_run.metrics["threshold"])
    assert "higher = more likely live" in meta["faceauth.score"] and "log-odds" in meta["faceauth.score"]
    assert meta["faceauth.threshold_rule"] == "eer on val"
    payload = checkpoint.load(finished_run.dir / "checkpoints" / "best.pt")
    from faceauth.runs.models import _run_for

    run, trainer = _run_for(payload["recipe"], [], [])
    net = trainer.load_model(run, payload)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
        expected = (logits[:, 0] - logits[:, 1]).numpy()  # the log-odds of live
    got = onnx_session(path).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_eval_checkpoint_and_onnx_agree(finished_run: faceauth.runs.runner.RunResult, capsys: pytest.CaptureFixture) -> None:
    from faceauth.runs.models import evaluate

    from_checkpoint = evaluate(finished_run.dir / "checkpoints" / "best.pt")
    from_onnx = evaluate(finished_run.dir / "model.onnx")
    for key in ("acer", "apcer", "bpcer", "threshold"):
        assert from_onnx[key] == pytest.approx(from_checkpoint[key], abs=1e-6)
    assert from_checkpoint["acer"] == pytest.approx(finished_run.metrics["test"]["acer"])
    assert eval_main([str(finished_run.dir / "model.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["acer"] == pytest.approx(from_onnx["acer"])


def test_export_command(finished_run: faceauth.runs.runner.RunResult, tmp_path: Path) -> None:
    out = tmp_path / "weights" / "liveness.onnx"
    assert export_main([str(finished_run.dir / "checkpoints" / "best.pt"), "--output", str(out)]) == 0
    assert read_metadata(out)["faceauth.task"] == "liveness"


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_mid_epoch_reaches_the_same_weights(finished_run: faceauth.runs.runner.RunResult, tiny_recipe: Path) -> None:
    stopped = faceauth.run(tiny_recipe, ["trainer.max_steps=4", "run_name=stopped"])
    assert stopped.metrics["stopped"] == "max_steps=4 reached" and stopped.onnx_path is None
    assert checkpoint.load(stopped.dir / checkpoint.RESUME_CHECKPOINT)["position"] == 1
    resumed = faceauth.run(None, ["trainer.max_steps=null"], resume=stopped.dir)
    assert resumed.metrics["stopped"] is None
    _assert_same_weights(_final_weights(resumed.dir), _final_weights(finished_run.dir))
    assert resumed.metrics["test"] == finished_run.metrics["test"]


class _InterruptAfterFirstEpoch:
    @faceauth.hookimpl
    def faceauth_epoch_end(self, run, epoch):
        if epoch == 0:
            signal.raise_signal(signal.SIGINT)


def test_sigint_saves_a_resumable_checkpoint(finished_run: faceauth.runs.runner.RunResult, tiny_recipe: Path) -> None:
    interrupted = faceauth.run(tiny_recipe, ["run_name=interrupted"], extra_plugins=[_InterruptAfterFirstEpoch()])
    assert interrupted.interrupted
    assert checkpoint.load(interrupted.dir / checkpoint.RESUME_CHECKPOINT)["epoch"] == 1
    resumed = faceauth.run(None, [], resume=interrupted.dir)
    _assert_same_weights(_final_weights(resumed.dir), _final_weights(finished_run.dir))


def test_cli_run_resume_and_exit_status(tiny_recipe: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_main([str(tiny_recipe), "trainer.max_steps=2", "trainer.epochs=1", "run_name=cli"]) == 0
    out = capsys.readouterr().out
    assert "stopped: max_steps=2 reached" in out
    run_dir = tiny_recipe.parent / "runs" / "cli"
    assert run_main([f"resume={run_dir}", "trainer.max_steps=null"]) == 0
    assert (run_dir / "model.onnx").is_file()
