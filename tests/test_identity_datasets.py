"""Tests for the identity-folder and demo_identities recognition datasets."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image

import faceauth.plugins.datasets as datasets_plugin
from faceauth.components import Dataset, resolve
from faceauth.data import Verification, read_image
from faceauth.errors import DataError, RecipeError
from faceauth.plugins.datasets import identity, identity_demo
from faceauth.plugins.datasets.identity import IdentityFolderOptions, build_identity_folder, load_identity_folder
from faceauth.plugins.datasets.pairs import write_bin
from faceauth.schema import structure


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value % 256, np.uint8)).save(path, quality=95)


def make_tree(root: Path, counts: dict[str, int]) -> Path:
    """root/<name>/<name>_<k:04d>.jpg, LFW naming, k from 1; each image's grey level encodes (identity, k)."""
    for i, (name, count) in enumerate(sorted(counts.items())):
        for k in range(1, count + 1):
            _jpeg(root / name / f"{name}_{k:04d}.jpg", 16 * i + k)
    return root


PEOPLE = {f"p{i:02d}": 3 + i % 3 for i in range(20)}   # 20 identities, 3 to 5 images each


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "faces", PEOPLE)


def _identity_of(path: str) -> str:
    return Path(path).parent.name


def test_labels_follow_sorted_training_identities_and_validation_is_identity_disjoint(tree):
    splits = load_identity_folder(tree, val_identities=0.2, pairs_per_identity=6, seed=3)
    assert splits.info["task"] == "identity" and splits.info["val_identities"] == 4
    train, val = splits.train, splits.val
    assert splits.classes == tuple(sorted(splits.classes)) and len(splits.classes) == 16
    assert splits.info["num_identities"] == 16 and len(train) == splits.info["num_images"]
    for i in range(len(train)):
        assert splits.classes[train.labels[i]] == _identity_of(train.path(i))
    assert sorted(train.labels.tolist()) == train.labels.tolist()
    item = train[5]
    assert item["image"].mode == "RGB" and item["image"].size == (8, 8)
    assert item["label"] == train.labels[5] and item["path"] == train.path(5)

    assert isinstance(val, Verification) and len(val.pairs) == 4 * 6
    held = {_identity_of(val.images.path(i)) for i in range(len(val.images))}
    assert len(held) == 4 and not held & set(splits.classes)
    assert held | set(splits.classes) == set(PEOPLE)
    who = [_identity_of(val.images.path(i)) for i in range(len(val.images))]
    same = [who[a] == who[b] for a, b in val.pairs]
    assert same == val.is_same.tolist() and val.is_same.sum() == len(val.pairs) // 2
    assert len({tuple(sorted(p)) for p in val.pairs.tolist()}) == len(val.pairs)   # no repeated pair
    again = load_identity_folder(tree, val_identities=0.2, pairs_per_identity=6, seed=3)
    assert again.classes == splits.classes and np.array_equal(again.val.pairs, val.pairs)


def test_no_validation_when_val_identities_is_zero(tree):
    splits = load_identity_folder(tree, val_identities=0.0)
    assert splits.val is None and splits.test is None and len(splits.classes) == 20


def test_indexing_decodes_nothing_and_a_corrupt_image_fails_with_its_path_when_read(tree, monkeypatch):
    bad = tree / "p03" / "p03_0002.jpg"
    bad.write_bytes(b"this is not a jpeg")
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    splits = load_identity_folder(tree, val_identities=0.0)
    assert opened == []
    position = next(i for i in range(len(splits.train)) if splits.train.path(i) == str(bad))
    splits.train[position + 1]
    with pytest.raises(DataError, match="p03_0002.jpg: cannot read image"):
        splits.train[position]


def test_min_images_drops_small_identities_and_hidden_or_loose_files_are_ignored(tree):
    (tree / ".thumbnails").mkdir()
    _jpeg(tree / ".thumbnails" / "x.jpg", 1)
    _jpeg(tree / "loose.jpg", 1)
    (tree / "p00" / "notes.txt").write_text("not an image")
    _jpeg(tree / "p01" / "extra" / "nested.png", 2)           # sub-folders of an identity count
    splits = load_identity_folder(tree, val_identities=0.0, min_images=5)
    kept = {name for name, count in PEOPLE.items() if count >= 5} | {"p01"}
    assert set(splits.classes) == kept
    assert any(splits.train.path(i).endswith("extra/nested.png") for i in range(len(splits.train)))


