"""A loss that turns NaN stops the run with a clear message and keeps the last good checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import faceauth
from faceauth.commands.cli import run_main
from faceauth.components import Loss
from faceauth.training import checkpoint

pytestmark = pytest.mark.slow


class _NanAfter(torch.nn.Module):
    """Cross-entropy for the first `good` training calls, NaN after (validation loss calls, made
    without gradients, are not counted)."""

    def __init__(self, good: int):
        super().__init__()
        self.calls, self.good = 0, good

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += torch.is_grad_enabled()
        loss = torch.nn.functional.cross_entropy(logits, target)
        return loss if self.calls <= self.good else loss * float("nan")


class NanLossPlugin:
    @faceauth.hookimpl
    def faceauth_losses(self):
        return [Loss(name="nan_after_4", build=lambda num_classes, num_features: _NanAfter(4))]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_recipe: Path) -> None:
    with pytest.raises(faceauth.TrainingError, match="loss became nan at epoch 2, step 2"):
        faceauth.run(tiny_recipe, ["loss.name=nan_after_4", "run_name=nan"],
                     extra_plugins=[NanLossPlugin()])
    last = checkpoint.load(tiny_recipe.parent / "runs" / "nan" / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_unwritable_output_dir_is_one_line(tmp_path: Path, tiny_recipe: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert run_main([str(tiny_recipe), f"output_dir={blocker}/runs"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceauth-run: error: output_dir: cannot create run directory") and "\n" not in err
    assert blocker.read_text() == "keep me"
