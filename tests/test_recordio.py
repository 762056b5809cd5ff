"""Tests for the insightface RecordIO reader and writer (faceauth.plugins.datasets.recordio)."""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from faceauth.errors import DataError
from faceauth.plugins.datasets import recordio
from faceauth.plugins.datasets.pairs import write_bin
from faceauth.plugins.datasets.recordio import MAGIC, RecordIOOptions, build_recordio, load_index, write_recordio
from faceauth.schema import structure

MAGIC_BYTES = struct.pack("<I", MAGIC)
CHUNKED = 6            # the sample whose payload holds the magic word (twice), so it is written in 3 chunks


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 10, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _with_magic(jpeg: bytes) -> bytes:
    """JPEG bytes followed (after EOI, where decoders stop) by the magic word at 4-byte-aligned payload offsets."""
    pad = -(24 + len(jpeg)) % 4           # the payload starts with the 24-byte IRHeader
    return jpeg + b"\0" * pad + MAGIC_BYTES + b"tail" + MAGIC_BYTES + b"end"


def _samples() -> list[tuple[object, bytes]]:
    out: list[tuple[object, bytes]] = []
    for i in range(12):
        label, data = i // 3, _jpeg(20 * i)
        if i == CHUNKED:
            data = _with_magic(data)
        if i == 9:
            label = [3.0, 0.5]            # a multi-label record (flag 2): the identity is the first
        out.append((label, data))
    return out


