"""IJB-B / IJB-C 1:1 template verification: reading the release, pooling, the ROC table, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import faceauth
from faceauth import metrics as fa_metrics
from faceauth.commands.cli import eval_main
from faceauth.data import TemplateVerification
from faceauth.faces.align import ARCFACE_TEMPLATE_112
from faceauth.plugins.datasets.ijb import load_ijb
from faceauth.plugins.trainers.templates import template_features, template_metrics, template_pair_scores

# template id -> [(media id, faces in that media)], and the pairs (t1, t2, label)
TEMPLATES = {101: [(7, 2), (8, 1)], 102: [(9, 1)], 205: [(7, 1), (11, 3)], 310: [(12, 2)]}
PAIRS = [(101, 102, 1), (101, 205, 0), (102, 310, 0), (205, 310, 1), (101, 310, 0)]


def write_ijb(root: Path, protocol: str = "ijbc", templates=TEMPLATES, pairs=PAIRS, seed: int = 0) -> Path:
    """An IJB release in its distributed format: loose_crop/*.jpg and the three meta files."""
    rng = np.random.default_rng(seed)
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    faces, landmarks = [], []
    number = 0
    for template, media in templates.items():
        for media_id, count in media:
            for _ in range(count):
                number += 1
                name = f"{number}.jpg"
                pixels = rng.integers(0, 256, size=(96, 80, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "loose_crop" / name, quality=90)
                points = ARCFACE_TEMPLATE_112 * 0.6 + [12, 20] + rng.normal(0, 1.0, size=(5, 2))
                score = rng.uniform(0.5, 1.0)
                faces.append(f"{name} {template} {media_id}")
                landmarks.append(" ".join([name, *(f"{v:.3f}" for v in points.ravel()), f"{score:.6f}"]))
    meta = root / "meta"
    (meta / f"{protocol}_face_tid_mid.txt").write_text("\n".join(faces) + "\n")
    (meta / f"{protocol}_name_5pts_score.txt").write_text("\n".join(landmarks) + "\n")
    (meta / f"{protocol}_template_pair_label.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in pairs))
    return root


def direct_template_features(embeddings, protocol: TemplateVerification) -> np.ndarray:
    """The pooling written out: per template, mean per media of the weighted faces, summed, normalised."""
    features = []
    for t in range(len(protocol.template_ids)):
        media_features = []
        for media in sorted(set(protocol.face_media[protocol.face_template == t].tolist())):
            rows = np.flatnonzero((protocol.face_template == t) & (protocol.face_media == media))
            faces = embeddings[rows].astype(np.float64)
            if not protocol.norm_score:
                faces = faces / np.linalg.norm(faces, axis=1, keepdims=True)
            if protocol.detector_score:
                faces = faces * protocol.face_score[rows, None]
            media_features.append(faces.mean(axis=0))
        pooled = np.sum(media_features, axis=0)
        features.append(pooled / np.linalg.norm(pooled))
    return np.array(features)


def direct_tar_at_far(scores, is_same, far: float) -> float:
    """Every threshold tried: the best TAR whose FAR does not exceed `far` (NaN below 1/far impostors)."""
    genuine, impostor = scores[is_same], scores[~is_same]
    if len(impostor) * far < 1:
        return float("nan")
    best = 0.0
    for threshold in np.unique(scores):
        if np.mean(impostor >= threshold) <= far:
            best = max(best, float(np.mean(genuine >= threshold)))
    return best


def test_reads_the_release_and_aligns_the_loose_crops(tmp_path: Path) -> None:
    splits = load_ijb(write_ijb(tmp_path / "IJBC"))
    protocol = splits.test
    assert isinstance(protocol, TemplateVerification) and protocol.name == "ijbc"
    assert splits.train is None and splits.val is None
    assert protocol.template_ids.tolist() == [101, 102, 205, 310]
    assert len(protocol.images) == 10 and protocol.face_template.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 3, 3]
    assert protocol.face_media.tolist() == [7, 7, 8, 9, 7, 11, 11, 11, 12, 12]
    assert protocol.pairs.tolist() == [[0, 1], [0, 2], [1, 3], [2, 3], [0, 3]]
    assert protocol.is_same.tolist() == [True, False, False, True, False]
    sample = protocol.images[3]
    assert sample["image"].size == (112, 112) and sample["path"].endswith("loose_crop/4.jpg")
    assert splits.info["templates"] == 4 and splits.info["media"] == 6 and splits.info["pairs"] == 5


def test_only_templates_named_by_pairs_are_embedded(tmp_path: Path) -> None:
    protocol = load_ijb(write_ijb(tmp_path / "IJBB", "ijbb", pairs=[(101, 102, 1), (102, 101, 0)])).test
    assert protocol.name == "ijbb" and protocol.template_ids.tolist() == [101, 102] and len(protocol.images) == 4


@pytest.mark.parametrize("detector_score", [True, False])
@pytest.mark.parametrize("norm_score", [True, False])
def test_pooling_and_scores_match_a_direct_computation(tmp_path: Path, detector_score: bool, norm_score: bool) -> None:
    protocol = load_ijb(write_ijb(tmp_path / "IJBC"), detector_score=detector_score, norm_score=norm_score).test
    embeddings = np.random.default_rng(1).normal(size=(len(protocol.images), 16)).astype(np.float32)
    embeddings *= np.random.default_rng(2).uniform(0.5, 3.0, size=(len(embeddings), 1)).astype(np.float32)
    expected = direct_template_features(embeddings, protocol)
    np.testing.assert_allclose(template_features(embeddings, protocol), expected, atol=1e-6)
    pair_scores = np.array([expected[a] @ expected[b] for a, b in protocol.pairs])
    figures, scores = template_metrics(embeddings, protocol)
    np.testing.assert_allclose(scores, pair_scores, atol=1e-6)
    assert figures["num_templates"] == 4 and figures["num_faces"] == 10 and figures["num_pairs"] == 5


def test_options_change_the_pooling(tmp_path: Path) -> None:
    root = write_ijb(tmp_path / "IJBC")
    embeddings = np.random.default_rng(1).normal(size=(10, 8)).astype(np.float32)
    embeddings[:3] *= 5.0  # template 101's faces: norms differ, so the norm option matters
    plain = template_features(embeddings, load_ijb(root, detector_score=False, norm_score=False).test)
    for options in ({"detector_score": True, "norm_score": False}, {"detector_score": False, "norm_score": True}):
        assert not np.allclose(template_features(embeddings, load_ijb(root, **options).test)[0], plain[0])


@pytest.mark.parametrize("templates, count", [(50, 3000), (5000, 300)])  # dense: matrix products; sparse: gathers
def test_pair_scores_in_blocks_match_a_direct_computation(templates: int, count: int) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(templates, 32)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    pairs = rng.integers(0, templates, size=(count, 2))
    direct = np.array([features[a].astype(np.float64) @ features[b] for a, b in pairs])
    for chunk_bytes in (1 << 30, 7 * 2 * 32 * 4, 1):
        np.testing.assert_allclose(template_pair_scores(features, pairs, chunk_bytes=chunk_bytes), direct, atol=1e-6)


def test_roc_table_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    is_same = np.r_[np.ones(300, bool), np.zeros(12000, bool)]
    scores = np.r_[rng.normal(1.5, 1.0, 300), rng.normal(0.0, 1.0, 12000)].round(3)  # ties included
    table = fa_metrics.roc_table(scores, is_same)
    assert set(table) >= {"tar_at_far_1e-6", "tar_at_far_1e-5", "tar_at_far_1e-4", "tar_at_far_1e-3",
                          "tar_at_far_1e-2", "tar_at_far_1e-1", "eer", "auc"}
    for far in fa_metrics.ROC_TABLE_FARS:
        expected = direct_tar_at_far(scores, is_same, far)
        got = table[fa_metrics.far_key(far)]
        assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(expected), far
    assert np.isnan(table["tar_at_far_1e-5"]) and not np.isnan(table["tar_at_far_1e-4"])
    pairs_won = np.mean(scores[is_same][:, None] > scores[~is_same][None, :])
    ties = np.mean(scores[is_same][:, None] == scores[~is_same][None, :])
    assert table["auc"] == pytest.approx(pairs_won + ties / 2)


# --- bad input: one line naming the file and line ---------------------------------------------


def _break(root: Path, file: str, line: int, text: str | None) -> None:
    path = root / "meta" / file
    lines = path.read_text().splitlines()
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("file, line, text, message", [
    ("ijbc_face_tid_mid.txt", 3, "3.jpg 101", r"ijbc_face_tid_mid.txt:3: expected 'image template_id media_id'"),
    ("ijbc_face_tid_mid.txt", 2, "2.jpg 101 seven", r"ijbc_face_tid_mid.txt:2: .* integer ids"),
    ("ijbc_name_5pts_score.txt", 4, "4.jpg 1 2 3", r"ijbc_name_5pts_score.txt:4: expected 'image x1 y1"),
    ("ijbc_name_5pts_score.txt", 1, "1.jpg 1 2 3 4 5 6 7 8 9 x 0.9", r"ijbc_name_5pts_score.txt:1: .*finite"),
    ("ijbc_template_pair_label.txt", 2, "101 205", r"ijbc_template_pair_label.txt:2: expected 'template_id_1"),
    ("ijbc_template_pair_label.txt", 4, "205 310 one", r"ijbc_template_pair_label.txt:4: .*integer fields"),
    ("ijbc_template_pair_label.txt", 3, "102 310 2", r"ijbc_template_pair_label.txt:3: label 2 is not 0 or 1"),
    ("ijbc_template_pair_label.txt", 5, "101 999 0", r"ijbc_template_pair_label.txt:5: template 999 has no faces"),
    ("ijbc_name_5pts_score.txt", 2, "99.jpg 1 2 3 4 5 6 7 8 9 10 0.9", r"ijbc_name_5pts_score.txt:2: image .*99.jpg "
                                                                      r"does not exist"),
    ("ijbc_name_5pts_score.txt", 6, None, r"ijbc_face_tid_mid.txt:6: image 6.jpg has no row in"),
])
def test_bad_meta_files_are_one_line_naming_file_and_line(tmp_path: Path, file, line, text, message) -> None:
    root = write_ijb(tmp_path / "IJBC")
    _break(root, file, line, text)
    with pytest.raises(faceauth.DataError, match=message) as caught:
        load_ijb(root)
    assert "\n" not in str(caught.value)


def test_a_template_without_a_scored_face_is_named(tmp_path: Path) -> None:
    root = write_ijb(tmp_path / "IJBC")
    path = root / "meta" / "ijbc_name_5pts_score.txt"
    rows = [line.split() for line in path.read_text().splitlines()]
    rows[3][-1] = "0"  # 4.jpg: the only face of template 102
    path.write_text("\n".join(" ".join(r) for r in rows) + "\n")
    with pytest.raises(faceauth.DataError, match="template 102 has no face with a detector score above 0"):
        load_ijb(root)
    assert len(load_ijb(root, detector_score=False).test.images) == 10


def test_missing_meta_files_and_ambiguous_releases(tmp_path: Path) -> None:
    with pytest.raises(faceauth.DataError, match="neither of ijbb_face_tid_mid.txt"):
        load_ijb(tmp_path)
    root = write_ijb(tmp_path / "IJB")
    (root / "meta" / "ijbb_face_tid_mid.txt").write_text("")
    with pytest.raises(faceauth.DataError, match="both .*data.protocol"):
        load_ijb(root)
    with pytest.raises(faceauth.DataError, match="ijbb_name_5pts_score.txt not found"):
        load_ijb(root, "ijbb")


# --- an embedding run tested on IJB, and faceauth-eval ----------------------------------------

RUN = {
    "seed": 0,
    "data": {"name": "demo_identities", "identities": 8, "images_per_identity": 4, "size": 48,
             "val_identities": 0.25, "pairs_per_identity": 4},
    "backbone": {"name": "resnet18", "input_size": 32},
    "loss": {"name": "arcface", "scale": 16.0, "margin": 0.2},
    "trainer": {"name": "embedding", "epochs": 1, "batch_size": 16, "num_workers": 0, "progress": False},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "export": {"name": "onnx"},
}


@pytest.mark.slow
def test_embedding_run_and_faceauth_eval_measure_ijb(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = write_ijb(tmp_path / "IJBC")
    recipe = {**RUN, "output_dir": str(tmp_path / "runs"),
              "test_data": {"name": "ijb", "root": str(root), "protocol": "ijbc"}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = faceauth.run(path)
    figures = json.loads((result.dir / "metrics.json").read_text())["test_ijbc"]
    for far in fa_metrics.ROC_TABLE_FARS:
        assert fa_metrics.far_key(far) in figures
    assert figures["num_pairs"] == 5 and figures["num_templates"] == 4 and 0 <= figures["auc"] <= 1
    assert "tar_at_val_threshold" in figures
    events = EventAccumulator(str(result.dir))
    events.Reload()
    assert "test_ijbc/tar_at_far_1e-1" in events.Tags()["scalars"]
    assert any("roc_table_ijbc" in tag for tag in events.Tags()["tensors"])

    from faceauth.runs.models import evaluate

    from_checkpoint = evaluate(result.dir / "checkpoints" / "best.pt", ijb=root)
    assert from_checkpoint["auc"] == pytest.approx(figures["auc"], abs=1e-6)
    # an exported model's embeddings are unit length: with faces normalised first, both pool alike
    unit_checkpoint = evaluate(result.dir / "checkpoints" / "best.pt", ijb=root, overrides=["data.norm_score=false"])
    unit_onnx = evaluate(result.onnx_path, ijb=root, overrides=["data.norm_score=false"])
    for key in ("auc", "eer", "tar_at_far_1e-1", "tar_at_val_threshold"):
        assert unit_onnx[key] == pytest.approx(unit_checkpoint[key], abs=1e-6, nan_ok=True), key
    assert eval_main([str(result.onnx_path), "--ijb", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_templates"] == 4
    _break(root, "ijbc_template_pair_label.txt", 2, "101 4242 0")
    assert eval_main([str(result.onnx_path), "--ijb", str(root)]) == 1
    error = capsys.readouterr().err.strip()
    assert "ijbc_template_pair_label.txt:2: template 4242 has no faces" in error and "\n" not in error


def test_faceauth_eval_measures_only_embedding_models_on_ijb(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from faceauth.training import checkpoint

    root = write_ijb(tmp_path / "IJBC")
    liveness = checkpoint.save(tmp_path / "liveness.pt", {"task": "liveness", "recipe": {}, "model": {}})
    assert eval_main([str(liveness), "--ijb", str(root)]) == 1
    error = capsys.readouterr().err.strip()
    assert "liveness.pt: a liveness model; an IJB protocol measures face-recognition (embedding) models" in error
    assert "\n" not in error


def test_a_bad_ijb_test_set_stops_an_embedding_run_before_training(tmp_path: Path) -> None:
    root = write_ijb(tmp_path / "IJBC")
    _break(root, "ijbc_template_pair_label.txt", 3, "102 777 0")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**RUN, "output_dir": str(tmp_path / "runs"),
                                    "test_data": {"name": "ijb", "root": str(root)}}))
    with pytest.raises(faceauth.DataError, match="ijbc_template_pair_label.txt:3: template 777 has no faces"):
        faceauth.run(path)
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.pt"))
