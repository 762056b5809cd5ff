"""The records a plugin returns from its hooks, one class per component kind.

A record names a component, says which options a recipe may set for it (an attrs class, or None
when it takes none), and gives the function that builds it. The registry checks that each hook
returns records of its own kind, so a plugin is pure data plus factories and is easy to test.
What a ``build`` receives besides its options (``detector``, ``splits``, ``components``, a loss's
sizes) is stated in `faceauth.config.build`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, ClassVar

import attrs

__all__ = [
    "Component",
    "Dataset",
    "Backbone",
    "Loss",
    "Trainer",
    "Exporter",
    "Detector",
    "Preprocess",
    "KINDS",
    "lazy",
    "Lazy",
    "resolve",
]


@attrs.frozen
class Lazy:
    """A reference ``"package.module:attribute"`` imported on first use.

    Records point their `build` (and `options`) at a `Lazy` so that registering a component, and
    listing it, imports no PyTorch: the module is imported when the component is validated or built.
    Calling a `Lazy` calls the attribute, with `args` put first (``lazy("m:ResNet", 18)(options)``
    calls ``ResNet(18, options)``).
    """

    target: str = attrs.field(validator=attrs.validators.matches_re(r"^[\w.]+:[\w.]+$"))
    args: tuple[Any, ...] = ()

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        found: Any = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
        return functools.partial(found, *self.args) if self.args else found

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)

    @property
    def __wrapped__(self) -> Any:  # so that inspect.signature reads the target's parameters
        return self.load()


def lazy(target: str, *args: Any) -> Lazy:
    """A `Lazy` reference to ``"package.module:attribute"`` (see `Lazy`)."""
    return Lazy(target, args)


def resolve(value: Any) -> Any:
    """`value`, or what it refers to when it is a `Lazy` reference (a record's `options`, `build`)."""
    return value.load() if isinstance(value, Lazy) else value


def _is_options_class(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not isinstance(value, Lazy) and not attrs.has(value):
        raise TypeError(f"{attribute.name} must be an attrs class or None, got {value!r}")


@attrs.frozen(kw_only=True)
class Component:
    """What every record holds; use one of the subclasses below."""

    kind: ClassVar[str] = "component"
    name: str = attrs.field(validator=attrs.validators.matches_re(r"^[a-z][a-z0-9_\-]*$"))
    build: Callable[..., Any] = attrs.field(validator=attrs.validators.is_callable())
    options: type | Lazy | None = attrs.field(default=None, validator=_is_options_class)
    description: str = ""


@attrs.frozen(kw_only=True)
class Dataset(Component):
    """`build(options) -> faceauth.data.Splits`: the train/val/test sample sets of one dataset.

    When its signature names them, `build` also receives ``detector`` (the recipe's, built, or None),
    ``splits`` (the split names the caller needs) and ``components`` (see `faceauth.config.build`).
    """

    kind: ClassVar[str] = "dataset"


@attrs.frozen(kw_only=True)
class Backbone(Component):
    """`build(options) -> torch.nn.Module` mapping a batch of inputs to features.

    The module carries two attributes: `num_features` (int, the size of its output) and
    `preprocess` (a `Preprocess`), so that exported models know how to prepare their input.

    `preprocess(options) -> Preprocess` (optional, often a `lazy` reference) states that preprocessing
    without building the network, so evaluation reads it cheaply
    (`faceauth.config.build.preprocess_of`); like `build` it may also take ``components``. When given,
    building checks that the module's `preprocess` equals it (a module without one gets it); without
    it, the network is built to read its attribute.
    """

    kind: ClassVar[str] = "backbone"
    preprocess: Callable[..., Preprocess] | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.is_callable()))


@attrs.frozen(kw_only=True)
class Loss(Component):
    """`build(options, num_classes=..., num_features=...) -> torch.nn.Module` called as `loss(x, target)`
    (the trainer passes the sizes).

    `consumes` says what `x` is: "logits" (the trainer adds the classification head) or
    "embeddings" (the loss owns its class centres, as margin losses do).
    """

    kind: ClassVar[str] = "loss"
    consumes: str = attrs.field(default="logits", validator=attrs.validators.in_(("logits", "embeddings")))


@attrs.frozen(kw_only=True)
class Trainer(Component):
    """`build(options) -> object` implementing `faceauth.training.protocol.Trainer`: ``fit(run) -> FitResult`` and
    ``export_bundle(run, model) -> Bundle``; for faceauth-eval and faceauth-export also
    `faceauth.training.protocol.ModelTrainer`: ``load_model(run, payload)``, ``torch_scorer(model)`` and
    ``evaluate(run, score, split, threshold)``. The protocol module states what each takes and returns."""

    kind: ClassVar[str] = "trainer"


@attrs.frozen(kw_only=True)
class Exporter(Component):
    """`build(options) -> object` with `export(bundle, path) -> path` (a `faceauth.training.export.Bundle`)."""

    kind: ClassVar[str] = "exporter"


@attrs.frozen(kw_only=True)
class Detector(Component):
    """`build(options) -> object` with `detect(image, hint=None) -> list[faceauth.faces.Box]`.

    `image` is an HxWx3 uint8 RGB array; `hint` is the box the dataset ships for that image or
    frame, if any (a detector may use it, as the built-in `boxes` detector does, or ignore it).
    Boxes are in pixels of `image`, best first.
    """

    kind: ClassVar[str] = "detector"


KINDS: dict[str, type[Component]] = {
    cls.kind: cls for cls in (Dataset, Backbone, Loss, Trainer, Exporter, Detector)
}


@attrs.frozen(kw_only=True)
class Preprocess:
    """How raw RGB pixels become a model input: resize to `input_size`, then (x/255 - mean) / std."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"

    def as_metadata(self) -> dict[str, str]:
        return {
            "input_size": f"{self.input_size[0]},{self.input_size[1]}",
            "mean": ",".join(f"{m:g}" for m in self.mean),
            "std": ",".join(f"{s:g}" for s in self.std),
            "channel_order": self.channel_order,
            "layout": "NCHW",
            "pixel_range": "0-255 scaled to 0-1 before mean/std",
        }
