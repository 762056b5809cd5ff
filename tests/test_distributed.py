"""Two CPU processes under torchrun (gloo) against one process, on a tiny recipe; agreement between ranks.

The model uses group norm, which does not depend on how a batch is split, so two processes with
half a batch each and averaged gradients must reach the weights one process reaches.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import yaml

import faceauth
from faceauth.training import checkpoint, distributed

pytestmark = pytest.mark.slow

RECIPE = {
    "seed": 0,
    "device": "cpu",  # CPU semantics (gloo) on any host, a GPU one included
    "data": {"name": "stripes", "train": 64, "val": 32, "test": 32},
    "backbone": {"name": "tiny_cnn", "width": 8, "norm": "group"},
    "loss": {"name": "cross_entropy"},
    "trainer": {"name": "classifier", "epochs": 2, "batch_size": 16, "num_workers": 0, "progress": False,
                "channels_last": False, "augment": {"hflip": False, "crop_scale": 1.0, "rotation": 0.0,
                                                    "color_jitter": 0.0}},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "export": {"name": "onnx"},
}


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACEAUTH_PLUGINS", "faceauth,faceauth-example-plugin")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(tmp_path / "runs")}), encoding="utf-8")
    return path


def torchrun(processes: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "faceauth", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")["model"]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_two_processes_reach_the_single_process_weights_and_resume_with_one(recipe: Path) -> None:
    single = faceauth.run(recipe, ["run_name=single"])
    done = torchrun(2, str(recipe), "run_name=ddp")
    assert done.returncode == 0, done.stderr[-2000:]
    runs = recipe.parent / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["ddp", "single"]  # rank 1 made no run directory
    assert (runs / "ddp" / "model.onnx").is_file() and len(list((runs / "ddp").glob("events.out.*"))) == 1
    assert_close(weights(runs / "ddp"), weights(single.dir))

    stopped = torchrun(2, str(recipe), "run_name=ddp_stopped", "trainer.max_steps=3")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    resumed = faceauth.run(None, ["trainer.max_steps=null"], resume=runs / "ddp_stopped")
    assert_close(weights(resumed.dir), weights(single.dir))


def test_a_batch_the_processes_cannot_share_is_an_error_on_every_rank(recipe: Path) -> None:
    done = torchrun(2, str(recipe), "trainer.batch_size=15", "run_name=odd")
    assert done.returncode != 0
    assert done.stderr.count("trainer.batch_size=15 is not divisible by the 2 processes") == 2
    # One line per rank; the only traceback is torchrun's own report of the failed children.
    assert "core/" not in done.stderr and "plugins/" not in done.stderr


def spawn_two(target: Any, *args: Any) -> dict[int, Any]:
    """Run `target(rank, port, results, *args)` in two gloo processes; what each put in `results`, by rank."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_child, args=(target, rank, port, results, *args)) for rank in range(2)]
    for process in processes:
        process.start()
    found = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(30)
    assert [p.exitcode for p in processes] == [0, 0]
    return found


def _child(target: Any, rank: int, port: int, results: "mp.Queue", *args: Any) -> None:
    """Run `target` in a spawned rank, then leave without the interpreter's teardown: gloo's threads can
    still be winding down then, and C++ aborts the process ("terminate called without an active
    exception") although every collective finished. The results are flushed first."""
    import traceback

    code = 0
    try:
        target(rank, port, results, *args)
    except BaseException:
        traceback.print_exc()
        code = 1
    results.close()
    results.join_thread()
    os._exit(code)


def _in_group(rank: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.setup("cpu")


def leave_group() -> None:
    """Both ranks finish their collectives before either tears the group down: a rank that exits while
    gloo still talks to it can abort the other at exit ("terminate called without an active exception")."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _disagree(rank: int, port: int, results: "mp.Queue") -> None:
    _in_group(rank, port)
    try:
        distributed.check_same("the resolved recipe", {"trainer": {"epochs": 3 + rank}})
    except faceauth.RecipeError as exc:
        results.put((rank, str(exc)))
    finally:
        leave_group()


def test_inconsistent_recipes_are_an_error_on_every_rank() -> None:
    messages = spawn_two(_disagree)
    assert all("the resolved recipe differs between ranks (rank 0 vs. rank 1)" in m for m in messages.values())


def _overflow_on_rank_1(rank: int, port: int, results: "mp.Queue") -> None:
    # A parameter DDP does not synchronise (as Partial FC's shard of the class centres is) and a real
    # gradient scaler (the CPU one: the loop's CUDA scaler is disabled without a GPU; both run this code).
    from faceauth.training.loop import unscale_gradients

    _in_group(rank, port)
    try:
        shard = torch.nn.Parameter(torch.ones(4))
        optimizer = torch.optim.SGD([shard], lr=0.5)
        scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
        seen = []
        for overflow_on_rank_1 in (True, False):
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(shard.sum()).backward()
            if overflow_on_rank_1 and rank == 1:
                shard.grad[0] = float("inf")
            unscale_gradients(scaler, optimizer, torch.device("cpu"))
            scaler.step(optimizer)
            scaler.update()
            seen.append((scaler.get_scale(), shard.detach().tolist()))
        results.put((rank, seen))
    finally:
        leave_group()


def test_an_overflow_on_one_rank_skips_the_step_and_halves_the_scale_on_every_rank() -> None:
    # Step 1 overflowed on rank 1 only: both skip it and halve the scale. Step 2 is finite: both take it.
    expected = [(4.0, [1.0] * 4), (4.0, [0.5] * 4)]
    assert spawn_two(_overflow_on_rank_1) == {0: expected, 1: expected}


def _flags(rank: int, port: int, results: "mp.Queue") -> None:
    _in_group(rank, port)
    try:
        device = torch.device("cpu")
        results.put((rank, [distributed.any_rank(rank == 1, device), distributed.any_rank(False, device)]))
    finally:
        leave_group()


def test_a_flag_raised_on_one_rank_is_seen_on_every_rank() -> None:
    # How a loss that is NaN on one process only stops every process with the same message.
    assert spawn_two(_flags) == {0: [True, False], 1: [True, False]}


def test_resuming_with_another_recipe_is_an_error(recipe: Path, tmp_path: Path) -> None:
    stopped = faceauth.run(recipe, ["run_name=base", "trainer.max_steps=1", "export=null"])
    with pytest.raises(faceauth.RecipeError, match=r"made with another recipe \(optimizer.lr: 0.05 in the checkpoint, 0.1"):
        faceauth.run(recipe, ["optimizer.lr=0.1"], resume=stopped.dir)
