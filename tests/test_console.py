"""What a run shows and keeps per epoch: the summary line, plain progress lines off a terminal,
``epochs.jsonl`` (resume-safe), and an early stop that finishes the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import faceauth
from faceauth.io import console
from faceauth.training import checkpoint


def test_epoch_line_shows_loss_liveness_figures_best_and_time() -> None:
    figures = {"train/loss": 0.41234, "train/lr": 0.001, "val/acer": 0.0312, "val/apcer": 0.04, "val/bpcer": 0.0224,
               "val/eer": 0.03, "val/accuracy": 0.97, "val/threshold": 1.5}
    assert console.epoch_line(3, 10, figures, best=True, seconds=41.23) == (
        "epoch 3/10  loss 0.4123  val acer 0.0312 apcer 0.0400 bpcer 0.0224 eer 0.0300  * best  41.2 s")
    recognition = {"train/loss": 2.5, "val/accuracy": 0.9, "val/eer": 0.1, "val/threshold": 0.3}
    assert console.epoch_line(1, 2, recognition, best=False, seconds=3) == (
        "epoch 1/2  loss 2.5000  val accuracy 0.9000 eer 0.1000  3.0 s")


def test_epochs_file_keeps_earlier_epochs_and_replaces_a_repeated_one(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        console.record_epoch(tmp_path, epoch, {"train/loss": 1.0 / epoch, "val/eer": float("nan")}, best=epoch == 1,
                             seconds=1.0)
    # A run resumed from the end of epoch 1 repeats epoch 2: its line replaces the old ones after it.
    console.record_epoch(tmp_path, 2, {"train/loss": 0.25}, best=True, seconds=2.0)
    lines = (tmp_path / console.EPOCHS_FILE).read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["epoch"] for e in entries] == [1, 2] and entries[1]["train/loss"] == 0.25 and entries[1]["best"]
    assert entries[0]["val/eer"] is None  # NaN is not JSON
    assert [p.name for p in tmp_path.iterdir()] == [console.EPOCHS_FILE]  # no temporary file left


def test_plain_progress_logs_each_quarter_of_an_epoch(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "is_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="faceauth"):
        bar = console.step_progress(20, 3, "epoch 1/2", enabled=True)  # resumed at step 3
        for _ in range(17):
            bar.set_postfix(loss="0.5000")
            bar.update(1)
        bar.close()
        quiet = console.step_progress(20, 0, "epoch 2/2", enabled=False)
        for _ in range(20):
            quiet.update(1)
    assert [r.getMessage() for r in caplog.records] == [
        f"epoch 1/2  step {step}/20  loss 0.5000" for step in (5, 10, 15)]
    assert list(console.progress(iter(range(3)), 3)) == [0, 1, 2]


class _StopAfterFirstEpoch:
    """An early-stopping rule: after the first epoch, finish."""

    @faceauth.hookimpl
    def faceauth_epoch_end(self, run, epoch):
        if epoch == 0:
            run.request_stop("val/acer stopped improving")


@pytest.mark.slow
def test_request_stop_finishes_the_run_tested_and_exported(tiny_recipe: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="faceauth"):
        result = faceauth.run(tiny_recipe, ["trainer.epochs=3"], extra_plugins=[_StopAfterFirstEpoch()])
    assert not result.interrupted and result.onnx_path is not None and result.onnx_path.is_file()
    stored = json.loads((result.dir / "metrics.json").read_text())
    assert stored["stopped_early"] == "val/acer stopped improving" and stored["stopped"] is None
    assert stored["epochs_completed"] == 1 and "acer" in stored["test"]
    assert checkpoint.load(result.dir / checkpoint.RESUME_CHECKPOINT)["epoch"] == 1
    entries = console.read_epochs(result.dir)
    assert [e["epoch"] for e in entries] == [1] and entries[0]["best"] and "val/acer" in entries[0]
    messages = [r.getMessage() for r in caplog.records]
    epoch_lines = [i for i, m in enumerate(messages) if m.startswith("epoch 1/3  loss ") and "val acer" in m]
    assert len(epoch_lines) == 1 and "* best" in messages[epoch_lines[0]]
    assert messages.index(f"run directory: {result.dir}") < epoch_lines[0]  # printed at the start
