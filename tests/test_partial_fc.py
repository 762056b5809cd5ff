"""Partial FC: the sharded, sampled margin softmax against the plain one, on one and two processes.

One process at sample rate 1 must be `MarginSoftmaxLoss` exactly; two gloo processes on CPU must
give the loss and gradients one process gives on their concatenated batch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import faceauth
from faceauth.config.registry import load_registry
from faceauth.errors import RecipeError
from faceauth.plugins.losses.margin import MarginSoftmaxLoss
from faceauth.plugins.losses.partial_fc import PartialFC, PartialFCOptions, build_partial_fc, shard_bounds
from faceauth.schema import structure
from faceauth.training import checkpoint

MARGINS = {"arcface": (1.0, 0.5, 0.0), "cosface": (1.0, 0.0, 0.35), "combined": (1.2, 0.3, 0.1)}


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol), (
        (actual - expected).abs().max())


def _loss_and_grads(loss: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor):
    embeddings = embeddings.detach().clone().requires_grad_()
    value = loss(embeddings, labels)
    grad_embeddings, grad_weight = torch.autograd.grad(value, [embeddings, loss.weight])
    return value.detach(), grad_embeddings, grad_weight


def _batch(rows: int, features: int, classes: int, seed: int, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, features, generator=generator, dtype=dtype),
            torch.randint(0, classes, (rows,), generator=generator))


# --- one process ---------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", sorted(MARGINS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_process_at_rate_one_is_the_margin_softmax_loss(setting: str, dtype: torch.dtype) -> None:
    m1, m2, m3 = MARGINS[setting]
    torch.manual_seed(0)
    partial = PartialFC(13, 6, m1=m1, m2=m2, m3=m3, scale=32.0).to(dtype)
    plain = MarginSoftmaxLoss(13, 6, m1=m1, m2=m2, m3=m3, scale=32.0).to(dtype)
    plain.load_state_dict(partial.state_dict())
    embeddings, labels = _batch(20, 6, 13, seed=1, dtype=dtype)
    # float64: equal to 1e-6 (in fact to rounding); float32: to its rounding, relative to the values.
    atol, rtol = (1e-6, 0.0) if dtype == torch.float64 else (1e-5, 1e-5)
    for got, want in zip(_loss_and_grads(partial, embeddings, labels), _loss_and_grads(plain, embeddings, labels)):
        _assert_close(got, want, atol=atol, rtol=rtol)


def test_rate_one_uses_every_centre_in_order_and_draws_nothing() -> None:
    partial = PartialFC(9, 4)
    labels = torch.tensor([0, 3, 3, 8])
    assert partial.sample(labels) is None
    state = torch.get_rng_state()
    partial(torch.ones(4, 4), labels)
    assert torch.equal(torch.get_rng_state(), state)
    assert partial.local_targets(labels, None).tolist() == [0, 3, 3, 8]


def test_sampling_keeps_every_positive_and_the_rate_of_all_centres() -> None:
    partial = PartialFC(1000, 8, sample_rate=0.1)
    for seed in range(20):
        torch.manual_seed(seed)
        labels = torch.randint(0, 1000, (64,))
        index = partial.sample(labels)
        assert len(index) == math.ceil(0.1 * 1000) == 100
        assert set(labels.tolist()) <= set(index.tolist())
        assert torch.equal(index, index.sort().values) and len(index.unique()) == 100
        # Each label's target column is its own centre among the sampled ones.
        assert torch.equal(index[partial.local_targets(labels, index)], labels)
    # More positives than the rate allows: exactly the positives.
    labels = torch.arange(0, 1000, 5)  # 200 classes > 100
    assert torch.equal(partial.sample(labels), labels)
    assert len(PartialFC(10, 2, sample_rate=0.01).sample(torch.tensor([4]))) == 1  # ceil(0.1) = 1: the positive
    assert PartialFC(10, 2, sample_rate=0.3).num_sampled == 3  # 0.3 * 10 is 3.0000000000000004
    assert PartialFC(10, 2, sample_rate=0.31).num_sampled == 4


def test_sampling_is_a_function_of_the_seed() -> None:
    partial = PartialFC(500, 8, sample_rate=0.2)
    labels = torch.tensor([1, 2, 3, 400])

    def draw(seed: int) -> list[int]:
        torch.manual_seed(seed)
        return partial.sample(labels).tolist()

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_sampled_loss_is_the_margin_softmax_over_the_sampled_centres() -> None:
    m1, m2, m3 = MARGINS["combined"]
    partial = PartialFC(50, 6, m1=m1, m2=m2, m3=m3, scale=16.0, sample_rate=0.3).double()
    embeddings, labels = _batch(12, 6, 50, seed=2)
    torch.manual_seed(5)
    index = partial.sample(labels)
    plain = MarginSoftmaxLoss(len(index), 6, m1=m1, m2=m2, m3=m3, scale=16.0).double()
    with torch.no_grad():
        plain.weight.copy_(partial.weight[index])
    torch.manual_seed(5)  # the same draw inside the loss
    value, grad_embeddings, grad_weight = _loss_and_grads(partial, embeddings, labels)
    want, want_embeddings, want_weight = _loss_and_grads(plain, embeddings, torch.searchsorted(index, labels))
    _assert_close(value, want, atol=1e-9)
    _assert_close(grad_embeddings, want_embeddings, atol=1e-9)
    _assert_close(grad_weight[index], want_weight, atol=1e-9)
    unsampled = torch.ones(50, dtype=torch.bool)
    unsampled[index] = False
    assert grad_weight[unsampled].abs().sum() == 0  # centres left out get no gradient this step


def test_sampled_loss_is_finite_and_decreases_on_a_toy_problem() -> None:
    torch.manual_seed(3)
    partial = PartialFC(40, 8, m2=0.3, scale=16.0, sample_rate=0.25)
    embeddings = torch.nn.Parameter(torch.randn(40, 8))
    labels = torch.arange(40)
    optimizer = torch.optim.SGD([embeddings, *partial.parameters()], lr=0.5)
    values = []
    for _ in range(30):
        value = partial(embeddings, labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        assert math.isfinite(value.item())
        values.append(value.item())
    assert np.mean(values[-5:]) < 0.5 * np.mean(values[:5])


def test_bad_input_is_an_error_naming_it() -> None:
    partial = PartialFC(5, 4)
    with pytest.raises(ValueError, match=r"expected embeddings \(N, 4\) and labels \(N,\), got \(2, 3\)"):
        partial(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be in 0..4, got 0..5"):
        partial(torch.randn(2, 4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"sample_rate must be in \(0, 1\]"):
        PartialFC(5, 4, sample_rate=0.0)


def test_shards_split_the_classes_as_evenly_as_possible() -> None:
    assert [shard_bounds(11, 3, r) for r in range(3)] == [(0, 4), (4, 8), (8, 11)]
    assert [shard_bounds(360_232, 8, r)[1] - shard_bounds(360_232, 8, r)[0] for r in range(8)] == [45_029] * 8
    assert shard_bounds(2_000_001, 2, 1) == (1_000_001, 2_000_001)


def test_state_dict_holds_the_whole_matrix_under_the_margin_losses_key() -> None:
    torch.manual_seed(0)
    partial = PartialFC(7, 3)
    assert list(partial.state_dict()) == ["weight"] and partial.state_dict()["weight"].shape == (7, 3)
    assert partial.sharded_parameters() == ("weight",)
    full = torch.randn(7, 3)
    partial.load_state_dict({"weight": full})
    assert torch.equal(partial.weight.detach(), full)
    assert torch.equal(partial.take_shard(full), full) and partial.gather_shard(full) is full


# --- recipe and registry -------------------------------------------------------------------------


def test_options_from_recipe_data() -> None:
    options = structure(PartialFCOptions, {"sample_rate": 0.1, "m1": 1.0, "m2": 0.5, "m3": 0.0, "scale": 64}, "loss")
    assert (options.sample_rate, options.m1, options.m2, options.m3, options.scale) == (0.1, 1.0, 0.5, 0.0, 64.0)
    assert structure(PartialFCOptions, {}, "loss").sample_rate == 1.0
    for bad in (0, 1.5, -0.1):
        with pytest.raises(RecipeError, match=r"loss.sample_rate: expected a rate above 0 and at most 1"):
            structure(PartialFCOptions, {"sample_rate": bad}, "loss")
    module = build_partial_fc(options, num_classes=20, num_features=4)
    assert (module.m1, module.m2, module.m3, module.scale, module.sample_rate) == (1.0, 0.5, 0.0, 64.0, 0.1)


def test_partial_fc_is_registered_as_a_loss_on_embeddings() -> None:
    registry = load_registry()
    assert "partial_fc" in registry.names("loss")
    entry = registry.entry("loss", "partial_fc")
    assert entry.component.consumes == "embeddings" and entry.provider.distribution == "faceauth"
    module = entry.component.build(entry.component.options(), num_classes=3, num_features=4)
    value = module(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert value.dim() == 0 and torch.isfinite(value)


# --- two processes -------------------------------------------------------------------------------

CLASSES, FEATURES, INPUTS = 11, 6, 5  # 11 classes: shards of 6 and 5
LOCAL_ROWS = (7, 5)  # an uneven split of a global batch of 12


def _reference(sample_rate: float) -> dict[str, torch.Tensor]:
    """One process on the whole batch: a linear 'backbone' and the loss, as each rank builds them."""
    torch.manual_seed(0)
    backbone = torch.nn.Linear(INPUTS, FEATURES).double()
    partial = PartialFC(CLASSES, FEATURES, m2=0.4, m3=0.05, scale=16.0, sample_rate=sample_rate).double()
    inputs, labels = _batch(sum(LOCAL_ROWS), INPUTS, CLASSES, seed=7)
    initial = partial.state_dict()["weight"].clone()
    embeddings = backbone(inputs)
    embeddings.retain_grad()
    torch.manual_seed(1)
    value = partial(embeddings, labels)
    value.backward()
    return {"loss": value.detach(), "embeddings": embeddings.grad, "centres": partial.weight.grad,
            "backbone": backbone.weight.grad, "initial": initial}


def _two_process_worker(rank: int, port: int, results: object, out: str, sample_rate: float) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")
    from faceauth.training import distributed

    distributed.setup("cpu")  # CPU semantics (gloo) on any host
    try:
        torch.manual_seed(0)
        backbone = torch.nn.Linear(INPUTS, FEATURES).double()
        partial = PartialFC(CLASSES, FEATURES, m2=0.4, m3=0.05, scale=16.0, sample_rate=sample_rate).double()
        inputs, labels = _batch(sum(LOCAL_ROWS), INPUTS, CLASSES, seed=7)
        rows = slice(0, LOCAL_ROWS[0]) if rank == 0 else slice(LOCAL_ROWS[0], None)
        initial = partial.state_dict()["weight"].clone()
        embeddings = backbone(inputs[rows])
        embeddings.retain_grad()
        torch.manual_seed(1)
        value = partial(embeddings, labels[rows])
        value.backward()
        backbone_grad = backbone.weight.grad.clone()
        torch.distributed.all_reduce(backbone_grad)  # what DDP does with the backbone: the average
        result = {"loss": value.detach(), "embeddings": embeddings.grad,
                  "centres": partial.gather_shard(partial.weight.grad), "backbone": backbone_grad / 2,
                  "initial": initial, "shard": partial.weight.detach().clone()}
        # Loading a whole matrix takes this rank's rows.
        replacement = torch.arange(CLASSES * FEATURES, dtype=torch.float64).reshape(CLASSES, FEATURES)
        partial.load_state_dict({"weight": replacement})
        result["loaded"] = partial.weight.detach().clone()
        result["round_trip"] = partial.state_dict()["weight"]
        torch.save(result, Path(out) / f"rank{rank}.pt")
        results.put((rank, None))  # type: ignore[attr-defined]
    finally:
        from tests.test_distributed import leave_group

        leave_group()


def _run_two_processes(tmp_path: Path, sample_rate: float) -> list[dict[str, torch.Tensor]]:
    from tests.test_distributed import spawn_two

    spawn_two(_two_process_worker, str(tmp_path), sample_rate)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("sample_rate", [1.0, 0.5])
def test_two_processes_give_the_one_process_loss_and_gradients(tmp_path: Path, sample_rate: float) -> None:
    want = _reference(sample_rate)
    ranks = _run_two_processes(tmp_path, sample_rate)
    for rank, got in enumerate(ranks):
        _assert_close(got["loss"], want["loss"], atol=1e-9)  # every rank returns the global loss
        _assert_close(got["centres"], want["centres"], atol=1e-9)  # each shard's gradient, gathered
        _assert_close(got["backbone"], want["backbone"], atol=1e-9)  # after DDP's average: exact
        # The local embeddings' gradient is the world size times the true one, for DDP's average.
        rows = slice(0, LOCAL_ROWS[0]) if rank == 0 else slice(LOCAL_ROWS[0], None)
        _assert_close(got["embeddings"], 2 * want["embeddings"][rows], atol=1e-9)
        # The initial centres do not depend on the number of processes; the checkpoint holds them all.
        _assert_close(got["initial"], want["initial"], atol=0)
        start, end = shard_bounds(CLASSES, 2, rank)
        assert torch.equal(got["shard"], want["initial"][start:end])
        replacement = torch.arange(CLASSES * FEATURES, dtype=torch.float64).reshape(CLASSES, FEATURES)
        assert torch.equal(got["loaded"], replacement[start:end]) and torch.equal(got["round_trip"], replacement)


# --- the embedding trainer -----------------------------------------------------------------------

RECIPE = {
    "seed": 0,
    "data": {"name": "demo_identities", "identities": 12, "images_per_identity": 6, "size": 48,
             "val_identities": 0.34, "pairs_per_identity": 6},
    "backbone": {"name": "resnet18", "input_size": 32},
    "loss": {"name": "partial_fc", "sample_rate": 0.5, "scale": 16.0, "m2": 0.2},
    "trainer": {"name": "embedding", "epochs": 2, "batch_size": 16, "num_workers": 0, "progress": False},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "export": None,
}


def _write(tmp_path: Path, recipe: dict) -> Path:
    path = tmp_path / "partial_fc.yaml"
    path.write_text(yaml.safe_dump({**recipe, "output_dir": str(tmp_path / "runs")}), encoding="utf-8")
    return path


@pytest.mark.slow
def test_embedding_trainer_trains_with_partial_fc(tmp_path: Path) -> None:
    result = faceauth.run(_write(tmp_path, RECIPE))
    metrics = json.loads((result.dir / "metrics.json").read_text())
    assert result.metrics["epochs_completed"] == 2 and 0.0 <= metrics["val"]["accuracy"] <= 1.0
    last = checkpoint.load(result.dir / "checkpoints" / "last.pt")
    assert last["head"]["weight"].shape == (8, 512)  # 12 identities, 4 held out for validation
    assert all(math.isfinite(v) for v in last["head"]["weight"].flatten().tolist())


# Group norm does not depend on how the batch is split, so 1 and 2 processes reach the same weights;
# the clipping threshold is far below the gradient norm, so the clipped norm spans the processes.
TINY = {**RECIPE, "device": "cpu", "backbone": {"name": "tiny_cnn", "width": 8, "norm": "group"},
        "trainer": {**RECIPE["trainer"], "grad_clip": 1.0, "channels_last": False, "flip_test": False}}


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """The tiny recipe and the weights, centres and momentum of a whole one-process run of it."""
    monkeypatch.setenv("FACEAUTH_PLUGINS", "faceauth,faceauth-example-plugin")
    path = _write(tmp_path, TINY)
    return path, checkpoint.load(faceauth.run(path, ["run_name=whole"]).dir / "checkpoints" / "last.pt")


def _assert_same_training_state(got: dict, want: dict) -> None:
    for key in ("model", "head"):
        assert got[key].keys() == want[key].keys()
        for name in want[key]:
            _assert_close(got[key][name], want[key][name], atol=1e-5, rtol=1e-4)
    for slot, state in want["optimizer"]["state"].items():
        got_momentum = got["optimizer"]["state"][slot]["momentum_buffer"]
        _assert_close(got_momentum, state["momentum_buffer"], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_a_two_process_run_resumes_with_one_process_exactly(tiny: tuple[Path, dict]) -> None:
    from tests.test_distributed import torchrun

    path, whole = tiny
    stopped = torchrun(2, str(path), "run_name=two", "trainer.max_steps=3")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    payload = checkpoint.load(path.parent / "runs" / "two" / checkpoint.RESUME_CHECKPOINT)
    assert payload["head"]["weight"].shape == (8, 16)  # both shards, and their momentum:
    assert payload["optimizer"]["state"][len(whole["model"])]["momentum_buffer"].shape == (8, 16)
    resumed = faceauth.run(None, ["trainer.max_steps=null"], resume=path.parent / "runs" / "two")
    _assert_same_training_state(checkpoint.load(resumed.dir / checkpoint.RESUME_CHECKPOINT), whole)


@pytest.mark.slow
def test_a_one_process_run_resumes_with_two_processes_exactly(tiny: tuple[Path, dict]) -> None:
    from tests.test_distributed import torchrun

    path, whole = tiny
    faceauth.run(path, ["run_name=one", "trainer.max_steps=3"])
    resumed = torchrun(2, "--resume", str(path.parent / "runs" / "one"), "trainer.max_steps=null")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same_training_state(checkpoint.load(path.parent / "runs" / "one" / checkpoint.RESUME_CHECKPOINT), whole)
