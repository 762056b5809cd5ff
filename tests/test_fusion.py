"""Fusion of match and liveness scores: attempts, features and their cache, metrics, the trainer end to end.

Component models are tiny untrained networks saved as real checkpoints and exported by the real
exporter (`component_models`, shared with test_authenticator.py through the session's cache), so
no test trains a component; their scores carry no meaning, only the plumbing is checked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import faceauth
from faceauth.errors import CheckpointError, DataError, ExportError, RecipeError
from faceauth.io.onnx import onnx_session, read_metadata
from faceauth.training import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY_DEMO = {"name": "demo_attempts", "train_identities": 4, "val_identities": 3, "test_identities": 3, "live": 3,
             "spoof": 2, "size": 48, "attempts_per_kind": 12}
EMBEDDING_RECIPE = {
    "seed": 0, "data": {"name": "demo_identities", "identities": 4, "images_per_identity": 2, "size": 32},
    "backbone": {"name": "resnet18", "input_size": 32}, "loss": {"name": "arcface"},
    "trainer": {"name": "embedding", "epochs": 1, "num_workers": 0, "progress": False}, "export": {"name": "onnx"},
}
LIVENESS_RECIPE = {
    "seed": 0, "data": {"name": "demo", "train": 6, "val": 6, "test": 6, "size": 32},
    "backbone": {"name": "resnet18", "input_size": 32}, "loss": {"name": "cross_entropy"},
    "trainer": {"name": "classifier", "epochs": 1, "num_workers": 0, "progress": False}, "export": {"name": "onnx"},
}
_MODELS_VERSION = "v2"


def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache folder conftest's `isolated_cache` gives every test (module fixtures run before it)."""
    return tmp_path_factory.getbasetemp() / "cache"


def _component(recipe_dict: dict, seed: int, threshold: float) -> tuple[object, object, dict]:
    """An untrained model of the recipe's trainer, the run that exports it, and its checkpoint payload."""
    from faceauth.config.build import build_component
    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.plugins.trainers.classifier import Classifier
    from faceauth.training.run import Run

    registry = load_registry()
    recipe = load_recipe(None, registry=registry, base=recipe_dict)
    run = Run(recipe, registry, Path("."))
    torch.manual_seed(seed)
    backbone = run.build("backbone")
    liveness = recipe.trainer.name == "classifier"
    model = (Classifier(backbone, 2) if liveness else backbone).eval()
    model.threshold = threshold
    payload = {"task": "liveness" if liveness else "embedding", "model": model.state_dict(), "threshold": threshold,
               "recipe": recipe.to_dict(), **({"classes": ["live", "spoof"]} if liveness else {})}
    return build_component(registry, recipe, "trainer"), run, {"model": model, "payload": payload}


def component_models(cache: Path) -> dict[str, Path]:
    """Tiny component models, made once per test session: ``{embedding,liveness}.{onnx,pt}`` and a second
    embedding model ``embedding_b.{onnx,pt}`` with other weights."""
    folder = cache / "test-components" / _MODELS_VERSION
    if (folder / "done").is_file():
        return {p.stem if p.suffix == ".onnx" else f"{p.stem}_pt": p for p in folder.iterdir() if p.name != "done"}
    from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions

    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    made = (("embedding", EMBEDDING_RECIPE, 0, 0.5), ("liveness", LIVENESS_RECIPE, 1, 0.5),
            ("embedding_b", EMBEDDING_RECIPE, 2, 0.4))
    for name, recipe, seed, threshold in made:
        trainer, run, made = _component(recipe, seed, threshold)
        checkpoint.save(tmp / f"{name}.pt", made["payload"])
        OnnxExporter(OnnxOptions()).export(trainer.export_bundle(run, made["model"]), tmp / f"{name}.onnx")
    (tmp / "done").touch()
    if not folder.exists():
        os.replace(tmp, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    return component_models(cache)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUTH_PLUGINS", "faceauth")
        return component_models(session_cache(tmp_path_factory))


def build_data(section: dict) -> faceauth.data.Splits:
    from faceauth.config.recipe import resolve_section
    from faceauth.config.registry import load_registry

    registry = load_registry()
    resolved = resolve_section(section, "data", "dataset", registry)
    return registry.get("dataset", resolved.name).build(resolved.options)


# attempts -------------------------------------------------------------------------------------------------
def write_attempt_folder(root: Path, people: dict[str, dict[str, tuple[int, int]]]) -> Path:
    """``root/<split>/<identity>/live/*.png`` and ``spoof/<type>/*.png``: {split: {identity: (live, spoof)}}."""
    rng = np.random.default_rng(0)
    for split, identities in people.items():
        for identity, (live, spoof) in identities.items():
            for kind, count in (("live", live), ("spoof/print", spoof)):
                folder = root / split / identity / kind
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(count):
                    pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"{k}.png")
    return root


