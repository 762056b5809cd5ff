"""IJB-C 1:1 template verification: pair scoring, the ROC table, embedding loose crops, and a whole protocol.

``pairs``: faceauth's chunked pair scoring (`template_pair_scores`) at the real IJB-C size (23,124
templates of 512-d features, 15,658,489 pairs) against a plain numpy loop (one ``np.dot`` per pair)
over the first ``--loop-pairs`` of the same pairs: pairs/s, and the peak of numpy's allocations
(tracemalloc) for each; then the ROC table (scikit-learn's ``roc_curve``) of all the scores.

``embed``: images/s of the embedding step (decode, align/resize, eval transform, the backbone on
the image and its mirror) for IJB loose crops with their five-point alignment against the
identity-folder path reading the same faces already aligned (112x112 JPEGs), same backbone, batch
and workers; and each source's data path alone (no backbone).

``release ROOT``: a whole protocol on a generated release (``make_ijb.py``): reading and checking
the meta files, embedding the faces (timed on the first ``--embed-faces`` and scaled to all: on a
loaded 2-core CPU a backbone embeds a few faces per second), pooling, scoring, the ROC table;
seconds per stage, the process's peak RSS, and the full-size figures extrapolated by the stage's
unit (faces or pairs).

    python benchmarks/bench_ijb.py pairs [--loop-pairs 300000]
    python benchmarks/bench_ijb.py embed [--images 384] [--backbone mobilefacenet]
    python benchmarks/bench_ijb.py release /tmp/ijbc_20 [--backbone mobilefacenet] [--scale 0.05] [--embed-faces 1024]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from common import load_average, table

FULL_TEMPLATES, FULL_PAIRS, FULL_GENUINE, FULL_FACES = 23_124, 15_658_489, 19_557, 469_375


def peak_mib(fn):
    """(result, seconds, peak MiB of numpy/Python allocations during `fn`)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def bench_pairs(loop_pairs: int, dim: int) -> None:
    from faceauth import metrics as fa_metrics
    from faceauth.plugins.trainers.templates import template_pair_scores

    rng = np.random.default_rng(0)
    features = rng.normal(size=(FULL_TEMPLATES, dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    pairs = rng.integers(0, FULL_TEMPLATES, size=(FULL_PAIRS, 2))
    is_same = np.zeros(FULL_PAIRS, dtype=bool)
    is_same[rng.choice(FULL_PAIRS, FULL_GENUINE, replace=False)] = True

    scores, chunked_s, chunked_mib = peak_mib(lambda: template_pair_scores(features, pairs))

    def plain_loop():
        out = np.empty(loop_pairs, dtype=np.float32)
        for i, (a, b) in enumerate(pairs[:loop_pairs]):
            out[i] = np.dot(features[a], features[b])
        return out

    looped, loop_s, loop_mib = peak_mib(plain_loop)
    assert np.allclose(looped, scores[:loop_pairs], atol=1e-5)
    roc, roc_s, roc_mib = peak_mib(lambda: fa_metrics.roc_table(scores, is_same))
    chunked_rate, loop_rate = FULL_PAIRS / chunked_s, loop_pairs / loop_s
    print(f"pair scoring, {FULL_TEMPLATES} templates x {dim}-d, {load_average()}")
    print(table([("method", "pairs", "seconds", "pairs/s", "peak MiB", "ratio"),
                 ("faceauth blocks", f"{FULL_PAIRS:,}", f"{chunked_s:.2f}", f"{chunked_rate:,.0f}",
                  f"{chunked_mib:.0f}", f"{chunked_rate / loop_rate:.1f}x"),
                 ("numpy loop", f"{loop_pairs:,}", f"{loop_s:.2f}", f"{loop_rate:,.0f}", f"{loop_mib:.0f}", "1.0x"),
                 ("ROC table", f"{FULL_PAIRS:,}", f"{roc_s:.2f}", f"{FULL_PAIRS / roc_s:,.0f}", f"{roc_mib:.0f}",
                  "-")]))
    print("(peak MiB: allocations made during the step; the inputs, pairs "
          f"{pairs.nbytes / 2**20:.0f} MiB and scores {scores.nbytes / 2**20:.0f} MiB, come on top)")
    print(f"tar_at_far_1e-4 of random features: {roc['tar_at_far_1e-4']:.4f} (sanity: about 1e-4)")


def _trainer(backbone: str, batch: int, workers: int):
    from faceauth.config.build import build_component
    from faceauth.config.recipe import load_recipe
    from faceauth.config.registry import load_registry
    from faceauth.training.run import Run

    registry = load_registry()
    recipe = load_recipe(None, registry=registry, base={
        "data": {"name": "demo_identities"}, "backbone": {"name": backbone},  # the recognition backbones take 112x112
        "loss": {"name": "arcface"},
        "trainer": {"name": "embedding", "batch_size": batch, "num_workers": workers, "progress": False}})
    run = Run(recipe, registry, directory=Path("."))
    model = run.build("backbone").eval()
    return build_component(registry, recipe, "trainer"), model


def bench_embed(images: int, backbone: str, batch: int, workers: int) -> None:
    from make_ijb import make_ijb

    from faceauth.plugins.datasets.identity import IdentityImages, index_identity_folder
    from faceauth.plugins.datasets.ijb import LooseCrops
    from faceauth.training.loaders import image_loader
    from faceauth.training.transforms import eval_transform

    trainer, model = _trainer(backbone, batch, workers)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "ijb"
        make_ijb(root, images / FULL_FACES, 250, 0, with_pairs=False)
        rows = np.loadtxt(root / "meta" / "ijbc_name_5pts_score.txt", dtype=str, ndmin=2)
        crops = LooseCrops(root / "loose_crop", np.char.encode(rows[:, 0]),
                           rows[:, 1:11].astype(np.float32).reshape(-1, 5, 2))
        aligned = Path(folder) / "aligned"
        for i in range(len(crops)):  # the same faces, aligned once, as an identity-folder tree
            (aligned / f"id{i % 50:03d}").mkdir(parents=True, exist_ok=True)
            crops[i]["image"].save(aligned / f"id{i % 50:03d}" / f"{i}.jpg", quality=95)
        index = index_identity_folder(aligned, use_cache=False)
        folders = IdentityImages(index, np.arange(len(index.owner)), index.owner)
        rows = [("source", "images", "data only img/s", f"embed {backbone} + flip img/s")]
        rates = {}
        for name, dataset in (("IJB loose crops + 5-point alignment", crops), ("identity folder, aligned", folders)):
            loader = image_loader(dataset, eval_transform(model.preprocess), batch_size=batch, num_workers=workers,
                                  seed=0, shuffle=False)
            start = time.perf_counter()
            for _ in loader:
                pass
            data_rate = len(dataset) / (time.perf_counter() - start)
            embed_fn = trainer.torch_scorer(model)
            trainer.embed(embed_fn, torch.utils.data.Subset(dataset, range(batch)), model.preprocess, 0,
                          torch.device("cpu"))  # warm-up
            start = time.perf_counter()
            trainer.embed(embed_fn, dataset, model.preprocess, 0, torch.device("cpu"))
            rates[name] = (data_rate, len(dataset) / (time.perf_counter() - start))
            rows.append((name, str(len(dataset)), f"{rates[name][0]:.0f}", f"{rates[name][1]:.1f}"))
    (crop_data, crop_embed), (folder_data, folder_embed) = rates.values()
    rows.append(("ratio loose / folder", "", f"{crop_data / folder_data:.2f}x", f"{crop_embed / folder_embed:.2f}x"))
    print(f"embedding, batch {batch}, {workers} workers, {torch.get_num_threads()} threads, {load_average()}")
    print(table(rows))


def bench_release(root: Path, backbone: str, batch: int, workers: int, scale: float, embed_faces: int) -> None:
    from faceauth.plugins.datasets.ijb import load_ijb
    from faceauth.plugins.trainers.templates import template_metrics

    trainer, model = _trainer(backbone, batch, workers)
    load_before = load_average()
    fixed_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # interpreter, torch, the model
    stages = []
    tracemalloc.start()
    start = time.perf_counter()
    protocol = load_ijb(root).test
    kept_mib, read_peak_mib = (n / 2**20 for n in tracemalloc.get_traced_memory())
    tracemalloc.stop()
    stages.append(("read + check meta files", time.perf_counter() - start, "faces, pairs"))
    faces = len(protocol.images)
    measured = min(embed_faces, faces) if embed_faces > 0 else faces
    subset = torch.utils.data.Subset(protocol.images, range(measured))
    start = time.perf_counter()
    head = trainer.embed(trainer.torch_scorer(model), subset, model.preprocess, 0, torch.device("cpu"))
    embed_s = (time.perf_counter() - start) * faces / measured
    stages.append((f"embed {faces:,} faces ({backbone} + flip; timed on {measured:,})", embed_s, "faces"))
    # Pooling and scoring cost does not depend on the values: faces not embedded get random ones.
    embeddings = np.random.default_rng(0).normal(size=(faces, head.shape[1])).astype(np.float32)
    embeddings[:measured] = head
    (figures, scores), seconds, numpy_peak = peak_mib(lambda: template_metrics(embeddings, protocol))
    stages.append((f"pool + score {len(scores):,} pairs + ROC table", seconds, "pairs"))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    rows = [("stage", "seconds", f"extrapolated x{1 / scale:.0f}")]
    for name, seconds, unit in stages:
        rows.append((name, f"{seconds:.1f}", f"{seconds / scale:.0f} s (by {unit})"))
    total = sum(s for _, s, _ in stages)
    rows.append(("total", f"{total:.1f}", f"{total / scale / 60:.1f} min"))
    print(f"{root}: {faces:,} faces, {len(protocol.template_ids):,} templates, {len(protocol.pairs):,} pairs; "
          f"{torch.get_num_threads()} threads, {workers} workers; {load_before} before, {load_average()} after")
    print(table(rows))
    # What grows with the protocol (numpy and Python allocations, traced) scales by 1/scale; the rest
    # (interpreter, torch, the model, DataLoader batches) does not. The embeddings exist twice while
    # trainer.embed concatenates its batches.
    embeddings_mib = embeddings.nbytes / 2**20
    grown = max(read_peak_mib, kept_mib + 2 * embeddings_mib, kept_mib + embeddings_mib + numpy_peak)
    print(f"peak RSS {peak_rss:.0f} MiB ({fixed_rss:.0f} MiB before the protocol was read); protocol data "
          f"traced: meta kept {kept_mib:.0f} MiB (reading peaked at {read_peak_mib:.0f}), embeddings "
          f"{embeddings_mib:.0f} MiB, pooling + scoring + ROC peak {numpy_peak:.0f} MiB")
    print(f"extrapolated x{1 / scale:.0f}: peak RSS about {fixed_rss + grown / scale:.0f} MiB "
          f"({fixed_rss:.0f} fixed + {grown / scale:.0f} grown)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    pairs = sub.add_parser("pairs")
    pairs.add_argument("--loop-pairs", type=int, default=300_000)
    pairs.add_argument("--dim", type=int, default=512)
    for name in ("embed", "release"):
        p = sub.add_parser(name)
        p.add_argument("--backbone", default="mobilefacenet")
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--workers", type=int, default=2)
    sub.choices["embed"].add_argument("--images", type=int, default=384)
    sub.choices["release"].add_argument("root", type=Path)
    sub.choices["release"].add_argument("--scale", type=float, default=0.05)
    sub.choices["release"].add_argument("--embed-faces", type=int, default=1024,
                                        help="embed this many faces and scale the time to all (0: all)")
    args = parser.parse_args()
    if args.what == "pairs":
        bench_pairs(args.loop_pairs, args.dim)
    elif args.what == "embed":
        bench_embed(args.images, args.backbone, args.batch, args.workers)
    else:
        bench_release(args.root, args.backbone, args.batch, args.workers, args.scale, args.embed_faces)


if __name__ == "__main__":
    main()
