"""The deployment side: `faceauth.deploy.authenticator` on exported models, its errors, the CLI, and no torch.

The models are tiny untrained networks exported by the real exporter (tests.test_fusion makes them
once per session) and a fusion MLP exported by the fusion trainer's `export_bundle`; decisions carry
no meaning, so the tests check their structure, the threshold, the features and the errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from faceauth.commands.verify import verify_main
from faceauth.deploy.authenticator import Authenticator, Decision, Template
from faceauth.deploy.models import FaceFinder
from faceauth.errors import DataError, ExportError
from tests.conftest import run_without_torch
from tests.test_fusion import REPO, TINY_DEMO, build_data, component_models, session_cache
from tests.videos import HAAR_FRAME, haar_face

THRESHOLD = 0.5


def export_fusion(folder: Path, models: dict[str, Path]) -> Path:
    """`folder` as a fusion run leaves it: model.onnx (an untrained fusion MLP) beside the component models."""
    import yaml

    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.deploy.features import feature_names
    from faceauth.deploy.models import file_sha256
    from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
    from faceauth.plugins.trainers.fusion import FusionOptions, FusionTrainer
    from faceauth.training.run import Run

    folder.mkdir(parents=True)
    records = []
    for role in ("embedding", "liveness"):
        shutil.copyfile(models[role], folder / f"{role}.onnx")
        records.append({"role": role, "file": f"{role}.onnx", "sha256": file_sha256(folder / f"{role}.onnx"),
                        "threshold": 0.5})
    registry = load_registry()
    raw = yaml.safe_load((REPO / "recipes" / "fusion_mlp.yaml").read_text())
    recipe = load_recipe(None, registry=registry, base={**raw, "data": TINY_DEMO})
    trainer = FusionTrainer(FusionOptions())
    torch.manual_seed(0)
    model = trainer.build_model(4)
    model.mean.copy_(torch.tensor([0.9, 0.5, 5.0, 0.5]))
    model.threshold, model.features, model.components = THRESHOLD, feature_names(1, 1, True), records
    bundle = trainer.export_bundle(Run(recipe, registry, folder), model)
    OnnxExporter(OnnxOptions()).export(bundle, folder / "model.onnx")
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FACEAUTH_PLUGINS", "faceauth")
        models = component_models(session_cache(tmp_path_factory))
        return export_fusion(tmp_path_factory.mktemp("auth") / "models", models)


@pytest.fixture(scope="module")
def auth(models_dir: Path) -> Authenticator:
    return Authenticator.from_dir(models_dir, detect=False)


@pytest.fixture
def demo() -> object:
    return build_data(TINY_DEMO)


def test_decision_structure_and_threshold(models_dir: Path, auth: Authenticator, demo: object) -> None:
    attempt = demo.val.attempts[0]
    decision = auth.verify(list(attempt.enrol), attempt.probe)
    assert isinstance(decision, Decision) and isinstance(decision.accept, bool)
    assert 0.0 <= decision.score <= 1.0 and decision.threshold == pytest.approx(THRESHOLD)
    assert decision.accept == (decision.score >= THRESHOLD)
    assert -1.0 <= decision.match <= 1.0 and 0.0 <= decision.liveness <= 1.0
    assert decision.components == {"embedding.onnx": decision.match, "liveness.onnx": decision.liveness}
    assert list(decision.features) == ["match/0", "liveness/0", "quality/sharpness", "quality/brightness"]
    assert json.loads(json.dumps(decision.to_dict()))["score"] == pytest.approx(decision.score)
    always = Authenticator.from_dir(models_dir, detect=False, threshold=0.0)
    never = Authenticator.from_dir(models_dir, detect=False, threshold=1.01)
    assert always.verify(list(attempt.enrol), attempt.probe).accept
    assert not never.verify(list(attempt.enrol), attempt.probe).accept
    # a template is reusable; a probe given as frames averages the frames' features
    template = auth.enroll(list(attempt.enrol))
    assert isinstance(template, Template) and auth.verify(template, attempt.probe) == decision
    other = demo.val.attempts[-1].probe
    frames = auth.features(template, [attempt.probe, other])
    np.testing.assert_allclose(frames, (auth.features(template, attempt.probe) + auth.features(template, other)) / 2,
                               atol=1e-6)


def test_features_are_those_the_fusion_was_trained_on(models_dir: Path, auth: Authenticator, demo: object) -> None:
    from faceauth.plugins.trainers.fusion import scores
    from faceauth.plugins.trainers.fusion.components import open_components

    components = open_components({role: [models_dir / f"{role}.onnx"] for role in ("embedding", "liveness")})
    outputs = scores.image_outputs(demo.test, "test", components, quality=True, batch_size=32, progress=False,
                                   data_section={"test": "authenticator"})
    trained_on = scores.features_of(demo.test, outputs, components, quality=True)
    for index in (0, 12, 24, 35):  # genuine, impostor, spoof attempts
        attempt = demo.test.attempts[index]
        np.testing.assert_allclose(auth.features(auth.enroll(list(attempt.enrol)), attempt.probe), trained_on[index],
                                   atol=1e-5)


def test_faces_are_found_in_raw_photos(models_dir: Path, tmp_path: Path) -> None:
    from faceauth.plugins.detectors.haar import HaarDetector, HaarOptions

    width, height = HAAR_FRAME
    frame = np.full((height, width, 3), 96, np.uint8)
    face = haar_face()
    frame[20:20 + face.shape[0], 40:40 + face.shape[1]] = face
    Image.fromarray(frame).save(tmp_path / "photo.png")
    boxes = FaceFinder().detector.detect(frame)
    assert boxes == HaarDetector(HaarOptions()).detect(frame)  # the built-in detector's boxes
    box = boxes[0]  # the largest: the pasted face (its centre within a quarter of its size)
    assert abs(box.x + box.w / 2 - (40 + face.shape[1] / 2)) < face.shape[1] / 4
    assert abs(box.y + box.h / 2 - (20 + face.shape[0] / 2)) < face.shape[0] / 4
    decision = Authenticator.from_dir(models_dir).verify([tmp_path / "photo.png"], frame)
    assert isinstance(decision.accept, bool)
    Image.fromarray(np.full((height, width, 3), 96, np.uint8)).save(tmp_path / "wall.png")
    with pytest.raises(DataError, match=r"wall\.png: no face found"):
        Authenticator.from_dir(models_dir).verify([tmp_path / "photo.png"], tmp_path / "wall.png")


def test_bad_images_are_errors_never_decisions(auth: Authenticator, demo: object, tmp_path: Path) -> None:
    good = demo.val.attempts[0].probe
    (tmp_path / "broken.jpg").write_bytes(b"not an image" * 10)
    with pytest.raises(DataError, match=r"broken\.jpg: cannot read image"):
        auth.verify([good], tmp_path / "broken.jpg")
    with pytest.raises(DataError, match=r"missing\.jpg: cannot read image"):
        auth.verify([tmp_path / "missing.jpg"], good)
    with pytest.raises(DataError, match=r"enrolled: no images given"):
        auth.verify([], good)
    with pytest.raises(DataError, match=r"probe\[0\]: expected a uint8 RGB array"):
        auth.verify([good], np.zeros((8, 8, 3), np.float32))


def test_models_that_do_not_belong_together_are_refused(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no fusion model"):
        Authenticator.from_dir(tmp_path)
    changed = shutil.copytree(models_dir, tmp_path / "changed")
    model = onnx.load(changed / "embedding.onnx")
    model.metadata_props.add(key="edited", value="yes")
    onnx.save(model, changed / "embedding.onnx")
    with pytest.raises(ExportError, match=r"not the embedding model this fusion model was trained with"):
        Authenticator.from_dir(changed)
    shutil.copyfile(models_dir / "liveness.onnx", changed / "embedding.onnx")
    with pytest.raises(ExportError, match=r"embedding\.onnx is a liveness model .*expected an embedding model"):
        Authenticator.from_dir(changed)
    (changed / "embedding.onnx").unlink()
    with pytest.raises(ExportError, match=r"embedding\.onnx not found"):
        Authenticator.from_dir(changed)
    with pytest.raises(ExportError) as caught:  # worded as every "model of another task"
        Authenticator(models_dir / "liveness.onnx")
    assert str(caught.value) == (f"{models_dir / 'liveness.onnx'} is a liveness model (faceauth.task='liveness'); "
                                 f"expected a fusion model")


def test_cli_prints_the_decision_and_one_line_errors(models_dir: Path, demo: object, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    attempt = demo.val.attempts[0]
    common = ["--models", str(models_dir), "--no-detect"]
    assert verify_main(["--enrolled", *attempt.enrol, "--probe", attempt.probe, *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: ") and "match:" in out and "liveness:" in out and "liveness.onnx" in out
    assert verify_main(["--enrolled", *attempt.enrol, "--probe", attempt.probe, *common, "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert {"accept", "score", "threshold", "match", "liveness", "components", "features"} <= set(decision)
    (tmp_path / "broken.jpg").write_bytes(b"junk")
    for argv, message in (
        (["--enrolled", *attempt.enrol, "--probe", str(tmp_path / "broken.jpg"), *common], "cannot read image"),
        (["--enrolled", *attempt.enrol, "--probe", attempt.probe, "--models", str(tmp_path / "none")],
         "models directory not found"),
        (["--enrolled", *attempt.enrol, "--probe", attempt.probe, "--models", str(models_dir)], "no face found"),
    ):
        assert verify_main(argv) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
        assert captured.err.startswith("faceauth-verify: error: ") and message in captured.err


def test_the_verify_path_imports_no_torch(models_dir: Path, demo: object) -> None:
    attempt = demo.val.attempts[0]
    script = (
        "from faceauth.deploy.authenticator import Authenticator\nfrom faceauth.commands.verify import verify_main\n"
        f"auth = Authenticator.from_dir({str(models_dir)!r}, detect=False)\n"
        f"auth.verify({list(attempt.enrol)!r}, {attempt.probe!r})\n"
        f"next(iter(Authenticator.from_dir({str(models_dir)!r}).face_crops.finders.values())).detector.detect("
        f"__import__('numpy').zeros((64, 64, 3), 'uint8'))\n"
        f"code = verify_main(['--enrolled', *{list(attempt.enrol)!r}, '--probe', {attempt.probe!r}, "
        f"'--models', {str(models_dir)!r}, '--no-detect', '--json'])\n"
        "print('EXIT', code)\n"
    )
    assert "EXIT 0" in run_without_torch(script)
