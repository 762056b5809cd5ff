"""Turning plain recipe data (from YAML) into attrs classes, with errors that name the key at fault.

Options classes are ordinary attrs classes with type annotations. Supported field types: bool, int,
float, str, None-able versions of them, `typing.Literal[...]`, `list[T]`, `tuple[T, ...]`,
`dict[str, T]` and nested attrs classes. Range checks are the validators below, which a plugin can
use on its own options; a key the recipe must give is spelled one way, `required` (a missing one is
one RecipeError naming the key, what it takes and what it is)::

    @attrs.frozen
    class MyOptions:
        depth: int = attrs.field(default=4, validator=faceauth.schema.positive)
        root: str = faceauth.schema.required("the folder holding train/ and val/")
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import attr
import attrs

from faceauth.errors import RecipeError, quote, suggest

__all__ = ["structure", "unstructure", "required", "positive", "non_negative", "fraction", "field_names", "key_name"]


def required(what: str = "", validator: Any = None) -> Any:
    """An options field the recipe must give: no default, keyword-only (so it may follow fields with
    defaults, in any class or subclass); `what` says what it is, in the message when it is missing."""
    return attrs.field(kw_only=True, validator=validator, metadata={"faceauth.required": what})


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of names to {_describe(args[1])}"
    if attrs.has(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except RecipeError:
                continue
        raise RecipeError(f"{path}: expected {_describe(tp)}, got {quote(value)}")
    if origin is Literal:
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        raise RecipeError(f"{path}: expected {_describe(tp)}, got {quote(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise RecipeError(f"{path}: expected a number, got an integer too large for one") from None
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            items = [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, Mapping):
            return {str(k): _convert(args[1], v, f"{path}.{key_name(k)}") for k, v in value.items()}
    elif attrs.has(tp):
        return structure(tp, value, path)
    else:
        raise TypeError(f"faceauth.schema cannot structure fields of type {tp!r} ({path})")
    raise RecipeError(f"{path}: expected {_describe(tp)}, got {quote(value)}")


def key_name(key: Any) -> str:
    """A recipe key as messages show it inside a dotted path: itself when short and plain, else quoted."""
    if isinstance(key, str) and len(key) <= 60 and key.isprintable():
        return key
    return quote(key, 60)


def field_names(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)]


def structure(cls: type, data: Any, path: str) -> Any:
    """Build an instance of attrs class `cls` from a mapping; `path` prefixes error messages."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RecipeError(f"{path}: expected a mapping of keys to values, got {quote(data)}")
    hints = typing.get_type_hints(cls)
    known = field_names(cls)
    for key in data:
        if key not in known:
            raise RecipeError(
                f"{path}.{key_name(key)}: unknown key (known: {', '.join(known) or 'none'})"
                f"{suggest(str(key)[:100], known)}"
            )
    kwargs = {}
    for field in attrs.fields(cls):
        if field.name in data:
            value = data[field.name]
            if attrs.has(type(field.default)) and isinstance(value, Mapping):
                # A nested section set in part keeps this field's own defaults for the rest.
                value = {**unstructure(field.default), **value}
            kwargs[field.name] = _convert(hints[field.name], value, f"{path}.{field.name}")
        elif field.default is attrs.NOTHING:
            what = field.metadata.get("faceauth.required")
            raise RecipeError(f"{path}.{field.name}: required key is missing ({_describe(hints[field.name])}"
                              f"{': ' + what if what else ''})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{path}.{exc}") from None


def unstructure(instance: Any) -> Any:
    """The plain-data form of an attrs instance (tuples become lists), as a recipe would hold it."""
    return attr.asdict(instance, retain_collection_types=False)


def _check(predicate: Any, wanted: str) -> Any:
    def validator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not predicate(value):
            raise ValueError(f"{attribute.name}: expected {wanted}, got {quote(value)}")

    return validator


positive = _check(lambda v: v > 0, "a positive number")
non_negative = _check(lambda v: v >= 0, "a number >= 0")
fraction = _check(lambda v: 0 <= v <= 1, "a number between 0 and 1")
