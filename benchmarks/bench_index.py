"""Index build cost as a dataset grows: an identity-folder tree and a RecordIO pack, first and cached builds.

Identity tree: one tree grown through `--tree-sizes` files, identity folders of 20 to 50 files
(seeded, like real face sets: ``n000123/0007_01.jpg``). Every file is a hard link to one 3-byte
file: indexing lists folders and never opens an image, and links are created ~20x faster than
files on a busy disk. After each growth the folders are dated back an hour, as for data written
long ago (the cache does not trust a folder changed in the last 2 s). The build timed is
`index_identity_folder(root)`.

RecordIO: packs of `--rec-sizes` records with tiny payloads (50 per identity), written with
`write_recordio`; the build timed is `load_index(rec)` (its label pass reads 36 bytes a record).

For each size: the first build (listing or label pass, then writing the cache; the cache is
deleted before each repeat) and a cached build, timed (median of `--repeats`); their peak
Python-heap memory (tracemalloc, which counts numpy's arrays; a separate, untimed pass); and
their peak resident-memory growth (VmHWM after minus VmRSS before, the high-water mark reset
through /proc/self/clear_refs). Every measurement runs in a freshly forked process, so memory one
build freed never serves the next. Data and caches live in a temporary folder, deleted at the end.
The disk is warm: the data were just written, so a cold first build is slower (the cached build
then stats one folder per identity instead of listing it). Linux only (fork, /proc).

    python benchmarks/bench_index.py [--tree-sizes 20000,50000,200000] [--rec-sizes 100000,300000,1000000]
                                     [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from common import table

# --- measuring a build in a fresh process --------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(build: Callable[[], Any], clear: Callable[[], None], repeats: int, traced: bool,
             warm: Callable[[], Any]) -> dict[str, Any]:
    """Run `build` `repeats` times in this (forked) process; seconds, peak RSS growth, tracemalloc peak.

    `warm` (a build of a tiny dataset, uncached then cached) first faults in the code pages a forked
    child maps afresh, which would otherwise add a few MiB to every RSS growth.
    """
    sys.stderr = open(os.devnull, "w")  # no progress bars from the builds  # noqa: SIM115
    warm()
    gc.collect()
    resettable = _reset_peak_rss()
    rss0 = _status_kib("VmRSS")
    seconds, peak, result = [], float("nan"), None
    for _ in range(1 if traced else repeats):
        clear()
        result = None
        if traced:
            tracemalloc.start()
        start = time.perf_counter()
        result = build()
        seconds.append(time.perf_counter() - start)
        if traced:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    growth = (_status_kib("VmHWM") - rss0) / 1024 if resettable else float("nan")
    return {"seconds": seconds, "peak": peak, "rss": growth, "from_cache": bool(result.from_cache),
            "nbytes": sum(v.nbytes for v in attrs.asdict(result, recurse=False).values()
                          if isinstance(v, np.ndarray))}


def _child(conn: Any, job: Callable[[], Any]) -> None:
    try:
        conn.send(("ok", job()))
    except Exception as exc:  # noqa: BLE001  (reported by the parent)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def in_fresh_process(job: Callable[[], Any]) -> Any:
    """`job()` in a forked child (the parent has imported everything), its result sent back."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, job))
    process.start()
    send.close()
    status, value = receive.recv()
    process.join()
    if status != "ok":
        raise RuntimeError(value)
    return value


def measure_both(build: Callable[[], Any], cache: Path, repeats: int, warm: Callable[[], Any]
                 ) -> dict[str, dict[str, Any]]:
    """First builds (cache deleted before each), then cached builds: timed, then traced."""
    def clear() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    out = {}
    for traced in (False, True):
        first = in_fresh_process(partial(_measure, build, clear, repeats, traced, warm))
        cached = in_fresh_process(partial(_measure, build, lambda: None, repeats, traced, warm))
        if first["from_cache"] or not cached["from_cache"]:
            raise RuntimeError(f"expected an uncached then a cached build, got {first['from_cache']}, "
                               f"{cached['from_cache']}")
        out["traced" if traced else "timed"] = {"first": first, "cached": cached}
    return out


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _row(name: str, size: int, figures: dict[str, dict[str, Any]], cache: Path) -> tuple[str, ...]:
    timed, traced = figures["timed"], figures["traced"]
    first_s = statistics.median(timed["first"]["seconds"])
    cached_s = statistics.median(timed["cached"]["seconds"])
    rss = timed["first"]["rss"]   # the timed pass's: tracemalloc's own bookkeeping is not the build's
    return (name, f"{size:,}", f"{first_s:.3f}", f"{first_s / size * 1e6:.2f}", f"{cached_s:.4f}",
            f"{traced['first']['peak']:.1f}", f"{traced['cached']['peak']:.1f}", f"{rss:.1f}",
            f"{timed['cached']['rss']:.1f}", f"{timed['first']['nbytes'] / size:.1f}",
            f"{_folder_bytes(cache) / 2**20:.1f}",
            " ".join(f"{s:.2f}" for s in timed["first"]["seconds"]))


# --- identity tree -------------------------------------------------------------------------------


