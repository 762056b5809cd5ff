"""The `recordio` dataset: insightface's MXNet RecordIO packs (MS1M, Glint360K, ...), read without MXNet.

A pack is a folder holding::

    train.rec    the records, back to back
    train.idx    text, one "key<TAB>byte offset" line per record
    property     text "num_classes,height,width" (optional here: without it the classes are 0..max label)

Record framing (dmlc-core ``RecordIOWriter``): ``uint32 magic 0xCED7230A``, ``uint32 lrecord``
(lower 29 bits: length, upper 3 bits: cflag), the payload, zero padding to a multiple of 4 bytes.
A payload containing the magic at a 4-byte-aligned position is written as several chunks split
at those positions (cflag 1 first, 2 middle, 3 last; 0 is a whole record) and the magic is
put back between chunks when reading. The payload is an ``IRHeader`` (``<IfQQ``: flag, label,
id, id2), then ``flag`` float32 labels when flag > 0 (the identity is the first), then the JPEG.

insightface packs start with a header record (key 0, flag > 0) whose labels (a, b) say that keys
[1, a) are images and [a, b) per-identity ranges; without one, every record listed is an image.

Indexing reads ``train.idx`` and the 36 header bytes of each image record for its label (a
vectorised pass over a memory map; several minutes for MS1M's 5.8 M records on a cold disk) and
caches the resulting numpy arrays in one ``.npz`` file under ``cache_dir("index")``, keyed by the
files' path, size and modification time, so later opens load them in a fraction of a second; a
cache that cannot be read, fails its CRC or does not match is ignored and rewritten. Samples are sliced out of a
read-only memory map of the .rec, opened lazily in each process (DataLoader workers included, so
forked workers never share a descriptor); chunked records and damaged frames are read with
``os.pread``, which names the byte offset at fault. The .rec must not be truncated while it is
read (a map reading past the new end of a file gets SIGBUS).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import shutil
import struct
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import faceauth
from faceauth.data import Splits, Verification, dataset_root
from faceauth.errors import DataError
from faceauth.io.paths import cache_dir, read_npz, write_npz
from faceauth.plugins.datasets.identity import external_verification, held_out_verification, hold_out_identities
from faceauth.plugins.datasets.pairs import decode_image

__all__ = ["MAGIC", "RecordIndex", "RecordFile", "RecordImages", "load_index", "load_recordio",
           "write_recordio", "RecordIOOptions"]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_IR = struct.Struct("<IfQQ")          # flag, label, id, id2
_FRAME = struct.Struct("<II")         # magic, lrecord
_HEAD = struct.Struct("<III")         # magic, lrecord, then the IRHeader's flag
_INDEX_VERSION = 1

# How many times a label pass over a .rec file ran in this process (tests check caching with it).
label_scans = 0


# --- reading records ----------------------------------------------------------------------------

# Bumped in every forked child, so a RecordFile sees that it must reopen its file without calling
# getpid() (a system call) on each read. A list: the hook updates it in place.
_FORKS = [0]


def _after_fork_in_child() -> None:
    _FORKS[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RecordFile:
    """Random access to the records of a .rec file: opened on first use in each process.

    The file is memory-mapped once per process, so reading a whole record (the usual case) is a
    header unpack and one slice of the map, with no system call. Records split into chunks, bad
    frames and records beyond the mapped length (a file that grew) take `os.pread` on the same
    descriptor, which also serves where the file cannot be mapped. A forked child (DataLoader
    worker) opens and maps its own, found by a fork counter rather than a getpid() per read.
    """

    def __init__(self, path: str | Path):
        self.path = os.fspath(path)
        self._fd: int | None = None
        self._pid: int | None = None
        self._map: mmap.mmap | None = None
        self._mapped = 0      # bytes covered by _map
        self._forks = -1      # _FORKS[0] when this process opened the file; -1 when not open

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open ({exc.strerror})") from None
        # A forked child's inherited descriptor and map are its parent's: left alone, never closed here.
        self._fd, self._pid, self._forks = fd, os.getpid(), _FORKS[0]
        self._map, self._mapped = None, 0
        size = os.fstat(fd).st_size
        if size:
            try:
                self._map, self._mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ), size
            except (OSError, ValueError):  # a file system without mmap: every read takes pread
                pass

    def _handle(self) -> int:
        if self._forks != _FORKS[0]:  # not opened in this process (closed files hold -1)
            self._open()
        return self._fd  # type: ignore[return-value]

    def close(self) -> None:
        if self._fd is not None and self._forks == _FORKS[0] and self._pid == os.getpid():
            if self._map is not None:
                self._map.close()
            os.close(self._fd)
        self._fd = self._pid = self._map = None
        self._mapped, self._forks = 0, -1

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, BufferError):
            pass

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_fd": None, "_pid": None, "_map": None, "_mapped": 0, "_forks": -1}

    def _size(self) -> int:
        return os.fstat(self._handle()).st_size

    def read(self, offset: int, end: int | None = None) -> bytes:
        """The payload of the record at `offset` (chunks joined); `end` is where the next record starts."""
        if self._forks != _FORKS[0]:  # not opened in this process (closed files hold -1)
            self._open()
        view = self._map
        if view is not None and offset + 8 <= self._mapped:
            magic, lrec = _FRAME.unpack_from(view, offset)
            stop = offset + 8 + lrec  # lrec is the length when cflag (its upper 3 bits) is 0
            if magic == MAGIC and lrec <= _LENGTH_MASK and stop <= self._mapped:
                return view[offset + 8:stop]
        return self._read_chunks(offset, end)

    def _read_chunks(self, offset: int, end: int | None) -> bytes:
        fd = self._handle()
        want = max((end or 0) - offset, 8)
        buf = os.pread(fd, want, offset)
        parts: list[memoryview] = []
        pos = 0
        while True:
            if pos + 8 > len(buf):
                buf += os.pread(fd, pos + 8 - len(buf) + 4096, offset + len(buf))
                if pos + 8 > len(buf):
                    raise DataError(f"{self.path}: truncated record at byte offset {offset + pos} "
                                    f"(the file ends at byte {self._size()})")
            magic, lrec = _FRAME.unpack_from(buf, pos)
            if magic != MAGIC:
                raise DataError(f"{self.path}: bad magic 0x{magic:08x} at byte offset {offset + pos} "
                                f"(expected 0x{MAGIC:08X}; is the .idx from another .rec?)")
            cflag, length = lrec >> 29, lrec & _LENGTH_MASK
            if cflag not in ((0, 1) if pos == 0 else (2, 3)):
                raise DataError(f"{self.path}: unexpected chunk flag {cflag} at byte offset {offset + pos}")
            stop = pos + 8 + length
            if stop > len(buf):
                buf += os.pread(fd, stop - len(buf), offset + len(buf))
                if stop > len(buf):
                    raise DataError(f"{self.path}: truncated record at byte offset {offset + pos} "
                                    f"(needs {length} bytes, the file ends at byte {self._size()})")
            parts.append(memoryview(buf)[pos + 8:stop])
            pos += 8 + ((length + 3) & ~3)
            if cflag in (0, 3):
                break
        return parts[0].tobytes() if len(parts) == 1 else _MAGIC_BYTES.join(parts)


def _split_payload(payload: bytes, where: str) -> tuple[int, float, int, bytes]:
    """(flag, label, id, image bytes) of a record payload."""
    if len(payload) < _IR.size:
        raise DataError(f"{where}: record of {len(payload)} bytes is shorter than its {_IR.size}-byte header")
    flag, label, key, _ = _IR.unpack_from(payload)
    start = _IR.size
    if flag > 0:
        start += 4 * flag
        if len(payload) < start:
            raise DataError(f"{where}: record announces {flag} labels but is {len(payload)} bytes long")
        label = struct.unpack_from("<f", payload, _IR.size)[0]
    return flag, label, key, payload[start:]


class RecordImages:
    """Some image records of a pack, decoded on access to ``{"image": PIL RGB, "label": int}``."""

    def __init__(self, file: RecordFile, keys: np.ndarray, offsets: np.ndarray, ends: np.ndarray,
                 labels: np.ndarray):
        self.file = file
        self.keys, self.offsets, self.ends = keys, offsets, ends
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def _where(self, index: int) -> str:
        return f"{self.file.path}: record {int(self.keys[index])} at byte offset {int(self.offsets[index])}"

    def read_bytes(self, index: int) -> bytes:
        """The encoded image of sample `index` (no decoding)."""
        offset = self.offsets.item(index)
        file = self.file
        if file._forks != _FORKS[0]:
            file._open()
        # The usual case inline (this runs once per sample): a whole record, sliced out of the map
        # after the frame, the IRHeader and its `flag` extra labels.
        view = file._map
        if view is not None and offset + _HEAD.size <= file._mapped:
            magic, lrec, flag = _HEAD.unpack_from(view, offset)
            start = offset + (8 + _IR.size) + 4 * flag
            stop = offset + 8 + lrec      # lrec is the length when cflag (its upper 3 bits) is 0
            if magic == MAGIC and lrec <= _LENGTH_MASK and start <= stop <= file._mapped:
                return view[start:stop]
        # chunked or damaged: the general path, which names the byte offset at fault
        payload = file.read(offset, self.ends.item(index))
        return _split_payload(payload, self._where(index))[3]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": decode_image(self.read_bytes(index), self._where(index)),
                "label": int(self.labels[index])}


# --- the index ----------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class RecordIndex:
    """The image records of a pack, sorted by key: numpy arrays, no per-record Python objects."""

    rec: Path
    keys: np.ndarray      # (N,) int64
    offsets: np.ndarray   # (N,) int64: where each record starts
    ends: np.ndarray      # (N,) int64: where the next record (or the file) starts
    labels: np.ndarray    # (N,) int64: identity of each image
    header: tuple[int, int] | None  # the (a, b) of a header record, if the pack has one
    from_cache: bool = False


def _parse_idx(idx: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = idx.read_bytes()
    except OSError as exc:
        raise DataError(f"{idx}: cannot read ({exc.strerror})") from None
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1) - data.count(b"\n\n")
    values = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")
    except (ValueError, UnicodeDecodeError, DeprecationWarning):
        values = None
    if values is None or len(values) != 2 * lines:  # find the culprit, line by line
        pairs = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 2:
                    raise ValueError
                pairs.append((int(fields[0]), int(fields[1])))
            except ValueError:
                raise DataError(f"{idx}:{number}: expected 'key<TAB>offset', got {line[:80]!r}") from None
        values = np.asarray(pairs, dtype=np.int64).reshape(-1)
    if not len(values):
        raise DataError(f"{idx}: lists no records (expected 'key<TAB>offset' lines)")
    keys, offsets = values[0::2].copy(), values[1::2].copy()
    if (keys < 0).any() or (offsets < 0).any():
        raise DataError(f"{idx}: negative key or offset on line {int(np.flatnonzero((keys < 0) | (offsets < 0))[0]) + 1}")
    return keys, offsets


def _scan_labels(rec: Path, offsets: np.ndarray, ends: np.ndarray, size: int) -> np.ndarray:
    """The float label of each record at `offsets`, from its first 36 bytes.

    Vectorised: records are visited in file order, a batch at a time, through a memory map of
    just that batch's stretch of the file, which is unmapped afterwards (so resident memory stays
    at one batch however large the pack).
    """
    global label_scans
    from tqdm import tqdm

    label_scans += 1
    labels = np.empty(len(offsets), dtype=np.float32)
    order = np.argsort(offsets, kind="stable")
    slow = RecordFile(rec)
    head_size = 8 + _IR.size
    step = 1 << 16
    try:
        with open(rec, "rb") as f, tqdm(total=len(offsets), desc=f"indexing {rec.name}", unit="rec",
                                        disable=len(offsets) < 100_000) as bar:
            for lo in range(0, len(offsets), step):
                which = order[lo:lo + step]
                off = offsets[which]
                short = np.flatnonzero(off + head_size > size)
                if len(short):  # raises: truncated, or too short for a header
                    i = int(short[0])
                    _split_payload(slow.read(int(off[i]), size), f"{rec}: record at byte offset {int(off[i])}")
                first = int(off[0]) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
                with mmap.mmap(f.fileno(), min(size, int(off[-1]) + head_size + 4) - first, offset=first,
                               access=mmap.ACCESS_READ) as window:
                    data = np.frombuffer(window, dtype=np.uint8)
                    rel = off - first
                    head = data[rel[:, None] + np.arange(head_size)].view("<u4")   # (m, 8) words
                    flag = head[:, 2]
                    cflag, length = head[:, 1] >> 29, head[:, 1] & _LENGTH_MASK
                    # the header must lie whole in the first chunk, and that chunk in the file
                    simple = (cflag <= 1) & (length >= _IR.size + 4 * (flag > 0)) & (off + 8 + length <= size)
                    label = head[:, 3].view("<f4").copy()
                    multi = np.flatnonzero(simple & (flag > 0))
                    if len(multi):  # several labels: the identity is the first float after the header
                        label[multi] = data[(rel[multi] + head_size)[:, None] + np.arange(4)].view("<f4")[:, 0]
                    del data
                bad = np.flatnonzero(head[:, 0] != MAGIC)
                if len(bad):
                    slow.read(int(off[bad[0]]))  # raises: bad magic at that offset
                for i in np.flatnonzero(~simple).tolist():  # chunked headers, short or truncated records
                    where = f"{rec}: record at byte offset {int(off[i])}"
                    label[i] = _split_payload(slow.read(int(off[i]), int(ends[which[i]])), where)[1]
                labels[which] = label
                bar.update(len(off))
    finally:
        slow.close()
    return labels


def _cache_path(rec: Path, idx: Path) -> Path:
    facts = []
    for path in (rec, idx):
        st = path.stat()
        facts.append(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    digest = hashlib.sha256(("\n".join(facts) + f"\nv{_INDEX_VERSION}").encode()).hexdigest()[:32]
    return cache_dir("index", f"recordio-{digest}.npz")


_ARRAYS = ("keys", "offsets", "ends", "labels")


def _load_cached(path: Path, rec: Path) -> RecordIndex | None:
    stored = read_npz(path)  # None when missing or damaged
    try:
        if stored is None or stored["version"].item() != _INDEX_VERSION:
            return None
        header, arrays = stored["header"], {name: stored[name] for name in _ARRAYS}
    except (KeyError, ValueError):  # from another version
        return None
    keys = arrays["keys"]
    if (header.shape not in ((0,), (2,)) or keys.ndim != 1
            or any(a.shape != keys.shape or a.dtype != np.int64 for a in arrays.values())):
        return None
    pair = tuple(header.tolist()) or None
    return RecordIndex(rec=rec, header=pair, from_cache=True, **arrays)  # type: ignore[arg-type]


def _store_cached(path: Path, index: RecordIndex) -> None:
    with contextlib.suppress(OSError):  # a read-only or full cache only costs the next open a rescan
        write_npz(path, {"version": np.int64(_INDEX_VERSION), "header": np.array(index.header or (), np.int64),
                         **{name: getattr(index, name) for name in _ARRAYS}})
    shutil.rmtree(path.with_suffix(""), ignore_errors=True)  # where the cache of earlier faceauth builds kept it


def load_index(rec: str | Path, idx: str | Path | None = None, *, use_cache: bool = True) -> RecordIndex:
    """The image records of `rec` with their labels; cached after the first (label-reading) pass."""
    rec = Path(rec).expanduser()
    idx = Path(idx).expanduser() if idx is not None else rec.with_suffix(".idx")
    for path in (rec, idx):
        if not path.is_file():
            raise DataError(f"{path}: no such file (a RecordIO pack needs train.rec and train.idx)")
    cache = _cache_path(rec, idx)
    if use_cache:
        cached = _load_cached(cache, rec)
        if cached is not None:
            return cached

    keys, offsets = _parse_idx(idx)
    size = rec.stat().st_size
    if size == 0:
        raise DataError(f"{rec}: empty file")
    beyond = np.flatnonzero(offsets >= size)
    if len(beyond):
        i = int(beyond[0])
        raise DataError(f"{idx}:{i + 1}: offset {int(offsets[i])} of record {int(keys[i])} is beyond the end of "
                        f"{rec} ({size} bytes); the .idx belongs to another .rec?")
    starts = np.sort(offsets)  # np.unique, without its hash pass (0.7 s of a 1 s first open at 1M records)
    starts = starts[np.append(True, starts[1:] != starts[:-1])]
    ends = np.append(starts, size)[np.searchsorted(starts, offsets, side="right")]

    order = np.argsort(keys, kind="stable")
    keys, offsets, ends = keys[order], offsets[order], ends[order]
    header = None
    if keys[0] == 0:
        reader = RecordFile(rec)
        try:
            payload = reader.read(int(offsets[0]), int(ends[0]))
        finally:
            reader.close()
        flag, _, _, _ = _split_payload(payload, f"{rec}: record 0 at byte offset {int(offsets[0])}")
        if flag > 0:
            values = np.frombuffer(payload, dtype="<f4", count=flag, offset=_IR.size)
            if not (np.isfinite(values[:2]).all() and values[0] >= 1):
                raise DataError(f"{rec}: header record 0 has labels {values[:2].tolist()}; expected the image "
                                "key range end (>= 1) and the identity range end")
            first = int(values[0])
            header = (first, int(values[1]) if flag > 1 else first)
            images = (keys >= 1) & (keys < first)
            if int(images.sum()) != first - 1:
                raise DataError(f"{rec}: the header record announces image keys 1..{first - 1}, but {idx} lists "
                                f"{int(images.sum())} of them")
            keys, offsets, ends = keys[images], offsets[images], ends[images]
    if not len(keys):
        raise DataError(f"{rec}: holds no image records")

    raw = _scan_labels(rec, offsets, ends, size)
    if not np.isfinite(raw).all() or (raw < 0).any():
        bad = int(np.flatnonzero(~np.isfinite(raw) | (raw < 0))[0])
        raise DataError(f"{rec}: record {int(keys[bad])} at byte offset {int(offsets[bad])} has label {raw[bad]!r}; "
                        "expected an identity number >= 0")
    index = RecordIndex(rec=rec, keys=keys, offsets=offsets, ends=ends, labels=raw.astype(np.int64), header=header)
    if use_cache:
        _store_cached(cache, index)
    return index


def _read_property(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="ascii").strip()
        num_classes = int(text.split(",")[0])
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        text = path.read_bytes().decode("ascii", "replace").strip()
        raise DataError(f"{path}: expected 'num_classes,height,width', got {text[:80]!r}") from None
    if num_classes < 1:
        raise DataError(f"{path}: num_classes must be positive, got {num_classes}")
    return num_classes


def load_recordio(root: str | Path, *, val_identities: float = 0.0, pairs_per_identity: int = 20, seed: int = 0,
                  verification: Sequence[str] = (), key: str = "data.root") -> Splits:
    root = dataset_root(root, key, "a folder with train.rec, train.idx, property")
    index = load_index(root / "train.rec", root / "train.idx")
    num_classes = _read_property(root / "property")
    top = int(index.labels.max())
    if num_classes is None:
        num_classes = top + 1
    elif top >= num_classes:
        raise DataError(f"{root / 'property'}: num_classes is {num_classes}, but {index.rec} has label {top}")
    counts = np.bincount(index.labels, minlength=num_classes)
    held = hold_out_identities(counts, val_identities, seed, f"{key}: {root}")
    is_held = np.zeros(num_classes, dtype=bool)
    is_held[held] = True
    train_ids = np.flatnonzero(~is_held)
    relabel = np.full(num_classes, -1, dtype=np.int64)
    relabel[train_ids] = np.arange(len(train_ids))
    relabel[held] = np.arange(len(held))
    file = RecordFile(index.rec)

    def subset(mask: np.ndarray) -> RecordImages:
        return RecordImages(file, index.keys[mask], index.offsets[mask], index.ends[mask],
                            relabel[index.labels[mask]])

    train = subset(~is_held[index.labels]) if len(held) else RecordImages(
        file, index.keys, index.offsets, index.ends, index.labels)
    external = external_verification(None, None, list(verification))
    first, *more = external.values() or [None]
    val: Verification | None = first
    if len(held):
        val = held_out_verification(subset(is_held[index.labels]), len(held), pairs_per_identity, seed,
                                    f"{key}: {root}")
    classes = tuple(str(i) for i in train_ids)
    info = {"task": "identity", "num_identities": len(classes), "num_images": len(train), "root": str(root),
            "val_identities": len(held), "verification": {name: len(v.pairs) for name, v in external.items()},
            "index_from_cache": index.from_cache}
    return Splits(train=train, val=val, test=first, classes=classes, info=info, more_tests={v.name: v for v in more})


@attrs.frozen
class RecordIOOptions:
    root: str = faceauth.schema.required("the folder with train.rec, train.idx and property")
    # share of the identities held out (identity-disjoint) for validation pairs; 0: validate on the
    # first verification pack instead (insightface's practice)
    val_identities: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)
    pairs_per_identity: int = attrs.field(default=20, validator=faceauth.schema.positive)
    seed: int = 0
    verification: list[str] = attrs.field(factory=list)  # .bin packs: lfw.bin, cfp_fp.bin, agedb_30.bin


def build_recordio(options: RecordIOOptions) -> Splits:
    return load_recordio(options.root, val_identities=options.val_identities,
                         pairs_per_identity=options.pairs_per_identity, seed=options.seed,
                         verification=options.verification)


# --- writing ------------------------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    """dmlc-core's framing: split at 4-byte-aligned magic words, pad the last chunk to 4 bytes."""
    out = bytearray()
    start = 0
    view = memoryview(payload)
    found = payload.find(_MAGIC_BYTES)
    while found >= 0:
        if found % 4:  # only aligned occurrences split a record (dmlc scans word by word)
            found = payload.find(_MAGIC_BYTES, found + 1)
            continue
        out += _FRAME.pack(MAGIC, ((1 if start == 0 else 2) << 29) | (found - start))
        out += view[start:found]
        start = found + 4
        found = payload.find(_MAGIC_BYTES, start)
    length = len(payload) - start
    out += _FRAME.pack(MAGIC, ((3 if start else 0) << 29) | length)
    out += view[start:]
    out += bytes(-length % 4)
    return bytes(out)


