"""The `folder` layout, the simplest way to bring liveness data, and the built-in `demo` set.

Layout::

    root/{train,val,test}/live/**/*.jpg
    root/{train,val,test}/spoof/*.jpg             attack type "spoof"
    root/{train,val,test}/spoof/<type>/**/*.jpg   attack type <type> (e.g. print, replay)

`train` and `val` are required, `test` is optional. Building the index lists files only; images
are decoded when a sample is read, and an unreadable image stops the run with its path.

The `demo` set is rendered once (seeded, deterministic) into faceauth's cache in this same layout
and read by the same code; `folder` with no `root` uses it, so recipes run out of the box.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

import faceauth
from faceauth.data import LIVE, SPOOF, Splits, check_classes, dataset_root, read_image
from faceauth.errors import DataError
from faceauth.io.images import images_under
from faceauth.io.paths import cache_dir

CLASSES = ("live", "spoof")


@attrs.frozen
class LivenessSample:
    path: str
    label: int
    attack_type: str


class LivenessFolder:
    """The samples of one split: a sorted list of files with labels, decoded on access."""

    def __init__(self, samples: list[LivenessSample]):
        self.samples = samples
        self.labels = [s.label for s in samples]
        self.attack_types = [s.attack_type for s in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        return {"image": read_image(sample.path), "label": sample.label, "attack_type": sample.attack_type,
                "path": sample.path}


def index_split(split_dir: Path) -> LivenessFolder:
    samples = [LivenessSample(str(p), LIVE, "") for p in images_under(split_dir / "live")]
    spoof_dir = split_dir / "spoof"
    for path in images_under(spoof_dir):
        relative = path.relative_to(spoof_dir).parts
        samples.append(LivenessSample(str(path), SPOOF, relative[0] if len(relative) > 1 else "spoof"))
    for name in CLASSES:
        if not (split_dir / name).is_dir():
            raise DataError(f"{split_dir}: missing folder '{name}/' (expected {split_dir}/{{live,spoof}}/)")
    check_classes(split_dir.name, [s.label for s in samples], CLASSES, str(split_dir))
    return LivenessFolder(samples)


def load_folder(root: str | Path, key: str = "data.root", splits: Sequence[str] | None = None) -> Splits:
    """The splits of `root`; `splits` (e.g. ``("test",)`` for faceauth-eval) indexes only those, and requires them."""
    root = dataset_root(root, key, "root/{train,val,test}/{live,spoof}/")
    for required in splits or ("train", "val"):
        if not (root / required).is_dir():
            raise DataError(f"{key}: {root} has no '{required}/' folder (expected root/{{train,val,test}}/{{live,spoof}}/)")
    wanted = splits or [name for name in ("train", "val", "test") if (root / name).is_dir()]
    built = {name: index_split(root / name) for name in wanted}
    return Splits(train=built.get("train"), val=built.get("val"), test=built.get("test"), classes=CLASSES,
                  info={"root": str(root), "task": "liveness"})


@attrs.frozen
class FolderOptions:
    root: str | None = None  # None: the built-in demo set


@attrs.frozen
class DemoOptions:
    train: int = attrs.field(default=600, validator=faceauth.schema.positive)
    val: int = attrs.field(default=200, validator=faceauth.schema.positive)
    test: int = attrs.field(default=200, validator=faceauth.schema.positive)
    size: int = attrs.field(default=112, validator=faceauth.schema.positive)
    seed: int = 0


def demo_root(options: DemoOptions) -> Path:
    """Render the demo set once per distinct setting; later calls reuse the cached files."""
    from faceauth.plugins.datasets import demo_render

    root = cache_dir("demo", f"liveness-v2-{options.train}-{options.val}-{options.test}-{options.size}-s{options.seed}")
    if not root.is_dir():
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            demo_render.write_liveness_demo(
                root, counts={"train": options.train, "val": options.val, "test": options.test},
                size=options.size, seed=options.seed)
        except FileExistsError:  # another process rendered it meanwhile
            pass
    return root


def build_folder(options: FolderOptions, splits: Sequence[str] | None = None) -> Splits:
    if options.root is None:
        return load_folder(demo_root(DemoOptions()), key="demo", splits=splits)
    return load_folder(options.root, splits=splits)


def build_demo(options: DemoOptions, splits: Sequence[str] | None = None) -> Splits:
    return load_folder(demo_root(options), key="demo", splits=splits)
