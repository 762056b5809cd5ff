"""Tests for the face-recognition backbones: ArcFace IResNets, MobileFaceNet and FaceNet.

Structure checks (module names, key names and shapes, parameter counts) build the networks on
PyTorch's meta device, which allocates nothing and runs no arithmetic, so even iresnet100 costs
nothing. The figures come from the public definitions: insightface arcface_torch
``backbones/iresnet.py`` and ``backbones/mobilefacenet.py`` (get_mbf), and facenet-pytorch
``models/inception_resnet_v1.py``. Real forward passes and weight files use the smaller networks
(and FaceNet at a reduced, still valid, input size).
"""

from __future__ import annotations

import pytest
import torch

import faceauth
from faceauth.components import Preprocess
from faceauth.config.registry import load_registry
from faceauth.errors import CheckpointError, RecipeError

HALF = (0.5, 0.5, 0.5)
ARCFACE_PREPROCESS = Preprocess(input_size=(112, 112), mean=HALF, std=HALF)
FACENET_PREPROCESS = Preprocess(input_size=(160, 160), mean=(127.5 / 255,) * 3, std=(128 / 255,) * 3)
PREPROCESS = {
    "iresnet18": ARCFACE_PREPROCESS,
    "iresnet34": ARCFACE_PREPROCESS,
    "iresnet50": ARCFACE_PREPROCESS,
    "iresnet100": ARCFACE_PREPROCESS,
    "mobilefacenet": ARCFACE_PREPROCESS,
    "facenet": FACENET_PREPROCESS,
}
NAMES = list(PREPROCESS)

IRESNET_CHILDREN = {"conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4", "bn2", "dropout", "fc", "features"}
CHILDREN = {
    **{f"iresnet{d}": IRESNET_CHILDREN for d in (18, 34, 50, 100)},
    "mobilefacenet": {"layers", "conv_sep", "features"},
    "facenet": {"conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
                "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8", "avgpool_1a", "dropout",
                "last_linear", "last_bn"},
}

IRESNET_KEYS = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.running_var": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.bn2.bias": (64,),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.bn3.running_mean": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.num_batches_tracked": (),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer4.0.downsample.1.weight": (512,),
    "layer4.1.conv2.weight": (512, 512, 3, 3),
    "bn2.weight": (512,),
    "fc.weight": (512, 512 * 7 * 7),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.running_var": (512,),
}
MBF_KEYS = {
    "layers.0.layers.0.weight": (128, 3, 3, 3),
    "layers.0.layers.2.weight": (128,),
    "layers.1.layers.0.weight": (128, 2, 3, 3),  # groups=64 on 128 channels
    "layers.2.layers.0.layers.0.weight": (128, 128, 1, 1),
    "layers.2.layers.1.layers.0.weight": (128, 1, 3, 3),
    "layers.2.layers.2.layers.1.running_mean": (128,),
    "layers.3.layers.3.layers.2.layers.0.weight": (128, 128, 1, 1),
    "layers.4.layers.2.layers.0.weight": (256, 256, 1, 1),
    "layers.5.layers.5.layers.1.layers.2.weight": (256,),
    "layers.6.layers.0.layers.0.weight": (512, 256, 1, 1),
    "layers.6.layers.1.layers.0.weight": (512, 1, 3, 3),
    "layers.7.layers.1.layers.0.layers.0.weight": (256, 256, 1, 1),
    "conv_sep.layers.0.weight": (512, 256, 1, 1),
    "conv_sep.layers.1.running_var": (512,),
    "conv_sep.layers.2.weight": (512,),
    "features.layers.0.layers.0.weight": (512, 1, 7, 7),
    "features.layers.0.layers.1.weight": (512,),
    "features.layers.2.weight": (512, 512),
    "features.layers.3.running_mean": (512,),
}
FACENET_KEYS = {
    "conv2d_1a.conv.weight": (32, 3, 3, 3),
    "conv2d_1a.bn.running_var": (32,),
    "conv2d_4b.conv.weight": (256, 192, 3, 3),
    "repeat_1.0.branch0.conv.weight": (32, 256, 1, 1),
    "repeat_1.4.branch2.2.conv.weight": (32, 32, 3, 3),
    "repeat_1.0.conv2d.weight": (256, 96, 1, 1),
    "repeat_1.0.conv2d.bias": (256,),
    "mixed_6a.branch0.conv.weight": (384, 256, 3, 3),
    "mixed_6a.branch1.2.conv.weight": (256, 192, 3, 3),
    "repeat_2.9.branch1.1.conv.weight": (128, 128, 1, 7),
    "repeat_2.9.branch1.2.conv.weight": (128, 128, 7, 1),
    "repeat_2.0.conv2d.weight": (896, 256, 1, 1),
    "mixed_7a.branch2.2.conv.weight": (256, 256, 3, 3),
    "repeat_3.4.branch1.1.conv.weight": (192, 192, 1, 3),
    "block8.branch1.2.conv.weight": (192, 192, 3, 1),
    "block8.conv2d.weight": (1792, 384, 1, 1),
    "last_linear.weight": (512, 1792),
    "last_bn.weight": (512,),
    "last_bn.running_mean": (512,),
}
KEYS = {**{f"iresnet{d}": IRESNET_KEYS for d in (18, 34, 50, 100)}, "mobilefacenet": MBF_KEYS, "facenet": FACENET_KEYS}