FOLDER_PEOPLE = {split: {f"{split}_{who}": (3 + who % 2, 2) for who in range(4)} for split in ("train", "val", "test")}


def test_attempts_have_the_three_kinds_balanced_and_labelled(tmp_path: Path) -> None:
    from faceauth.plugins.datasets.attempts import ACCEPT, REJECT

    root = write_attempt_folder(tmp_path / "att", FOLDER_PEOPLE)
    splits = build_data({"name": "attempt_folder", "root": str(root), "attempts_per_kind": 10, "enrol_images": 2})
    identities = {}
    for split in ("train", "val", "test"):
        attempts = splits.get(split)
        assert attempts.counts() == {"genuine": 10, "impostor": 10, "spoof": 10}
        names = set()
        for index in range(len(attempts)):
            item = attempts[index]
            enrol_owner = {Path(p).parts[-3] for p in item["enrol"]}
            assert enrol_owner == {item["identity"]} and len(item["enrol"]) == 2
            assert all(Path(p).parent.name == "live" for p in item["enrol"])
            if item["kind"] == "genuine":
                assert item["label"] == ACCEPT and item["probe_identity"] == item["identity"]
                assert Path(item["probe"]).parent.name == "live" and item["probe"] not in item["enrol"]
            elif item["kind"] == "impostor":
                assert item["label"] == REJECT and item["probe_identity"] != item["identity"]
                assert Path(item["probe"]).parts[-3] == item["probe_identity"]
            else:
                assert item["label"] == REJECT and item["attack_type"] == "print"
                assert Path(item["probe"]).parts[-4] == item["identity"] and "spoof" in Path(item["probe"]).parts
            names |= {item["identity"], item["probe_identity"]}
        identities[split] = names
        # enrolment identities are used in turn: 10 attempts over 4 identities -> 2 or 3 each
        per_identity = np.unique([a.identity for a in attempts.attempts if a.kind == "spoof"], return_counts=True)[1]
        assert per_identity.max() - per_identity.min() <= 1
    assert not identities["train"] & identities["val"] and not identities["val"] & identities["test"]
    assert not identities["train"] & identities["test"]

    again = build_data({"name": "attempt_folder", "root": str(root), "attempts_per_kind": 10, "enrol_images": 2})
    other = build_data({"name": "attempt_folder", "root": str(root), "attempts_per_kind": 10, "enrol_images": 2,
                        "seed": 1})
    assert again.val.attempts == splits.val.attempts and other.val.attempts != splits.val.attempts


def test_attempt_folder_errors_name_the_problem(tmp_path: Path) -> None:
    shared = {**FOLDER_PEOPLE, "test": {**FOLDER_PEOPLE["test"], "val_0": (3, 1)}}
    root = write_attempt_folder(tmp_path / "shared", shared)
    with pytest.raises(DataError, match=r"identity 'val_0' is in both val/ and test/"):
        build_data({"name": "attempt_folder", "root": str(root)})
    lonely = {**FOLDER_PEOPLE, "val": {"only": (3, 1)}}
    root = write_attempt_folder(tmp_path / "lonely", lonely)
    with pytest.raises(DataError, match=r"val: cannot make impostor attempts: needs two identities"):
        build_data({"name": "attempt_folder", "root": str(root)})
    with pytest.raises(DataError, match=r"has no 'train/' folder"):
        build_data({"name": "attempt_folder", "root": str(tmp_path)})
    with pytest.raises(RecipeError, match=r"data\.root: required key is missing"):
        build_data({"name": "attempt_folder"})


