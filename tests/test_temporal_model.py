"""The `lstm` temporal backbone: shapes, pooling, a frozen encoder, starting from a liveness checkpoint,
the frame-level scorer, and ONNX export with a dynamic clip length."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import faceauth
from faceauth.components import Backbone, Preprocess
from faceauth.config.build import Components
from faceauth.config.recipe import load_recipe
from faceauth.config.registry import load_registry
from faceauth.errors import CheckpointError, RecipeError
from faceauth.io.onnx import onnx_session, run_session
from faceauth.plugins.backbones import temporal
from faceauth.plugins.backbones.resnet import ResNetFeatures, ResNetOptions
from faceauth.plugins.backbones.temporal import LstmOptions
from faceauth.plugins.exporters.onnx_exporter import OnnxExporter, OnnxOptions
from faceauth.plugins.trainers.classifier import Classifier, LivenessScore
from faceauth.training.export import Bundle
from tests.conftest import TINY_RECIPE

SIZE = 16
RESNET = {"name": "resnet18", "input_size": SIZE}  # what the liveness checkpoint below was trained with
TINY = {"name": "tiny_frames"}  # a frame encoder that keeps the tests fast (any registered backbone will do)


class TinyFrames(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.num_features = 8
        self.preprocess = Preprocess(input_size=(SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def plugins() -> list:
    """The tiny encoder as an in-code plugin."""
    records = [Backbone(name="tiny_frames", build=TinyFrames)]
    return [types.SimpleNamespace(__name__="temporal_tests", faceauth_backbones=faceauth.hookimpl(lambda: records))]


def components() -> Components:
    registry = load_registry(plugins())
    return Components(registry, load_recipe(None, registry=registry, base=TINY_RECIPE))


def build(**options) -> temporal.TemporalLstm:
    torch.manual_seed(0)
    return temporal.build(LstmOptions(**{"encoder": TINY, "hidden_size": 16, **options}), components())


def clips(n: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, t, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def liveness_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt of a real (tiny) liveness run of the classifier trainer, resnet18 at 16x16."""
    out = tmp_path_factory.mktemp("liveness")
    recipe = {**TINY_RECIPE, "output_dir": str(out), "export": None, "backbone": RESNET,
              "data": {**TINY_RECIPE["data"], "train": 24, "val": 12, "test": 12, "size": 2 * SIZE},
              "trainer": {**TINY_RECIPE["trainer"], "epochs": 1, "batch_size": 12}}
    path = out / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:  # the conftest's cache, which function fixtures set
        patch.setenv("FACEAUTH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        patch.setenv("FACEAUTH_PLUGINS", "faceauth")
        result = faceauth.run(path)
    return result.dir / "checkpoints" / "best.pt"


# ---- shapes and pooling ----------------------------------------------------------------------------

@pytest.mark.parametrize("pooling, bidirectional, layers", [("last", False, 1), ("mean", False, 1),
                                                            ("last", True, 2), ("mean", True, 2)])
def test_output_shape_and_pooling(pooling: str, bidirectional: bool, layers: int) -> None:
    model = build(pooling=pooling, bidirectional=bidirectional, layers=layers).eval()
    directions = 2 if bidirectional else 1
    assert model.num_features == 16 * directions and model.temporal and model.clip_length == 8
    assert model.preprocess == model.encoder.preprocess and model.frame_scorer is None
    x = clips(3, 5)
    with torch.no_grad():
        pooled = model(x)
        features = model.encoder(x.flatten(0, 1)).reshape(3, 5, -1)
        output, (last, _) = model.lstm(features)  # the module's own forward, as a reference
    assert pooled.shape == (3, model.num_features)
    if pooling == "mean":
        expected = output.mean(dim=1)
    else:
        expected = torch.cat(list(last[-directions:]), dim=1)
        if not bidirectional:
            assert torch.allclose(expected, output[:, -1], atol=1e-6)
    assert torch.allclose(pooled, expected, atol=1e-5)
    assert model(clips(2, 11)).shape == (2, model.num_features)  # any clip length


def test_training_mode_backpropagates_into_the_encoder() -> None:
    model = build(dropout=0.3, layers=2).train()
    model(clips(2, 4)).sum().backward()
    assert model.encoder.training and all(p.grad is not None for p in model.parameters())


def test_frozen_encoder_has_no_gradient_and_keeps_its_batchnorm_statistics() -> None:
    model = build(freeze_encoder=True)
    model.train()
    assert model.training and model.lstm.training
    assert not any(m.training for m in model.encoder.modules())
    stats = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model(clips(2, 4)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.lstm.parameters())
    assert all(torch.equal(stats[k], v) for k, v in model.encoder.state_dict().items())  # running mean/var too


def test_encoder_must_encode_frames() -> None:
    with pytest.raises(RecipeError, match=r"backbone\.encoder: 'lstm' is a temporal backbone"):
        build(encoder={"name": "lstm"})
    with pytest.raises(RecipeError, match=r"backbone\.encoder\.input_sise: unknown key"):
        build(encoder={"name": "resnet18", "input_sise": SIZE})


# ---- starting from a liveness checkpoint ----------------------------------------------------------

def test_encoder_checkpoint_loads_the_backbone_and_gives_a_frozen_frame_scorer(liveness_checkpoint: Path) -> None:
    payload = faceauth.training.checkpoint.load(liveness_checkpoint)
    model = build(encoder=RESNET, encoder_checkpoint=str(liveness_checkpoint))
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, payload["model"][f"backbone.{key}"]), key
    classifier = Classifier(ResNetFeatures(18, ResNetOptions(input_size=SIZE)), 2)
    classifier.load_state_dict(payload["model"])
    frames = clips(1, 6)[0]
    with torch.no_grad():
        logits = classifier.eval()(frames)
        expected = logits[:, 0] - logits[:, 1]  # log-odds of live, the classifier's score
    scorer = model.frame_scorer
    scorer_state = {k: v.clone() for k, v in scorer.state_dict().items()}
    # Training the temporal model leaves the scorer as it was loaded: frozen, in eval mode.
    model.train()
    assert not scorer.training and not any(p.requires_grad for p in scorer.parameters())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(clips(2, 3)).sum().backward()
    optimizer.step()
    assert not torch.equal(model.encoder.net.conv1.weight, scorer.backbone.net.conv1.weight)  # fine-tuned, a copy
    assert all(torch.equal(scorer_state[k], v) for k, v in scorer.state_dict().items())
    with torch.no_grad():
        assert torch.allclose(scorer(frames), expected, atol=1e-6)


