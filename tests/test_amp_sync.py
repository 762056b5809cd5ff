"""Float16 steps under torchrun: a gradient overflow on one rank skips the step on every rank.

Two gloo processes each hold a parameter DDP does not synchronise (as Partial FC's shard of the
class centres is), with a real gradient scaler (the CPU one: the training loop's CUDA scaler is
disabled without a GPU, and both run the same code).
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def _two_steps(rank: int, port: int, results: mp.Queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from faceauth import distributed
    from faceauth.plugins.trainers.loop import unscale_gradients

    distributed.setup("cpu")
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
        torch.distributed.destroy_process_group()


def test_an_overflow_on_one_rank_skips_the_step_and_halves_the_scale_on_every_rank() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_two_steps, args=(rank, port, results)) for rank in range(2)]
    for process in processes:
        process.start()
    seen = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(30)
    assert [p.exitcode for p in processes] == [0, 0]
    # Step 1 overflowed on rank 1 only: both skip it and halve the scale. Step 2 is finite: both take it.
    expected = [(4.0, [1.0] * 4), (4.0, [0.5] * 4)]
    assert seen == {0: expected, 1: expected}
