"""RecordIO reading: faceauth's reader vs. reading the same file with no parsing, and index build cost.

Reading: a pack of `--records` face JPEGs (the 112x112 demo identities, cycled) is written with
`write_recordio` into a temporary folder (so it sits in the page cache). The ceiling is reading
the whole .rec sequentially in 1 MiB chunks and parsing nothing, counted as records/s = records /
time. faceauth's reader is timed on random-access payload reads in a shuffled order (what a
training epoch does), in file order, and with the JPEG decoded to a PIL image. Rounds alternate,
each figure is the median over rounds, and ratios are against the ceiling of the same run.

Index: packs of 100k, 300k and 1M tiny records; the first open (reading every record's label and
writing the cache) and a cached open, each timed, and its peak Python-heap memory (tracemalloc,
which counts numpy's arrays) measured in a separate pass.

    python benchmarks/bench_recordio.py [--records 30000] [--rounds 3] [--index-sizes 100000,300000,1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from common import load_average, table

CHUNK = 1 << 20


def demo_jpegs() -> list[bytes]:
    from faceauth.plugins.datasets.identity_demo import DemoIdentitiesOptions, demo_identities_root

    root = demo_identities_root(DemoIdentitiesOptions())
    return [p.read_bytes() for p in sorted(root.glob("*/*.jpg"))]


def write_pack(folder: Path, records: int, payloads: list[bytes], per_identity: int = 50) -> Path:
    from faceauth.plugins.datasets.recordio import write_recordio

    return write_recordio(folder / "train", ((i // per_identity, payloads[i % len(payloads)])
                                             for i in range(records)))


# --- reading ------------------------------------------------------------------------------------


def raw_read(rec: Path, records: int) -> float:
    """The ceiling: the whole file in 1 MiB chunks (f.read), nothing parsed; records/s."""
    start = time.perf_counter()
    with open(rec, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass
    return records / (time.perf_counter() - start)


def raw_readinto(rec: Path, records: int) -> float:
    """The same into one reused buffer (no allocation per chunk); records/s."""
    buf = bytearray(CHUNK)
    start = time.perf_counter()
    with open(rec, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return records / (time.perf_counter() - start)


def reader_bytes(train, order: list[int]) -> float:
    read = train.read_bytes
    start = time.perf_counter()
    for i in order:
        read(i)
    return len(order) / (time.perf_counter() - start)


def bare_slices(rec: Path, spans: list[tuple[int, int]]) -> float:
    """A floor for any reader returning bytes: slice known spans out of a map, no header, no checks."""
    import mmap

    with open(rec, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        view[0:1]
        start = time.perf_counter()
        for a, b in spans:
            view[a:b]
        seconds = time.perf_counter() - start
    return len(spans) / seconds


def reader_decoded(train, order: list[int]) -> float:
    start = time.perf_counter()
    for i in order:
        train[i]
    return len(order) / (time.perf_counter() - start)


def bench_reading(folder: Path, records: int, rounds: int, decode: int, payloads: list[bytes]
                  ) -> list[tuple[str, ...]]:
    from faceauth.plugins.datasets.recordio import load_recordio

    rec = write_pack(folder, records, payloads)
    train = load_recordio(folder).train
    assert len(train) == records
    shuffled = np.random.default_rng(0).permutation(records).tolist()
    in_order = list(range(records))
    spans = [(int(train.offsets[i]) + 32, int(train.offsets[i]) + 32 + len(payloads[i % len(payloads)]))
             for i in shuffled]
    runs: dict[str, list[float]] = {k: [] for k in ("raw", "into", "bare", "shuffled", "ordered", "decoded")}
    raw_read(rec, records)                     # warm the page cache and the reader's per-process state
    reader_bytes(train, in_order[:1000])
    for _ in range(rounds):
        runs["raw"].append(raw_read(rec, records))
        runs["into"].append(raw_readinto(rec, records))
        runs["bare"].append(bare_slices(rec, spans))
        runs["shuffled"].append(reader_bytes(train, shuffled))
        runs["ordered"].append(reader_bytes(train, in_order))
        runs["decoded"].append(reader_decoded(train, shuffled[:decode]))
    median = {k: statistics.median(v) for k, v in runs.items()}
    ceiling = median["raw"]
    size = rec.stat().st_size

    def row(name: str, key: str) -> tuple[str, ...]:
        return (name, f"{median[key]:,.0f}", f"{median[key] / ceiling:.2f}",
                " ".join(f"{v / 1e3:,.0f}k" for v in runs[key]))

    print(f"{records:,} records, {size / 2**20:.1f} MiB ({size / records:,.0f} bytes/record), "
          f"{len(payloads)} distinct demo JPEGs; decode timed on {decode:,} shuffled records")
    return [("read", "records/s (median)", "vs ceiling", "rounds"),
            row("ceiling: sequential f.read, 1 MiB chunks, no parsing", "raw"),
            row("sequential f.readinto, 1 MiB chunks, no parsing", "into"),
            row("floor: bare mmap slice of each known image span, shuffled", "bare"),
            row("faceauth read_bytes, shuffled (random access)", "shuffled"),
            row("faceauth read_bytes, file order", "ordered"),
            row("faceauth dataset[i]: read + JPEG decode, shuffled", "decoded")]


# --- index --------------------------------------------------------------------------------------


def _open(rec: Path, traced: bool) -> tuple[float, float, bool]:
    """(seconds, peak MiB or nan, from cache) of one load_index."""
    from faceauth.plugins.datasets.recordio import load_index

    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    index = load_index(rec)
    seconds = time.perf_counter() - start
    peak = float("nan")
    if traced:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return seconds, peak, index.from_cache


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return buf.getvalue()


def bench_index(folder: Path, sizes: list[int]) -> list[tuple[str, ...]]:
    rows = [("records", ".rec MiB", "first open s", "first open peak MiB", "cached open s",
             "cached open peak MiB")]
    # Indexing reads labels, so payloads can be tiny; the first is a readable 1x1 PNG, because the
    # writer tries to open images until one gives it the `property` image size.
    tiny = [_tiny_png()] + [bytes([i]) * 16 for i in range(6)]
    for records in sizes:
        pack = folder / f"index-{records}"
        rec = write_pack(pack, records, tiny)
        cache = folder / f"cache-{records}"
        os.environ["FACEAUTH_CACHE"] = str(cache)
        figures = []
        for traced in (False, True):
            shutil.rmtree(cache, ignore_errors=True)
            first = _open(rec, traced)
            cached = _open(rec, traced)
            assert not first[2] and cached[2]
            figures.append((first, cached))
        (first_t, cached_t), (first_m, cached_m) = figures
        rows.append((f"{records:,}", f"{rec.stat().st_size / 2**20:.1f}", f"{first_t[0]:.3f}",
                     f"{first_m[1]:.1f}", f"{cached_t[0]:.4f}", f"{cached_m[1]:.1f}"))
        shutil.rmtree(pack)
        shutil.rmtree(cache, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode", type=int, default=3_000, help="records decoded per round")
    parser.add_argument("--index-sizes", default="100000,300000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.index_sizes.split(",") if s]
    payloads = demo_jpegs()  # rendered once into the usual cache, before anything is timed
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FACEAUTH_CACHE"] = str(Path(tmp) / "cache")  # the packs' indexes stay in tmp
        reading = bench_reading(Path(tmp) / "read", args.records, args.rounds, args.decode, payloads)
        print(table(reading))
        if sizes:
            print()
            print(table(bench_index(Path(tmp), sizes)))
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, median of {args.rounds} rounds, "
          f"{load_before} before and {load_average()} after")
    print(f"command: python benchmarks/bench_recordio.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
