"""Idiap Replay-Attack: liveness from short videos, cropped to the face.

Layout (as the database is distributed)::

    root/{train,devel,test}/real/client001_session01_webcam_authenticate_adverse_1.mov
    root/{train,devel,test}/attack/{fixed,hand}/attack_highdef_client001_session01_highdef_photo_adverse.mov
    root/face-locations/<the same relative path, with .face>          frame x y w h per row

`devel` is the validation split. The naming is the one bob.db.replay parses (``create.py``): a real
access is ``client<id>_session<nn>_<camera>_<purpose>_<light>[_<take>]``; an attack is
``attack_<device>_client<id>_session<nn>_<sample device>_<sample type>_<light>``, where the attack
device (``print``, ``mobile``, ``highdef``) is the attack type and the folder (``fixed``, ``hand``)
the support. Client numbers are global (each client belongs to one split), so a client seen in two
splits is warned about. The ``enroll/`` folders (face-verification enrolment) are not used.

The face files (bob.db.replay ``File.bbx``) hold the frame index (from 0) and the box's top-left
x, y, width and height in pixels; frames without a row have no face. With no ``detector`` in the
recipe these boxes are used as they are; with one they are its hints. Samples are single frames, or
clips of ``clip_length`` frames for temporal models (see `liveness_videos`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from faceauth.data import LIVE, SPOOF, Splits
from faceauth.errors import DataError
from faceauth.io.video import videos_under
from faceauth.plugins.datasets.liveness_videos import FACE_DIR, VideoFile, VideoOptions, build_video_splits, video_root

__all__ = ["ReplayAttackOptions", "build", "parse_name"]

ATTACK_TYPES = ("print", "mobile", "highdef")
SPLITS = {"train": "train", "devel": "val", "test": "test"}
LAYOUT = "root/{train,devel,test}/{real,attack/fixed,attack/hand}/*.mov"
REAL_NAME = re.compile(r"^(client\d+)_session\d+_")
ATTACK_NAME = re.compile(r"^attack_([a-z]+)_(client\d+)_session\d+_")


@attrs.frozen(kw_only=True)
class ReplayAttackOptions(VideoOptions):
    """Root, frames or clips per video, what to do with undecodable videos, crop options."""


def parse_name(path: Path, real: bool) -> tuple[str, str]:
    """(client, attack type) from a Replay-Attack file name; attack type "" for a real access."""
    if real:
        match = REAL_NAME.match(path.stem)
        if match is None:
            raise DataError(f"{path}: not a Replay-Attack real-access name (expected client<id>_session<nn>_..., "
                            f"e.g. client001_session01_webcam_authenticate_adverse_1)")
        return match.group(1), ""
    match = ATTACK_NAME.match(path.stem)
    if match is None:
        raise DataError(f"{path}: not a Replay-Attack attack name (expected "
                        f"attack_<{'|'.join(ATTACK_TYPES)}>_client<id>_session<nn>_..., "
                        f"e.g. attack_print_client001_session01_highdef_photo_adverse)")
    if match.group(1) not in ATTACK_TYPES:
        raise DataError(f"{path}: unknown Replay-Attack attack device '{match.group(1)}' "
                        f"(known: {', '.join(ATTACK_TYPES)})")
    return match.group(2), match.group(1)


def _split_videos(root: Path, split: str) -> list[VideoFile]:
    found = []
    for kind in ("real", "attack"):
        folder = root / split / kind
        if not folder.is_dir():
            raise DataError(f"{root / split}: missing folder '{kind}/' (expected {LAYOUT})")
        for path in videos_under(folder):
            client, attack_type = parse_name(path, real=kind == "real")
            face_file = (root / FACE_DIR / path.relative_to(root)).with_suffix(".face")
            found.append(VideoFile(path, SPOOF if attack_type else LIVE, attack_type, client, face_file))
    return found


def build(options: ReplayAttackOptions, detector: Any = None) -> Splits:
    root = video_root(options.root, "replay_attack", tuple(SPLITS), LAYOUT)
    videos = {ours: _split_videos(root, theirs) for theirs, ours in SPLITS.items()}
    return build_video_splits("replay_attack", root, videos, options, detector, {"val_split": "devel"})
