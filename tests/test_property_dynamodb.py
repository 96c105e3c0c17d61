"""Property-based tests of the DynamoDB flattening: any record gives items DynamoDB takes,
or that record's own clear rejection.

DynamoDB refuses a whole ``BatchWriteItem`` for one bad item, and boto3 refuses to send
some values at all (floats, numbers it cannot represent exactly). Whatever a model returns,
the sink must either build items that boto3 serialises and DynamoDB stores (numbers of at
most 38 significant digits in range, no floats, non-empty sets of one type, at most 32
levels, valid UTF-8 text) or reject that one record with a message: any other exception
would fail every flush and stop the worker with the record still queued.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("igata_dynamodb", reason="the igata-dynamodb plugin is not installed")
pytest.importorskip("boto3", reason="boto3 serialises the items as the sink does")

from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeSerializer

from igata_dynamodb.attributes import (
    MAX_NESTING,
    MAX_NUMBER_DIGITS,
    MAX_NUMBER_EXPONENT,
    MIN_NUMBER_EXPONENT,
    SEPARATOR,
    InvalidAttribute,
    convert,
    flatten,
    item_size,
)
from igata_dynamodb.layout import RESULTS_HASH_KEY, Layout
from igata_dynamodb.records import InvalidRecord, RecordMapper, RequestWrite

# A hang fails the test (the thread method also stops C code that never returns).
pytestmark = pytest.mark.timeout(60, method="thread")
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PRECISION = 6
SERIALIZER = TypeSerializer()

# Text as JSON from a queue may carry it: lone surrogates ("\ud800" escapes) included.
texts = st.text(st.characters(exclude_categories=()), max_size=12)
decimals = st.decimals(allow_nan=True, allow_infinity=True) | st.builds(
    lambda digits, exponent: Decimal(f"{digits}E{exponent}"),
    st.integers(-(10**45), 10**45),
    st.integers(-200, 200),
)
numbers = (
    st.integers()
    | st.integers(-(10**45), 10**45)
    | st.floats()
    | st.floats(min_value=-1e-120, max_value=1e-120)
    | st.sampled_from([1e308, -1e308, 5e-324, 1e-7, 0.1, -0.0, 1e125, 1e126])
    | decimals
)
numpy_scalars = st.one_of(
    st.floats(width=32).map(np.float32),
    st.floats().map(np.float64),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.integers(-128, 127).map(np.int8),
    st.booleans().map(np.bool_),
    texts.filter(lambda t: "\x00" not in t).map(np.str_),
    st.lists(st.floats(allow_nan=False), max_size=3).map(np.array),
)
scalars = (
    st.none()
    | st.booleans()
    | numbers
    | texts
    | st.just("")
    | st.binary(max_size=8)
    | st.datetimes()
    | st.dates()
    | numpy_scalars
)
sets = (
    st.frozensets(texts, max_size=3)
    # A signalling NaN cannot be hashed, so it cannot be in a set.
    | st.frozensets(
        numbers.filter(lambda n: not (isinstance(n, Decimal) and n.is_snan())), max_size=3
    )
    | st.frozensets(st.binary(max_size=4), max_size=3)
    | st.frozensets(texts | st.integers(), max_size=3)
)
values = st.recursive(
    scalars | sets,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(texts, children, max_size=3)
    ),
    max_leaves=20,
)
records = st.dictionaries(texts | st.sampled_from(["", SEPARATOR, "a" + SEPARATOR]), values)


def assert_storable(value, where: str, depth: int = 0) -> None:
    """A converted value boto3 serialises and DynamoDB stores."""
    assert depth <= MAX_NESTING, f"{where}: nested {depth} levels"
    if value is None or isinstance(value, bool | bytes):
        return
    if isinstance(value, str):
        value.encode("utf-8")  # DynamoDB text is UTF-8: no lone surrogates
        return
    if isinstance(value, Decimal):
        assert value.is_finite(), f"{where}: {value}"
        digits = value.normalize().as_tuple().digits
        assert len(digits) <= MAX_NUMBER_DIGITS, f"{where}: {value} has {len(digits)} digits"
        if value:
            assert MIN_NUMBER_EXPONENT <= value.adjusted() <= MAX_NUMBER_EXPONENT, where
        return
    if isinstance(value, list):
        for index, inner in enumerate(value):
            assert_storable(inner, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, inner in value.items():
            assert isinstance(key, str)
            key.encode("utf-8")
            assert_storable(inner, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, set):
        assert value, f"{where}: an empty set"
        kinds = {type(member) for member in value}
        assert len(kinds) == 1 and kinds <= {str, Decimal, bytes}, f"{where}: {kinds}"
        for member in value:
            assert_storable(member, f"{where} member", depth)
        return
    raise AssertionError(f"{where}: {type(value).__name__} {value!r} left in the item")


def assert_item(item: Mapping) -> None:
    for name, value in item.items():
        assert isinstance(name, str) and name, "attribute names are non-empty text"
        name.encode("utf-8")
        assert value != "", f"{name!r}: empty strings are dropped"
        assert not isinstance(value, Mapping), f"{name!r}: maps are flattened"
        assert_storable(value, name)
        SERIALIZER.serialize(value)  # what the sink sends: boto3 must accept it
    item_size(item)


def flatten_or_rejection(record):
    try:
        item = flatten(record, PRECISION)
    except InvalidAttribute as exc:
        assert str(exc), "a rejection says why"
        return exc
    assert_item(item)
    return item


# -- flattening --------------------------------------------------------------------------------


@PROPERTY
@given(records)
@example({"tiny": Decimal("1.111111111111111111111111111111111111E-129")})
@example({"s3_uri": "s3://b/\ud800.jpg"})
@example({"\udcff": 1})
@example({"big": 10**40, "long": 12345678901234567890123456789012345678901})
@example({"nan": float("nan"), "inf": float("inf")})
@example({"empty": set(), "blank": "", "nested": {"": {"x": ""}}})
def test_any_record_flattens_to_a_storable_item_or_is_rejected(record):
    flatten_or_rejection(record)


@PROPERTY
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.floats() | decimals))
def test_numbers_are_stored_exactly_or_rejected(record):
    """An int or Decimal is stored as itself (or refused); a float as itself rounded to the
    configured decimal places (or refused)."""
    outcome = flatten_or_rejection(record)
    if isinstance(outcome, InvalidAttribute):
        return
    for name, value in record.items():
        stored = outcome[name]
        if isinstance(value, float):
            assert math.isfinite(value)
            assert abs(stored - Decimal(repr(value))) <= Decimal(1).scaleb(-PRECISION) / 2
        else:
            assert stored == Decimal(value)


@PROPERTY
@given(st.integers(1, 60), st.integers(-200, 200), st.booleans())
@example(38, -129, False)
@example(37, -130, True)
@example(38, 125, False)
def test_the_number_limits_are_exact(digits, adjusted, negative):
    """Kept: at most 38 digits, magnitude 1E-130 to 9.99E+125 (DynamoDB), and no digit below
    boto3's smallest exponent (it sends numbers through a 38-digit decimal context that
    cannot hold them exactly). Refused: everything else, nothing in between."""
    lowest = adjusted - digits + 1
    value = Decimal(("-" if negative else "") + "9" * digits + f"E{lowest}")
    fits = (
        digits <= MAX_NUMBER_DIGITS
        and MIN_NUMBER_EXPONENT <= adjusted <= MAX_NUMBER_EXPONENT
        and lowest >= DYNAMODB_CONTEXT.Etiny()
    )
    outcome = flatten_or_rejection({"n": value})
    if fits:
        assert not isinstance(outcome, InvalidAttribute), outcome
        assert outcome["n"] == value
    else:
        assert isinstance(outcome, InvalidAttribute)


@PROPERTY
@given(numpy_scalars)
def test_numpy_values_convert_as_their_python_values(value):
    python = value.tolist() if isinstance(value, np.ndarray) else value.item()
    try:
        expected = convert(python, PRECISION, "x")
    except InvalidAttribute:
        with pytest.raises(InvalidAttribute):
            convert(value, PRECISION, "x")
        return
    assert convert(value, PRECISION, "x") == expected


@PROPERTY
@given(st.integers(0, 3 * MAX_NESTING))
def test_nesting_is_kept_to_32_levels_or_rejected(depth):
    value: object = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    outcome = flatten_or_rejection({"deep": [value]})
    if isinstance(outcome, InvalidAttribute):
        assert "nested more than" in str(outcome)


# -- records -> the writes of one request ------------------------------------------------------

MAPPER = RecordMapper(Layout("requests", "results"))
# Mostly what a detector returns (so most records get as far as their RESULTS items), the
# rest anything.
plain = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
elements = st.dictionaries(st.text(min_size=1, max_size=8), plain | plain | values, max_size=4)
ids = st.text(st.characters(exclude_categories=()), min_size=1, max_size=10)
request_records = st.fixed_dictionaries(
    {
        "request_id": ids | ids | ids | texts | st.integers() | st.none(),
        "s3_uri": ids | ids | ids | values,
        "result": st.lists(elements, min_size=1, max_size=4)
        | st.lists(elements, max_size=4)
        | values,
    },
    optional={"igata_id": texts, "collection_id": texts},
)


@PROPERTY
@given(request_records)
@example({"request_id": "r-1", "s3_uri": "s3://b/k.jpg", "result": [{"label": "\ud800"}]})
@example({"request_id": "r-\ud800", "s3_uri": "s3://b/k.jpg", "result": [{"label": "x"}]})
@example({"request_id": "r-1", "s3_uri": "s3://b/k.jpg", "result": ["\ud800"]})
@example(
    {"request_id": "r-1", "s3_uri": "s3://b/k.jpg", "result": [{"v": Decimal("1" * 38 + "E-166")}]}
)
def test_any_record_becomes_a_request_write_or_an_invalid_record(record):
    try:
        write = MAPPER.from_record(record)
    except InvalidRecord as exc:
        assert str(exc).startswith("dynamodb: ")
        return
    assert isinstance(write, RequestWrite)
    write.request_id.encode("utf-8")
    assert write.request_id
    json.loads(write.results_json)  # the REQUESTS item's JSON is JSON
    write.results_json.encode("utf-8")
    for (hashkey, sort_value), item in write.items.items():
        assert item[RESULTS_HASH_KEY] == hashkey
        assert item["s3_uri"] == sort_value
        assert_item(item)
