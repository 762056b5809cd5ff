"""The NUAA Photograph Imposter Database (Tan et al., ECCV 2010): webcam images of 15-16 people, live
and printed-photo attacks, recorded in three sessions.

Layout, one of three variants of the release (``root`` may be the folder of the variant or the
database folder above it, which holds ``raw/``, ``Detectedface/`` and ``NormalizedFace/``)::

    raw:        root/{ClientRaw,ImposterRaw}/<subject>/*.jpg                640x480 frames
                root/{client,imposter}_{train,test}_raw.txt
    detected:   root/{ClientFace,ImposterFace}/<subject>/*.jpg              faces found by the authors
                root/{client,imposter}_{train,test}_face.txt
    normalized: root/{ClientNormalized,ImposterNormalized}/<subject>/*.jpg  64x64 aligned faces
                root/{client,imposter}_{train,test}_normalized.txt

File names are ``<subject>_<glasses>_<variation>_<session>_<frame>.jpg`` (e.g. ``0010_01_05_03_115.jpg``);
list files hold one path per line relative to the class folder, Windows style (``0001\\0001_00_00_01_0.jpg``),
possibly followed by more fields, which are ignored. Client images are live, imposter images are
printed-photo attacks (attack type ``print``).

Protocols (``protocol``):

- ``sessions`` (default, the standard one): train on sessions 01 and 02, test on session 03, the
  session being the 4th field of the file name. All images under the class folders are used.
- ``lists``: the shipped train and test list files.

Validation (``validation``), for both:

- ``subjects`` (default): a seeded subject-disjoint share of the training subjects (``val_subjects``,
  drawn among those with live and spoof training images): their training images validate and are
  not trained on. Validation shares the training sessions' capture conditions, so its threshold
  tends to saturate.
- ``session``: one training session held out (``val_session``, 02 by default): training uses the
  other, validation every subject's images of the held-out session. A new session is what the test
  is, so the validation threshold calibrates for it.

NUAA splits by session, not by person, so the test holds people seen in training: a warning names
them.

Raw frames need the recipe's detector (``detector: {name: haar}``; the face is about a quarter of
the frame), whose crops are cached; the detected and normalised variants are already faces and
are read as they are (no detector).
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

import faceauth
from faceauth.data import IMAGE_SUFFIXES, LIVE, SPOOF, Splits, check_classes, dataset_root
from faceauth.errors import DataError, RecipeError
from faceauth.faces import CropCache
from faceauth.io.paths import inside
from faceauth.plugins.datasets.frames import (
    CropOptions,
    CroppedFaces,
    FrameSource,
    crop_all,
    crop_geometry_of,
    detector_settings,
    hold_out_subjects,
    open_fraction,
    report_missing,
    warn_shared_subjects,
)

__all__ = ["NuaaOptions", "VARIANTS", "parse_name", "scan", "read_list", "by_session", "load_nuaa"]

log = logging.getLogger(__name__)

ATTACK_TYPE = "print"
TRAIN_SESSIONS, TEST_SESSIONS = ("01", "02"), ("03",)
NAME = re.compile(r"(?P<subject>\d{4})_(?P<glasses>\d{2})_(?P<variation>\d{2})_(?P<session>\d{2})_(?P<frame>\d+)"
                  r"\.(?:jpe?g|png|bmp)", re.IGNORECASE)


@attrs.frozen
class Variant:
    folder: str     # its folder in the full release
    client: str     # live images
    imposter: str   # printed-photo attacks
    lists: str      # list files: {client,imposter}_{train,test}_<lists>.txt


VARIANTS = {
    "raw": Variant("raw", "ClientRaw", "ImposterRaw", "raw"),
    "detected": Variant("Detectedface", "ClientFace", "ImposterFace", "face"),
    "normalized": Variant("NormalizedFace", "ClientNormalized", "ImposterNormalized", "normalized"),
}


@attrs.frozen(kw_only=True)
class NuaaOptions(CropOptions):
    root: str = faceauth.schema.required("the NUAA folder (raw/, detected/ or normalized/ client and imposter folders)")
    protocol: Literal["sessions", "lists"] = "sessions"  # sessions: train 01+02, test 03; lists: the list files
    variant: Literal["raw", "detected", "normalized"] = "raw"
    val_subjects: float = attrs.field(default=0.2, validator=open_fraction)  # share of training subjects
    validation: Literal["subjects", "session"] = "subjects"  # held-out subjects, or a held-out session
    val_session: Literal["01", "02"] = "02"  # the training session that validates (validation: session)
    seed: int = 0


@attrs.frozen
class NuaaImage:
    path: str
    label: int
    subject: str
    session: str


def parse_name(path: str | Path, where: str | None = None) -> dict[str, str]:
    """The fields of a NUAA file name; a DataError names the file (or `where`) when it does not parse."""
    name = Path(path).name
    match = NAME.fullmatch(name)
    if match is None:
        raise DataError(f"{where or path}: cannot parse the NUAA file name {name!r} "
                        "(expected <subject>_<glasses>_<variation>_<session>_<frame>.jpg, e.g. 0010_01_05_03_115.jpg)")
    return match.groupdict()


def _image(path: Path, label: int, where: str, folder: str | None) -> NuaaImage:
    fields = parse_name(path, where)
    if folder is not None and folder != fields["subject"]:
        raise DataError(f"{where}: the file name says subject {fields['subject']} but it is in folder {folder}/")
    return NuaaImage(str(path), label, fields["subject"], fields["session"])


def base_folder(root: Path, variant: Variant, key: str = "data.root") -> Path:
    """`root` or its variant sub-folder, whichever holds the client and imposter folders."""
    for base in (root, root / variant.folder):
        if (base / variant.client).is_dir() and (base / variant.imposter).is_dir():
            return base
    raise DataError(f"{key}: {root} has no {variant.client}/ and {variant.imposter}/ folders (expected "
                    f"root/{variant.client}/<subject>/*.jpg or root/{variant.folder}/{variant.client}/<subject>/*.jpg)")


def scan(base: Path, variant: Variant) -> list[NuaaImage]:
    """Every image under the client and imposter folders (hidden files skipped), sorted."""
    images = []
    for folder, label in ((variant.client, LIVE), (variant.imposter, SPOOF)):
        for dirpath, dirnames, filenames in os.walk(base / folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            parent = Path(dirpath)
            subject_folder = parent.name if parent != base / folder else None
            for name in sorted(filenames):
                if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                    images.append(_image(parent / name, label, str(parent / name), subject_folder))
    return images


def read_list(base: Path, variant: Variant, split: str) -> list[NuaaImage]:
    """The images of the client and imposter list files of `split`; missing images are counted and skipped."""
    images: list[NuaaImage] = []
    for kind, folder, label in (("client", variant.client, LIVE), ("imposter", variant.imposter, SPOOF)):
        path = base / f"{kind}_{split}_{variant.lists}.txt"
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"{path}: list file not found (protocol 'lists' needs "
                            f"{{client,imposter}}_{{train,test}}_{variant.lists}.txt beside {folder}/)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read list file ({exc})") from None
        listed, missing = 0, []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            listed += 1
            parts = [p for p in line.split()[0].replace("\\", "/").split("/") if p not in ("", ".")]
            if len(parts) > 1 and parts[0] == folder:  # given from the variant folder, not the class folder
                parts = parts[1:]
            where = f"{path}: line {number}"
            image = inside(base / folder, "/".join(parts), where)
            entry = _image(image, label, where, parts[-2] if len(parts) > 1 else None)
            if image.is_file():
                images.append(entry)
            else:
                missing.append(f"line {number}: {image}")
        report_missing(missing, listed, str(path), "")
    return images


def by_session(images: list[NuaaImage]) -> dict[str, list[NuaaImage]]:
    """NUAA's standard protocol: train on sessions 01 and 02, test on session 03."""
    unknown = [i for i in images if i.session not in TRAIN_SESSIONS + TEST_SESSIONS]
    if unknown:
        raise DataError(f"{unknown[0].path}: session {unknown[0].session} is not one of NUAA's sessions "
                        f"{', '.join(TRAIN_SESSIONS + TEST_SESSIONS)}")
    return {"train": [i for i in images if i.session in TRAIN_SESSIONS],
            "test": [i for i in images if i.session in TEST_SESSIONS]}