# (name, options) -> (parameters, state_dict entries), as the public definitions give them.
COUNTS = [
    ("iresnet18", {}, 24_025_600, 187),
    ("iresnet34", {}, 34_139_328, 331),
    ("iresnet50", {}, 43_590_848, 475),
    ("iresnet100", {}, 65_156_160, 925),
    ("iresnet50", {"num_features": 128}, 33_955_904, 475),
    ("mobilefacenet", {}, 2_059_520, 333),
    ("mobilefacenet", {"num_features": 256}, 1_927_936, 333),
    ("facenet", {}, 23_482_624, 714),
    ("facenet", {"classes": 8631}, 27_910_327, 716),
    ("facenet", {"classes": 10575}, 28_907_599, 716),
]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _build(registry, name: str, **options) -> torch.nn.Module:
    component = registry.get("backbone", name)
    return component.build(component.options(**options))


def _meta(registry, name: str, **options) -> torch.nn.Module:
    with torch.device("meta"):
        return _build(registry, name, **options)


def _input(name: str, batch: int = 2, *, small: bool = True) -> torch.Tensor:
    size = 80 if name == "facenet" and small else PREPROCESS[name].input_size[0]  # FaceNet pools adaptively
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _perturb_buffers(module: torch.nn.Module) -> None:
    # Non-trivial running statistics, so a load that skipped buffers would show in the outputs.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if key.endswith("running_mean"):
                value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
            elif key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)


def test_recognition_backbones_are_registered_by_faceauth(registry):
    names = registry.names("backbone")
    for name in [*NAMES, "resnet18", "resnet34", "resnet50"]:
        assert name in names
        assert registry.entry("backbone", name).provider.distribution == "faceauth"


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_the_registry_with_embedding_shape_and_preprocess(registry, name):
    module = _meta(registry, name).eval()
    assert module.num_features == 512
    assert module.preprocess == PREPROCESS[name]
    assert module(_input(name, small=False).to("meta")).shape == (2, 512)
    assert dict(module.named_children()).keys() == CHILDREN[name]
    state = module.state_dict()
    for key, shape in KEYS[name].items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key


@pytest.mark.parametrize(("name", "options", "parameters", "entries"), COUNTS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}"
                              for n, o, _, _ in COUNTS])
def test_parameter_and_key_counts_match_the_public_definitions(registry, name, options, parameters, entries):
    module = _meta(registry, name, **options)
    assert sum(p.numel() for p in module.parameters()) == parameters
    assert len(module.state_dict()) == entries
    assert module.num_features == options.get("num_features", 512)


def test_iresnet_depths_have_the_public_stage_lengths(registry):
    for name, blocks in {"iresnet18": [2, 2, 2, 2], "iresnet34": [3, 4, 6, 3],
                         "iresnet50": [3, 4, 14, 3], "iresnet100": [3, 13, 30, 3]}.items():
        module = _meta(registry, name)
        assert [len(getattr(module, f"layer{i}")) for i in range(1, 5)] == blocks
        # Only the first block of each stage projects its shortcut.
        assert all(getattr(module, f"layer{i}")[1].downsample is None for i in range(1, 5))


def test_arcface_settings_match_the_originals(registry):
    iresnet = _build(registry, "iresnet18", dropout=0.2)
    assert iresnet.features.weight.requires_grad is False  # the embedding BN's scale is frozen at 1
    assert torch.equal(iresnet.features.weight, torch.ones(512))
    assert iresnet.dropout.p == 0.2
    assert {(m.eps, m.momentum) for m in iresnet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)} \
        == {(1e-5, 0.1)}
    facenet = _meta(registry, "facenet")
    assert {(m.eps, m.momentum) for m in facenet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)} \
        == {(1e-3, 0.1)}
    assert facenet.dropout.p == 0.6
    assert [b.scale for b in facenet.repeat_1] == [0.17] * 5
    assert [b.scale for b in facenet.repeat_2] == [0.10] * 10
    assert [b.scale for b in facenet.repeat_3] == [0.20] * 5
    assert facenet.block8.scale == 1.0 and not hasattr(facenet.block8, "relu")


