"""Shared fixtures: an isolated cache, tiny recipes, and the opt-in switch for real-data tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def run_without_torch(script: str) -> str:
    """Run `script` in a fresh interpreter and return what it printed; it must succeed without importing
    torch or torchvision (the deployment paths run on onnxruntime alone)."""
    check = ("\nimport sys as _sys\n"
             "print('TORCH MODULES', sorted(m for m in _sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n")
    done = subprocess.run([sys.executable, "-c", script + check], capture_output=True, text=True, timeout=120,
                          cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert "TORCH MODULES []" in done.stdout, done.stdout
    return done.stdout


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--realdata", action="store_true", help="run tests that use ../shared/data")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--realdata"):
        return
    skip = pytest.mark.skip(reason="real-data test: opt in with --realdata")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets the same session-wide cache (demo sets render once) and sees only faceauth's own
    plugins, whatever else is installed; tests of third-party plugins allow theirs explicitly."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("FACEAUTH_CACHE", str(cache))
    monkeypatch.setenv("FACEAUTH_PLUGINS", "faceauth")
    monkeypatch.delenv("FACEAUTH_DISABLE_PLUGINS", raising=False)
    return cache


TINY_RECIPE = {
    "seed": 0,
    "data": {"name": "demo", "train": 48, "val": 24, "test": 24, "size": 48},
    "backbone": {"name": "resnet18", "input_size": 32},
    "loss": {"name": "cross_entropy"},
    "trainer": {"name": "classifier", "epochs": 2, "batch_size": 16, "num_workers": 0, "progress": False},
    "optimizer": {"name": "adamw", "lr": 0.001},
    "export": {"name": "onnx"},
}


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A recipe file that trains for a few seconds on a small demo set, writing runs under tmp_path."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(tmp_path / "runs")}), encoding="utf-8")
    return path
