"""Honest liveness scores and model selection: log-odds that keep their order, operator thresholds,
validation loss, and tie-breaks that do not keep an undertrained epoch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import faceauth
from faceauth import metrics
from faceauth.errors import RecipeError
from faceauth.plugins.trainers.classifier import ClassifierOptions, ClassifierTrainer, LivenessScore
from faceauth.plugins.trainers.liveness_scores import measure, predict
from faceauth.training.loop import TIE_BREAKS, improves, lower_is_better
from tests.conftest import TINY_RECIPE


class Margin(torch.nn.Module):
    """A 'classifier' whose logits are (m, -m) for an input's mean m: confident enough to saturate softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(dim=1)
        return torch.stack([m, -m], dim=1)


def test_saturated_softmax_still_gives_ordered_scores_and_a_separating_threshold() -> None:
    # Live margins 20..39, spoof margins 10..19.5: in float32 every one of them has softmax P(live) == 1.0.
    live, spoof = np.arange(20, 40, dtype=np.float32), np.arange(10, 20, 0.5, dtype=np.float32)
    margins = np.concatenate([live, spoof])
    x = torch.from_numpy(margins)[:, None, None, None].expand(-1, 3, 2, 2).contiguous()
    assert bool((torch.softmax(Margin()(x), dim=1)[:, 0] == 1.0).all())  # what P(live) would give
    scores = ClassifierTrainer.torch_scorer(Margin())(x)
    np.testing.assert_allclose(scores, 2 * margins)  # logit_live - logit_spoof
    exported, _ = LivenessScore(Margin())(x)
    np.testing.assert_allclose(exported.numpy(), scores)
    labels = np.array([0] * len(live) + [1] * len(spoof))
    predictions = {"score": scores, "label": labels, "attack_type": np.array([""] * len(live) + ["print"] * len(spoof))}
    figures = measure(predictions, threshold=None)
    assert figures["acer"] == 0.0 and figures["auc"] == 1.0
    assert 2 * spoof.max() < figures["threshold"] <= 2 * live.min()
    assert figures["bpcer_at_apcer_1pct"] == 0.0


def test_threshold_rules_on_known_scores() -> None:
    # live 0..9, print attacks 5..14 (10 each) and replay attacks -5..4.
    live = np.arange(10.0)
    prints, replays = np.arange(5.0, 15.0), np.arange(-5.0, 5.0)
    scores = np.concatenate([live, prints, replays])
    is_live = np.array([True] * 10 + [False] * 20)
    types = [""] * 10 + ["print"] * 10 + ["replay"] * 10
    # apcer=0.1: at most 1 of 10 prints accepted -> threshold above the 2nd highest print (13): 14.
    assert metrics.threshold_for(scores, is_live, "apcer=0.1", types) == 14.0
    # apcer=0.5: 5 prints may pass -> above 9 (the 6th highest print): the lowest score above is 10.
    assert metrics.threshold_for(scores, is_live, "apcer=0.5", types) == 10.0
    # bpcer=0.2: at most 2 of 10 live below -> the 3rd lowest live score, 2.
    assert metrics.threshold_for(scores, is_live, "bpcer=0.2", types) == 2.0
    assert metrics.threshold_for(scores, is_live, "eer", types) == metrics.eer_threshold(scores, is_live)[1]
    # No score above the floor: a finite threshold just above the highest attack, rejecting everything.
    t = metrics.threshold_for([0.0, 1.0, 2.0], [True, False, False], "apcer=0.01")
    assert 2.0 < t < 2.0001
    for rule in ("apcer=1.5", "bpcer=0", "bpcer=1", "far=0.1", "apcer=x", "apcer"):
        with pytest.raises(ValueError, match="eer, apcer=<rate> or bpcer=<rate>"):
            metrics.parse_threshold_rule(rule)


def test_threshold_rule_outside_zero_one_is_a_one_line_recipe_error() -> None:
    assert faceauth.schema.structure(ClassifierOptions, {"threshold": "apcer=0.01"}, "trainer").threshold == "apcer=0.01"
    with pytest.raises(RecipeError, match=r"^trainer\.threshold: expected eer, apcer=<rate> .*got 'apcer=1\.5'$"):
        faceauth.schema.structure(ClassifierOptions, {"threshold": "apcer=1.5"}, "trainer")


def test_ties_go_to_higher_auc_then_lower_validation_loss() -> None:
    criteria = [("acer", lower_is_better), *TIE_BREAKS]
    best = {"acer": 0.0, "auc": 0.99, "loss": 0.40}
    assert improves({"acer": 0.0, "auc": 1.00, "loss": 0.50}, best, criteria)     # same ACER, higher AUC
    assert improves({"acer": 0.0, "auc": 0.99, "loss": 0.30}, best, criteria)     # same ACER and AUC, lower loss
    assert not improves({"acer": 0.0, "auc": 0.99, "loss": 0.40}, best, criteria)  # a full tie keeps the earlier
    assert not improves({"acer": 0.1, "auc": 1.00, "loss": 0.01}, best, criteria)  # the monitor comes first
    assert improves({"acer": 0.0 + 1e-17, "auc": 1.0, "loss": 0.4}, best, criteria)  # float noise is a tie


