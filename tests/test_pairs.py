"""Tests for verification protocols: LFW pairs.txt, insightface .bin packs and generated pairs."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceauth.data import Verification
from faceauth.errors import DataError
from faceauth.plugins.datasets.pairs import generate_pairs, read_bin, read_lfw_pairs, write_bin


def _jpeg_bytes(value: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def lfw(tmp_path):
    root = tmp_path / "lfw"
    for name, count in {"Abel_Pacheco": 4, "Dean_Barker": 1, "Zico": 3}.items():
        (root / name).mkdir(parents=True)
        for k in range(1, count + 1):
            (root / name / f"{name}_{k:04d}.jpg").write_bytes(_jpeg_bytes(10 * k))
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_pairs_txt_both_line_forms_with_header(lfw, tmp_path):
    pairs = _write(tmp_path / "pairs.txt", "2 1\nAbel_Pacheco 1 4\nAbel_Pacheco 1 Dean_Barker 1\n"
                                           "Zico 1 3\n\nZico 2 Abel_Pacheco 4\n")
    v = read_lfw_pairs(pairs, lfw)
    assert isinstance(v, Verification) and v.name == "pairs"
    assert v.is_same.tolist() == [True, False, True, False]
    paths = [[Path(v.images.paths[i]).name for i in pair] for pair in v.pairs]
    assert paths == [["Abel_Pacheco_0001.jpg", "Abel_Pacheco_0004.jpg"],
                     ["Abel_Pacheco_0001.jpg", "Dean_Barker_0001.jpg"],
                     ["Zico_0001.jpg", "Zico_0003.jpg"],
                     ["Zico_0002.jpg", "Abel_Pacheco_0004.jpg"]]
    assert len(v.images) == 6                       # each image listed once, however many pairs use it
    assert v.images[0]["image"].size == (8, 8)


def test_pairs_txt_without_header(lfw, tmp_path):
    v = read_lfw_pairs(_write(tmp_path / "p.txt", "Zico 1 2\nZico 3 Dean_Barker 1\n"), lfw, name="lfw")
    assert v.name == "lfw" and v.is_same.tolist() == [True, False]


@pytest.mark.parametrize("text, message", [
    ("1 1\nAbel_Pacheco 1 2\nAbel_Pacheco 1 2 3 4 5\n", r"p\.txt:3: expected 'name n1 n2'"),
    ("Abel_Pacheco 1\n", r"p\.txt:1: expected"),
    ("Zico 1 2\nZico x 2\n", r"p\.txt:2: image number 'x'"),
    ("1 3\nZico 1 2\nZico 1 Dean_Barker 1\n", "header on line 1 announces 6 pairs, but the file lists 2"),
    ("\n\n", "no pairs listed"),
])
def test_malformed_pairs_txt_names_the_line(lfw, tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_lfw_pairs(_write(tmp_path / "p.txt", text), lfw)


def test_missing_image_names_the_line_and_path(lfw, tmp_path):
    pairs = _write(tmp_path / "p.txt", "Zico 1 2\nZico 1 Nobody 1\n")
    with pytest.raises(DataError, match=r"p\.txt:2: image .*Nobody/Nobody_0001\.jpg does not exist"):
        read_lfw_pairs(pairs, lfw)
    with pytest.raises(DataError, match=r"q\.txt:1: image .*Zico_0009\.jpg does not exist"):
        read_lfw_pairs(_write(tmp_path / "q.txt", "Zico 1 9\n"), lfw)
    with pytest.raises(DataError, match="is not a directory"):
        read_lfw_pairs(pairs, tmp_path / "nowhere")


def test_bin_round_trip(tmp_path):
    blobs = [_jpeg_bytes(v) for v in (0, 60, 120, 180)]
    path = write_bin(tmp_path / "lfw.bin", blobs, [True, False])
    v = read_bin(path)
    assert v.name == "lfw" and v.is_same.tolist() == [True, False]
    assert v.pairs.tolist() == [[0, 1], [2, 3]]
    assert len(v.images) == 4
    assert abs(int(np.asarray(v.images[2]["image"]).mean()) - 120) <= 2


def _py2_pack(blobs: list[bytes], issame: list[bool]) -> bytes:
    """A pack as Python 2 pickled it: str payloads (SHORT_BINSTRING/BINSTRING), protocol 2."""
    out = bytearray(b"\x80\x02]q\x00(")
    for blob in blobs:
        out += (b"U" + bytes([len(blob)]) if len(blob) < 256 else b"T" + struct.pack("<I", len(blob))) + blob
    out += b"e]q\x01(" + b"".join(b"\x88" if x else b"\x89" for x in issame) + b"e\x86q\x02."
    return bytes(out)


def test_python2_era_pack_is_read_as_bytes(tmp_path):
    blobs = [_jpeg_bytes(v) for v in (10, 20)]
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(_py2_pack(blobs, [True]))
    with pytest.raises(UnicodeDecodeError):     # what a default unpickler makes of it
        pickle.loads(path.read_bytes())
    v = read_bin(path)
    assert v.is_same.tolist() == [True] and v.images.blobs == blobs


class _Pwn:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_malicious_pack_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([_Pwn(marker), b"x"], [True])))
    with pytest.raises(DataError, match=r"evil\.bin: refused type (posix|nt|os)\.system"):
        read_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload, refused", [
    (np.zeros(3, np.uint8), r"numpy\._core\.multiarray\._reconstruct|numpy\.core\.multiarray\._reconstruct"),
    (complex(1, 2), r"builtins\.complex"),
    (Path("x"), r"pathlib\.\w*Path"),
])
def test_any_class_is_refused_with_its_name(tmp_path, payload, refused):
    path = tmp_path / "cls.bin"
    path.write_bytes(pickle.dumps(([payload, b"x"], [True])))
    with pytest.raises(DataError, match="refused type " + refused):
        read_bin(path)


def test_python3_low_protocol_pack_is_refused_with_a_way_out(tmp_path):
    path = tmp_path / "p2.bin"
    path.write_bytes(pickle.dumps(([_jpeg_bytes(1), _jpeg_bytes(2)], [True]), protocol=2))
    with pytest.raises(DataError, match=r"refused type _codecs\.encode .*re-save the pack with protocol 4"):
        read_bin(path)


@pytest.mark.parametrize("obj, message", [
    ({"bins": []}, "expected a pickled \\(bins, issame_list\\) pair, got dict"),
    (([b"a", b"b", b"c"], [True]), "3 images for 1 pairs"),
    (([b"a", "b"], [True]), "image 1 is a str"),
    (([b"a", b"b"], [2]), r"issame_list\[0\] is 2"),
])
def test_wrong_pack_structure(tmp_path, obj, message):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match=message):
        read_bin(path)


def test_garbage_pack_and_undecodable_image(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match=r"junk\.bin: not a verification pack"):
        read_bin(path)
    v = read_bin(write_bin(tmp_path / "bad.bin", [b"not a jpeg", _jpeg_bytes(1)], [False]))
    with pytest.raises(DataError, match=r"bad\.bin: image 0: cannot decode image"):
        v.images[0]


def test_generated_pairs_are_balanced_distinct_and_seeded():
    labels = np.repeat(np.arange(7), [2, 3, 5, 8, 1, 4, 6])
    pairs, same = generate_pairs(labels, 40, seed=1)
    assert pairs.shape == (40, 2) and same.sum() == 20
    assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).tolist() == same.tolist()
    assert same[0::2].all() and not same[1::2].any()     # alternating: every contiguous fold is balanced
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 40
    assert (pairs[:, 0] != pairs[:, 1]).all()
    genuine_ids = set(labels[pairs[same, 0]].tolist())
    assert genuine_ids == {0, 1, 2, 3, 5, 6}              # every identity that can give a genuine pair does
    again, _ = generate_pairs(labels, 40, seed=1)
    other, _ = generate_pairs(labels, 40, seed=2)
    assert np.array_equal(again, pairs) and not np.array_equal(other, pairs)


def test_generated_pairs_scale_and_report_impossible_requests():
    labels = np.random.default_rng(0).integers(0, 2000, 100_000)
    pairs, same = generate_pairs(labels, 6000, seed=0)
    assert len(pairs) == 6000 and (labels[pairs[:, 0]] == labels[pairs[:, 1]]).tolist() == same.tolist()
    with pytest.raises(DataError, match="allow only 1 distinct"):
        generate_pairs([0, 0, 1], 4, seed=0)
    with pytest.raises(DataError, match="need at least 2 identities"):
        generate_pairs([3, 3, 3], 2, seed=0)
