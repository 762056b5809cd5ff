"""Tests for the procedural demo liveness dataset (faceauth.plugins.datasets.demo_render)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from faceauth.plugins.datasets import demo_render

COUNTS = {"train": 60, "val": 30, "test": 30}
NAME = re.compile(r"^(\d{4})_(\d{4})\.jpg$")
KIND_DIRS = {"live": "live", "print": "spoof/print", "replay": "spoof/replay"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "liveness"
    demo_render.write_liveness_demo(root, counts=COUNTS, seed=0)
    return root


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _identities(root, split):
    return {int(NAME.match(p.name).group(1)) for p in (root / split).rglob("*.jpg")}


def test_layout_and_counts(demo):
    assert sorted(p.name for p in demo.iterdir()) == sorted(COUNTS)
    for split, count in COUNTS.items():
        per_kind = {k: list((demo / split / d).glob("*.jpg")) for k, d in KIND_DIRS.items()}
        assert sum(len(v) for v in per_kind.values()) == count
        assert all(len(v) == count // 3 for v in per_kind.values())
        assert all(NAME.match(p.name) for v in per_kind.values() for p in v)
        assert sorted(p.name for p in (demo / split / "spoof").iterdir()) == ["print", "replay"]


def test_identities_disjoint_and_seen_in_every_kind(demo):
    ids = {split: _identities(demo, split) for split in COUNTS}
    assert len(ids["train"]) == 3 and len(ids["val"]) == len(ids["test"]) == 1
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    for d in KIND_DIRS.values():
        assert {int(NAME.match(p.name).group(1)) for p in (demo / "train" / d).glob("*.jpg")} == ids["train"]
    indices = Counter(int(NAME.match(p.name).group(2)) for p in (demo / "train").rglob("*.jpg"))
    assert set(indices.values()) == {1}  # an index names one image per split


def test_images_decode_as_112_rgb(demo):
    for path in demo.rglob("*.jpg"):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (112, 112)


def test_deterministic_per_seed(tmp_path):
    counts = {"train": 6, "test": 3}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        demo_render.write_liveness_demo(tmp_path / name, counts=counts, seed=seed)
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b")
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    same = [(tmp_path / "a" / f).read_bytes() == (tmp_path / "c" / f).read_bytes()
            for f in files if (tmp_path / "c" / f).exists()]
    assert not any(same)


def test_existing_root_raises_and_no_tmp_left(tmp_path):
    root = tmp_path / "demo"
    demo_render.write_liveness_demo(root, counts={"train": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    before = _files(root)
    with pytest.raises(FileExistsError):
        demo_render.write_liveness_demo(root, counts={"train": 3})
    assert _files(root) == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileExistsError):
        demo_render.write_liveness_demo(tmp_path / "empty", counts={"train": 3})


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(face, rng):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(demo_render, "replay_attack", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        demo_render.write_liveness_demo(tmp_path / "demo", counts={"train": 6})
    assert list(tmp_path.iterdir()) == []


def test_render_api_shapes_and_keywords():
    identity = demo_render.sample_identity(np.random.default_rng(0))
    open_eyes = demo_render.render_face(identity, np.random.default_rng(1), 64)
    closed = demo_render.render_face(identity, np.random.default_rng(1), 64, eye_open=0.0)
    assert open_eyes.shape == (64, 64, 3) and open_eyes.dtype == np.uint8
    assert not np.array_equal(open_eyes, closed)
    posed = demo_render.render_face(identity, np.random.default_rng(1), 64, yaw=0.4, pitch=-0.2,
                                    roll=0.2, light=(-1.0, 0.2, 0.7), scale=0.85)
    assert not np.array_equal(open_eyes, posed)
    for attack in (demo_render.print_attack, demo_render.replay_attack):
        out = attack(open_eyes, np.random.default_rng(2))
        assert out.shape == open_eyes.shape and out.dtype == np.uint8


def _laplacian_energy(img):
    g = img.astype(np.float32).mean(2)
    return np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]).mean()


def _colour_fringing(img):
    d = img[..., 0].astype(np.float32) - img[..., 1]
    return np.abs(np.diff(d, axis=1)).mean()


def _dark_fraction(img):
    return (img.astype(np.float32).mean(2) < 40).mean()


def test_attack_artefacts_are_measurable():
    stats = {kind: [] for kind in ("live", "print", "replay")}
    for i in range(8):
        rng = np.random.default_rng([42, i])
        identity = demo_render.sample_identity(rng)
        for kind, make in (("live", None), ("print", demo_render.print_attack),
                           ("replay", demo_render.replay_attack)):
            face = demo_render.render_face(identity, rng, yaw=rng.normal(0, 0.2), light=(0.5, -0.5, 1.0))
            img = face if make is None else make(face, rng)
            stats[kind].append((_laplacian_energy(img), _colour_fringing(img), _dark_fraction(img)))
    live, prnt, replay = (np.mean(stats[k], axis=0) for k in ("live", "print", "replay"))
    assert prnt[0] > 1.5 * live[0]        # halftone dots
    assert replay[0] > live[0]            # sub-pixel grid and moire
    assert replay[1] > 2 * live[1]        # RGB stripes fringe colour
    assert replay[2] > live[2] + 0.05     # bezel in frame
