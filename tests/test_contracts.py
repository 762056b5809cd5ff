"""The stated contracts of the plugin API and the training toolkit (issue 17): one check for a checkpoint
of another task, one meaning for a run directory's checkpoint, one helper for a dataset root, one spelling
of a required option, preprocessing on the backbone's record, one owner of the base learning rate."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch

import faceauth
from faceauth.components import Backbone, Preprocess
from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.errors import CheckpointError, DataError, PluginError, RecipeError
from faceauth.plugins.trainers.classifier import ClassifierOptions, ClassifierTrainer
from faceauth.plugins.trainers.embedding import EmbeddingOptions, EmbeddingTrainer
from faceauth.training import checkpoint
from faceauth.training.run import Run
from tests.conftest import TINY_RECIPE


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


# a run directory's checkpoint ------------------------------------------------------------------------
def run_directory(tmp_path: Path, *tags: str) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text("seed: 1\n", encoding="utf-8")
    for epoch, tag in enumerate(tags, 1):
        checkpoint.save(tmp_path / "run" / "checkpoints" / f"{tag}.pt", {"task": "liveness", "epoch": epoch})
    return tmp_path / "run"


def test_a_run_directory_given_for_a_model_means_its_best_checkpoint(tmp_path: Path) -> None:
    run = run_directory(tmp_path, "best", "last")  # best: epoch 1, last: epoch 2
    assert checkpoint.resolve(run) == run / "checkpoints" / "best.pt" == run / checkpoint.RUN_CHECKPOINT
    assert checkpoint.load(run)["epoch"] == 1  # what faceauth-eval, faceauth-export, encoder_checkpoint read
    assert checkpoint.resolve(run, checkpoint.RESUME_CHECKPOINT) == run / "checkpoints" / "last.pt"
    assert checkpoint.resolve(run / "checkpoints" / "last.pt") == run / "checkpoints" / "last.pt"  # a file is itself


def test_a_run_directory_without_the_checkpoint_asked_for_says_why(tmp_path: Path) -> None:
    paused = run_directory(tmp_path, "last")
    with pytest.raises(CheckpointError, match=rf"^{paused}: this run has no best\.pt yet \(.*best\.pt is missing\): "
                                              rf"it paused before its first validation; continue it with "
                                              rf"faceauth-run --resume {paused}$"):
        checkpoint.load(paused)
    (paused / "checkpoints" / "last.pt").unlink()
    with pytest.raises(CheckpointError, match=r"this run has no checkpoint \(.*best\.pt is missing\): it stopped "
                                              r"before its first one was written; start it again from .*recipe\.yaml$"):
        checkpoint.resolve(paused)
    with pytest.raises(CheckpointError, match=r"checkpoints/last\.pt is missing"):
        checkpoint.resolve(paused, checkpoint.RESUME_CHECKPOINT)
    with pytest.raises(CheckpointError, match=r"not a run directory \(no recipe\.yaml; expected a checkpoint file "
                                              r"or a run directory with checkpoints/best\.pt\)$"):
        checkpoint.load(paused / "checkpoints")


# one owner of the learning rate ----------------------------------------------------------------------
def test_the_schedule_reads_each_parameter_groups_own_base_learning_rate() -> None:
    from faceauth.config.recipe import SchedulerConfig
    from faceauth.training.optim import build_scheduler

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.02}], lr=0.1)
    scheduler = build_scheduler(optimizer, SchedulerConfig(name="cosine", warmup_epochs=1, min_lr=0.001),
                                steps_per_epoch=2, epochs=3)
    rates = [[group["lr"] for group in optimizer.param_groups]]
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        rates.append([group["lr"] for group in optimizer.param_groups])
    assert rates[0] == pytest.approx([0.05, 0.01])  # warm-up: half of each group's own rate at the first step
    assert rates[2] == pytest.approx([0.1, 0.02])  # warm-up done: each group's base rate
    assert rates[-1] == pytest.approx([0.001, 0.001])  # cosine down to min_lr for both groups
    again = build_scheduler(optimizer, SchedulerConfig(name="constant"), steps_per_epoch=2, epochs=1)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1, 0.02])  # from initial_lr
    assert again.get_last_lr() == pytest.approx([0.1, 0.02])


# preprocessing on the backbone's record ------------------------------------------------------------------
class Tiny(torch.nn.Module):
    """A backbone module whose preprocess is whatever the test gives it (None: the attribute is absent)."""

    builds = 0

    def __init__(self, preprocess: object = None):
        super().__init__()
        Tiny.builds += 1
        self.num_features = 4
        if preprocess is not None:
            self.preprocess = preprocess


SQUARE = Preprocess(input_size=(24, 24), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
OTHER = Preprocess(input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class TinyBackbones:
    @faceauth.hookimpl
    def faceauth_backbones(self) -> list[Backbone]:
        return [Backbone(name="stated", build=lambda: Tiny(SQUARE), preprocess=lambda: SQUARE),
                Backbone(name="stated_only", build=lambda: Tiny(), preprocess=lambda: SQUARE),
                Backbone(name="disagreeing", build=lambda: Tiny(OTHER), preprocess=lambda: SQUARE),
                Backbone(name="unstated", build=lambda: Tiny(OTHER))]


def tiny_run(backbone: dict, tmp_path: Path) -> Run:
    registry = load_registry([TinyBackbones()])
    recipe = load_recipe(None, registry=registry, base={**TINY_RECIPE, "backbone": backbone})
    return Run(recipe, registry, tmp_path)


def test_a_stated_preprocess_is_read_without_building_the_network(tmp_path: Path) -> None:
    before = Tiny.builds
    assert tiny_run({"name": "stated"}, tmp_path).preprocess() == SQUARE
    assert Tiny.builds == before
    assert tiny_run({"name": "unstated"}, tmp_path).preprocess() == OTHER  # a record without one: built and read
    assert Tiny.builds == before + 1


def test_building_checks_the_module_against_its_records_preprocess(tmp_path: Path) -> None:
    assert tiny_run({"name": "stated_only"}, tmp_path).build("backbone").preprocess == SQUARE  # derived
    with pytest.raises(PluginError, match=r"^backbone 'disagreeing' from .*: the built module's preprocess "
                                          r"\(Preprocess\(input_size=\(32, 32\).*differs from its record's "
                                          r"preprocess\(options\) \(Preprocess\(input_size=\(24, 24\)"):
        tiny_run({"name": "disagreeing"}, tmp_path).build("backbone")


@pytest.mark.parametrize("section", [{"name": "resnet18", "input_size": 40}, {"name": "cdcn", "input_size": 48},
                                     {"name": "minifas"}, {"name": "mobilefacenet"}, {"name": "iresnet18"},
                                     {"name": "lstm", "encoder": {"name": "minifas", "input_size": 64}}])
def test_every_builtin_backbone_states_the_preprocess_its_module_has(tmp_path: Path, section: dict) -> None:
    run = tiny_run(section, tmp_path)
    stated = run.preprocess()
    assert stated == run.build("backbone").preprocess  # the build checks it too; here it is compared directly
    if "input_size" in section:
        assert stated.input_size == (section["input_size"],) * 2


def test_every_registered_builtin_backbone_declares_its_preprocess() -> None:
    registry = load_registry()
    names = [entry.component.name for entry in registry.entries("backbone")]
    assert {"resnet18", "iresnet100", "facenet", "lstm", "cdcn", "minifas", "mobilefacenet"} <= set(names)
    for name in names:
        if registry.entry("backbone", name).provider.distribution == "faceauth":
            assert registry.get("backbone", name).preprocess is not None, name


# a dataset root, and a required option ---------------------------------------------------------------------
ROOTED = ["folder", "casia_fasd", "replay_attack", "celeba_spoof", "nuaa", "video_folder", "identity_folder",
          "recordio", "attempt_folder", "ijb"]


def build_data(section: dict, tmp_path: Path) -> object:
    from faceauth.config.build import build_component

    registry = load_registry()
    recipe = load_recipe(None, registry=registry, base={**TINY_RECIPE, "data": section, "detector": {"name": "haar"}})
    return build_component(registry, recipe, "data")


def test_dataset_root_expands_the_home_folder_and_refuses_what_is_not_a_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faceauth.data import dataset_root

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "faces").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder\n", encoding="utf-8")
    assert dataset_root("~/faces", "data.root") == tmp_path / "faces"
    assert dataset_root(tmp_path / "faces") == tmp_path / "faces"
    with pytest.raises(DataError, match=rf"^test_data\.root: {tmp_path}/nowhere is not a directory "
                                        rf"\(expected root/<identity>/\)$"):
        dataset_root("~/nowhere", "test_data.root", "root/<identity>/")
    with pytest.raises(DataError, match=r"^data\.root: .*notes\.txt is not a directory$"):
        dataset_root(tmp_path / "notes.txt")
    for empty in ("", "  ", None):  # Path("") would be the working directory
        with pytest.raises(DataError, match=r"^data\.root: no folder given$"):
            dataset_root(empty)


@pytest.mark.parametrize("name", ROOTED)
def test_every_dataset_with_a_root_expands_home_and_names_a_missing_root_in_one_line(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match=rf"^data\.root: {tmp_path}/missing is not a directory \(expected .+\)$"):
        build_data({"name": name, "root": "~/missing"}, tmp_path)


@pytest.mark.parametrize("name", [n for n in ROOTED if n != "folder"])  # folder's root is optional: the demo set
def test_every_required_root_is_spelled_one_way(name: str, tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"^<recipe>: data\.root: required key is missing \(a string: .+\)$"):
        build_data({"name": name}, tmp_path)
    registry = load_registry()
    options = faceauth.components.resolve(registry.get("dataset", name).options)
    field = attrs.fields_dict(options)["root"]
    assert field.default is attrs.NOTHING and field.kw_only and field.metadata["faceauth.required"]


def test_an_empty_attempt_folder_root_is_no_folder_given(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data\.root: no folder given \(expected root/\{train,val,test\}"):
        build_data({"name": "attempt_folder", "root": ""}, tmp_path)


def test_required_may_follow_defaults_in_a_subclass_and_its_message_says_what_it_is() -> None:
    @attrs.frozen
    class Base:
        seed: int = 0

    @attrs.frozen
    class Options(Base):
        depth: int = 2
        root: str = faceauth.schema.required("the folder with the faces")

    assert faceauth.schema.structure(Options, {"root": "x"}, "data") == Options(root="x")
    with pytest.raises(RecipeError) as caught:
        faceauth.schema.structure(Options, {"depth": 3}, "data")
    assert str(caught.value) == "data.root: required key is missing (a string: the folder with the faces)"