def _age(root: Path, seconds: float = 3600) -> None:
    """Date every folder of the tree back, as for data written long ago: a scan is not cached while a
    folder it lists changed in the last 2 s (a change in the same timestamp tick would go unseen)."""
    past = time.time() - seconds
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, (past, past))


@pytest.fixture
def listed(monkeypatch):
    """Every folder `os.scandir` lists during the test."""
    calls: list[Path] = []
    real = os.scandir

    def scandir(path="."):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return calls


def _same_index(a: identity.IdentityIndex, b: identity.IdentityIndex) -> bool:
    return (a.names == b.names and np.array_equal(a.owner, b.owner) and a.owner.dtype == b.owner.dtype
            and a.files.tolist() == b.files.tolist())


def test_an_unchanged_tree_is_indexed_from_the_cache_without_listing_an_identity_folder(tree, listed):
    _jpeg(tree / "p01" / "extra" / "nested.png", 2)
    _jpeg(tree / "Zoë Ünal" / "é 1.jpg", 3)                        # names that are not ASCII,
    (tree / "Zoë Ünal" / os.fsdecode(b"\xff 2.jpg")).write_bytes(b"")  # nor even UTF-8
    options = {"val_identities": 0.2, "pairs_per_identity": 6, "seed": 3}
    fresh = load_identity_folder(tree, **options)
    assert fresh.info["index_from_cache"] is False
    assert not identity._cache_path(tree).exists()       # written moments ago: not trusted yet
    _age(tree)
    listed.clear()
    first = load_identity_folder(tree, **options)
    assert first.info["index_from_cache"] is False and identity._cache_path(tree).is_file()
    assert tree / "p07" in listed and tree / "p01" / "extra" in listed
    listed.clear()
    cached = load_identity_folder(tree, **options)
    assert cached.info["index_from_cache"] is True
    assert listed == [tree]                               # the root only: identity folders are stat'ed
    assert cached.classes == first.classes and cached.info["num_images"] == first.info["num_images"]
    assert [cached.train.path(i) for i in range(len(cached.train))] == [
        first.train.path(i) for i in range(len(first.train))]
    assert np.array_equal(cached.train.labels, first.train.labels)
    assert np.array_equal(cached.val.pairs, first.val.pairs) and cached.train[3]["image"].size == (8, 8)
    everyone = identity.index_identity_folder(tree)
    assert everyone.from_cache and everyone.names[0] == "Zoë Ünal"
    assert everyone.files[:2].tolist() == ["é 1.jpg".encode(), b"\xff 2.jpg"]
    # min_images is applied to the cached listing
    small = identity.index_identity_folder(tree, min_images=5)
    assert small.from_cache and _same_index(small, identity.index_identity_folder(tree, 5, use_cache=False))
    assert "p01" in small.names and "p00" not in small.names


def _add_file(tree: Path) -> None:
    _jpeg(tree / "p03" / "p03_0099.jpg", 1)


def _add_nested_file(tree: Path) -> None:
    _jpeg(tree / "p01" / "extra" / "more.jpg", 1)


def _remove_file(tree: Path) -> None:
    (tree / "p04" / "p04_0002.jpg").unlink()


def _add_identity(tree: Path) -> None:
    make_tree(tree / "q", {"p99": 2})
    (tree / "q" / "p99").rename(tree / "p99")
    (tree / "q").rmdir()


def _rename_identity(tree: Path) -> None:
    (tree / "p05").rename(tree / "p55")


def _add_file_and_forge_the_mtime_back(tree: Path) -> None:
    folder = tree / "p03"
    before = folder.stat()
    time.sleep(0.05)   # past the kernel's coarse timestamp tick (1-10 ms), so that the ctime moves
    _jpeg(folder / "p03_0099.jpg", 1)
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))   # as tar or rsync -a would
    assert folder.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("change", [_add_file, _add_nested_file, _remove_file, _add_identity, _rename_identity,
                                    _add_file_and_forge_the_mtime_back])
def test_a_changed_tree_is_listed_again(tree, change):
    _jpeg(tree / "p01" / "extra" / "nested.png", 2)
    _age(tree)
    identity.index_identity_folder(tree)
    assert identity.index_identity_folder(tree).from_cache
    change(tree)
    after = identity.index_identity_folder(tree)
    assert not after.from_cache and _same_index(after, identity.index_identity_folder(tree, use_cache=False))
    _age(tree)
    identity.index_identity_folder(tree)                  # stores the new listing
    cached = identity.index_identity_folder(tree)
    assert cached.from_cache and _same_index(cached, after)


