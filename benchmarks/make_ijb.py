"""Generate an IJB-C-shaped release (loose_crop/*.jpg and the three meta files) at a fraction of its size.

The real IJB-C 1:1 protocol has 469,375 faces in 23,124 templates of 3,531 subjects and 15,658,489
template pairs (19,557 genuine). ``--scale 0.05`` (1/20, the default) keeps those proportions:
23,469 faces, 1,156 templates, 177 subjects, 978 genuine and 781,946 impostor pairs. Pairs are
distinct ordered template pairs (1/20 of the templates cannot give 1/20 of the pairs unordered).
Each template has 1-6 media, its faces spread over them (a video's frames share a media id);
images are smooth random colour fields of ``--size`` pixels (256 distinct JPEGs, reused), which
decode like photographs of that size, with five landmarks where a face would be in a loose crop and
a detector score in [0.6, 1).

    python benchmarks/make_ijb.py /tmp/ijbc_20 [--scale 0.05] [--size 250] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from faceauth.faces.align import ARCFACE_TEMPLATE_112

FACES, TEMPLATES, SUBJECTS, GENUINE, IMPOSTOR = 469_375, 23_124, 3_531, 19_557, 15_638_932


def _ordered_pairs(rng: np.random.Generator, candidates_a: np.ndarray, candidates_b: np.ndarray, count: int,
                   wanted: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`count` distinct ordered pairs (a, b), a != b, with ``wanted[a, b]`` true, by rejection sampling."""
    chosen = np.zeros((0, 2), dtype=np.int64)
    while len(chosen) < count:
        draw = np.stack([rng.choice(candidates_a, 4 * count), rng.choice(candidates_b, 4 * count)], axis=1)
        draw = draw[(draw[:, 0] != draw[:, 1]) & wanted(draw)]
        merged = np.concatenate([chosen, draw])
        _, first = np.unique(merged[:, 0] * 10**9 + merged[:, 1], return_index=True)
        chosen = merged[np.sort(first)][:count]
    return chosen


def _colour_field(rng: np.random.Generator, size: int) -> bytes:
    out = io.BytesIO()
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    field.resize((size, size), Image.Resampling.BILINEAR).save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_ijb(root: Path, scale: float, size: int, seed: int, with_pairs: bool = True) -> dict[str, int]:
    """Write the release; without `with_pairs` only the faces (loose crops, landmarks, face map)."""
    rng = np.random.default_rng(seed)
    faces, templates = round(FACES * scale), max(2, round(TEMPLATES * scale))
    subjects, genuine, impostor = max(2, round(SUBJECTS * scale)), round(GENUINE * scale), round(IMPOSTOR * scale)
    subject = rng.integers(0, subjects, templates)
    face_template = np.sort(np.r_[np.arange(templates), rng.integers(0, templates, faces - templates)])
    media_count = rng.integers(1, 7, templates)
    media_of_face = rng.integers(0, media_count[face_template])
    media_id = np.cumsum(np.r_[0, media_count[:-1]])[face_template] + media_of_face + 1
    template_id = np.arange(templates) + 1

    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    encoded = [_colour_field(rng, size) for _ in range(min(faces, 256))]  # reused: encoding dominates otherwise
    names = [f"{face + 1}.jpg" for face in range(faces)]
    for face, name in enumerate(names):
        (root / "loose_crop" / name).write_bytes(encoded[face % len(encoded)])
    points = ARCFACE_TEMPLATE_112 * (0.55 * size / 112) + 0.22 * size + rng.normal(0, 0.01 * size, (faces, 5, 2))
    scores = rng.uniform(0.6, 1.0, faces)
    face_rows = [f"{n} {t} {m}" for n, t, m in zip(names, template_id[face_template].tolist(), media_id.tolist())]
    landmark_rows = [n + " " + " ".join(f"{v:.2f}" for v in p) + f" {s:.6f}"
                     for n, p, s in zip(names, points.reshape(faces, 10).tolist(), scores.tolist())]
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(face_rows) + "\n")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(landmark_rows) + "\n")

    if not with_pairs:
        return {"faces": faces, "templates": templates}
    everyone = np.arange(templates)
    same = _ordered_pairs(rng, everyone, everyone, genuine, lambda p: subject[p[:, 0]] == subject[p[:, 1]])
    other = _ordered_pairs(rng, everyone, everyone, impostor, lambda p: subject[p[:, 0]] != subject[p[:, 1]])
    table = np.concatenate([np.c_[template_id[same], np.ones(len(same), np.int64)],
                            np.c_[template_id[other], np.zeros(len(other), np.int64)]])
    table = table[rng.permutation(len(table))]
    np.savetxt(root / "meta" / "ijbc_template_pair_label.txt", table, fmt="%d")
    return {"faces": faces, "templates": templates, "media": len(np.unique(media_id)), "pairs": len(table),
            "genuine": genuine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="where to write the release (must not exist)")
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--size", type=int, default=250, help="loose crop side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.root.exists():
        parser.error(f"{args.root} exists")
    print(make_ijb(args.root, args.scale, args.size, args.seed))


if __name__ == "__main__":
    main()
