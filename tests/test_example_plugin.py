"""The example third-party package in examples/: installed like any plugin, used by name from a recipe."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch

import faceauth
from faceauth.commands.cli import run_main
from faceauth.config.registry import load_registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "faceauth-example-plugin"
DIST = "faceauth-example-plugin"

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def allow_example(monkeypatch: pytest.MonkeyPatch) -> str:
    try:
        version = importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{DIST} is not installed: pip install -e {EXAMPLE} (the README's test setup does this)")
    monkeypatch.setenv("FACEAUTH_PLUGINS", f"faceauth,{DIST}")
    return version


def test_listing_credits_the_package(allow_example: str, capsys: pytest.CaptureFixture) -> None:
    assert run_main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("tiny_cnn", "stripes", "focal"):
        line = next(line for line in lines if line.split()[:1] == [name])
        assert f"{DIST} {allow_example}" in line
    registry = load_registry()
    assert registry.entry("backbone", "tiny_cnn").provider.distribution == DIST


def test_recipe_runs_on_the_plugin_components_and_events_are_logged(tmp_path: Path) -> None:
    result = faceauth.run(EXAMPLE / "recipe.yaml", [f"output_dir={tmp_path}", "trainer.progress=false"])
    assert result.onnx_path is not None and result.onnx_path.is_file()
    events = [json.loads(line) for line in (result.dir / "example_plugin.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "train_start" and kinds[-1] == "train_end"
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [0, 1]
    assert {"last", "best"} <= {e["tag"] for e in events if e["event"] == "checkpoint_saved"}
    versions = faceauth.training.checkpoint.load(result.dir)["versions"]["components"]
    assert versions["backbone"] == versions["data"] == versions["loss"] == f"{DIST} 0.1.0"


def test_disabling_the_package_removes_its_components(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACEAUTH_PLUGINS")
    monkeypatch.setenv("FACEAUTH_DISABLE_PLUGINS", "FaceAuth_Example.Plugin")
    assert "tiny_cnn" not in load_registry().names("backbone")


def test_the_example_trainer_builds_on_the_training_toolkit(tmp_path: Path) -> None:
    """The example's `linear_probe` (faceauth.training's loop, loaders, export bundle): it trains only its head
    on a frozen backbone taken from a classifier run, resumes exactly, and faceauth-eval and the ONNX export
    reproduce its figures and scores through the ModelTrainer protocol."""
    common = [f"output_dir={tmp_path}", "trainer.progress=false"]
    source = faceauth.run(EXAMPLE / "recipe.yaml", [*common, "run_name=classifier"])
    probe_args = [*common, f"backbone.pretrained={source.dir}"]
    probe = faceauth.run(EXAMPLE / "probe_recipe.yaml", [*probe_args, "run_name=probe"])
    state = faceauth.training.checkpoint.load(probe.dir / "checkpoints" / "best.pt")["model"]
    trained = faceauth.training.checkpoint.load(source.dir / "checkpoints" / "best.pt")["model"]
    frozen = {k: v for k, v in state.items() if k.startswith("backbone.")}
    assert frozen and all(torch.equal(v, trained[k]) for k, v in frozen.items())  # running statistics too
    assert probe.metrics["epochs_completed"] == 3 and probe.metrics["test"]["num_live"] == 16

    paused = faceauth.run(EXAMPLE / "probe_recipe.yaml", [*probe_args, "run_name=paused", "trainer.max_steps=5"])
    assert paused.metrics["stopped"]
    resumed = faceauth.run(None, ["trainer.max_steps=null"], resume=paused.dir)
    again = faceauth.training.checkpoint.load(resumed.dir / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(again[k], v) for k, v in state.items())

    assert faceauth.evaluate(probe.dir / "checkpoints" / "best.pt") == pytest.approx(probe.metrics["test"])
    assert faceauth.evaluate(probe.onnx_path)["auc"] == pytest.approx(probe.metrics["test"]["auc"], abs=1e-6)
