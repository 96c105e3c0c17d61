"""One identity, used everywhere: records in the original README's format (no request_id)
are keyed by their identity; parent fields follow the configured key; REQUESTS items get the
fields their indexes are keyed on (collection_id); whole numbers are written as written.

The tests that write run on moto and, with IGATA_TEST_DYNAMODB_ENDPOINT, on dynalite.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from igata_core.components import ErrorOutcome, RunContext
from igata_core.options import resolve
from igata_dynamodb.attributes import check_number, convert, flatten
from igata_dynamodb.layout import OPTIONS, Layout
from igata_dynamodb.records import InvalidRecord, RecordMapper, results_hashkey
from igata_dynamodb.sink import DynamoDbSink
from igata_dynamodb.tables import Capacity, create_tables, index_name

LAYOUT = Layout("requests", "results")
INDEX = index_name("collection_id", "state")  # collection_id-state-index


def original(image_id: str, result: Any = None, **fields: Any) -> dict[str, Any]:
    """A result record of a request exactly as the original README documents it (no
    request_id); the sqs source sets igata_id to its image_id."""
    record: dict[str, Any] = {} if result is None else {"result": result}
    record.update(
        {
            "collection_id": "events:1234",
            "image_id": image_id,
            "s3_uri": f"s3://bucket/{image_id}.jpg",
            "igata_id": image_id,
            "igata_input": f"sqs:msg-{image_id}",
        }
    )
    record.update(fields)
    return record


def outcome(meta: dict[str, Any], identity: str = "images:1") -> ErrorOutcome:
    return ErrorOutcome(
        identity=identity,
        input="sqs:m1",
        stage="load",
        error_type="NoSuchKey",
        message="gone",
        meta=meta,
    )


def sink_layout(environ: dict[str, str]) -> Layout:
    """The layout the sink gets from these environment variables (and the defaults)."""
    resolved, problems = resolve(
        OPTIONS,
        owner="sink 'dynamodb'",
        environ={
            "OUTPUT_CTXMGR_REQUESTS_TABLENAME": "requests",
            "OUTPUT_CTXMGR_RESULTS_TABLENAME": "results",
            **environ,
        },
    )
    assert not problems
    return DynamoDbSink(resolved.values).layout


# -- which request a record belongs to (no I/O) -----------------------------------------


def test_a_record_without_request_id_is_keyed_by_its_identity() -> None:
    write = RecordMapper(LAYOUT).from_record(original("images:1", [{"label": "cat"}]))
    assert write.request_id == "images:1"
    [((hashkey, sort), item)] = list(write.items.items())
    assert hashkey == results_hashkey("images:1", 0) == item["hashkey"]
    assert sort == "s3://bucket/images:1.jpg"
    # The REQUESTS key field is copied into RESULTS items with the id the request is keyed by.
    assert item["request_id"] == "images:1"
    assert item["s3_uri"] == "s3://bucket/images:1.jpg"


def test_a_request_id_wins_over_the_identity() -> None:
    write = RecordMapper(LAYOUT).from_record(original("images:1", [{}], request_id=7))
    assert write.request_id == "7"
    [item] = write.items.values()
    assert item["request_id"] == Decimal(7)  # the record's own value, as before
    assert item["hashkey"] == results_hashkey("7", 0)


def test_default_parent_fields_follow_the_configured_key() -> None:
    layout = sink_layout({"REQUESTS_TABLE_HASHKEY_KEYNAME": "image_id"})
    assert layout.copied_fields == ("image_id", "s3_uri")
    assert not layout.parents_required
    write = RecordMapper(layout).from_record(original("images:1", [{"label": "cat"}]))
    assert write.request_id == "images:1"
    [item] = write.items.values()
    assert item["image_id"] == "images:1"
    assert "request_id" not in item


def test_default_parent_fields_a_record_lacks_are_skipped() -> None:
    record = original("images:1", [{"label": "cat", "s3_uri": "s3://bucket/own.jpg"}])
    del record["s3_uri"]
    write = RecordMapper(sink_layout({})).from_record(record)
    [item] = write.items.values()
    assert item["s3_uri"] == "s3://bucket/own.jpg"  # the element's own sort key
    assert item["request_id"] == "images:1"


def test_parent_fields_named_explicitly_are_required() -> None:
    for value in ("request_id,s3_uri", "s3_uri,camera"):
        layout = sink_layout({"RESULTS_ADDITIONAL_PARENT_FIELDS": value})
        assert layout.parents_required
        record = original("images:1", [{"label": "cat", "s3_uri": "s3://bucket/own.jpg"}])
        del record["s3_uri"]
        with pytest.raises(InvalidRecord, match=r"lacks the parent field\(s\) 's3_uri'"):
            RecordMapper(layout).from_record(record)
    # The REQUESTS key field named explicitly gets the identity when the record lacks it.
    layout = sink_layout({"RESULTS_ADDITIONAL_PARENT_FIELDS": "request_id,s3_uri,collection_id"})
    [item] = RecordMapper(layout).from_record(original("images:1", [{}])).items.values()
    assert (item["request_id"], item["collection_id"]) == ("images:1", "events:1234")


def test_explicit_parent_fields_from_every_source() -> None:
    """The sink tells explicit from default whatever sets the option."""
    default = DynamoDbSink({"requests_tablename": "requests", "results_tablename": "results"})
    assert default.layout.parent_fields is None
    explicit = DynamoDbSink(
        {
            "requests_tablename": "requests",
            "results_tablename": "results",
            "results_additional_parent_fields": [],
        }
    ).layout
    assert explicit.parents_required
    assert explicit.copied_fields == ()
    resolved, _ = resolve(
        OPTIONS,
        owner="sink",
        config={
            "requests_tablename": "requests",
            "results_tablename": "results",
            "results_additional_parent_fields": ["s3_uri"],
        },
    )
    assert Layout.from_options(resolved.values).parent_fields == ("s3_uri",)


def test_an_error_without_request_id_is_recorded_under_the_identity() -> None:
    meta = {"collection_id": "events:1234", "image_id": "images:1", "s3_uri": "s3://b/k"}
    write = RecordMapper(LAYOUT).from_error(outcome(meta))
    assert write is not None
    assert (write.request_id, write.fields) == ("images:1", {"collection_id": "events:1234"})
    # No request fields at all (a body that is not JSON): no request to record it on.
    assert RecordMapper(LAYOUT).from_error(outcome({}, identity="sqs:m1")) is None


def test_index_fields_skip_empty_and_mistyped_values(caplog: pytest.LogCaptureFixture) -> None:
    fields = {"collection_id": ("S", INDEX, "HASH"), "priority": ("N", "p-index", "RANGE")}
    mapper = RecordMapper(LAYOUT, request_fields=fields)
    write = mapper.from_record(original("images:1", collection_id="", priority=30.0))
    assert write.fields == {"priority": Decimal(30)}
    assert str(write.fields["priority"]) == "30"
    with caplog.at_level(logging.WARNING, "igata.dynamodb"):
        write = mapper.from_record(original("images:2", collection_id=12, priority="high"))
    assert write.fields == {}
    assert "'collection_id' is a key of the index" in caplog.text
    assert write.state == "completed"


# -- whole numbers as written (no I/O) ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        30,
        30.0,
        Decimal("3E+1"),
        Decimal("30.000"),
        np.int64(30),
        np.int32(30),
        np.uint8(30),
        np.float32(30.0),
        np.float64(30.0),
        30.0000001,  # rounded to 6 places
    ],
    ids=repr,
)
def test_whole_numbers_have_no_exponent(value: Any) -> None:
    from boto3.dynamodb.types import TypeSerializer

    converted = convert(value, 6, "x")
    assert str(converted) == "30"
    assert TypeSerializer().serialize(converted) == {"N": "30"}
    item = flatten({"a": {"b": value}, "l": [value], "s": {value}}, 6)
    assert TypeSerializer().serialize(item) == {
        "M": {"a__b": {"N": "30"}, "l": {"L": [{"N": "30"}]}, "s": {"NS": ["30"]}}
    }


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (Decimal("1.50"), "1.5"),
        (Decimal("-1.2E+3"), "-1200"),
        (Decimal("0E+5"), "0"),
        (Decimal(10**37), "1" + "0" * 37),
        # Beyond 38 digits boto3 cannot send the zeros: the exponent form is the only one.
        (Decimal(10**38), "1E+38"),
        (Decimal("9.99E+125"), "9.99E+125"),
        (Decimal("1E-7"), "1E-7"),
    ],
)
def test_number_forms(value: Decimal, written: str) -> None:
    assert str(check_number(value, "x")) == written


# -- against DynamoDB (moto, dynalite) ---------------------------------------------------


class Recorder:
    """The exact JSON bodies a client sends (botocore's before-send event)."""

    def __init__(self, client: Any):
        self.bodies: list[dict[str, Any]] = []
        client.meta.events.register("before-send.dynamodb.*", self)

    def __call__(self, request: Any, **_: Any) -> None:
        body = request.body
        self.bodies.append(json.loads(body.decode() if isinstance(body, bytes) else body))

    def numbers(self) -> list[str]:
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    if key == "N":
                        found.append(inner)
                    elif key == "NS":
                        found.extend(inner)
                    else:
                        walk(inner)
            elif isinstance(value, list):
                for inner in value:
                    walk(inner)

        walk(self.bodies)
        return found


@pytest.fixture
def sink(layout: Layout) -> Any:
    sink = DynamoDbSink(
        {"requests_tablename": layout.requests_table, "results_tablename": layout.results_table},
        RunContext(concurrency=2),
    )
    sink.open()
    yield sink
    sink.close()


def query_index(ddb: Any, table: str, collection: str, state: str) -> list[dict[str, Any]]:
    return ddb.query(
        TableName=table,
        IndexName=INDEX,
        KeyConditionExpression="collection_id = :c AND #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":c": {"S": collection}, ":s": {"S": state}},
    )["Items"]


def test_original_records_are_written_keyed_by_identity(
    sink: Any, store: Any, ddb: Any, layout: Layout
) -> None:
    records = [original(f"images:{i}", [{"label": "cat", "n": i}]) for i in range(3)]
    records.append(original("images:empty", [{"label": "x"}], collection_id=""))
    assert sink.put_records(records) == []
    assert sink.flush() == []
    for i in range(3):
        item = store.request(f"images:{i}")
        assert item is not None
        assert (item["state"], item["collection_id"]) == ("completed", "events:1234")
        [result] = store.results_of(f"images:{i}")
        assert (result["request_id"], result["n"]) == (f"images:{i}", i)
    empty = store.request("images:empty")
    assert empty is not None and "collection_id" not in empty  # never an empty index key
    found = query_index(ddb, layout.requests_table, "events:1234", "completed")
    assert sorted(item["request_id"]["S"] for item in found) == [f"images:{i}" for i in range(3)]


def test_an_error_is_recorded_on_the_identity_and_indexed(
    sink: Any, store: Any, ddb: Any, layout: Layout
) -> None:
    meta = {"collection_id": "events:9", "image_id": "images:gone", "s3_uri": "s3://b/gone"}
    sink.put_errors([outcome(meta, identity="images:gone")])
    assert sink.flush() == []
    item = store.request("images:gone")
    assert item is not None
    assert (item["state"], item["collection_id"]) == ("error", "events:9")
    [found] = query_index(ddb, layout.requests_table, "events:9", "error")
    assert found["request_id"]["S"] == "images:gone"


def test_other_index_keys_of_the_requests_table_are_written(aws: Any, ddb: Any) -> None:
    """The fields written follow the table's indexes, as DescribeTable gives them."""
    ddb.create_table(
        TableName="jobs",
        AttributeDefinitions=[
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "customer", "AttributeType": "S"},
            {"AttributeName": "priority", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-customer",
                "KeySchema": [
                    {"AttributeName": "customer", "KeyType": "HASH"},
                    {"AttributeName": "priority", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    create_tables(ddb, Layout("jobs", "job-results", request_key="job_id"), Capacity())
    sink = DynamoDbSink(
        {
            "requests_tablename": "jobs",
            "results_tablename": "job-results",
            "requests_hashkey_keyname": "job_id",
        }
    )
    sink.open()
    try:
        recorder = Recorder(sink._client)
        record = original("images:1", [{"a": 1}], customer="acme", priority=30, job_id="j1")
        assert sink.put_records([record]) == []
        assert sink.flush() == []
    finally:
        sink.close()
    item = ddb.get_item(TableName="jobs", Key={"job_id": {"S": "j1"}}, ConsistentRead=True)
    assert item["Item"]["customer"] == {"S": "acme"}
    assert item["Item"]["priority"] == {"N": "30"}
    assert "collection_id" not in item["Item"]  # not an index key of this table
    assert "30" in recorder.numbers()
    found = ddb.query(
        TableName="jobs",
        IndexName="by-customer",
        KeyConditionExpression="customer = :c",
        ExpressionAttributeValues={":c": {"S": "acme"}},
    )["Items"]
    assert [f["job_id"]["S"] for f in found] == ["j1"]


def test_whole_numbers_are_sent_and_stored_without_exponent(
    sink: Any, ddb: Any, layout: Layout
) -> None:
    recorder = Recorder(sink._client)
    element = {
        "int": 30,
        "float": 30.0,
        "decimal": Decimal("3E+1"),
        "np_int": np.int64(30),
        "np_float": np.float32(30.0),
        "rounded": 30.0000001,
        "nested": {"x": 30.0},
        "list": [30, 30.0],
        "set": {Decimal("3E+1")},
    }
    assert sink.put_records([original("images:n", [element])]) == []
    assert sink.flush() == []
    sent = recorder.numbers()
    assert "30" in sent
    assert not [number for number in sent if "E" in number.upper()], sent
    [item] = ddb.scan(TableName=layout.results_table, ConsistentRead=True)["Items"]
    assert {name: item[name] for name in ("int", "float", "decimal", "np_int")} == {
        name: {"N": "30"} for name in ("int", "float", "decimal", "np_int")
    }
    assert item["np_float"] == item["rounded"] == item["nested__x"] == {"N": "30"}
    assert item["list"] == {"L": [{"N": "30"}, {"N": "30"}]}
    assert item["set"] == {"NS": ["30"]}


def test_the_readme_example(sink: Any, store: Any) -> None:
    """README, "Examples": the items written for an original-format request."""
    record = {
        "collection_id": "events:1",
        "image_id": "images:1",
        "s3_uri": "s3://bucket/1.jpg",
        "result": [{"label": "cat", "score": 0.91, "position": {"x1": 10, "y1": 20}}],
        "igata_id": "images:1",
        "igata_input": "sqs:m1",
    }
    assert sink.put_records([record]) == []
    assert sink.flush() == []
    item = store.request("images:1")
    assert item is not None
    assert {k: v for k, v in item.items() if k not in ("result", "updated_at_timestamp")} == {
        "request_id": "images:1",
        "collection_id": "events:1",
        "state": "completed",
        "errors": "[]",
        "results_count": 1,
    }
    assert json.loads(item["result"]) == record["result"]
    [result] = store.results()
    assert result == {
        "hashkey": results_hashkey("images:1", 0),
        "s3_uri": "s3://bucket/1.jpg",
        "request_id": "images:1",
        "label": "cat",
        "score": Decimal("0.91"),
        "position__x1": 10,
        "position__y1": 20,
    }
