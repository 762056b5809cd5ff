"""Device, mixed-precision and process-group choices, including the CUDA-only paths that can be faked on a CPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from faceauth.errors import RecipeError
from faceauth.training import distributed
from faceauth.training.loop import optimizer_step


@pytest.mark.parametrize(("setting", "gpus", "processes", "backend"), [
    ("cpu", 8, 2, "gloo"),        # a CPU run on a GPU host stays on gloo
    ("auto", 0, 2, "gloo"),
    ("auto", 2, 2, "nccl"),
    ("cuda", 4, 2, "nccl"),
    ("cuda:0", 1, 1, "nccl"),
])
def test_the_process_group_follows_the_runs_device(setting: str, gpus: int, processes: int, backend: str) -> None:
    assert distributed.backend_for(setting, gpus, processes) == backend


def test_more_processes_than_gpus_under_nccl_is_one_line_naming_device() -> None:
    with pytest.raises(RecipeError, match=r"^device: 'auto': 2 processes on this machine but 1 GPU\(s\); NCCL needs a "
                                          r"GPU per process: start at most 1 .+ or set device=cpu"):
        distributed.backend_for("auto", 1, 2)
    with pytest.raises(RecipeError, match=r"^device: 'cuda' but torch sees no CUDA device"):
        distributed.backend_for("cuda", 0, 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")
def test_cuda_asked_on_a_machine_without_it_is_one_line() -> None:
    with pytest.raises(RecipeError, match=r"^device: 'cuda' but torch sees no CUDA device .+ use device=cpu or auto"):
        distributed.device("cuda")
    with pytest.raises(RecipeError, match=r"^device: expected auto, cpu, cuda or cuda:N, got 'gpu'"):
        distributed.device("gpu")
    assert distributed.device("cpu") == torch.device("cpu")


def _step_with(gradient: float) -> tuple[bool, float, int]:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)  # a real scaler, enabled, on the CPU
    loss = (weight * gradient).sum()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when a schedule steps before its optimizer
        stepped = optimizer_step(scaler, optimizer, scheduler)
    return stepped, float(weight.detach()[0]), scheduler.last_epoch


def test_a_step_the_scaler_skips_leaves_weights_and_schedule_alone() -> None:
    assert _step_with(float("inf")) == (False, 1.0, 0)
    stepped, weight, schedule_steps = _step_with(1.0)
    assert stepped and weight == pytest.approx(0.9) and schedule_steps == 1


def test_a_link_keeps_the_old_file_when_its_source_is_replaced(tmp_path) -> None:
    from faceauth.io.paths import atomic_link, atomic_write

    source = tmp_path / "best.pt"
    source.write_bytes(b"epoch 3")
    (tmp_path / "last.pt").write_bytes(b"epoch 2")
    atomic_link(source, tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == b"epoch 3" and (tmp_path / "last.pt").samefile(source)
    with atomic_write(source) as handle:
        handle.write(b"epoch 4")
    assert (tmp_path / "last.pt").read_bytes() == b"epoch 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


@pytest.mark.slow
def test_an_epoch_that_is_the_best_is_written_once(tmp_path, monkeypatch) -> None:
    import faceauth
    from faceauth.training import checkpoint
    from tests.test_distributed import RECIPE

    monkeypatch.setenv("FACEAUTH_PLUGINS", "faceauth,faceauth-example-plugin")
    recipe = {**RECIPE, "output_dir": str(tmp_path), "export": None, "trainer": {**RECIPE["trainer"], "epochs": 3}}
    result = faceauth.run(recipe_path(tmp_path, recipe), ["run_name=r"])
    best, last = (result.dir / "checkpoints" / name for name in ("best.pt", "last.pt"))
    assert best.samefile(last) == (result.metrics["best_epoch"] == 3)
    assert checkpoint.load(best)["best"]["epoch"] == result.metrics["best_epoch"]
    assert checkpoint.load(last)["epoch"] == 3


def recipe_path(folder, recipe: dict):
    import yaml

    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path