def _frames(path) -> list[tuple[int, int, int]]:
    """(offset, cflag, length) of every chunk in a .rec file, read independently of the reader."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == MAGIC
        out.append((pos, lrec >> 29, lrec & ((1 << 29) - 1)))
        pos += 8 + ((lrec & ((1 << 29) - 1)) + 3) // 4 * 4
    return out


@pytest.fixture
def pack(tmp_path):
    root = tmp_path / "ms1m"
    write_recordio(root / "train", _samples())
    return root


def _offset_of(root, key: int) -> int:
    lines = (root / "train.idx").read_text().split("\n")
    return dict(tuple(map(int, line.split("\t"))) for line in lines if line)[key]


def test_round_trip_with_header_record_and_chunked_payload(pack):
    samples = _samples()
    assert (pack / "property").read_text() == "4,12,10"
    cflags = [f[1] for f in _frames(pack / "train.rec")]
    assert cflags.count(1) == 1 and cflags.count(2) == 1 and cflags.count(3) == 1   # 3 chunks, one record
    index = load_index(pack / "train.rec")
    assert index.header == (13, 17)                      # images are keys 1..12, identity ranges 13..16
    assert index.keys.tolist() == list(range(1, 13))
    assert index.labels.tolist() == [i // 3 for i in range(12)]

    splits = build_recordio(structure(RecordIOOptions, {"root": str(pack)}, "data"))
    train = splits.train
    assert splits.classes == ("0", "1", "2", "3") and splits.info["task"] == "identity"
    assert splits.info["num_identities"] == 4 and splits.val is None and splits.test is None
    for i, (_, data) in enumerate(samples):
        assert train.read_bytes(i) == data
    item = train[CHUNKED]
    assert item["label"] == 2 and item["image"].size == (10, 12) and item["image"].mode == "RGB"
    assert abs(int(np.asarray(item["image"]).mean()) - 20 * CHUNKED) <= 2


def test_pack_without_header_record(tmp_path):
    write_recordio(tmp_path / "p" / "train", [(1, _jpeg(0)), (0, _jpeg(50)), (1, _with_magic(_jpeg(99)))],
                   header=False)
    index = load_index(tmp_path / "p" / "train.rec")
    assert index.header is None and index.keys.tolist() == [0, 1, 2] and index.labels.tolist() == [1, 0, 1]
    splits = recordio.load_recordio(tmp_path / "p")
    assert splits.train[2]["label"] == 1 and splits.classes == ("0", "1")


def test_bad_magic_names_the_file_and_byte_offset(pack):
    offset = _offset_of(pack, 4)
    with open(pack / "train.rec", "r+b") as f:
        f.seek(offset)
        f.write(b"JUNK")
    with pytest.raises(DataError, match=rf"train\.rec: bad magic 0x4b4e554a at byte offset {offset}\b"):
        load_index(pack / "train.rec")


def test_corruption_after_indexing_fails_when_the_sample_is_read(pack):
    train = recordio.load_recordio(pack).train
    offset = int(train.offsets[7])
    with open(pack / "train.rec", "r+b") as f:
        f.seek(offset)
        f.write(b"\0\0\0\0")
    train[6]
    with pytest.raises(DataError, match=rf"bad magic 0x00000000 at byte offset {offset}\b"):
        train[7]
    with open(pack / "train.rec", "r+b") as f:    # a JPEG whose bytes are damaged: the record is named
        f.seek(int(train.offsets[2]) + 8 + 24)
        f.write(b"\0" * 16)
    with pytest.raises(DataError, match=rf"record 3 at byte offset {int(train.offsets[2])}: cannot decode image"):
        train[2]


def test_truncated_record(tmp_path):
    root = tmp_path / "t"
    write_recordio(root / "train", [(0, _jpeg(1)), (1, _jpeg(2)), (1, _jpeg(3))], header=False)
    last = _offset_of(root, 2)
    with open(root / "train.rec", "r+b") as f:
        f.truncate(last + 40)
    with pytest.raises(DataError, match=rf"train\.rec: truncated record at byte offset {last}\b"):
        load_index(root / "train.rec")


def test_truncated_continuation_chunk_fails_when_read(tmp_path):
    root = tmp_path / "t"
    write_recordio(root / "train", [(0, _jpeg(1)), (1, _jpeg(2)), (1, _with_magic(_jpeg(3)))], header=False)
    last_chunk = _frames(root / "train.rec")[-1]
    assert last_chunk[1] == 3
    with open(root / "train.rec", "r+b") as f:
        f.truncate(last_chunk[0] + 9)
    train = recordio.load_recordio(root).train   # the header lies in the first chunk: indexing succeeds
    with pytest.raises(DataError, match=rf"truncated record at byte offset {last_chunk[0]}\b"):
        train[2]


def test_label_index_is_cached_and_reused(pack, isolated_cache):
    before = recordio.label_scans
    first = load_index(pack / "train.rec")
    assert recordio.label_scans == before + 1 and not first.from_cache
    cache = recordio._cache_path(pack / "train.rec", pack / "train.idx")
    assert cache.is_relative_to(isolated_cache / "index") and cache.suffix == ".npz"
    stamp = cache.stat().st_mtime_ns
    second = load_index(pack / "train.rec")
    assert recordio.label_scans == before + 1 and second.from_cache
    assert cache.stat().st_mtime_ns == stamp
    for name in ("keys", "offsets", "ends", "labels"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    st = os.stat(pack / "train.rec")   # a rewritten pack (new mtime) is scanned again
    os.utime(pack / "train.rec", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not load_index(pack / "train.rec").from_cache and recordio.label_scans == before + 2


def test_the_cache_folder_of_earlier_builds_is_removed(pack, isolated_cache):
    legacy = recordio._cache_path(pack / "train.rec", pack / "train.idx").with_suffix("")
    legacy.mkdir(parents=True)
    (legacy / "keys.npy").write_bytes(b"an index cached as a folder of arrays")
    load_index(pack / "train.rec")
    assert not legacy.exists() and legacy.with_suffix(".npz").is_file()


def _garbage(data: bytes) -> bytes:
    return b"not a zip file"


def _truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _flipped_offset(data: bytes) -> bytes:   # the zip's CRC catches it
    at = data.index(np.load(io.BytesIO(data))["offsets"].tobytes()) + 8
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def _emptied(data: bytes) -> bytes:
    return b""


def _other_arrays(data: bytes) -> bytes:   # a readable .npz without the index's arrays
    out = io.BytesIO()
    np.savez(out, version=np.int64(recordio._INDEX_VERSION), keys=np.arange(3))
    return out.getvalue()


@pytest.mark.parametrize("damage", [_garbage, _truncated, _flipped_offset, _emptied, _other_arrays])
def test_a_damaged_label_index_cache_is_rescanned_and_rewritten(pack, damage):
    expected = load_index(pack / "train.rec")
    cache = recordio._cache_path(pack / "train.rec", pack / "train.idx")
    cache.write_bytes(damage(cache.read_bytes()))
    before = recordio.label_scans
    rebuilt = load_index(pack / "train.rec")
    assert not rebuilt.from_cache and recordio.label_scans == before + 1
    assert not list(cache.parent.glob(f".{cache.name}.*"))   # no temporary file left beside it
    again = load_index(pack / "train.rec")
    assert again.from_cache and recordio.label_scans == before + 1
    for name in ("keys", "offsets", "ends", "labels", "header"):
        assert np.array_equal(getattr(rebuilt, name), getattr(expected, name))
        assert np.array_equal(getattr(again, name), getattr(expected, name))


def test_identity_disjoint_validation_and_verification_packs(pack, tmp_path):
    lfw = write_bin(tmp_path / "lfw.bin", [_jpeg(1), _jpeg(2), _jpeg(3), _jpeg(4)], [True, False])
    cfp = write_bin(tmp_path / "cfp_fp.bin", [_jpeg(5), _jpeg(6), _jpeg(7), _jpeg(8)], [True, False])
    splits = recordio.load_recordio(pack, verification=[str(lfw), str(cfp)])
    assert splits.val.name == "lfw" and splits.test.name == "lfw" and list(splits.more_tests) == ["cfp_fp"]
    assert splits.info["verification"] == {"lfw": 2, "cfp_fp": 2}
    held = recordio.load_recordio(pack, val_identities=0.5, pairs_per_identity=2, verification=[str(lfw)])
    assert held.val.name == "val" and held.test.name == "lfw" and len(held.classes) == 2
    train_ids = {int(c) for c in held.classes}
    val_labels = set(held.val.images.labels.tolist())
    assert len(held.train) == 6 and held.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    original = {i // 3 for i in range(12)}
    assert len(val_labels) == 2 and train_ids < original
    assert held.val.is_same.sum() == 2 and len(held.val.pairs) == 4


@pytest.mark.parametrize("text, message", [
    ("0\t0\n1\t4x\n", r"train\.idx:2: expected 'key<TAB>offset'"),
    ("0\t0\n1\n", r"train\.idx:2: expected"),
    ("0\t999999\n", r"train\.idx:1: offset 999999 of record 0 is beyond the end"),
    ("", "lists no records"),
])
def test_malformed_idx(pack, text, message):
    (pack / "train.idx").write_text(text)
    with pytest.raises(DataError, match=message):
        load_index(pack / "train.rec")


def test_missing_files_and_inconsistent_property(pack, tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        recordio.load_recordio(tmp_path / "nowhere")
    (pack / "property").write_text("3,12,10")
    with pytest.raises(DataError, match="num_classes is 3, but .* has label 3"):
        recordio.load_recordio(pack)
    (pack / "train.idx").unlink()
    with pytest.raises(DataError, match=r"train\.idx: no such file"):
        recordio.load_recordio(pack)


def test_pickled_dataset_reopens_its_file(pack):
    train = recordio.load_recordio(pack).train
    train[0]
    clone = pickle.loads(pickle.dumps(train))        # what a spawned DataLoader worker receives
    assert clone.file._fd is None and clone.read_bytes(CHUNKED) == train.read_bytes(CHUNKED)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_dataloader_workers_read_through_their_own_descriptors(pack):
    train = recordio.load_recordio(pack).train
    train[0]                                          # the parent has opened its descriptor
    parent_fd = train.file._fd

    class Probe(torch.utils.data.Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            data = train.read_bytes(i)
            return i, len(data), train.file._pid, train.file._fd

    loader = torch.utils.data.DataLoader(Probe(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    seen = list(loader)
    assert sorted(i for i, *_ in seen) == list(range(12))
    assert {pid for *_, pid, _ in seen}.isdisjoint({os.getpid()}) and len({pid for *_, pid, _ in seen}) == 2
    assert all(size == len(train.read_bytes(i)) for i, size, *_ in seen)
    assert train.file._fd == parent_fd and train.file._pid == os.getpid()