def test_attempt_folder_with_a_detector_crops_faces_and_leaves_out_faceless_images(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from faceauth.plugins.datasets.attempts import AttemptFolderOptions, build_attempt_folder
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions
    from tests.videos import HAAR_FRAME, haar_face

    width, height = HAAR_FRAME
    photo = np.full((height, width, 3), 96, np.uint8)
    photo[20:100, 40:120] = haar_face()
    for split in ("train", "val", "test"):
        for who in range(2):
            for kind, count in (("live", 3), ("spoof", 1)):
                folder = tmp_path / "raw" / split / f"{split}{who}" / kind
                folder.mkdir(parents=True)
                for k in range(count):
                    Image.fromarray(photo).save(folder / f"{k}.png")
    blank = np.full((height, width, 3), 96, np.uint8)
    Image.fromarray(blank).save(tmp_path / "raw" / "val" / "val0" / "live" / "9.png")
    options = AttemptFolderOptions(root=str(tmp_path / "raw"), attempts_per_kind=6, crop_size=48)
    with caplog.at_level(logging.INFO):
        splits = build_attempt_folder(options, detector=HaarDetector(HaarOptions()))
    assert "1 frames without a face skipped" in caplog.text
    used = splits.val.images()
    assert not any(p.endswith("9.png") for p in used) and len(used) == 8
    assert splits.val.load(used[0]).size == (48, 48)


def test_demo_attempts_render_once_identity_disjoint(isolated_cache: Path) -> None:
    splits = build_data(TINY_DEMO)
    root = Path(splits.info["root"])
    assert root.is_relative_to(isolated_cache)
    for split in ("train", "val", "test"):
        people = sorted(p.name for p in (root / split).iterdir())
        assert len(people) == TINY_DEMO[f"{split}_identities"]
        for person in people:
            assert len(list((root / split / person / "live").glob("*.jpg"))) == 3
            assert {p.parent.name for p in (root / split / person / "spoof").rglob("*.jpg")} == {"print", "replay"}
    assert set(splits.test.attack_types[splits.test.kinds == "spoof"]) <= {"print", "replay"}
    stamp = (root / "val").stat().st_mtime_ns
    assert Path(build_data(TINY_DEMO).info["root"]) == root and (root / "val").stat().st_mtime_ns == stamp
    assert not list(root.parent.glob(".*tmp*"))


# metrics --------------------------------------------------------------------------------------------------
KINDS = np.array(["genuine"] * 4 + ["impostor"] * 4 + ["spoof"] * 4)
ATTACKS = np.array([""] * 8 + ["print", "replay", "print", "replay"])
SCORES = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.95, 0.5, 0.65, 0.05])


def test_metrics_against_a_hand_computed_case() -> None:
    from faceauth.metrics.joint import decision_figures, scored_figures, threshold_at_far
    from faceauth.plugins.trainers.fusion.models import and_accepts

    figures = scored_figures(SCORES, KINDS, ATTACKS, threshold=0.55)
    # genuine accepted 0.9, 0.8, 0.6 of 4; impostors 0.7 of 4; spoofs 0.95 and 0.65 (both prints) of 4
    assert figures["frr"] == pytest.approx(0.25) and figures["far"] == pytest.approx(0.25)
    assert figures["hter"] == pytest.approx(0.25) and figures["sfar"] == pytest.approx(0.5)
    assert figures["sfar_print"] == pytest.approx(1.0) and figures["sfar_replay"] == pytest.approx(0.0)
    assert figures["eer"] == pytest.approx(0.25) and figures["auc"] == pytest.approx(13 / 16)
    # the lowest threshold whose FAR <= target: 0.6 admits the 0.7 impostor (FAR 1/4); 0.8 admits none
    assert threshold_at_far(SCORES, KINDS, 0.25) == pytest.approx(0.6)
    assert threshold_at_far(SCORES, KINDS, 0.0) == pytest.approx(0.8)
    everything = np.where(KINDS == "impostor", 1.0, 0.0)  # impostors outscore every genuine attempt
    assert threshold_at_far(everything, KINDS, 0.0) > 1.0

    features = np.stack([SCORES, np.array([1, 1, 1, 1, 1, 1, 1, 1, 0.2, 0.9, 0.1, 0.1])], axis=1)
    accepted = and_accepts(features, [0.55, 0.5])
    and_figures = decision_figures(accepted, KINDS, ATTACKS)
    assert and_figures["frr"] == pytest.approx(0.25) and and_figures["far"] == pytest.approx(0.25)
    assert and_figures["sfar"] == pytest.approx(0.0)  # the spoofs that match are rejected as not live


# components and features ----------------------------------------------------------------------------------
def components_of(**files: list[Path]) -> list:
    from faceauth.plugins.trainers.fusion.components import open_components

    return open_components(files)