def _garbage(data: bytes) -> bytes:
    return b"not a zip file"


def _truncated(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _flipped_file_name(data: bytes) -> bytes:   # the zip's CRC catches it
    at = data.index(b"p07_0003.jpg")
    return data[:at] + b"q" + data[at + 1:]


def _emptied(data: bytes) -> bytes:
    return b""


def _plain_npy(data: bytes) -> bytes:   # a readable .npy, not the expected .npz
    import io

    out = io.BytesIO()
    np.save(out, np.arange(3))
    return out.getvalue()


@pytest.mark.parametrize("damage", [_garbage, _truncated, _flipped_file_name, _emptied, _plain_npy])
def test_a_damaged_cache_is_ignored_and_rewritten(tree, damage):
    _age(tree)
    expected = identity.index_identity_folder(tree)
    cache = identity._cache_path(tree)
    cache.write_bytes(damage(cache.read_bytes()))
    rebuilt = identity.index_identity_folder(tree)
    assert not rebuilt.from_cache and _same_index(rebuilt, expected)
    assert not list(cache.parent.glob(f".{cache.name}.*"))   # no temporary file left beside it
    again = identity.index_identity_folder(tree)
    assert again.from_cache and _same_index(again, expected)


def test_index_cache_false_and_an_unwritable_cache_list_every_time(tree, listed, tmp_path, monkeypatch):
    _age(tree)
    for _ in range(2):
        splits = build_identity_folder(structure(IdentityFolderOptions, {
            "root": str(tree), "val_identities": 0, "index_cache": False}, "data"))
        assert splits.info["index_from_cache"] is False and tree / "p00" in listed
        listed.clear()
    assert not identity._cache_path(tree).exists()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FACEAUTH_CACHE", str(blocker))
    for _ in range(2):
        assert not identity.index_identity_folder(tree).from_cache
    assert blocker.read_text() == ""


@pytest.mark.parametrize("counts, options, message", [
    ({}, {}, "no identity folders"),
    ({"solo": 3}, {"val_identities": 0.0}, "training needs at least 2"),
    ({f"p{i}": 2 for i in range(6)}, {"val_identities": 0.1}, "holds out 1; validation pairs need at least 2"),
    ({f"p{i}": 2 for i in range(6)}, {"val_identities": 0.9}, "leaves 1 for training"),
    ({f"p{i}": 1 for i in range(10)}, {"val_identities": 0.2}, "only 0 identities have the 2 or more images"),
    ({f"p{i}": 2 for i in range(10)}, {"val_identities": 0.2, "pairs_per_identity": 4},
     "4 genuine pairs wanted.*allow only 2"),
    ({f"p{i}": 4 for i in range(10)}, {"val_identities": 0.0, "min_images": 5}, "with at least 5 images each"),
])
def test_too_few_identities_or_images_name_the_folder_and_the_need(tmp_path, counts, options, message):
    root = make_tree(tmp_path / "few", counts)
    root.mkdir(exist_ok=True)
    with pytest.raises(DataError, match=message) as info:
        load_identity_folder(root, **options)
    assert str(root) in str(info.value)


def test_missing_root_and_images_without_identity_folders(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        load_identity_folder(tmp_path / "nowhere")
    _jpeg(tmp_path / "flat" / "a.jpg", 1)
    with pytest.raises(DataError, match="holds 1 images directly"):
        load_identity_folder(tmp_path / "flat")


def test_lfw_pairs_and_verification_packs_become_the_test_protocols(tree, tmp_path):
    pairs_txt = tmp_path / "pairs.txt"
    pairs_txt.write_text("1 2\np00 1 2\np04 2 3\np00 3 p01 1\np02 1 p03 2\n")
    blobs = [(tree / "p00" / f"p00_{k:04d}.jpg").read_bytes() for k in (1, 2)]
    with pytest.raises(DataError, match=r"cfp_fp\.bin: 1 pair\(s\); a verification protocol needs at least 2"):
        build_identity_folder(structure(IdentityFolderOptions, {
            "root": str(tree), "val_identities": 0,
            "verification": [str(write_bin(tmp_path / "cfp_fp.bin", blobs, [True]))]}, "data"))
    pack = write_bin(tmp_path / "cfp_fp.bin", blobs * 2, [True, True])
    splits = build_identity_folder(structure(IdentityFolderOptions, {
        "root": str(tree), "val_identities": 0, "lfw_pairs": str(pairs_txt), "verification": [str(pack)]}, "data"))
    assert splits.test.name == "pairs" and splits.test.is_same.tolist() == [True, True, False, False]
    assert splits.info["verification"] == {"pairs": 4, "cfp_fp": 2}
    assert list(splits.more_tests) == ["cfp_fp"] and splits.more_tests["cfp_fp"].images[1]["image"].size == (8, 8)
    json.dumps(splits.info)  # plain data: it goes into metrics.json


def test_landmarks_csv_aligns_images_when_read(tree, tmp_path):
    from faceauth.faces.align import ARCFACE_TEMPLATE_112

    points = ARCFACE_TEMPLATE_112 / 14            # the template shrunk onto the 8x8 images
    rows = ["path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5"]
    rows += [f"{p.relative_to(tree).as_posix()}," + ",".join(f"{v:.4f}" for v in points.ravel())
             for p in sorted(tree.rglob("*.jpg"))]
    csv = tmp_path / "landmarks.csv"
    csv.write_text("\n".join(rows + ["other/unlisted.jpg" + ",1" * 10]) + "\n")
    splits = build_identity_folder(structure(IdentityFolderOptions, {
        "root": str(tree), "landmarks": str(csv), "align_size": 56, "pairs_per_identity": 2}, "data"))
    for dataset in (splits.train, splits.val.images):
        item = dataset[0]
        assert item["image"].size == (56, 56)
        original = np.asarray(read_image(item["path"]), float).mean()
        assert abs(np.asarray(item["image"], float)[20:36, 20:36].mean() - original) < 3
    csv.write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(DataError, match=r"landmarks\.csv: no landmarks for 1 of \d+ images, e\.g\. .*p19_0004\.jpg"):
        load_identity_folder(tree, landmarks=str(csv))
    csv.write_text(rows[1] + "\n" + "p00/p00_0001.jpg,1,2,3\n")
    with pytest.raises(DataError, match=r"landmarks\.csv:2: expected 'path,x1,y1,...,x5,y5'"):
        load_identity_folder(tree, landmarks=str(csv))


def test_options_are_checked_by_the_recipe_schema():
    with pytest.raises(RecipeError, match="root: required key"):
        structure(IdentityFolderOptions, {}, "data")
    with pytest.raises(RecipeError, match="val_identities"):
        structure(IdentityFolderOptions, {"root": "x", "val_identities": 2}, "data")


def test_recognition_datasets_are_registered_by_the_one_datasets_hook():
    names = [d.name for d in datasets_plugin.faceauth_datasets()]
    assert {"identity_folder", "demo_identities", "recordio"} <= set(names)
    assert all(isinstance(d, Dataset) for d in datasets_plugin.faceauth_datasets())
    folder = next(d for d in datasets_plugin.faceauth_datasets() if d.name == "identity_folder")
    assert resolve(folder.options) is IdentityFolderOptions and resolve(folder.build) is identity.build_identity_folder


def test_demo_identities_render_once_into_the_identity_folder_layout(isolated_cache):
    options = identity_demo.DemoIdentitiesOptions(identities=6, images_per_identity=4, size=32, seed=5,
                                                  val_identities=0.34, pairs_per_identity=4)
    splits = identity_demo.build_demo_identities(options)
    root = identity_demo.demo_identities_root(options)
    assert root.is_relative_to(isolated_cache / "demo")
    assert sorted(p.name for p in root.iterdir()) == [f"id{i:04d}" for i in range(6)]
    assert all(len(list(p.glob("*.jpg"))) == 4 for p in root.iterdir())
    assert not list(root.parent.glob(".*tmp*"))
    assert len(splits.classes) == 4 and len(splits.train) == 16 and len(splits.val.pairs) == 8
    sample = splits.train[0]
    assert sample["image"].size == (32, 32) and sample["label"] == 0
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    again = identity_demo.build_demo_identities(options)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == stamp and again.classes == splits.classes


def test_demo_identities_are_deterministic_and_consistent_per_person(tmp_path):
    first = identity_demo.write_identity_demo(tmp_path / "a", identities=3, images_per_identity=3, size=32, seed=1)
    second = identity_demo.write_identity_demo(tmp_path / "b", identities=3, images_per_identity=3, size=32, seed=1)
    files = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.jpg"))
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    with pytest.raises(FileExistsError):
        identity_demo.write_identity_demo(first, identities=1, images_per_identity=1, size=32)