def _payload(label: float | Sequence[float], key: int, image: bytes) -> bytes:
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _IR.pack(0, float(label), key, 0) + image
    values = np.asarray(label, dtype="<f4").ravel()
    return _IR.pack(len(values), 0.0, key, 0) + values.tobytes() + image


def write_recordio(path_prefix: str | Path, samples: Iterable[tuple[Any, bytes]], *, header: bool = True
                   ) -> Path:
    """Write ``<prefix>.rec``, ``<prefix>.idx`` and a ``property`` file next to them, as insightface does.

    `samples` are ``(label, jpeg_bytes)``; a label is an int identity (or a sequence of floats, the
    first being the identity). With `header`, record 0 is insightface's header record and the
    identity-range records follow the images (ranges assume the samples come grouped by identity).
    Returns the .rec path.
    """
    prefix = Path(path_prefix)
    rec, idx = Path(f"{prefix}.rec"), Path(f"{prefix}.idx")
    rec.parent.mkdir(parents=True, exist_ok=True)
    entries: list[tuple[int, int]] = []
    ranges: dict[int, list[int]] = {}
    size: tuple[int, int] | None = None
    with open(rec, "wb") as f:
        header_bytes = b""
        if header:
            header_bytes = _frame(_payload([0.0, 0.0], 0, b""))
            entries.append((0, 0))
            f.write(header_bytes)
        key = 1 if header else 0
        for label, image in samples:
            if size is None:  # the property file records the image size: the first readable image's
                from PIL import Image, UnidentifiedImageError

                try:
                    with Image.open(io.BytesIO(image)) as img:
                        size = (img.height, img.width)
                except (OSError, UnidentifiedImageError):
                    pass
            identity = int(label if np.ndim(label) == 0 else np.asarray(label).ravel()[0])
            span = ranges.setdefault(identity, [key, key + 1])
            span[1] = key + 1
            entries.append((key, f.tell()))
            f.write(_frame(_payload(label, key, bytes(image))))
            key += 1
        if header:
            first = key
            for identity in sorted(ranges):
                entries.append((key, f.tell()))
                f.write(_frame(_payload([float(v) for v in ranges[identity]], key, b"")))
                key += 1
            patched = _frame(_payload([float(first), float(key)], 0, b""))
            if len(patched) != len(header_bytes):  # cannot happen for realistic counts; never corrupt a file
                raise ValueError("header record changed size")
            f.seek(0)
            f.write(patched)
    with open(idx, "w", encoding="ascii") as f:
        f.writelines(f"{k}\t{offset}\n" for k, offset in entries)
    num_classes = max(ranges) + 1 if ranges else 0
    height, width = size or (0, 0)
    (rec.parent / "property").write_text(f"{num_classes},{height},{width}", encoding="ascii")
    return rec