def test_a_component_of_the_wrong_kind_is_an_error(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = tiny_fusion_recipe(tmp_path, models, embedding=[str(models["liveness"])])
    with pytest.raises(ExportError, match=r"trainer\.embedding_models\[0\]: liveness\.onnx is a liveness model "
                                          r".*expected an embedding model"):
        faceauth.run(recipe)
    recipe = tiny_fusion_recipe(tmp_path, models, liveness=[str(models["embedding_pt"])])
    with pytest.raises(CheckpointError, match=r"trainer\.liveness_models\[0\]: .*embedding\.pt: expected a liveness "
                                              r"checkpoint to use as the liveness model, found an embedding checkpoint"):
        faceauth.run(recipe)
    recipe = tiny_fusion_recipe(tmp_path, models, liveness=[str(tmp_path / "nowhere.onnx")])
    with pytest.raises(faceauth.RecipeError, match=r"trainer\.liveness_models\[0\]: .*nowhere\.onnx not found"):
        faceauth.run(recipe)
    assert not (tmp_path / "runs").exists()


def test_deployment_preprocessing_is_the_evaluation_transform() -> None:
    from faceauth.components import Preprocess
    from faceauth.deploy.models import ImagePreprocess
    from faceauth.training.transforms import eval_transform

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + 8 * i, 40 + 8 * i, 3), dtype=np.uint8) for i in range(3)]
    spec = Preprocess(input_size=(32, 24), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    expected = torch.stack([eval_transform(spec)(Image.fromarray(x)) for x in images]).numpy()
    np.testing.assert_allclose(ImagePreprocess((32, 24), spec.mean, spec.std)(images), expected, atol=1e-5)


def test_scores_are_cached_and_rebuilt_when_a_model_changes(models: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from faceauth.plugins.trainers.fusion import scores

    splits = build_data(TINY_DEMO)
    calls = []
    compute = scores.compute_outputs
    monkeypatch.setattr(scores, "compute_outputs", lambda *a, **k: calls.append(1) or compute(*a, **k))
    embedding = tmp_path / "embedding.onnx"
    shutil.copyfile(models["embedding"], embedding)

    def features() -> np.ndarray:
        components = components_of(embedding=[embedding], liveness=[models["liveness"]])
        outputs = scores.image_outputs(splits.val, "val", components, quality=True, batch_size=32, progress=False,
                                       data_section=TINY_DEMO)
        return scores.features_of(splits.val, outputs, components, quality=True)

    first = features()
    assert len(calls) == 1 and first.shape == (36, 4)
    cached = set((Path(os.environ["FACEAUTH_CACHE"]) / "scores").glob("val-*.npz"))
    np.testing.assert_array_equal(features(), first)
    assert len(calls) == 1  # read from the cache
    shutil.copyfile(models["embedding_b"], embedding)  # the same path, other weights
    with caplog.at_level(logging.INFO, logger="faceauth.plugins.trainers.fusion"):
        changed = features()
    assert len(calls) == 2 and "made with other component models; rebuilding" in caplog.text
    assert not np.allclose(changed[:, 0], first[:, 0])
    np.testing.assert_array_equal(changed[:, 1:], first[:, 1:])  # liveness and quality are the same models
    assert set((Path(os.environ["FACEAUTH_CACHE"]) / "scores").glob("val-*.npz")) == cached  # rebuilt in place
    (cache_file,) = cached
    cache_file.write_bytes(cache_file.read_bytes()[:-40])  # truncated, e.g. by a full disk
    with caplog.at_level(logging.WARNING, logger="faceauth.plugins.trainers.fusion"):
        np.testing.assert_array_equal(features(), changed)
    assert len(calls) == 3 and "are damaged; rebuilding" in caplog.text
    np.testing.assert_array_equal(features(), changed)
    assert len(calls) == 3  # the rewritten cache is read


def test_several_embedding_models_are_fused_as_an_ensemble(models: dict[str, Path]) -> None:
    from faceauth.plugins.trainers.fusion import FusionOptions, FusionTrainer, data, scores
    from faceauth.plugins.trainers.fusion import models as fusion_models
    from faceauth.runs.inputs import file_names

    splits = build_data(TINY_DEMO)
    components = components_of(embedding=[models["embedding"], models["embedding_b"]], liveness=[models["liveness"]])
    outputs = scores.image_outputs(splits.test, "test", components, quality=False, batch_size=32, progress=False,
                                   data_section=TINY_DEMO)
    features = scores.features_of(splits.test, outputs, components, quality=False)
    assert features.shape == (36, 3) and not np.allclose(features[:, 0], features[:, 1])
    assert data.names_of(components, quality=False) == ["match/0", "match/1", "liveness/0"]
    # the runner keeps them in the run directory under the names the model inputs give
    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry

    recipe = load_recipe(REPO / "recipes" / "fusion_mlp.yaml", registry=load_registry())
    specs = FusionTrainer(FusionOptions(embedding_models=["a.onnx", "b.pt"])).model_inputs(recipe)
    assert [file_names(spec) for spec in specs] == [["embedding-0.onnx", "embedding-1.onnx"], ["liveness.onnx"]]
    assert specs[0].recipe is None and specs[1].recipe == "fusion_liveness_component"  # none given: trained
    # the AND rule asks every component; the matcher baseline averages the matchers
    gates = fusion_models.and_thresholds(features, splits.test.kinds, components, "model")
    assert gates == pytest.approx([0.5, 0.4, 0.5])  # the thresholds stored in the models' metadata


# the trainer end to end -----------------------------------------------------------------------------------
def tiny_fusion_recipe(tmp_path: Path, models: dict[str, Path], embedding: list[str] | None = None,
                       liveness: list[str] | None = None) -> Path:
    recipe = yaml.safe_load((REPO / "recipes" / "fusion_mlp.yaml").read_text())
    recipe["output_dir"] = str(tmp_path / "runs")
    recipe["data"] = dict(TINY_DEMO)
    recipe["trainer"].update({"embedding_models": embedding or [str(models["embedding"])],
                              "liveness_models": liveness or [str(models["liveness_pt"])],
                              "epochs": 6, "progress": False, "target_far": 0.1})
    recipe["optimizer"]["lr"] = 0.02
    path = tmp_path / "fusion.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


class StopAtEpoch:
    def __init__(self, epoch: int):
        self.epoch, self.events = epoch, []

    @faceauth.hookimpl
    def faceauth_train_start(self, run: object) -> None:
        self.events.append("train_start")

    @faceauth.hookimpl
    def faceauth_checkpoint_saved(self, run: object, path: Path, epoch: int, tag: str) -> None:
        self.events.append(f"checkpoint_{tag}")

    @faceauth.hookimpl
    def faceauth_epoch_end(self, run: object, epoch: int, metrics: dict) -> None:
        self.events.append("epoch_end")
        if epoch == self.epoch:
            run.request_stop("test stop", finish=False)  # a pause: resumable

    @faceauth.hookimpl
    def faceauth_train_end(self, run: object, metrics: dict) -> None:
        self.events.append("train_end")


@pytest.mark.slow
def test_a_stopped_fusion_run_resumes_to_the_same_result(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = tiny_fusion_recipe(tmp_path, models, liveness=[str(models["liveness"])])
    stopper = StopAtEpoch(2)  # the training loop's faceauth_epoch_end counts epochs from 0: the third
    stopped = faceauth.run(recipe, ["export=null", "run_name=stopped"], extra_plugins=[stopper])
    assert stopped.metrics["stopped"] == "test stop" and "test" not in stopped.metrics
    assert stopper.events[0] == "train_start" and stopper.events[-1] == "train_end"
    assert {"epoch_end", "checkpoint_best", "checkpoint_last"} <= set(stopper.events)
    assert checkpoint.load(stopped.dir / "checkpoints" / "last.pt")["epoch"] == 3
    import onnx

    edited = shutil.copytree(stopped.dir, tmp_path / "edited")  # a component in the run directory changed
    model = onnx.load(edited / "liveness.onnx")
    model.metadata_props.add(key="edited", value="yes")
    onnx.save(model, edited / "liveness.onnx")
    changed = r"liveness\.onnx: not the liveness model this fusion model was trained with \(liveness\.onnx, sha256"
    with pytest.raises(ExportError, match=changed):
        faceauth.run(resume=edited)
    from faceauth.runs.models import evaluate

    with pytest.raises(ExportError, match=changed):  # the same check, worded alike, when evaluated
        evaluate(edited / "checkpoints" / "best.pt", split="val")
    resumed = faceauth.run(resume=stopped.dir)
    whole = faceauth.run(recipe, ["export=null", "run_name=whole"])
    assert resumed.metrics["epochs_completed"] == 6 and resumed.metrics["stopped"] is None
    assert resumed.metrics["val"] == whole.metrics["val"] and resumed.metrics["test"] == whole.metrics["test"]


@pytest.mark.slow
def test_fusion_run_end_to_end(models: dict[str, Path], tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from faceauth.commands.cli import _summary
    from faceauth.runs.models import evaluate

    result = faceauth.run(tiny_fusion_recipe(tmp_path, models))
    metrics = json.loads((result.dir / "metrics.json").read_text())
    summary = _summary(result).splitlines()  # what faceauth-run prints: the fused model's figures
    assert summary[2].startswith("test: far=") and f"sfar={metrics['test']['sfar']:.4f}" in summary[2]
    figures = {"threshold", "far", "frr", "hter", "sfar", "eer", "auc", "hter_at_eer"}
    for split in ("val", "test"):  # val and test: the fused model's, flat as every trainer's
        assert figures <= set(metrics[split]) and not any(isinstance(v, dict) for v in metrics[split].values())
        assert metrics[split]["num_genuine"] == 12
        baselines = metrics["baselines"][split]
        assert set(baselines) == {"logistic", "and", "match"}
        for name in ("logistic", "match"):
            assert figures <= set(baselines[name])
        assert {"far", "frr", "hter", "sfar", "sfar_print", "sfar_replay"} <= set(baselines["and"])
    assert metrics["test"]["threshold"] == pytest.approx(metrics["val"]["threshold"])
    assert metrics["threshold"] == pytest.approx(metrics["val"]["threshold"])
    assert metrics["features"] == ["match/0", "liveness/0", "quality/sharpness", "quality/brightness"]
    assert metrics["val"]["far"] <= 0.1  # the threshold reaches the target FAR on validation
    payload = checkpoint.load(result.dir / "checkpoints" / "best.pt")
    assert payload["task"] == "fusion" and payload["threshold"] == pytest.approx(metrics["threshold"])
    assert checkpoint.load(result.dir / "checkpoints" / "last.pt")["epoch"] == 6

    events = EventAccumulator(str(result.dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/det", "test/det"} <= set(tags["images"])
    assert {"train/loss", "val/loss", "val/eer", "test/hter", "test/and/sfar", "test/logistic/far"} <= set(
        tags["scalars"])

    # the run directory is a models directory: fusion model + the components as shipped
    meta = read_metadata(result.onnx_path)
    assert meta["faceauth.task"] == "fusion"
    assert float(meta["faceauth.threshold"]) == pytest.approx(metrics["threshold"])
    assert json.loads(meta["faceauth.features"]) == metrics["features"]
    shipped = json.loads(meta["faceauth.components"])
    assert [c["file"] for c in shipped] == ["embedding.onnx", "liveness.onnx"]
    assert read_metadata(result.dir / "liveness.onnx")["faceauth.task"] == "liveness"  # exported from the checkpoint
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    from faceauth.plugins.trainers.fusion import FusionOptions, FusionTrainer

    model = FusionTrainer(FusionOptions()).load_model(None, payload)
    onnx_scores = onnx_session(result.onnx_path).run(None, {"features": x})[0]
    np.testing.assert_allclose(onnx_scores, model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)

    from_checkpoint = evaluate(result.dir / "checkpoints" / "best.pt", split="test")
    from_onnx = evaluate(result.onnx_path, split="test")
    for key in ("threshold", "far", "frr", "sfar", "eer", "auc", "hter_at_eer", "sfar_at_eer"):
        assert from_checkpoint[key] == pytest.approx(metrics["test"][key], abs=1e-6)
        assert from_onnx[key] == pytest.approx(metrics["test"][key], abs=1e-6)


# component models as inputs: resolved by the runner ---------------------------------------------------------
@pytest.mark.slow
def test_a_fusion_run_without_models_has_the_runner_train_them_once(models: dict[str, Path], tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from faceauth.runs.models import evaluate

    files = {}
    trainable = {**EMBEDDING_RECIPE, "data": {**EMBEDDING_RECIPE["data"], "identities": 8, "val_identities": 0.25,
                                                    "pairs_per_identity": 1},
                 "trainer": {**EMBEDDING_RECIPE["trainer"], "batch_size": 8}}
    for role, recipe in (("embedding", trainable), ("liveness", LIVENESS_RECIPE)):
        files[role] = tmp_path / f"{role}.yaml"
        files[role].write_text(yaml.safe_dump(recipe), encoding="utf-8")
    path = tiny_fusion_recipe(tmp_path, models)
    recipe = yaml.safe_load(path.read_text())
    recipe["trainer"].update({"embedding_models": [], "liveness_models": [], "epochs": 2,
                              "train_components": {"embedding_recipe": str(files["embedding"]),
                                                   "liveness_recipe": str(files["liveness"])}})
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="faceauth.runs.inputs"):
        first = faceauth.run(path, ["run_name=first"])
    assert caplog.text.count("training the") == 2
    cache = Path(os.environ["FACEAUTH_CACHE"]) / "inputs"
    trained = sorted(cache.iterdir())
    assert [p.name.split("-")[0] for p in trained] == ["embedding", "liveness"]
    assert all((p / "model.onnx").is_file() and (p / "recipe.yaml").is_file() for p in trained)
    assert not list(cache.glob(".*tmp*"))
    record = first.metrics["inputs"]
    assert record == json.loads((first.dir / "inputs.json").read_text())
    assert record["embedding"][0]["file"] == "embedding.onnx" and record["embedding"][0]["trained"]["run"] == str(
        trained[0])
    assert "auc" in record["liveness"][0]["trained"]["test"]  # the trained model's own figures
    for role in ("embedding", "liveness"):  # the run directory holds what the runner trained
        assert (first.dir / f"{role}.onnx").read_bytes() == (cache.glob(f"{role}-*").__next__() / "model.onnx").read_bytes()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="faceauth.runs.inputs"):
        second = faceauth.run(path, ["run_name=second"])
    assert "training the" not in caplog.text and sorted(cache.iterdir()) == trained  # reused
    assert second.metrics["test"] == first.metrics["test"]

    shutil.rmtree(cache)  # evaluation uses the models kept in the run directory, not the cache or the recipe's
    figures = evaluate(first.dir / "checkpoints" / "best.pt", split="test")
    assert figures["hter"] == pytest.approx(first.metrics["test"]["hter"], abs=1e-6)
    (first.dir / "liveness.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"trained with the liveness model liveness\.onnx, which is not in"):
        evaluate(first.onnx_path, split="test")


def test_fusion_takes_its_rates_from_the_optimizer_section(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = tiny_fusion_recipe(tmp_path, models)
    with pytest.raises(faceauth.RecipeError, match=r"trainer\.lr"):
        faceauth.run(recipe, ["trainer.lr=0.01"])
    result = faceauth.run(recipe, ["trainer.epochs=1", "export=null", "optimizer.lr=0.003", "scheduler.name=constant"])
    epochs = [json.loads(line) for line in (result.dir / "epochs.jsonl").read_text().splitlines()]
    assert epochs[0]["train/lr"] == pytest.approx(0.003)
    state = checkpoint.load(result.dir / "checkpoints" / "last.pt")["optimizer"]
    assert state["param_groups"][0]["lr"] == pytest.approx(0.003)
    assert state["param_groups"][0]["weight_decay"] == pytest.approx(1e-4)  # the recipe's adamw section


def test_component_models_train_from_the_shipped_recipes_with_the_fusion_recipes_settings() -> None:
    from faceauth.config.recipe import builtin_recipes, load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.plugins.trainers.fusion import ComponentTraining, FusionOptions, FusionTrainer

    registry = load_registry()
    recipe = load_recipe(REPO / "recipes" / "fusion_mlp.yaml", ["seed=3", "device=cpu", "backbone.input_size=32"],
                         registry=registry)
    options = FusionOptions(progress=False, train_components=ComponentTraining(liveness_overrides=["optimizer.lr=0.002"]))
    embedding, liveness = FusionTrainer(options).model_inputs(recipe)
    assert (embedding.recipe, liveness.recipe) == ("fusion_embedding_component", "fusion_liveness_component")
    assert {embedding.recipe, liveness.recipe} <= set(builtin_recipes())  # shipped as package data
    for spec in (embedding, liveness):
        shipped = yaml.safe_load((REPO / "recipes" / f"{spec.recipe}.yaml").read_text())
        trains = load_recipe(spec.recipe, spec.overrides, registry=registry)
        assert trains.backbone == recipe.backbone and (trains.seed, trains.device) == (3, "cpu")
        assert trains.trainer.options.progress is False
        assert trains.trainer.options.epochs == shipped["trainer"]["epochs"]
        assert trains.optimizer.name == shipped["optimizer"]["name"]  # each its own optimiser, from its file
        assert trains.scheduler.warmup_epochs == shipped["scheduler"]["warmup_epochs"]
    assert load_recipe(embedding.recipe, embedding.overrides, registry=registry).loss == recipe.loss
    assert load_recipe(embedding.recipe, embedding.overrides, registry=registry).optimizer.lr == 0.05
    assert load_recipe(liveness.recipe, liveness.overrides, registry=registry).optimizer.lr == 0.002  # overrides on top
    assert load_recipe(liveness.recipe, liveness.overrides, registry=registry).loss.name == "cross_entropy"


def test_fusion_metrics_hold_the_fused_models_figures_flat_and_the_baselines_apart() -> None:
    from faceauth.plugins.trainers.fusion import FusionOptions, FusionTrainer
    from faceauth.plugins.trainers.fusion.data import Prepared

    setup = Prepared([], [], {}, ["match/0"], None, [0.5])
    measured = {"val": {"far": 0.1, "hter": 0.2, "logistic/far": 0.3, "and/sfar": 0.4},
                "test": {"far": 0.5, "match/eer": 0.6}, "threshold": 0.7}
    metrics = FusionTrainer(FusionOptions())._metrics(measured, setup)
    assert metrics["val"] == {"far": 0.1, "hter": 0.2} and metrics["test"] == {"far": 0.5}
    assert metrics["baselines"] == {"val": {"logistic": {"far": 0.3}, "and": {"sfar": 0.4}},
                                    "test": {"match": {"eer": 0.6}}}
    paused = FusionTrainer(FusionOptions())._metrics({"val": {"loss": 0.1, "far": 0.2}}, setup)
    assert paused["val"] == {"loss": 0.1, "far": 0.2} and "baselines" not in paused


def test_fusion_options_are_the_loops_without_the_image_pipelines() -> None:
    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.training.loop import LoopOptions

    registry = load_registry()
    recipe = load_recipe(REPO / "recipes" / "fusion_mlp.yaml", ["trainer.grad_clip=1.0"], registry=registry)
    assert isinstance(recipe.trainer.options, LoopOptions) and recipe.trainer.options.grad_clip == 1.0
    assert (recipe.trainer.options.epochs, recipe.trainer.options.num_workers) == (150, 0)
    for override in ("trainer.amp=true", "trainer.num_workers=2", "trainer.channels_last=true"):
        key = override.partition("=")[0]
        with pytest.raises(RecipeError, match=rf"{key}: the fusion trainer fits a small MLP on feature rows .*"
                                              rf"takes no {key.split('.')[1]}"):
            load_recipe(REPO / "recipes" / "fusion_mlp.yaml", [override], registry=registry)


def test_a_model_input_without_models_or_recipe_is_a_recipe_error() -> None:
    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.runs.inputs import resolve
    from faceauth.training.run import ModelInput

    class NeedsAMatcher:
        def model_inputs(self, recipe: object) -> list[ModelInput]:
            return [ModelInput(name="matcher", task="embedding", key="trainer.matchers")]

    registry = load_registry()
    recipe = load_recipe(REPO / "recipes" / "fusion_mlp.yaml", registry=registry)
    with pytest.raises(faceauth.RecipeError, match=r"trainer\.matchers: none given; expected an embedding model"):
        resolve(NeedsAMatcher(), recipe, registry)


@pytest.mark.slow
def test_photos_are_cropped_for_each_component_as_deployment_crops_them(models: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    import onnx

    from faceauth.deploy.authenticator import Authenticator
    from faceauth.faces import CropGeometry
    from faceauth.plugins.datasets.attempts import AttemptFolderOptions, build_attempt_folder
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions
    from faceauth.plugins.trainers.fusion import scores
    from tests.test_authenticator import export_fusion
    from tests.videos import HAAR_FRAME, haar_face

    width, height = HAAR_FRAME
    face = haar_face()
    for split in ("train", "val", "test"):
        for who in range(2):
            for kind, count in (("live", 3), ("spoof", 1)):
                folder = tmp_path / "photos" / split / f"{split}{who}" / kind
                folder.mkdir(parents=True)
                for k in range(count):
                    photo = np.full((height, width, 3), 80 + 20 * who + 5 * k, np.uint8)
                    shift = 4 * k + 3 * who
                    photo[16 + shift:16 + shift + face.shape[0], 36 + shift:36 + shift + face.shape[1]] = face
                    Image.fromarray(photo).save(folder / f"{k}.png")
    splits = build_attempt_folder(AttemptFolderOptions(root=str(tmp_path / "photos"), attempts_per_kind=4,
                                                       crop_size=48), detector=HaarDetector(HaarOptions()))
    assert splits.val.photos
    # the matcher was trained on wider crops than the attempts' (scale 2.0, 64 px): its metadata says so
    edited = {"embedding": tmp_path / "embedding.onnx", "liveness": models["liveness"]}
    model = onnx.load(models["embedding"])
    model.metadata_props.add(key="faceauth.crop", value=CropGeometry("haar", scales=2.0, size=64).to_json())
    onnx.save(model, edited["embedding"])
    deployed = Authenticator.from_dir(export_fusion(tmp_path / "models", edited))  # finds and crops faces
    components = components_of(embedding=[tmp_path / "models" / "embedding.onnx"],
                                liveness=[tmp_path / "models" / "liveness.onnx"])

    def trained_on() -> np.ndarray:
        outputs = scores.image_outputs(splits.val, "val", components, quality=False, batch_size=5, progress=False,
                                       data_section={"photos": str(tmp_path)})
        return scores.features_of(splits.val, outputs, components, quality=False)

    features = trained_on()
    for index, attempt in enumerate(splits.val.attempts):
        expected = deployed.features(deployed.enroll(list(attempt.enrol)), attempt.probe)[:2]
        np.testing.assert_allclose(features[index], expected, atol=1e-5)
    splits.val.photos = False  # the attempts' own crops for every model: not what deployment scores
    assert not np.allclose(trained_on(), features, atol=1e-4)
