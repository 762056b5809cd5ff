"""The stated contracts of the plugin API and the training toolkit (issue 17): one check for a checkpoint
of another task, one meaning for a run directory's checkpoint, one helper for a dataset root, one spelling
of a required option, preprocessing on the backbone's record, one owner of the base learning rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceauth.errors import CheckpointError
from faceauth.plugins.trainers.classifier import ClassifierTrainer, ClassifierOptions
from faceauth.plugins.trainers.embedding import EmbeddingOptions, EmbeddingTrainer
from faceauth.training import checkpoint


# a checkpoint of another task ------------------------------------------------------------------------
def written(tmp_path: Path, task: str | None) -> dict:
    payload = {"model": {"w": torch.zeros(1)}} | ({} if task is None else {"task": task})
    return checkpoint.load(checkpoint.save(tmp_path / f"{task}.pt", payload))


def test_expect_task_passes_the_right_task_and_names_file_purpose_and_both_tasks(tmp_path: Path) -> None:
    checkpoint.expect_task(written(tmp_path, "liveness"), "liveness", "resume this run")
    with pytest.raises(CheckpointError) as caught:
        checkpoint.expect_task(written(tmp_path, "embedding"), "liveness", "resume this run")
    assert str(caught.value) == (f"{tmp_path / 'embedding.pt'}: expected a liveness checkpoint to resume this run, "
                                 f"found an embedding checkpoint")
    with pytest.raises(CheckpointError, match=r"^backbone\.x: .*None\.pt: expected an embedding checkpoint to "
                                              r"load it, found a task-less checkpoint$"):
        checkpoint.expect_task(written(tmp_path, None), "embedding", "load it", key="backbone.x")
    with pytest.raises(CheckpointError, match=r"found a 'xxxxx.*\.\.\. checkpoint$") as caught:
        checkpoint.expect_task({"task": "x" * 10_000, "path": "p.pt"}, "embedding", "load it")
    assert len(str(caught.value)) < 200


def test_the_trainers_load_model_rejects_a_checkpoint_of_another_task_in_the_one_wording(tmp_path: Path) -> None:
    embedding, liveness = written(tmp_path, "embedding"), written(tmp_path, "liveness")
    with pytest.raises(CheckpointError, match=r"embedding\.pt: expected a liveness checkpoint to load a liveness "
                                              r"classifier, found an embedding checkpoint$"):
        ClassifierTrainer(ClassifierOptions()).load_model(None, embedding)
    with pytest.raises(CheckpointError, match=r"liveness\.pt: expected an embedding checkpoint to load an embedding "
                                              r"model, found a liveness checkpoint$"):
        EmbeddingTrainer(EmbeddingOptions()).load_model(None, liveness)
