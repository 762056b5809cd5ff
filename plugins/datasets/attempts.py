"""Verification attempts: what a face-authentication system (matcher + liveness + fusion) is measured on.

An attempt pairs the enrolment image(s) of an identity with a probe and is labelled accept
(`ACCEPT` = 1) only when the probe is the same person AND live. Three kinds:

- ``genuine``: another live capture of the enrolled person (accept);
- ``impostor``: a live capture of someone else, a zero-effort impostor (reject);
- ``spoof``: a print or replay of the enrolled person, a presentation attack (reject).

Layout of `attempt_folder` (face crops, like the liveness and identity layouts)::

    root/{train,val,test}/<identity>/live/**/*.jpg
    root/{train,val,test}/<identity>/spoof/*.jpg             attack type "spoof"
    root/{train,val,test}/<identity>/spoof/<type>/**/*.jpg   attack type <type> (print, replay, ...)

Identities must be disjoint across splits (an identity found in two splits is an error). Attempts
are generated per split, seeded by (`seed`, split): `attempts_per_kind` of each kind (balanced),
enrolment identities taken in turn from a shuffled list so each is used about equally, enrolment
images drawn without replacement from the identity's live images, and the genuine probe never one
of them. With a recipe `detector`, images are raw photos: the face is found and cropped once into
the crop cache (images without a face are logged and left out).

`demo_attempts` renders procedural people (`demo_render`) into the cache once, in this layout: per
identity `live` live captures and `spoof` re-captures of that same person (print and replay in
turn), identities disjoint across splits and from the other demo sets.

A split is an `AttemptSet`; its items are ``{"enrol": [paths], "probe": path, "kind", "label",
"identity", "probe_identity", "attack_type", "path"}`` (no decoded image: scorers read each image
once through `AttemptSet.load`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from PIL import Image

import faceauth
from faceauth.data import Splits, dataset_root, read_image
from faceauth.errors import DataError
from faceauth.io.images import images_under
from faceauth.io.paths import atomic_folder, cache_dir
from faceauth.metrics.joint import ATTEMPT_KINDS

__all__ = [
    "ACCEPT",
    "CLASSES",
    "REJECT",
    "Attempt",
    "AttemptFolderOptions",
    "AttemptOptions",
    "AttemptSet",
    "DemoAttemptsOptions",
    "generate_attempts",
    "index_people",
    "load_attempt_folder",
    "write_attempt_demo",
]

log = logging.getLogger(__name__)

REJECT, ACCEPT = 0, 1
CLASSES = ("reject", "accept")
SPLITS = ("train", "val", "test")
LAYOUT = "root/{train,val,test}/<identity>/{live,spoof}/*.jpg"
_DEMO_VERSION = 1


@attrs.frozen
class Attempt:
    enrol: tuple[str, ...]
    probe: str
    kind: str
    identity: str
    probe_identity: str
    attack_type: str = ""

    @property
    def label(self) -> int:
        return ACCEPT if self.kind == "genuine" else REJECT


@attrs.frozen
class Person:
    """One identity's images in one split: live paths and (path, attack type) of the spoofs of them."""

    name: str
    live: tuple[str, ...]
    spoof: tuple[tuple[str, str], ...]