@pytest.mark.slow
def test_monitor_loss_is_the_validation_loss_and_the_threshold_rule_is_stored(tmp_path: Path) -> None:
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "runs"),
              "trainer": {**TINY_RECIPE["trainer"], "epochs": 3, "monitor": "loss", "threshold": "bpcer=0.1"}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = faceauth.run(path)
    assert result.metrics["monitor"] == "val/loss" and result.metrics["threshold_rule"] == "bpcer=0.1 on val"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.dir)).Reload()
    val_loss = {e.step: e.value for e in events.Scalars("val/loss")}
    train_loss = {e.step: e.value for e in events.Scalars("train/loss")}
    assert val_loss != train_loss and len(val_loss) == 3
    assert result.metrics["best_epoch"] == min(val_loss, key=val_loss.get)
    assert result.metrics["val"]["loss"] == pytest.approx(val_loss[result.metrics["best_epoch"]], rel=1e-6)
    assert result.metrics["val"]["bpcer"] <= 0.1
    payload = faceauth.training.checkpoint.load(result.dir / "checkpoints" / "best.pt")
    assert payload["threshold_rule"] == "bpcer=0.1 on val"
    meta = faceauth.io.onnx.read_metadata(result.dir / "model.onnx")
    assert meta["faceauth.threshold_rule"] == "bpcer=0.1 on val"
    assert float(meta["faceauth.threshold"]) == pytest.approx(result.metrics["threshold"])


def test_predictions_carry_path_subject_and_logits() -> None:
    from torch.utils.data import DataLoader

    samples = [{"image": torch.full((3, 2, 2), float(i)), "label": i % 2, "attack_type": "" if i % 2 == 0 else "print",
                "path": f"/data/{i}.jpg", "subject": f"s{i // 2}"} for i in range(5)]
    model = Margin()

    def score(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits = model(x)
        return (logits[:, 0] - logits[:, 1]).numpy(), logits.numpy()

    predictions = predict(score, DataLoader(samples, batch_size=2), torch.device("cpu"), progress=False)
    assert predictions["path"].tolist() == [f"/data/{i}.jpg" for i in range(5)]
    assert predictions["subject"].tolist() == ["s0", "s0", "s1", "s1", "s2"]
    assert predictions["logits"].shape == (5, 2) and predictions["score"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    plain = predict(ClassifierTrainer.torch_scorer(model), DataLoader(samples, batch_size=2), torch.device("cpu"),
                    progress=False)
    assert "logits" not in plain and plain["score"].tolist() == predictions["score"].tolist()


def test_checkpoints_from_before_the_log_odds_score_have_their_threshold_converted() -> None:
    from faceauth.plugins.trainers.classifier import stored_threshold

    threshold, rule = stored_threshold({"threshold": 0.8})  # a P(live) threshold
    assert threshold == pytest.approx(np.log(0.8 / 0.2)) and "converted from P(live)" in rule
    assert stored_threshold({"threshold": 1.5, "threshold_rule": "apcer=0.01 on val"}) == (1.5, "apcer=0.01 on val")


@pytest.mark.slow
def test_a_tie_on_the_monitor_does_not_keep_the_earliest_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation that separates perfectly from epoch 1 (ACER 0 every epoch): the selection goes by AUC, then loss."""
    from faceauth.plugins.trainers.classifier import LivenessTask

    scripted = {1: {"acer": 0.0, "auc": 0.98, "loss": 0.50}, 2: {"acer": 0.0, "auc": 1.0, "loss": 0.30},
                3: {"acer": 0.0, "auc": 1.0, "loss": 0.35}}
    validate = LivenessTask.validate
    monkeypatch.setattr(LivenessTask, "validate", lambda self, step: {**validate(self, step), **scripted[step]})
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "runs"), "export": None,
              "trainer": {**TINY_RECIPE["trainer"], "epochs": 3}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = faceauth.run(path)
    assert result.metrics["best_epoch"] == 2 and result.metrics["monitor"] == "val/acer"


def test_a_perfectly_separating_validation_set_is_said_once(tiny_recipe, caplog) -> None:
    """A validation set the model separates perfectly puts the threshold at an arbitrary point of the gap
    (issue 12: val ACER 0.008, test 0.25): the run says so once, at the first such epoch."""
    import logging

    with caplog.at_level(logging.WARNING, logger="faceauth.plugins.trainers.classifier"):
        # Eight validation samples: separated perfectly at the first two of three epochs (seed 0, CPU).
        result = faceauth.run(tiny_recipe, ["data.val=8", "trainer.epochs=3", "export=null", "run_name=separable"])
    epochs = [json.loads(line) for line in (result.dir / "epochs.jsonl").read_text().splitlines()]
    perfect = [e["epoch"] for e in epochs if e.get("val/auc") == 1.0]
    said = [r.getMessage() for r in caplog.records if "separates live from spoof perfectly" in r.getMessage()]
    assert len(perfect) >= 2 and len(said) == 1
    assert f"at epoch {perfect[0]}:" in said[0] and "data.validation=session" in said[0]