class Tree:
    """An identity-folder tree grown in place: hard links to a few tiny files."""

    LINKS = 60_000  # per source file: ext4 allows 65,000 links to a file

    def __init__(self, root: Path, seed: int = 0):
        self.root = root
        self.root.mkdir(parents=True)
        self.rng = np.random.default_rng(seed)
        self.files = 0
        self.identities = 0

    def _place(self, path: str) -> None:
        source = self.root.parent / f"source-{self.files // self.LINKS}.jpg"
        if self.files % self.LINKS == 0:
            source.write_bytes(b"\xff\xd8\xff")
        try:
            os.link(source, path)
        except OSError:  # a file system without hard links: a real (tiny) file
            with open(path, "xb") as f:
                f.write(b"\xff\xd8\xff")

    def grow(self, files: int) -> None:
        while self.files < files:
            count = min(int(self.rng.integers(20, 51)), files - self.files)
            folder = self.root / f"n{self.identities:06d}"
            folder.mkdir()
            for k in range(count):
                self._place(os.path.join(folder, f"{k:04d}_01.jpg"))
                self.files += 1
            self.identities += 1
        past = time.time() - 3600
        with os.scandir(self.root) as entries:
            for entry in entries:
                os.utime(entry.path, (past, past))
        os.utime(self.root, (past, past))


def bench_tree(work: Path, sizes: list[int], repeats: int) -> list[tuple[str, ...]]:
    from faceauth.plugins.datasets.identity import index_identity_folder

    tree = Tree(work / "tree" / "faces")
    cache = work / "tree-cache"
    os.environ["FACEAUTH_CACHE"] = str(cache)
    tiny = Tree(work / "tiny-tree" / "faces")
    tiny.grow(60)

    def warm() -> None:
        for _ in range(2):
            index_identity_folder(tiny.root)

    rows = []
    for size in sizes:
        start = time.perf_counter()
        tree.grow(size)
        made = time.perf_counter() - start
        start = time.perf_counter()
        figures = measure_both(partial(index_identity_folder, tree.root), cache, repeats, warm)
        rows.append(_row("identity tree", size, figures, cache))
        print(f"  identity tree of {size:,} files, {tree.identities:,} identities: generated in {made:.1f} s, "
              f"measured in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    shutil.rmtree(work / "tree")
    print(f"  identity trees deleted in {time.perf_counter() - start:.1f} s", flush=True)
    shutil.rmtree(work / "tiny-tree")
    shutil.rmtree(cache, ignore_errors=True)
    return rows


# --- RecordIO ------------------------------------------------------------------------------------


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return buf.getvalue()


def _write_pack(folder: Path, records: int, per_identity: int = 50) -> Path:
    from faceauth.plugins.datasets.recordio import write_recordio

    # The first payload is a readable 1x1 PNG: the writer opens images until one gives it the
    # `property` image size. The rest are 16 bytes: indexing reads labels, never the image.
    payloads = [_tiny_png()] + [bytes([i]) * 16 for i in range(6)]
    return write_recordio(folder / "train", ((i // per_identity, payloads[i % len(payloads)])
                                             for i in range(records)))


def bench_recordio(work: Path, sizes: list[int], repeats: int) -> list[tuple[str, ...]]:
    from faceauth.plugins.datasets.recordio import load_index

    tiny = _write_pack(work / "tiny-pack", 100)

    def warm() -> None:
        for _ in range(2):
            load_index(tiny)

    rows = []
    for size in sizes:
        pack = work / f"pack-{size}"
        cache = work / f"pack-cache-{size}"
        os.environ["FACEAUTH_CACHE"] = str(cache)
        start = time.perf_counter()
        rec = in_fresh_process(partial(_write_pack, pack, size))  # its Python garbage stays in the child
        made = time.perf_counter() - start
        start = time.perf_counter()
        figures = measure_both(partial(load_index, rec), cache, repeats, warm)
        rows.append(_row("RecordIO", size, figures, cache))
        print(f"  RecordIO pack of {size:,} records, {rec.stat().st_size / 2**20:.1f} MiB: written in {made:.1f} s, "
              f"measured in {time.perf_counter() - start:.1f} s", flush=True)
        shutil.rmtree(pack)
        shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(work / "tiny-pack")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree-sizes", default="20000,50000,200000", help="files; '' skips the tree")
    parser.add_argument("--rec-sizes", default="100000,300000,1000000", help="records; '' skips RecordIO")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tmp", default=None, help="where to generate the data (default: the system's temp)")
    args = parser.parse_args()
    tree_sizes = sorted(int(s) for s in args.tree_sizes.split(",") if s)
    rec_sizes = sorted(int(s) for s in args.rec_sizes.split(",") if s)
    for module in ("identity", "recordio"):  # imported once, before any fork
        importlib.import_module(f"faceauth.plugins.datasets.{module}")

    rows = [("data", "files/records", "first build s", "first µs/item", "cached build s",
             "first peak MiB", "cached peak MiB", "first RSS+ MiB", "cached RSS+ MiB", "index B/item",
             "cache MiB", "first build runs s")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=args.tmp) as tmp:
        if tree_sizes:
            rows += bench_tree(Path(tmp), tree_sizes, args.repeats)
        if rec_sizes:
            rows += bench_recordio(Path(tmp), rec_sizes, args.repeats)
    print(table(rows))
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    print(f"median of {args.repeats} builds (each in a fresh process); peak MiB: tracemalloc; RSS+: resident "
          f"growth; {os.cpu_count()} CPUs, load average {load[0]:.1f} at the end; python "
          f"{'.'.join(map(str, sys.version_info[:3]))}, numpy {np.__version__}; {time.perf_counter() - started:.0f} s")
    print(f"command: python benchmarks/bench_index.py --tree-sizes {args.tree_sizes} --rec-sizes {args.rec_sizes} "
          f"--repeats {args.repeats}")


if __name__ == "__main__":
    main()