class AttemptSet:
    """The attempts of one split. `load(path)` reads an image (the cached face crop with a detector).

    `photos`: the paths are photos whose faces `load` crops (the recipe has a detector), so a scorer may
    crop each face its own way instead (the fusion trainer crops as each component model was trained).
    """

    def __init__(self, attempts: Sequence[Attempt], loader: Callable[[str], Image.Image] = read_image,
                 name: str = "", photos: bool = False):
        self.attempts = list(attempts)
        self.name = name
        self.photos = photos
        self.labels = np.array([a.label for a in self.attempts], dtype=np.int64)
        self.kinds = np.array([a.kind for a in self.attempts])
        self.attack_types = np.array([a.attack_type for a in self.attempts])
        self._loader = loader

    def __len__(self) -> int:
        return len(self.attempts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        a = self.attempts[index]
        return {"enrol": list(a.enrol), "probe": a.probe, "kind": a.kind, "label": a.label, "identity": a.identity,
                "probe_identity": a.probe_identity, "attack_type": a.attack_type, "path": a.probe}

    def load(self, path: str) -> Image.Image:
        return self._loader(path)

    def images(self) -> list[str]:
        """Every image an attempt uses (enrolment or probe), sorted: each is scored once."""
        return sorted({p for a in self.attempts for p in (*a.enrol, a.probe)})

    def probes(self) -> list[str]:
        return sorted({a.probe for a in self.attempts})

    def counts(self) -> dict[str, int]:
        return {kind: int(np.sum(self.kinds == kind)) for kind in ATTEMPT_KINDS}


# indexing ---------------------------------------------------------------------------------------------
def index_people(split_dir: Path) -> list[Person]:
    """The identities of one split folder, sorted by name; hidden folders are skipped."""
    people = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        live = tuple(str(p) for p in images_under(folder / "live"))
        spoof = []
        for path in images_under(folder / "spoof"):
            parts = path.relative_to(folder / "spoof").parts
            spoof.append((str(path), parts[0] if len(parts) > 1 else "spoof"))
        if not live and not spoof:
            log.warning("%s: no images in live/ or spoof/; identity skipped", folder)
            continue
        people.append(Person(folder.name, live, tuple(spoof)))
    return people


# generation -------------------------------------------------------------------------------------------
@attrs.frozen
class AttemptOptions:
    """How attempts are drawn from the images (shared by both attempt datasets)."""

    attempts_per_kind: int = attrs.field(default=200, validator=faceauth.schema.positive)  # per split and kind
    enrol_images: int = attrs.field(default=1, validator=faceauth.schema.positive)
    seed: int = 0


def _turns(names: Sequence[int], count: int, rng: np.random.Generator) -> list[int]:
    """`count` picks from `names`, each used equally often (+-1): whole shuffled rounds, then part of one."""
    picks: list[int] = []
    while len(picks) < count:
        picks.extend(rng.permutation(names).tolist())
    return picks[:count]


def generate_attempts(people: Sequence[Person], per_kind: int, enrol_images: int, rng: np.random.Generator,
                      where: str) -> list[Attempt]:
    """`per_kind` genuine, impostor and spoof attempts among `people` (see the module docstring)."""
    enough = [i for i, p in enumerate(people) if len(p.live) >= enrol_images]
    eligible = {
        "genuine": [i for i in enough if len(people[i].live) > enrol_images],
        "impostor": enough if len([p for p in people if p.live]) >= 2 else [],
        "spoof": [i for i in enough if people[i].spoof],
    }
    need = {"genuine": f"an identity with more than {enrol_images} live image(s)",
            "impostor": f"two identities with live images, one with at least {enrol_images}",
            "spoof": f"an identity with spoof images and at least {enrol_images} live image(s)"}
    attempts = []
    for kind in ATTEMPT_KINDS:
        if not eligible[kind]:
            raise DataError(f"{where}: cannot make {kind} attempts: needs {need[kind]} (layout {LAYOUT})")
        for who in _turns(eligible[kind], per_kind, rng):
            person = people[who]
            chosen = rng.choice(len(person.live), size=enrol_images, replace=False)
            enrol = tuple(person.live[j] for j in sorted(chosen.tolist()))
            if kind == "genuine":
                rest = [p for j, p in enumerate(person.live) if j not in set(chosen.tolist())]
                attempts.append(Attempt(enrol, rest[int(rng.integers(len(rest)))], kind, person.name, person.name))
            elif kind == "impostor":
                others = [i for i, p in enumerate(people) if i != who and p.live]
                other = people[others[int(rng.integers(len(others)))]]
                attempts.append(Attempt(enrol, other.live[int(rng.integers(len(other.live)))], kind, person.name,
                                        other.name))
            else:
                path, attack = person.spoof[int(rng.integers(len(person.spoof)))]
                attempts.append(Attempt(enrol, path, kind, person.name, person.name, attack))
    return attempts


def _crop_people(people: list[Person], split_dir: Path, detector: Any, scale: float, size: int,
                 settings: dict[str, Any]) -> tuple[list[Person], Callable[[str], Image.Image]]:
    """Crop every image's face once into the crop cache; images without a face are left out (and logged)."""
    from faceauth.faces import CropCache, CropGeometry
    from faceauth.plugins.datasets.frames import FrameSource, crop_all

    cache = CropCache("attempt_folder", {"root": str(split_dir), **settings}, detector,
                      CropGeometry(None, scales=scale, size=size))
    sources = [FrameSource(p, None, 0, "", person.name) for person in people
               for p in (*person.live, *(s for s, _ in person.spoof))]
    kept, _ = crop_all(sources, cache, str(split_dir), on_bad_video="error")
    faces = {s.path for s in kept.sources}
    people = [Person(p.name, tuple(x for x in p.live if x in faces), tuple(s for s in p.spoof if s[0] in faces))
              for p in people]

    def load(path: str) -> Image.Image:
        return cache.read(path, FrameSource(path, None, 0, "", "").load)

    return [p for p in people if p.live or p.spoof], load


def load_attempt_folder(root: str | Path, options: AttemptOptions, key: str = "data.root", detector: Any = None,
                        crop: tuple[float, int] = (1.4, 128),
                        detector_settings: dict[str, Any] | None = None) -> Splits:
    """The attempt splits of an attempt-folder tree (see the module docstring); `crop` = (scale, size)."""
    root = dataset_root(root, key, LAYOUT)
    for required in SPLITS:
        if not (root / required).is_dir():
            raise DataError(f"{key}: {root} has no '{required}/' folder (expected {LAYOUT})")
    sets, seen = {}, {}
    for split in SPLITS:
        people = index_people(root / split)
        for person in people:
            if person.name in seen:
                raise DataError(f"{key}: identity '{person.name}' is in both {seen[person.name]}/ and {split}/; "
                                f"attempt splits must be identity-disjoint")
            seen[person.name] = split
        loader: Callable[[str], Image.Image] = read_image
        if detector is not None:
            people, loader = _crop_people(people, root / split, detector, *crop, detector_settings or {})
        rng = np.random.default_rng([options.seed, zlib.crc32(split.encode())])
        attempts = generate_attempts(people, options.attempts_per_kind, options.enrol_images, rng, str(root / split))
        sets[split] = AttemptSet(attempts, loader, name=split, photos=detector is not None)
        log.info("%s/%s: %d identities, %d attempts (%s)", root, split, len(people), len(attempts),
                 ", ".join(f"{k} {v}" for k, v in sets[split].counts().items()))
    return Splits(train=sets["train"], val=sets["val"], test=sets["test"], classes=CLASSES,
                  info={"root": str(root), "task": "attempts", "attempts": attrs.asdict(options)})


# the user's data --------------------------------------------------------------------------------------
@attrs.frozen
class AttemptFolderOptions(AttemptOptions):
    root: str = faceauth.schema.required(f"the folder laid out as {LAYOUT}")
    crop_scale: float = 1.4  # with a detector: the crop side is the face box side x this, in (0, 10]
    crop_size: int = attrs.field(default=128, validator=faceauth.schema.positive)

    def __attrs_post_init__(self) -> None:
        from faceauth.faces import CropGeometry

        CropGeometry(None, scales=self.crop_scale, size=self.crop_size)  # checks the scale's range


def build_attempt_folder(options: AttemptFolderOptions, detector: Any = None) -> Splits:
    settings = {"detector": type(detector).__name__, "detector_options": repr(getattr(detector, "options", None))}
    attempt_options = AttemptOptions(options.attempts_per_kind, options.enrol_images, options.seed)
    return load_attempt_folder(options.root, attempt_options, detector=detector,
                               crop=(options.crop_scale, options.crop_size), detector_settings=settings)


# the demo set -----------------------------------------------------------------------------------------
@attrs.frozen
class DemoAttemptsOptions(AttemptOptions):
    train_identities: int = attrs.field(default=24, validator=faceauth.schema.positive)
    val_identities: int = attrs.field(default=12, validator=faceauth.schema.positive)
    test_identities: int = attrs.field(default=12, validator=faceauth.schema.positive)
    live: int = attrs.field(default=6, validator=faceauth.schema.positive)    # live captures per identity
    spoof: int = attrs.field(default=4, validator=faceauth.schema.positive)   # print/replay captures per identity
    size: int = attrs.field(default=112, validator=faceauth.schema.positive)
    render_seed: int = 0


def write_attempt_demo(root: str | Path, *, identities: dict[str, int], live: int, spoof: int, size: int,
                       seed: int) -> Path:
    """Render the demo attempt set at `root` atomically (temporary folder, then rename).

    Raises FileExistsError when `root` exists. Each image is seeded by (seed, identity, index), so the
    output does not depend on generation order; people are drawn from a seed stream of their own,
    so they are none of the `demo` or `demo_identities` people.
    """
    from faceauth.plugins.datasets.demo_render import print_attack, render_face, replay_attack, sample_identity
    from faceauth.plugins.datasets.identity_demo import frontal_capture

    root = Path(root)
    with atomic_folder(root) as tmp:
        first = 0
        for split in SPLITS:
            for who in range(first, first + identities[split]):
                person = sample_identity(np.random.default_rng([seed, 21, who]))
                folder = tmp / split / f"id{who:04d}"
                for k in range(live + spoof):
                    rng = np.random.default_rng([seed, 22, who, k])
                    pose = frontal_capture(rng)
                    attack = "" if k < live else ("print", "replay")[(k - live) % 2]
                    if attack:
                        pose["scale"] *= 1.2  # attack media frame the face closer (as the liveness demo)
                    pixels = render_face(person, rng, size, **pose)
                    if attack:
                        pixels = (print_attack if attack == "print" else replay_attack)(pixels, rng)
                    out = folder / ("live" if not attack else f"spoof/{attack}")
                    out.mkdir(parents=True, exist_ok=True)
                    # 4:4:4 chroma keeps the sub-pixel colour structure of replays
                    Image.fromarray(pixels).save(out / f"{k:04d}.jpg", quality=95, subsampling=0)
            first += identities[split]
    return root


def demo_attempts_root(options: DemoAttemptsOptions) -> Path:
    """The rendered set for these options, rendered on first use and reused afterwards."""
    counts = {"train": options.train_identities, "val": options.val_identities, "test": options.test_identities}
    root = cache_dir("demo", f"attempts-v{_DEMO_VERSION}-{counts['train']}-{counts['val']}-{counts['test']}"
                             f"x{options.live}+{options.spoof}-{options.size}-s{options.render_seed}")
    if not root.is_dir():
        log.info("rendering the demo attempt set into %s (once)", root)
        try:
            write_attempt_demo(root, identities=counts, live=options.live, spoof=options.spoof, size=options.size,
                               seed=options.render_seed)
        except FileExistsError:
            pass
    return root


def build_demo_attempts(options: DemoAttemptsOptions) -> Splits:
    attempt_options = AttemptOptions(options.attempts_per_kind, options.enrol_images, options.seed)
    return load_attempt_folder(demo_attempts_root(options), attempt_options, key="demo_attempts")