def _describe(images: Sequence[NuaaImage]) -> str:
    labels = Counter(i.label for i in images)
    sessions = ",".join(sorted({i.session for i in images}))
    return (f"{len(images)} (live {labels[LIVE]}, spoof {labels[SPOOF]}; {len({i.subject for i in images})} subjects, "
            f"sessions {sessions or '-'})")


def hold_out_session(train: list[NuaaImage], session: str, where: str) -> tuple[list[NuaaImage], list[NuaaImage]]:
    """(training images of the other sessions, images of `session`); a DataError when either is empty."""
    held = [i for i in train if i.session == session]
    kept = [i for i in train if i.session != session]
    if not held or not kept:
        found = ", ".join(sorted({i.session for i in train})) or "none"
        raise DataError(f"data.val_session: {where} has training sessions {found}; validation 'session' needs "
                        f"session {session} and another one (or use data.validation: subjects)")
    return kept, held


def load_nuaa(root: str | Path, *, protocol: str = "sessions", variant: str = "raw", val_subjects: float = 0.2,
              validation: str = "subjects", val_session: str = "02",
              seed: int = 0, crop: CropOptions = CropOptions(), detector: Any = None, key: str = "data.root") -> Splits:
    layout = VARIANTS[variant]
    root = dataset_root(root, key, f"root/{layout.client}/<subject>/*.jpg")
    if variant == "raw" and detector is None:
        raise RecipeError("detector: NUAA's raw frames need a face detector; add `detector: {name: haar}` to the "
                          "recipe, or use data.variant 'detected' or 'normalized' (faces already cropped)")
    base = base_folder(root, layout, key)
    if protocol == "lists":
        parts = {"train": read_list(base, layout, "train"), "test": read_list(base, layout, "test")}
    else:
        parts = by_session(scan(base, layout))
    where = f"nuaa ({protocol}) training data under {base}"
    held: set[str] = set()
    if validation == "session":
        train, val = hold_out_session(parts["train"], val_session, where)
        parts = {"train": train, "val": val, "test": parts["test"]}
    else:
        classes_of: dict[str, set[int]] = {}
        for image in parts["train"]:
            classes_of.setdefault(image.subject, set()).add(image.label)
        held = hold_out_subjects(classes_of, val_subjects, seed, where)
        parts = {"train": [i for i in parts["train"] if i.subject not in held],
                 "val": [i for i in parts["train"] if i.subject in held], "test": parts["test"]}
    warn_shared_subjects("nuaa", (i.subject for i in parts["train"] + parts["val"]), (i.subject for i in parts["test"]),
                         " (NUAA's protocols split by session, not by person: test figures include people seen in "
                         "training)")
    log.info("nuaa %s, %s protocol: %s", variant, protocol,
             "; ".join(f"{split} {_describe(images)}" for split, images in parts.items()))
    for split, images in parts.items():
        check_classes(split, [i.label for i in images], ("live", "spoof"), f"nuaa {split}")

    sources = {split: [FrameSource(i.path, None, i.label, "" if i.label == LIVE else ATTACK_TYPE, i.subject)
                       for i in images] for split, images in parts.items()}
    no_face: dict[str, int] = {}
    if variant == "raw":
        cache = CropCache("nuaa-raw", detector_settings(detector), detector, crop_geometry_of(crop))
        splits = {}
        for split, listed in sources.items():
            splits[split], report = crop_all(listed, cache, f"nuaa {split}")
            no_face[split] = len(report.no_face)
            check_classes(split, splits[split].labels, ("live", "spoof"), f"nuaa {split} (after face detection)")
    else:
        if detector is not None:
            log.info("nuaa %s: the images are already faces; the recipe's detector is not used", variant)
        splits = {split: CroppedFaces(listed) for split, listed in sources.items()}
    info = {"task": "liveness", "dataset": "nuaa", "root": str(base), "protocol": protocol, "variant": variant,
            "counts": {split: {"live": d.labels.count(LIVE), "spoof": d.labels.count(SPOOF)} for split, d in splits.items()},
            "no_face": no_face, "validation": validation, "val_subjects": sorted(held),
            "val_sessions": sorted({i.session for i in parts["val"]})}
    return Splits(train=splits["train"], val=splits["val"], test=splits["test"], classes=("live", "spoof"), info=info)


def build(options: NuaaOptions, detector: Any = None) -> Splits:
    return load_nuaa(options.root, protocol=options.protocol, variant=options.variant, val_subjects=options.val_subjects,
                     validation=options.validation, val_session=options.val_session, seed=options.seed,
                     crop=CropOptions(options.crop_scale, options.crop_size, options.crop_align), detector=detector)
