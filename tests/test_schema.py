"""Tests for faceauth.schema: turning plain data into attrs options, and the messages for bad data."""

from __future__ import annotations

from typing import Literal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faceauth.errors import RecipeError
from faceauth.schema import fraction, non_negative, positive, structure, unstructure


@attrs.frozen
class Inner:
    depth: int = attrs.field(default=2, validator=positive)
    ratio: float = attrs.field(default=0.5, validator=fraction)


@attrs.frozen
class Options:
    count: int  # required
    lr: float = attrs.field(default=0.1, validator=positive)
    decay: float = attrs.field(default=0.0, validator=non_negative)
    flag: bool = False
    label: str = "x"
    maybe: int | None = None
    mode: Literal["a", "b"] = "a"
    sizes: list[int] = attrs.field(factory=list)
    pair: tuple[float, ...] = (1.0, 2.0)
    table: dict[str, int] = attrs.field(factory=dict)
    inner: Inner = Inner()


@attrs.frozen
class AllDefaults:
    n: int = 3


def _error(cls: type, data: object, path: str = "opts") -> str:
    with pytest.raises(RecipeError) as info:
        structure(cls, data, path)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- valid data ------------------------------------------------------------------------------


def test_every_supported_field_type_is_structured():
    data = {
        "count": 3, "lr": 0.5, "decay": 0, "flag": True, "label": "hello", "maybe": 7, "mode": "b",
        "sizes": [1, 2, 3], "pair": [0.5, 2], "table": {"k": 1, "j": 2}, "inner": {"depth": 5, "ratio": 1},
    }
    opts = structure(Options, data, "opts")
    assert opts == Options(count=3, lr=0.5, decay=0.0, flag=True, label="hello", maybe=7, mode="b",
                           sizes=[1, 2, 3], pair=(0.5, 2.0), table={"k": 1, "j": 2}, inner=Inner(5, 1.0))
    assert isinstance(opts.pair, tuple) and isinstance(opts.sizes, list)
    assert isinstance(opts.decay, float) and isinstance(opts.inner.ratio, float)


def test_defaults_fill_missing_optional_keys():
    assert structure(Options, {"count": 1}, "opts") == Options(count=1)


def test_none_data_means_all_defaults():
    assert structure(AllDefaults, None, "opts") == AllDefaults()


def test_optional_field_accepts_null():
    assert structure(Options, {"count": 1, "maybe": None}, "opts").maybe is None


def test_nested_section_may_be_partial():
    assert structure(Options, {"count": 1, "inner": {"ratio": 0.25}}, "opts").inner == Inner(2, 0.25)


def test_int_is_accepted_as_float_and_converted():
    opts = structure(Options, {"count": 1, "lr": 2}, "opts")
    assert opts.lr == 2.0 and type(opts.lr) is float


def test_unstructure_round_trips():
    opts = structure(Options, {"count": 4, "pair": [3, 4], "sizes": [1], "inner": {"depth": 9}}, "opts")
    plain = unstructure(opts)
    assert plain["inner"] == {"depth": 9, "ratio": 0.5}
    assert plain["sizes"] == [1]
    assert structure(Options, plain, "opts") == opts


def test_unstructure_turns_tuples_into_lists():
    plain = unstructure(structure(Options, {"count": 4, "pair": [3, 4]}, "opts"))
    assert plain["pair"] == [3.0, 4.0] and type(plain["pair"]) is list


# --- messages --------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    ({"count": "3"}, "opts.count: expected an integer, got '3'"),
    ({"count": 2.5}, "opts.count: expected an integer, got 2.5"),
    ({"count": 1, "lr": "fast"}, "opts.lr: expected a number, got 'fast'"),
    ({"count": 1, "flag": "yes"}, "opts.flag: expected true or false, got 'yes'"),
    ({"count": 1, "flag": 1}, "opts.flag: expected true or false, got 1"),
    ({"count": 1, "label": 5}, "opts.label: expected a string, got 5"),
    ({"count": 1, "maybe": "x"}, "opts.maybe: expected an integer or null, got 'x'"),
    ({"count": 1, "mode": "c"}, "opts.mode: expected one of 'a', 'b', got 'c'"),
    ({"count": 1, "sizes": "123"}, "opts.sizes: expected a list of an integer, got '123'"),
    ({"count": 1, "sizes": [1, "x"]}, "opts.sizes[1]: expected an integer, got 'x'"),
    ({"count": 1, "pair": [1.0, None]}, "opts.pair[1]: expected a number, got None"),
    ({"count": 1, "table": {"k": "v"}}, "opts.table.k: expected an integer, got 'v'"),
    ({"count": 1, "table": [1]}, "opts.table: expected a mapping of names to an integer, got [1]"),
    ({"count": 1, "inner": 3}, "opts.inner: expected a mapping of keys to values, got 3"),
    ({"count": 1, "inner": {"depth": "deep"}}, "opts.inner.depth: expected an integer, got 'deep'"),
])
def test_wrong_type_names_the_key_and_what_is_expected(data, expected):
    assert _error(Options, data) == expected