def test_facenet_preprocess_is_the_original_scaling():
    pixels = torch.tensor([0.0, 127.5, 255.0])
    mean, std = FACENET_PREPROCESS.mean[0], FACENET_PREPROCESS.std[0]
    assert torch.allclose((pixels / 255 - mean) / std, (pixels - 127.5) / 128)


def test_options_are_validated():
    from faceauth.plugins.backbones.facenet import FaceNetOptions
    from faceauth.plugins.backbones.iresnet import IResNetOptions
    from faceauth.plugins.backbones.mobilefacenet import MobileFaceNetOptions

    with pytest.raises(RecipeError, match="backbone.classes"):
        faceauth.schema.structure(FaceNetOptions, {"classes": 0}, "backbone")
    with pytest.raises(RecipeError, match="backbone.dropout"):
        faceauth.schema.structure(IResNetOptions, {"dropout": 1.5}, "backbone")
    with pytest.raises(RecipeError, match="backbone.num_features"):
        faceauth.schema.structure(MobileFaceNetOptions, {"num_features": 0}, "backbone")
    with pytest.raises(RecipeError, match="backbone.dropout: unknown key"):
        faceauth.schema.structure(MobileFaceNetOptions, {"dropout": 0.1}, "backbone")


# --- weights files ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options"),
                         [("iresnet18", {}), ("mobilefacenet", {}), ("facenet", {"classes": 8631})])
def test_pretrained_round_trip_gives_identical_embeddings(registry, tmp_path, name, options):
    source = _build(registry, name, **options)
    _perturb_buffers(source)
    path = tmp_path / f"{name}.pth"
    torch.save(source.state_dict(), path)
    loaded = _build(registry, name, pretrained=str(path), **options)
    x = _input(name)
    with torch.no_grad():
        expected, actual = source.eval()(x), loaded.eval()(x)
    assert actual.shape == (2, 512)
    assert torch.isfinite(actual).all()
    assert torch.equal(expected, actual)
    if name == "facenet":
        assert torch.allclose(actual.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.fixture(scope="module")
def mbf_state(registry):
    return _build(registry, "mobilefacenet").state_dict()


def test_mismatched_weights_fail_with_counts_and_examples(registry, tmp_path, mbf_state):
    state = dict(mbf_state)
    state["conv_sep.layers.0.weights"] = state.pop("conv_sep.layers.0.weight")
    state["features.layers.2.weight"] = torch.zeros(128, 512)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as caught:
        _build(registry, "mobilefacenet", pretrained=str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "1 missing (e.g. conv_sep.layers.0.weight)" in message
    assert "1 unexpected (e.g. conv_sep.layers.0.weights)" in message
    assert "1 wrong shape (e.g. features.layers.2.weight (128, 512) vs (512, 512))" in message


def test_dataparallel_prefixes_are_accepted(registry, tmp_path, mbf_state):
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in mbf_state.items()}, path)
    loaded = _build(registry, "mobilefacenet", pretrained=str(path))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in mbf_state.items())


def test_missing_weights_file_is_a_checkpoint_error(registry, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        _build(registry, "iresnet18", pretrained=str(tmp_path / "nope.pth"))


@pytest.fixture(scope="module")
def facenet_with_logits(registry, tmp_path_factory):
    """A facenet-pytorch style file: the embedding network plus an 8631-class logits layer (as vggface2)."""
    module = _build(registry, "facenet", classes=8631)
    _perturb_buffers(module)
    path = tmp_path_factory.mktemp("facenet") / "vggface2-like.pt"
    torch.save(module.state_dict(), path)
    return module, path


def test_facenet_logits_without_classes_says_which_classes_to_set(registry, facenet_with_logits):
    _, path = facenet_with_logits
    with pytest.raises(CheckpointError) as caught:
        _build(registry, "facenet", pretrained=str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert "2 unexpected (e.g. logits.weight, logits.bias)" in message
    assert "8631-class 'logits' layer" in message and "set backbone.classes: 8631" in message


def test_facenet_wrong_class_count_is_a_shape_error(registry, facenet_with_logits):
    _, path = facenet_with_logits
    with pytest.raises(CheckpointError, match=r"2 wrong shape \(e.g. logits.weight \(8631, 512\) vs \(10575, 512\)"):
        _build(registry, "facenet", pretrained=str(path), classes=10575)


def test_facenet_embedding_only_file_loads_without_classes(registry, tmp_path, facenet_with_logits):
    module, _ = facenet_with_logits
    path = tmp_path / "embedding.pt"
    torch.save({f"module.{k}": v for k, v in module.state_dict().items() if not k.startswith("logits.")}, path)
    loaded = _build(registry, "facenet", pretrained=str(path))
    assert not hasattr(loaded, "logits")
    expected = {k: v for k, v in module.state_dict().items() if not k.startswith("logits.")}
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
