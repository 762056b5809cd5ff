"""Several processes, one run: PyTorch's own distributed engine under ``torchrun``.

``torchrun --nproc_per_node=N -m faceauth RECIPE`` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set; `setup()` joins them into one process group whose backend follows the run's device
(gloo for a CPU run on any host, NCCL when each process has a GPU of its own). Every
rank trains on its share of each global batch and DDP averages the gradients; only rank 0 writes
logs, checkpoints, metrics and the exported model. Without torchrun, world size is 1 and every
function here is a no-op.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
from typing import Any

import torch
import torch.distributed as dist

from faceauth.errors import RecipeError

__all__ = ["setup", "backend_for", "active", "rank", "world_size", "is_main", "barrier", "broadcast", "gather", "check_same",
           "device", "split_batch", "agree_on_overflow", "any_rank"]


def setup(device_setting: str = "auto") -> None:
    """Join the process group torchrun describes (once); nothing when not launched by torchrun.

    `device_setting` is the recipe's ``device``: the backend is `backend_for` it.
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    backend = backend_for(device_setting, torch.cuda.device_count(), local_processes)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    atexit.register(_leave)


def _leave() -> None:
    """Leave the process group before the interpreter tears down: gloo's threads, still alive at
    finalisation, made a finished rank abort ("terminate called without an active exception", SIGABRT)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def backend_for(device_setting: str, gpus: int, local_processes: int) -> str:
    """The process-group backend for a run on `device_setting` with `gpus` visible GPUs and
    `local_processes` processes on this machine: gloo for a CPU run (whatever the host has), NCCL
    when every process gets a GPU of its own; a RecipeError when the processes would share GPUs."""
    wants_cuda = device_setting.startswith("cuda") or (device_setting == "auto" and gpus > 0)
    if not wants_cuda:
        return "gloo"
    if gpus == 0:
        raise RecipeError(f"device: {device_setting!r} but torch sees no CUDA device; use device=cpu or auto")
    if local_processes > gpus:
        raise RecipeError(f"device: {device_setting!r}: {local_processes} processes on this machine but {gpus} GPU(s); "
                          f"NCCL needs a GPU per process: start at most {gpus} (torchrun --nproc_per_node={gpus}) "
                          f"or set device=cpu to train on the CPU with gloo")
    return "nccl"


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def device(setting: str) -> torch.device:
    """The device of this process (the recipe's ``device``): ``auto`` is CUDA when present; with
    CUDA and no index, under torchrun, the GPU of this process's local rank."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"device: {setting!r} but torch sees no CUDA device (torch {torch.__version__}); "
                          f"use device=cpu or auto")
    if setting == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    try:
        chosen = torch.device(setting)
    except RuntimeError:
        raise RecipeError(f"device: expected auto, cpu, cuda or cuda:N, got {setting[:100]!r}") from None
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise RecipeError(f"device: {setting!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return chosen


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value`, on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (one small all-reduce; `device` as below)."""
    if not active():
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def agree_on_overflow(found_inf: list[torch.Tensor], device: torch.device) -> None:
    """Set each flag of `found_inf` (1.0 where a gradient scaler found an inf or NaN gradient) to the
    largest flag of any rank, in place, so every rank skips a float16 step together.

    DDP averages most gradients, and an inf on one rank reaches all of them; parameters DDP leaves
    alone (Partial FC's shard of the class centres) differ between ranks. Without agreement one rank
    would skip a step the others take and halve its loss scale alone, and the ranks would drift apart.
    `device` holds the reduced flag: this rank's GPU under NCCL, the CPU under gloo.
    """
    if not active():
        return
    flag = torch.zeros((), dtype=torch.float32, device=device)
    for f in found_inf:
        flag = torch.maximum(flag, f.to(device))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    for f in found_inf:
        f.copy_(flag)


def check_same(what: str, value: Any) -> None:
    """A RecipeError on every rank when ranks disagree about `value` (e.g. the resolved recipe)."""
    if not active():
        return
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    digests = gather(digest)
    if len(set(digests)) > 1:
        differing = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RecipeError(f"{what} differs between ranks (rank 0 vs. rank {differing[0]}): every process "
                          f"must be started with the same recipe and overrides")


def split_batch(global_batch: int) -> int:
    """The per-process batch for a global batch; a RecipeError when the world size does not divide it."""
    world = world_size()
    if global_batch % world:
        raise RecipeError(f"trainer.batch_size={global_batch} is not divisible by the {world} processes; "
                          f"the batch size is the global batch over all processes")
    return global_batch // world
