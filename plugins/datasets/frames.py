"""Liveness samples cut from raw frames: still images or video frames, cropped to the face and cached.

Dataset loaders of raw data (CASIA-FASD, Replay-Attack, CelebA-Spoof, NUAA) list `FrameSource`s,
then call `crop_all`, which makes the missing crops in one pass (decoding each video once, with a
progress bar), logs how many frames had no face, and returns a `CroppedFaces` dataset that reads the
cached crops.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from tqdm import tqdm

import faceauth
from faceauth.data import LIVE, SPOOF, read_image
from faceauth.errors import DataError
from faceauth.faces import Box, CropCache, CropGeometry, CropReport
from faceauth.io.paths import atomic_write, cache_dir
from faceauth.io.video import frame_count, read_frames

log = logging.getLogger(__name__)


@attrs.frozen
class CropOptions:
    """Face-crop settings shared by the raw-frame datasets (the detector is the recipe's `detector`).

    `crop_scale`: the crop's side is the face box's longer side times this, in (0, 10] (Silent-Face
    crops at 2.7 and 4.0); a list of scales makes one sample per scale of each face. `crop_align`:
    warp the face onto the ArcFace five-point template instead (needs a detector with landmarks).
    """

    crop_scale: float | list[float] = 1.4
    crop_size: int = attrs.field(default=128, validator=faceauth.schema.positive)
    crop_align: bool = False

    def __attrs_post_init__(self) -> None:
        crop_geometry_of(self)  # checks the scales (a ValueError becomes a recipe error naming the key)


def crop_geometry_of(options: Any) -> CropGeometry:
    """The crop geometry of a dataset's options (`crop_scale`, `crop_size`, `crop_align`; the detector is the recipe's)."""
    return CropGeometry(detector=None, scales=options.crop_scale, size=options.crop_size,
                        align=getattr(options, "crop_align", False))


@attrs.frozen
class FrameSource:
    """One frame to crop: a still image (`frame` None) or frame `frame` of a video."""

    path: str
    frame: int | None
    label: int
    attack_type: str
    subject: str
    hint: Box | None = None

    @property
    def source_id(self) -> str:
        return self.path if self.frame is None else f"{self.path}#{self.frame}"

    def load(self) -> tuple[np.ndarray, Box | None]:
        if self.frame is None:
            return np.asarray(read_image(self.path)), self.hint
        return read_frames(self.path, [self.frame])[0], self.hint


class CroppedFaces:
    """Face crops of a list of sources, read from the cache (a damaged entry is rebuilt).

    With no cache the sources are face crops already (e.g. NUAA's detected variant) and are decoded
    as they are. A cache of several crop scales gives one sample per source and scale (scale-major
    within a source), all in the source's "video" group, so per-video scores average the scales.
    """

    def __init__(self, sources: Sequence[FrameSource], cache: CropCache | None = None):
        self.sources, self.cache = list(sources), cache
        self.scales = cache.num_scales if cache is not None else 1
        self.labels = [s.label for s in self.sources for _ in range(self.scales)]
        self.attack_types = [s.attack_type for s in self.sources for _ in range(self.scales)]
        self.subjects = [s.subject for s in self.sources for _ in range(self.scales)]

    def __len__(self) -> int:
        return len(self.sources) * self.scales

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, scale = self.sources[index // self.scales], index % self.scales
        image = (read_image(source.path) if self.cache is None
                 else self.cache.read(source.source_id, source.load, scale))
        # "video" groups the frames of one video, so liveness metrics are per video as the field
        # reports them; a still image is its own group.
        return {"image": image, "label": source.label, "attack_type": source.attack_type, "subject": source.subject,
                "path": source.source_id, "video": source.path}


def _decode_groups(sources: Sequence[FrameSource]) -> dict[str, list[FrameSource]]:
    groups: dict[str, list[FrameSource]] = defaultdict(list)
    for source in sources:
        groups[source.path].append(source)
    return groups


def crop_all(sources: Sequence[FrameSource], cache: CropCache, where: str,
             on_bad_video: str = "skip") -> tuple[CroppedFaces, CropReport]:
    """Make the missing crops of `sources`, then a dataset of those that have a face.

    A video that cannot be decoded is skipped with a warning naming it (`on_bad_video="skip"`) or
    stops the run (`"error"`).
    """
    report = CropReport()
    missing = [s for s in sources if cache.status(s.source_id) == "missing"]
    todo = {s.source_id for s in missing}
    broken: list[str] = []
    with tqdm(total=len(missing), desc=f"face crops: {where}", unit="frame", disable=not missing,
              leave=False) as bar:
        for path, group in _decode_groups(missing).items():
            try:
                if group[0].frame is None:
                    images = [np.asarray(read_image(path))]
                else:
                    images = read_frames(path, [s.frame for s in group])
            except DataError as exc:
                if on_bad_video == "error":
                    raise
                log.warning("skipped: %s", exc)
                broken.append(path)
                bar.update(len(group))
                continue
            for source, image in zip(group, images, strict=True):
                if cache.make(source.source_id, image, source.hint) is not None:
                    report.made += 1
                bar.update(1)
    kept = []
    for source in sources:
        state = cache.status(source.source_id)
        if state == "crop":
            kept.append(source)
            report.cached += source.source_id not in todo
        elif source.path not in broken:
            report.no_face.append(source.source_id)
    if broken:
        log.warning("%s: %d videos could not be decoded and were skipped (e.g. %s)", where, len(broken), broken[0])
    log.info(report.summary(where))
    if not kept:
        raise DataError(f"{where}: no face found in any of its {len(sources)} frames (check the detector setting)")
    return CroppedFaces(kept, cache), report


class FrameCounts:
    """Frames per video, counted by decoding once and remembered in the crop cache.

    Entries are keyed by path and checked against the file's size and modification time; a video
    that cannot be decoded is remembered too, so a cached build opens no video at all. A new OpenCV
    version starts afresh (its decoder may count differently).
    """

    def __init__(self, dataset: str, root: Path):
        import cv2

        key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
        self.dataset = dataset
        self.path = cache_dir("crops", f"{dataset}-frame-counts-{key}.json")
        self.opencv = cv2.__version__
        self.videos: dict[str, Any] = {}
        self.decoded = 0
        self.changed: list[str] = []  # videos whose file differs from the one counted before
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
            if stored.get("opencv") == self.opencv and isinstance(stored.get("videos"), dict):
                self.videos = stored["videos"]
        except (OSError, ValueError, AttributeError):
            pass  # absent or damaged: count again

    def get(self, path: Path) -> int:
        """The frame count of `path`; a DataError naming it when it cannot be decoded."""
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns]
        entry = self.videos.get(str(path))
        if not (isinstance(entry, dict) and entry.get("signature") == signature):
            if isinstance(entry, dict):
                self.changed.append(str(path))
            self.decoded += 1
            try:
                entry = {"signature": signature, "frames": frame_count(path)}
            except DataError as exc:
                entry = {"signature": signature, "error": str(exc)}
            self.videos[str(path)] = entry
        if "error" in entry:
            raise DataError(entry["error"])
        return int(entry["frames"])

    def save(self) -> None:
        """Remember the new counts (when a video was decoded) and log how many there were."""
        if not self.decoded:
            return
        with atomic_write(self.path) as handle:
            handle.write(json.dumps({"opencv": self.opencv, "videos": self.videos}).encode("utf-8"))
        log.info("%s: counted the frames of %d videos (cached for later runs)", self.dataset, self.decoded)


# --- shared by the raw-frame dataset loaders --------------------------------------------------------


def open_fraction(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{attribute.name}: expected a number between 0 and 1 (both excluded: training and "
                         f"validation each need subjects), got {value!r}")


def hold_out_subjects(labels_by_subject: dict[str, set[int]], fraction: float, seed: int, where: str) -> set[str]:
    """A seeded, subject-disjoint validation share: ``round(fraction * subjects)`` subjects, at least one.

    Drawn among the subjects that have both live and spoof images when there are enough of them, so
    that validation holds both classes.
    """
    subjects = sorted(labels_by_subject)
    if len(subjects) < 2:
        raise DataError(f"{where}: {len(subjects)} training subject(s); a subject-disjoint validation split needs 2 or more")
    wanted = min(len(subjects) - 1, max(1, int(fraction * len(subjects) + 0.5)))
    both = [s for s in subjects if labels_by_subject[s] >= {LIVE, SPOOF}]
    pool = both if len(both) >= wanted else subjects
    rng = np.random.default_rng([seed, 0x5B7])
    return {pool[i] for i in rng.choice(len(pool), size=wanted, replace=False)}


def warn_shared_subjects(name: str, train: Iterable[str], test: Iterable[str], why: str = "") -> list[str]:
    """Log a warning naming the subjects found in both training and test data; return them."""
    shared = sorted(set(train) & set(test))
    if shared:
        more = f" and {len(shared) - 10} more" if len(shared) > 10 else ""
        log.warning("%s: %d subjects are in both train and test: %s%s%s", name, len(shared),
                    ", ".join(shared[:10]), more, why)
    return shared


def report_missing(missing: Sequence[str], total: int, where: str, hint: str) -> None:
    """Listed images that do not exist: an error when none exists, else a warning with a count."""
    if not missing:
        return
    if len(missing) == total:
        raise DataError(f"{where}: none of its {total} listed images exists (e.g. {missing[0]}){hint}")
    log.warning("%s: %d of %d listed images do not exist and are skipped (e.g. %s)", where, len(missing), total,
                ", ".join(missing[:3]))


def detector_settings(detector: Any) -> dict[str, Any]:
    """What names a crop cache for a detector: its class and options (crops of other settings stay apart)."""
    if detector is None:
        return {"detector": None}
    options = getattr(detector, "options", None)
    return {"detector": f"{type(detector).__module__}.{type(detector).__qualname__}",
            "detector_options": attrs.asdict(options) if attrs.has(type(options)) else repr(options)}
