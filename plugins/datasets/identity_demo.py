"""The built-in `demo_identities` set: synthetic people, several captures each, for recognition recipes.

Each identity is one `demo_render.sample_identity` (face shape, colouring, hair, features); its
images vary pose, lighting, expression, framing, blur and noise, so telling people apart needs the
face and not the capture. The set is rendered once per setting (seeded, deterministic) into
``cache_dir("demo")`` in the identity-folder layout ``root/<identity>/*.jpg`` and loaded by the
`identity_folder` code, held-out validation identities included.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
from PIL import Image

import faceauth
from faceauth.data import Splits
from faceauth.io.paths import atomic_folder, cache_dir
from faceauth.plugins.datasets.identity import load_identity_folder

__all__ = ["DemoIdentitiesOptions", "frontal_capture", "write_identity_demo", "demo_identities_root"]

_VERSION = 1


def frontal_capture(rng: np.random.Generator) -> dict:
    """Pose, expression, lighting and framing of one capture (milder than liveness: faces stay frontal-ish)."""
    return dict(yaw=float(np.clip(rng.normal(0, 0.2), -0.5, 0.5)),
                pitch=float(np.clip(rng.normal(0, 0.12), -0.3, 0.3)),
                roll=float(np.clip(rng.normal(0, 0.1), -0.3, 0.3)),
                eye_open=float(rng.uniform(0.1, 0.4) if rng.uniform() < 0.1 else rng.uniform(0.7, 1.0)),
                light=(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 0.4)), float(rng.uniform(0.7, 1.2))),
                scale=float(rng.uniform(0.9, 1.1)))


def write_identity_demo(root: str | Path, *, identities: int = 40, images_per_identity: int = 12, size: int = 112,
                        seed: int = 0) -> Path:
    """Render ``root/id0000/0000.jpg ...`` atomically (into a temporary folder, then renamed).

    Raises FileExistsError when `root` exists; each image is seeded by (seed, identity, index).
    """
    from faceauth.plugins.datasets.demo_render import render_face, sample_identity

    root = Path(root)
    with atomic_folder(root) as tmp:
        for who in range(identities):
            person = sample_identity(np.random.default_rng([seed, 11, who]))
            folder = tmp / f"id{who:04d}"
            folder.mkdir(parents=True)
            for k in range(images_per_identity):
                rng = np.random.default_rng([seed, 12, who, k])
                pixels = render_face(person, rng, size, **frontal_capture(rng))
                Image.fromarray(pixels).save(folder / f"{k:04d}.jpg", quality=92)
    return root


@attrs.frozen
class DemoIdentitiesOptions:
    identities: int = attrs.field(default=40, validator=faceauth.schema.positive)
    images_per_identity: int = attrs.field(default=12, validator=faceauth.schema.positive)
    size: int = attrs.field(default=112, validator=faceauth.schema.positive)
    seed: int = 0
    val_identities: float = attrs.field(default=0.1, validator=faceauth.schema.fraction)
    pairs_per_identity: int = attrs.field(default=20, validator=faceauth.schema.positive)


def demo_identities_root(options: DemoIdentitiesOptions) -> Path:
    """The rendered set for these options, rendering it on first use."""
    root = cache_dir("demo", f"identities-v{_VERSION}-{options.identities}x{options.images_per_identity}"
                             f"-{options.size}-s{options.seed}")
    if not root.is_dir():
        try:
            write_identity_demo(root, identities=options.identities, images_per_identity=options.images_per_identity,
                                size=options.size, seed=options.seed)
        except FileExistsError:
            pass
    return root


def build_demo_identities(options: DemoIdentitiesOptions) -> Splits:
    return load_identity_folder(demo_identities_root(options), val_identities=options.val_identities,
                                pairs_per_identity=options.pairs_per_identity, seed=options.seed, key="demo")
