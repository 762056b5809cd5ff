"""CASIA-FASD (CASIA Face Anti-Spoofing Database): liveness from short videos, cropped to the face.

Layout (as the database is distributed)::

    root/train_release/<1..20>/{1,2,HR_1,3,4,HR_2,5,6,HR_3,7,8,HR_4}.avi
    root/test_release/<1..30>/...
    root/face-locations/<train_release|test_release>/<subject>/<stem>.face     optional

The file stem says what a video shows (the mapping bob.pad.face's ``casiafasd.py`` uses): ``1``,
``2``, ``HR_1`` live (normal, low, high quality); ``3``, ``4``, ``HR_2`` warped photo; ``5``, ``6``,
``HR_3`` cut photo; ``7``, ``8``, ``HR_4`` video replay. The 20 training and 30 test subjects are 50
different people, so subjects are named ``train:<n>`` and ``test:<n>``. Validation is a seeded,
subject-disjoint share of train_release (CASIA has no development set).

CASIA ships no face boxes: faces come from the recipe's ``detector`` (e.g. ``haar``), or from
``.face`` files (``frame x y w h`` per row, frame indices from 0, frames without a row have no face)
when ``root/face-locations/`` exists. Samples are single frames, or clips of ``clip_length`` frames
for temporal models (see `liveness_videos`, which Replay-Attack shares).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from faceauth.data import LIVE, SPOOF, Splits
from faceauth.errors import DataError
from faceauth.io.video import videos_under
from faceauth.plugins.datasets.frames import hold_out_subjects, open_fraction
from faceauth.plugins.datasets.liveness_videos import FACE_DIR, VideoFile, VideoOptions, build_video_splits, video_root

__all__ = ["CasiaFasdOptions", "STEMS", "build"]

STEMS = {"1": "", "2": "", "HR_1": "",
         "3": "warped_photo", "4": "warped_photo", "HR_2": "warped_photo",
         "5": "cut_photo", "6": "cut_photo", "HR_3": "cut_photo",
         "7": "video_replay", "8": "video_replay", "HR_4": "video_replay"}


@attrs.frozen(kw_only=True)
class CasiaFasdOptions(VideoOptions):
    val_subjects: float = attrs.field(default=0.2, validator=open_fraction)  # share of train_release subjects
    seed: int = 0


LAYOUT = "root/{train_release,test_release}/<subject>/<1..8,HR_1..HR_4>.avi"


def _natural(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def _subject_videos(root: Path, release: str, subject: str) -> list[VideoFile]:
    tag = release.removesuffix("_release")
    found = []
    for path in videos_under(root / release / subject):
        stem = next((s for s in STEMS if s.lower() == path.stem.lower()), None)
        if stem is None:
            raise DataError(f"{path}: unknown CASIA-FASD video name '{path.stem}' "
                            f"(valid stems: {', '.join(STEMS)})")
        attack_type = STEMS[stem]
        face_file = (root / FACE_DIR / path.relative_to(root)).with_suffix(".face")
        found.append(VideoFile(path, SPOOF if attack_type else LIVE, attack_type, f"{tag}:{subject}", face_file))
    return found


def _subjects(root: Path, release: str) -> list[str]:
    return sorted((p.name for p in (root / release).iterdir() if p.is_dir()), key=_natural)


def build(options: CasiaFasdOptions, detector: Any = None) -> Splits:
    root = video_root(options.root, "casia_fasd", ("train_release", "test_release"), LAYOUT)
    train_subjects = _subjects(root, "train_release")
    listed = {subject: _subject_videos(root, "train_release", subject) for subject in train_subjects}
    val = hold_out_subjects({s: {v.label for v in vs} for s, vs in listed.items()}, options.val_subjects,
                            options.seed, f"casia_fasd: {root / 'train_release'}")
    videos: dict[str, list[VideoFile]] = {"train": [], "val": [], "test": []}
    for subject in train_subjects:
        videos["val" if subject in val else "train"] += listed[subject]
    for subject in _subjects(root, "test_release"):
        videos["test"] += _subject_videos(root, "test_release", subject)
    info = {"val_subjects": [f"train:{s}" for s in train_subjects if s in val]}
    return build_video_splits("casia_fasd", root, videos, options, detector, info)
