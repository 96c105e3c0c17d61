"""igata_core.serialize: the JSON form of result records."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from igata_core.serialize import NotSerializable, dumps, jsonable, text_value, to_jsonable


class Opaque:
    """A value with no JSON form."""


# -- values json does not know --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(0.5), 0.5),
        (np.float64(0.25), 0.25),
        (np.int64(7), 7),
        (np.uint8(255), 255),
        (np.bool_(True), True),
        (np.array([[1, 2], [3, 4]], dtype=np.int16), [[1, 2], [3, 4]]),
        (np.zeros(3, dtype=np.float32), [0.0, 0.0, 0.0]),
        (Decimal("1.5"), 1.5),
        (Decimal("42"), 42),
        (Decimal("42.000"), 42),
        (Decimal("-0.001"), -0.001),
        (dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC), "2024-05-06T07:08:09+00:00"),
        (dt.datetime(2024, 5, 6, 7, 8, 9, 123456), "2024-05-06T07:08:09.123456"),
        (dt.date(2024, 2, 29), "2024-02-29"),
        (dt.time(23, 59, 1), "23:59:01"),
        (b"\x00\xffigata", "AP9pZ2F0YQ=="),
        (bytearray(b"ab"), "YWI="),
        (memoryview(b"ab"), "YWI="),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        (Path("/data/in/a b.png"), "/data/in/a b.png"),
        (PurePosixPath("rel/x.csv"), "rel/x.csv"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_dumps_writes_each_known_type(value, expected):
    assert json.loads(dumps({"v": value})) == {"v": expected}


def test_to_jsonable_refuses_what_it_does_not_know():
    with pytest.raises(NotSerializable, match="Opaque is not JSON-serialisable"):
        to_jsonable(Opaque())


def test_large_decimal_integers_stay_exact():
    value = Decimal("123456789012345678901234567890")
    assert json.loads(dumps(value)) == 123456789012345678901234567890


def test_a_set_of_unorderable_items_is_still_written():
    assert sorted(json.loads(dumps({1, "a"})), key=str) == [1, "a"]


def test_sets_serialise_identically_every_time():
    # Identical records must give identical text (idempotent writes compare bytes).
    words = {f"w{i:02d}" for i in range(50)}
    assert json.loads(dumps(words)) == sorted(words)
    assert dumps(words) == dumps(set(sorted(words, reverse=True)))


def test_numpy_values_nested_in_containers():
    record = {
        "boxes": [{"score": np.float32(0.75), "xyxy": np.array([1, 2, 3, 4])}],
        "when": (dt.date(2024, 1, 1), Decimal("0.5")),
        "tags": {"x"},
    }
    assert jsonable(record) == {
        "boxes": [{"score": 0.75, "xyxy": [1, 2, 3, 4]}],
        "when": ["2024-01-01", 0.5],
        "tags": ["x"],
    }


def test_numpy_keys_become_json_keys():
    counts = {np.int64(3): 2, np.int64(10): 1, "n": np.int32(3)}
    assert json.loads(dumps({"counts": counts})) == {"counts": {"3": 2, "10": 1, "n": 3}}


def test_jsonable_returns_plain_json_types_only():
    value = jsonable({"a": np.arange(2), "b": {np.int8(1): Decimal("2.5")}})
    assert value == {"a": [0, 1], "b": {"1": 2.5}}
    assert type(value["a"][0]) is int


def test_dumps_passes_keyword_arguments_to_json():
    assert dumps({"b": 1, "a": "é"}, sort_keys=True, ensure_ascii=False) == '{"a": "é", "b": 1}'


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        np.float32("nan"),
        np.array([1.0, np.inf]),
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("1E+5000"),
    ],
    ids=repr,
)
def test_nan_and_infinity_are_refused(value):
    with pytest.raises(NotSerializable, match="field 'score'") as raised:
        dumps({"id": 1, "score": value})
    text = str(raised.value)
    assert "NaN" in text or "finite" in text or "range" in text


def test_the_message_names_the_field_and_the_type():
    with pytest.raises(NotSerializable) as raised:
        dumps({"ok": 1, "model": Opaque()})
    assert str(raised.value) == "field 'model': value of type Opaque is not JSON-serialisable"


def test_an_unserialisable_value_deep_inside_names_its_top_field():
    with pytest.raises(NotSerializable, match=r"field 'result': value of type Opaque"):
        dumps({"result": [{"box": [1, 2], "extra": {"x": Opaque()}}]})


def test_a_key_that_cannot_be_a_json_key_is_refused():
    with pytest.raises(NotSerializable, match="key of type tuple"):
        dumps({"pairs": {(1, 2): "x"}})


def test_a_self_referencing_value_is_refused_as_circular():
    loop: list = []
    loop.append(loop)
    with pytest.raises(NotSerializable, match=r"field 'loop': .*circular"):
        dumps({"loop": loop})


def test_a_value_nested_too_deeply_is_refused_not_a_crash():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(NotSerializable, match="nested too deeply"):
        dumps({"deep": deep})


def test_not_serializable_is_a_type_error_for_callers_catching_that():
    assert issubclass(NotSerializable, TypeError)


# -- text_value: the flat cell form (CSV) --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("text", "text"),
        (3, 3),
        (True, True),
        (0.5, 0.5),
        (np.float32(0.5), 0.5),
        (np.int64(4), 4),
        (np.bool_(False), False),
        (Decimal("2.50"), 2.5),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05"),
        (Path("/a/b.png"), "/a/b.png"),
        (b"ab", "YWI="),
        ([1, {"a": 2}], '[1, {"a": 2}]'),
        ({"x": np.float32(1.5)}, '{"x": 1.5}'),
        (np.array([1, 2]), "[1, 2]"),
        ({"b"}, '["b"]'),
        ("日本", "日本"),
    ],
    ids=repr,
)
def test_text_value(value, expected):
    result = text_value(value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize("value", [math.nan, np.float64("inf"), Decimal("NaN"), Opaque()])
def test_text_value_refuses(value):
    with pytest.raises(NotSerializable):
        text_value(value)


def test_dumps_options_give_what_json_dumps_gives_hashable_or_not():
    # Encoders are kept per set of options; an unhashable option value (a list) is passed
    # to json.dumps as it is.
    record = {"b": [1, 2.5, None], "a": "é"}
    optionses: list[dict] = [
        {}, {"ensure_ascii": False}, {"sort_keys": True}, {"separators": [",", ":"]},
        {"separators": (",", ":"), "sort_keys": True},
    ]  # fmt: skip
    for options in optionses:
        assert dumps(record, **options) == json.dumps(record, **options), options