def test_bool_is_not_accepted_as_int_or_float():
    assert _error(Options, {"count": True}) == "opts.count: expected an integer, got True"
    assert _error(Options, {"count": 1, "lr": False}) == "opts.lr: expected a number, got False"


def test_unknown_key_lists_known_keys_and_suggests_the_closest():
    message = _error(Options, {"count": 1, "lrr": 0.1})
    assert message.startswith("opts.lrr: unknown key (known: count, lr, decay, flag, label,")
    assert message.endswith("; did you mean 'lr'?")


def test_unknown_key_in_nested_section_carries_the_full_path():
    message = _error(Options, {"count": 1, "inner": {"dept": 3}})
    assert message == "opts.inner.dept: unknown key (known: depth, ratio); did you mean 'depth'?"


def test_missing_required_key_says_what_it_should_be():
    assert _error(Options, {}) == "opts.count: required key is missing (an integer)"


def test_top_level_data_that_is_not_a_mapping():
    assert _error(Options, [1, 2]) == "opts: expected a mapping of keys to values, got [1, 2]"


# --- validators ------------------------------------------------------------------------------


def test_positive():
    assert _error(Options, {"count": 1, "lr": 0}) == "opts.lr: expected a positive number, got 0.0"
    assert _error(Options, {"count": 1, "lr": -1}) == "opts.lr: expected a positive number, got -1.0"
    assert structure(Options, {"count": 1, "lr": 1e-9}, "opts").lr == 1e-9


def test_non_negative():
    assert structure(Options, {"count": 1, "decay": 0}, "opts").decay == 0.0
    assert _error(Options, {"count": 1, "decay": -0.1}) == "opts.decay: expected a number >= 0, got -0.1"


def test_fraction_includes_both_ends():
    assert structure(Options, {"count": 1, "inner": {"ratio": 0}}, "opts").inner.ratio == 0.0
    assert structure(Options, {"count": 1, "inner": {"ratio": 1}}, "opts").inner.ratio == 1.0
    assert _error(Options, {"count": 1, "inner": {"ratio": 1.01}}) == \
        "opts.inner.ratio: expected a number between 0 and 1, got 1.01"
    assert _error(Options, {"count": 1, "inner": {"ratio": -0.01}}) == \
        "opts.inner.ratio: expected a number between 0 and 1, got -0.01"


def test_validator_on_nested_int():
    assert _error(Options, {"count": 1, "inner": {"depth": 0}}) == "opts.inner.depth: expected a positive number, got 0"


def test_nan_fails_range_checks():
    assert "expected a positive number" in _error(Options, {"count": 1, "lr": float("nan")})


def test_unsupported_field_type_is_a_programming_error_not_a_recipe_error():
    @attrs.frozen
    class WithSet:
        items: set = attrs.field(factory=set)

    with pytest.raises(TypeError, match="cannot structure"):
        structure(WithSet, {"items": [1]}, "opts")


def test_huge_int_for_a_float_field_is_a_recipe_error():
    _error(Options, {"count": 1, "lr": 10**400})


def test_literal_of_ints_rejects_bools():
    @attrs.frozen
    class Bits:
        bits: Literal[0, 1] = 0

    _error(Bits, {"bits": True})


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers())
def test_any_int_round_trips_through_an_int_field(value):
    opts = structure(Options, {"count": value}, "opts")
    assert opts.count == value and type(opts.count) is int
    assert unstructure(opts)["count"] == value


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_string_is_rejected_by_an_int_field_with_the_key_path(text):
    with pytest.raises(RecipeError) as info:
        structure(Options, {"count": 1, "inner": {"depth": text}}, "opts")
    message = str(info.value)
    assert message.startswith("opts.inner.depth: expected an integer, got ")
    assert "\n" not in message


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)))
def test_numbers_round_trip_through_a_float_tuple(values):
    opts = structure(Options, {"count": 1, "pair": values}, "opts")
    assert opts.pair == tuple(float(v) for v in values)
    assert structure(Options, unstructure(opts), "opts") == opts
