"""Values -> DynamoDB attributes, and records -> writes: the checks made before any call."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from igata_core.components import ErrorOutcome
from igata_dynamodb.attributes import (
    MAX_ITEM_BYTES,
    InvalidAttribute,
    check_number,
    convert,
    flatten,
    float_to_decimal,
    item_size,
)
from igata_dynamodb.layout import COMPLETED, ERROR, Layout
from igata_dynamodb.records import InvalidRecord, RecordMapper, results_hashkey


def test_floats_become_decimals_rounded_to_the_precision() -> None:
    assert float_to_decimal(0.1, 6, "x") == Decimal("0.1")
    assert float_to_decimal(0.12345678, 6, "x") == Decimal("0.123457")
    assert float_to_decimal(2.5e-7, 6, "x") == Decimal("0")
    assert float_to_decimal(1234.5, 0, "x") == Decimal("1234")  # half to even
    assert float_to_decimal(1e20, 6, "x") == Decimal("1E+20")
    assert float_to_decimal(-0.0, 6, "x") == Decimal("0")


def test_rounding_keeps_at_most_17_significant_digits() -> None:
    value = float_to_decimal(123456789.123456789, 20, "x")
    assert len(value.as_tuple().digits) <= 17


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused(value: float) -> None:
    with pytest.raises(InvalidAttribute, match="NaN/inf"):
        float_to_decimal(value, 6, "attribute 'score'")


def test_numbers_beyond_38_digits_are_refused() -> None:
    assert check_number(Decimal(10**37 + 1), "n") == Decimal(10**37 + 1)
    with pytest.raises(InvalidAttribute, match="39 significant digits"):
        check_number(Decimal(10**38 + 1), "attribute 'n'")
    # Trailing zeros are not significant: 1E+40 has one digit, but is within range.
    assert check_number(Decimal(10**40), "n") == Decimal("1E+40")


def test_numbers_outside_dynamodb_range_are_refused() -> None:
    with pytest.raises(InvalidAttribute, match="range"):
        check_number(Decimal("1E+126"), "n")
    with pytest.raises(InvalidAttribute, match="range"):
        check_number(Decimal("1E-131"), "n")
    assert check_number(Decimal("-9.9E+125"), "n") == Decimal("-9.9E+125")


def test_numpy_values_are_converted() -> None:
    assert convert(np.float32(0.25), 6, "x") == Decimal("0.25")
    assert convert(np.int64(7), 6, "x") == Decimal(7)
    assert convert(np.bool_(True), 6, "x") is True
    assert convert(np.array([[1, 2], [3, 4]]), 6, "x") == [
        [Decimal(1), Decimal(2)],
        [Decimal(3), Decimal(4)],
    ]
    with pytest.raises(InvalidAttribute, match="NaN"):
        convert(np.float64("nan"), 6, "x")


def test_other_values() -> None:
    assert convert(True, 6, "x") is True  # not the number 1
    assert convert(None, 6, "x") is None
    assert convert((1, "a"), 6, "x") == [Decimal(1), "a"]
    assert convert(dt.datetime(2024, 1, 2, 3, 4, 5), 6, "x") == "2024-01-02T03:04:05"
    assert convert(b"\x00\x01", 6, "x") == b"\x00\x01"
    assert convert({"a", "b"}, 6, "x") == {"a", "b"}
    assert convert({1.5, 2}, 6, "x") == {Decimal("1.5"), Decimal(2)}
    with pytest.raises(InvalidAttribute, match="empty set"):
        convert(set(), 6, "attribute 'tags'")
    with pytest.raises(InvalidAttribute, match="only strings, only numbers"):
        convert({"a", 1}, 6, "x")
    with pytest.raises(InvalidAttribute, match="type object"):
        convert(object(), 6, "x")


def test_nesting_deeper_than_32_levels_is_refused() -> None:
    value: Any = "leaf"
    for _ in range(33):
        value = [value]
    with pytest.raises(InvalidAttribute, match="32 levels"):
        convert(value, 6, "x")


def test_flatten_joins_nested_keys_and_drops_empty_strings() -> None:
    flat = flatten(
        {
            "position": {"x1": 1, "inner": {"y": 0.5}},
            "label": "cat",
            "note": "",
            "boxes": [{"w": 1.25}, {"w": ""}],
        },
        6,
    )
    assert flat == {
        "position__x1": Decimal(1),
        "position__inner__y": Decimal("0.5"),
        "label": "cat",
        # Lists stay lists so no element is lost; empty strings inside are valid there.
        "boxes": [{"w": Decimal("1.25")}, {"w": ""}],
    }


def test_flatten_names_the_attribute_in_errors() -> None:
    with pytest.raises(InvalidAttribute, match="'position__x1'"):
        flatten({"position": {"x1": float("nan")}}, 6)


def test_item_size_counts_names_and_values() -> None:
    assert item_size({"ab": "cde"}) == 5
    assert item_size({"n": Decimal("12345")}) == 1 + 4
    assert item_size({"l": ["a", True]}) == 1 + 3 + (1 + 1) + (1 + 1)
    big = {"blob": "x" * MAX_ITEM_BYTES}
    assert item_size(big) > MAX_ITEM_BYTES


# -- records -> writes ------------------------------------------------------------------

LAYOUT = Layout("requests", "results")


def record(**fields: Any) -> dict[str, Any]:
    base = {
        "request_id": "r1",
        "s3_uri": "s3://b/r1.jpg",
        "igata_id": "r1",
        "igata_input": "sqs:m1",
    }
    return {**base, **fields}


def test_result_list_gives_one_item_per_element_keyed_by_position() -> None:
    write = RecordMapper(LAYOUT).from_record(
        record(result=[{"label": "a", "s3_uri": "ignored"}, {"label": "b"}])
    )
    assert write.state == COMPLETED
    assert write.results_count == 2
    items = list(write.items.values())
    assert [item["hashkey"] for item in items] == [
        results_hashkey("r1", 0),
        results_hashkey("r1", 1),
    ]
    # Parent fields are copied and win over the element's own.
    assert all(item["s3_uri"] == "s3://b/r1.jpg" and item["request_id"] == "r1" for item in items)
    assert json.loads(write.results_json)[1] == {"label": "b"}


def test_hash_key_ignores_predicted_values() -> None:
    mapper = RecordMapper(LAYOUT)
    first = mapper.from_record(record(result=[{"score": 0.1234561}]))
    second = mapper.from_record(record(result=[{"score": 0.1234569}], igata_id="other"))
    assert list(first.items) == list(second.items)


@pytest.mark.parametrize(
    ("result", "count"), [(None, 0), ([], 0), ({"label": "a"}, 1), ([{"a": 1}] * 3, 3)]
)
def test_result_shapes(result: Any, count: int) -> None:
    fields = {} if result is None else {"result": result}
    write = RecordMapper(LAYOUT).from_record(record(**fields))
    assert len(write.items) == count
    assert write.results_json == json.dumps(result if result is not None else [])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"request_id": None, "igata_id": None},
            "needs a non-empty string field 'request_id' .* or an identity",
        ),
        ({"request_id": "", "igata_id": ""}, "needs a non-empty string field 'request_id'"),
        ({"request_id": ["x"]}, "'request_id' is list"),
        ({"request_id": True}, "'request_id' is bool"),
        ({"result": "cat"}, "'result' is a str; the RESULTS table needs a list of dicts"),
        ({"result": [{"a": 1}, 2]}, "element 1 of 'result' is a int"),
        ({"result": [{"a": float("nan")}]}, "RESULTS item 0 of 'result': attribute 'a'"),
        ({"result": [{"a": 1}], "s3_uri": ""}, "lacks the sort key 's3_uri'"),
        ({"result": [{"blob": "x" * MAX_ITEM_BYTES}]}, "RESULTS item 0 .* bytes; DynamoDB items"),
        ({"result": [{"a": object()}]}, "attribute 'a': a value of type object"),
        ({"result": [{(1, 2): "v"}]}, "cannot be stored as JSON"),
    ],
)
def test_records_dynamodb_cannot_take_are_refused(fields: dict[str, Any], message: str) -> None:
    bad = {k: v for k, v in record(**fields).items() if v is not None}
    with pytest.raises(InvalidRecord, match=message):
        RecordMapper(LAYOUT).from_record(bad)


def test_missing_parent_fields_are_named_when_configured() -> None:
    explicit = Layout("requests", "results", parent_fields=("request_id", "s3_uri"))
    bad = record(result=[{"a": 1, "s3_uri": "s3://b/own.jpg"}])
    del bad["s3_uri"]
    with pytest.raises(InvalidRecord, match=r"lacks the parent field.*'s3_uri'"):
        RecordMapper(explicit).from_record(bad)
    # Without elements nothing is copied, so nothing is missing.
    del bad["result"]
    assert RecordMapper(explicit).from_record(bad).results_count == 0


def test_numeric_request_ids_become_strings() -> None:
    assert RecordMapper(LAYOUT).from_record(record(request_id=42)).request_id == "42"


def test_oversized_results_json_is_refused_for_the_requests_item() -> None:
    # Many small elements: each RESULTS item is fine, the JSON for REQUESTS is not.
    elements = [{"label": "x" * 100, "n": i} for i in range(4000)]
    with pytest.raises(InvalidRecord, match="a REQUESTS item holds at most"):
        RecordMapper(LAYOUT).from_record(record(result=elements))


def test_error_outcome_becomes_an_error_write() -> None:
    outcome = ErrorOutcome(
        identity="r1",
        input="sqs:m1",
        stage="predict",
        error_type="ValueError",
        message="boom",
        attempt=3,
        final=False,
        meta={"request_id": "r1"},
    )
    write = RecordMapper(LAYOUT).from_error(outcome)
    assert write is not None
    assert (write.state, write.attempt, write.errors[0]["message"]) == (ERROR, 3, "boom")
    outcome.meta = {}
    assert RecordMapper(LAYOUT).from_error(outcome) is None