def test_frozen_encoder_from_a_checkpoint_is_shared_with_the_scorer(liveness_checkpoint: Path) -> None:
    model = build(encoder=RESNET, encoder_checkpoint=str(liveness_checkpoint), freeze_encoder=True)
    assert model.frame_scorer.backbone is model.encoder


def test_wrong_checkpoints_are_named(liveness_checkpoint: Path, tmp_path: Path) -> None:
    loaded = faceauth.training.checkpoint.load(liveness_checkpoint)
    payload = {key: loaded[key] for key in ("task", "model", "classes", "recipe")}  # no optimizer state: smaller
    embedding = faceauth.training.checkpoint.save(tmp_path / "embedding.pt", {**payload, "task": "embedding"})
    with pytest.raises(CheckpointError, match=r"^backbone\.encoder_checkpoint: .*embedding\.pt: expected a liveness checkpoint to be the lstm's frame encoder .*found an embedding checkpoint$"):
        build(encoder=RESNET, encoder_checkpoint=str(embedding))
    with pytest.raises(CheckpointError, match=r"expected a 'resnet34' backbone \(backbone\.encoder\.name\), found 'resnet18'"):
        build(encoder={"name": "resnet34", "input_size": SIZE}, encoder_checkpoint=str(liveness_checkpoint))
    with pytest.raises(CheckpointError, match=r"takes 16x16 input.*backbone\.encoder takes 48x48 input"):
        build(encoder={"name": "resnet18", "input_size": 48}, encoder_checkpoint=str(liveness_checkpoint))
    state = {k: v for k, v in payload["model"].items() if not k.startswith("backbone.net.layer4.")}
    partial = faceauth.training.checkpoint.save(tmp_path / "partial.pt", {**payload, "model": state})
    with pytest.raises(CheckpointError, match=r"its weights do not fit backbone\.encoder \(Missing key"):
        build(encoder=RESNET, encoder_checkpoint=str(partial))
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build(encoder=RESNET, encoder_checkpoint=str(tmp_path / "missing.pt"))
    recipe = {**payload["recipe"], "trainer": {**payload["recipe"]["trainer"], "input_norm": "image"}}
    standardised = faceauth.training.checkpoint.save(tmp_path / "standardised.pt", {**payload, "recipe": recipe})
    with pytest.raises(CheckpointError, match=r"trained with trainer\.input_norm: image .*use a checkpoint trained "
                                              r"with input_norm: dataset"):
        build(encoder=RESNET, encoder_checkpoint=str(standardised))


# ---- ONNX ------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_rnn_dispatch() -> Iterator[None]:
    """Forget the kernels aten.lstm resolved to in other exports of this process, before and after.

    torch.onnx keeps an LSTM's time axis dynamic by swapping in a while-loop decomposition without
    clearing the operator's dispatch cache; once an export has cached the default, unrolled one, later
    exports in the process fix T ("tracing inferred a static shape"). Until the exporter clears it
    itself, this test leaves the cache as clean as it found it for the exports of other tests.
    """
    cache = getattr(torch.ops.aten.lstm.input, "_dispatch_cache", {})
    cache.clear()
    yield
    cache.clear()


# torch's own while-loop LSTM decomposition (used by torch.onnx for a dynamic time axis) calls the
# deprecated torch._check_is_size, and dynamo reads .grad of non-leaf tensors while tracing it.
@pytest.mark.filterwarnings("ignore:_check_is_size will be removed:FutureWarning",
                            "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_onnx_export_keeps_batch_and_time_dynamic(tmp_path: Path, fresh_rnn_dispatch: None) -> None:
    model = LivenessScore(Classifier(build(), 2)).eval()
    example = clips(2, model.model.backbone.clip_length)
    bundle = Bundle(module=model, example_inputs=(example,), input_names=("input",), output_names=("score", "logits"),
                    dynamic_axes={"input": {0: "batch", 1: "time"}, "score": {0: "batch"}, "logits": {0: "batch"}},
                    metadata={}, check_inputs=((clips(3, 4, 1),), (clips(1, 16, 2),)))
    path = OnnxExporter(OnnxOptions()).export(bundle, tmp_path / "temporal.onnx")
    session = onnx_session(path)
    assert session.get_inputs()[0].shape == ["batch", "time", 3, SIZE, SIZE]
    x = clips(2, 5, 3)  # a length it was neither exported nor checked at
    score, _ = run_session(session, x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(score, model(x)[0].numpy(), atol=1e-4)
