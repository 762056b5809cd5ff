"""GPU training throughput of IResNet-50 + ArcFace at batch 128 in mixed precision (samples/s).

Ready for a GPU machine; on a CPU it refuses unless --allow-cpu (then it only checks the script
runs, with a tiny batch). Inputs are synthetic tensors already on the device, so the figure is the
model's training step (forward, margin loss, backward, SGD) — the ceiling a data pipeline must feed.
For scale, insightface reports about 5,400 samples/s for this model on 8 A100s (about 675 per GPU).

    python benchmarks/bench_gpu.py [--batch 128] [--steps 50] [--dtype bfloat16|float16] [--channels-last] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch

from faceauth.registry import load_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--allow-cpu", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device: run this on a GPU machine (or --allow-cpu to check the script)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch if device.type == "cuda" else 4
    registry = load_registry()
    backbone_record, loss_record = registry.get("backbone", "iresnet50"), registry.get("loss", "arcface")
    model = backbone_record.build(backbone_record.options()).to(device)
    head = loss_record.build(loss_record.options(), num_classes=args.classes, num_features=512).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    dtype = getattr(torch, args.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    x = torch.randn(batch, 3, 112, 112, device=device).to(memory_format=memory_format)
    y = torch.randint(0, args.classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype):
            loss = head(step_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(5 if device.type == "cuda" else 1):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    steps = args.steps if device.type == "cuda" else 2
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"iresnet50 + arcface ({args.classes} classes), batch {batch}, {args.dtype}, "
          f"channels_last={args.channels_last}, compile={args.compile}, on {name}: "
          f"{batch * steps / elapsed:.1f} samples/s")


if __name__ == "__main__":
    main()
