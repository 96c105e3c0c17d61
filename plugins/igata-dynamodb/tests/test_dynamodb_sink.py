"""The dynamodb sink against the moto server: the original's behaviours, made idempotent."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from igata_core.components import ConfigurationError, ErrorOutcome, RunContext
from igata_dynamodb.layout import Layout
from igata_dynamodb.sink import DynamoDbSink
from igata_dynamodb.tables import TableProblem


def error_outcome(
    request_id: str, message: str = "predict failed", attempt: int = 1
) -> ErrorOutcome:
    return ErrorOutcome(
        identity=request_id,
        input=f"sqs:msg-{request_id}",
        stage="predict",
        error_type="ValueError",
        message=message,
        attempt=attempt,
        final=False,
        meta={"request_id": request_id, "collection_id": "events:1"},
    )


def queue_request(ddb: Any, request_id: str) -> None:
    """What the service that queued the request wrote before igata ran."""
    ddb.put_item(
        TableName="igata-requests",
        Item={
            "request_id": {"S": request_id},
            "collection_id": {"S": "events:1"},
            "state": {"S": "queued"},
        },
    )


def test_result_list_and_no_result_both_complete_the_request(
    open_sink: Any, store: Any, ddb: Any, make_record: Any
) -> None:
    queue_request(ddb, "r1")
    queue_request(ddb, "r2")
    sink = open_sink()
    before = int(time.time())
    rejections = sink.put_records(
        [
            make_record("r1", [{"label": "cat", "score": 0.5}, {"label": "dog", "score": 0.25}]),
            make_record("r2"),
        ]
    )
    assert rejections == []
    sink.flush()
    assert sink.pending() == 0

    for request_id, count in (("r1", 2), ("r2", 0)):
        item = store.request(request_id)
        assert item["state"] == "completed"
        assert item["collection_id"] == "events:1", "an update must keep other attributes"
        assert item["errors"] == "[]"
        assert before <= item["updated_at_timestamp"] <= time.time() + 1
        assert item["results_count"] == count
        assert len(store.results_of(request_id)) == count
    assert store.results_json("r1") == [
        {"label": "cat", "score": 0.5},
        {"label": "dog", "score": 0.25},
    ]
    assert store.results_json("r2") == []
    assert len(store.results()) == 2


def test_nested_results_are_flattened_with_decimal_values(
    open_sink: Any, store: Any, make_record: Any
) -> None:
    sink = open_sink()
    element = {
        "position": {"x1": 1.5, "y1": 0.1234567, "box": {"w": np.float32(0.25)}},
        "label": "cat",
        "note": "",
        "count": np.int64(3),
        "tags": ["a", "b"],
    }
    assert sink.put_records([make_record("r1", [element])]) == []
    sink.flush()
    [item] = store.results_of("r1")
    assert item == {
        "hashkey": item["hashkey"],
        "position__x1": Decimal("1.5"),
        "position__y1": Decimal("0.123457"),
        "position__box__w": Decimal("0.25"),
        "label": "cat",
        "count": Decimal(3),
        "tags": ["a", "b"],
        "request_id": "r1",
        "s3_uri": "s3://bucket/r1.jpg",
    }


def test_precision_and_key_names_follow_the_options(ddb: Any, aws: Any, make_record: Any) -> None:
    from igata_dynamodb.tables import Capacity, create_tables

    layout = Layout(
        "jobs", "job-results", request_key="job_id", results_key="detections",
        sort_key="image", parent_fields=("job_id", "image"), state_key="status",
    )  # fmt: skip
    create_tables(ddb, layout, Capacity())
    sink = DynamoDbSink(
        {
            "requests_tablename": "jobs",
            "results_tablename": "job-results",
            "requests_hashkey_keyname": "job_id",
            "results_keyname": "detections",
            "results_sortkey_keyname": "image",
            "results_additional_parent_fields": ["job_id", "image"],
            "state_keyname": "status",
            "decimal_precision_digits": 2,
        }
    )
    sink.open()
    try:
        record = make_record("x", job_id="j1", image="s3://b/1.png", detections=[{"p": 0.126}])
        assert sink.put_records([record]) == []
        sink.flush()
    finally:
        sink.close()
    job = ddb.get_item(TableName="jobs", Key={"job_id": {"S": "j1"}})["Item"]
    assert job["status"] == {"S": "completed"}
    assert job["detections"] == {"S": '[{"p": 0.126}]'}
    [item] = ddb.scan(TableName="job-results")["Items"]
    assert item["p"] == {"N": "0.13"}
    assert item["image"] == {"S": "s3://b/1.png"}


def test_writing_the_same_records_twice_changes_nothing(
    open_sink: Any, store: Any, make_record: Any
) -> None:
    records = [
        make_record(f"r{i}", [{"label": f"l{j}", "score": j / 3} for j in range(i % 4)])
        for i in range(12)
    ]
    first = open_sink()
    for start in range(0, 12, 5):
        first.put_records(records[start : start + 5])
    first.flush()
    results = sorted(store.results(), key=lambda item: item["hashkey"])
    requests = {item["request_id"]: item for item in store.requests()}
    assert len(results) == sum(i % 4 for i in range(12))

    def without_time(item: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in item.items() if k != "updated_at_timestamp"}

    # A redelivery: another worker, another order and batch grouping.
    second = open_sink()
    for start in range(0, 12, 7):
        second.put_records(list(reversed(records))[start : start + 7])
    second.flush()
    assert sorted(store.results(), key=lambda item: item["hashkey"]) == results
    assert {i["request_id"]: without_time(i) for i in store.requests()} == {
        k: without_time(v) for k, v in requests.items()
    }

    # A re-processing whose floats differ below the stored precision changes no item.
    third = open_sink()
    third.put_records(
        [
            make_record(
                r["request_id"], [dict(e, score=e["score"] + 1e-9) for e in r.get("result", [])]
            )
            for r in records
        ]
    )
    third.flush()
    assert sorted(store.results(), key=lambda item: item["hashkey"]) == results
    assert len(store.requests()) == 12


def test_fewer_elements_on_reprocessing_remove_the_stale_items(
    open_sink: Any, store: Any, make_record: Any
) -> None:
    sink = open_sink()
    sink.put_records(
        [make_record("r1", [{"n": i} for i in range(5)]), make_record("r2", [{"n": 0}])]
    )
    sink.flush()
    assert len(store.results_of("r1")) == 5

    sink.put_records([make_record("r1", [{"n": 9}, {"n": 8}])])
    sink.flush()
    assert [item["n"] for item in store.results_of("r1")] == [9, 8]
    assert store.request("r1")["results_count"] == 2
    assert len(store.results()) == 3, "only r1's stale items go; r2's stays"

    sink.put_records([make_record("r1")])
    sink.flush()
    assert store.results_of("r1") == []
    assert store.request("r1")["results_count"] == 0


def test_a_failing_record_sets_state_error_with_its_message(
    open_sink: Any, store: Any, ddb: Any
) -> None:
    queue_request(ddb, "r1")
    sink = open_sink()
    sink.put_errors([error_outcome("r1", "model exploded", attempt=2)])
    sink.flush()
    item = store.request("r1")
    assert item["state"] == "error"
    assert item["collection_id"] == "events:1"
    assert item["attempt"] == 2
    assert item["result"] == "[]"
    import json

    [error] = json.loads(item["errors"])
    assert error["message"] == "model exploded"
    assert (error["stage"], error["error_type"], error["attempt"]) == ("predict", "ValueError", 2)


def test_a_later_success_turns_error_into_completed(
    open_sink: Any, store: Any, make_record: Any
) -> None:
    sink = open_sink()
    sink.put_errors([error_outcome("r1")])
    sink.flush()
    assert store.request("r1")["state"] == "error"
    sink.put_records([make_record("r1", [{"label": "cat"}])])
    sink.flush()
    item = store.request("r1")
    assert (item["state"], item["errors"]) == ("completed", "[]")
    assert len(store.results_of("r1")) == 1


def test_a_later_failure_never_turns_completed_into_error(
    open_sink: Any, store: Any, make_record: Any
) -> None:
    open_sink().put_records([make_record("r1", [{"label": "cat"}])])
    first = open_sink()
    first.put_records([make_record("r1", [{"label": "cat"}])])
    first.flush()
    completed = store.request("r1")

    later = open_sink()  # another worker gets a redelivery that fails
    later.put_errors([error_outcome("r1", attempt=2)])
    later.flush()  # refused by the condition: done, not a failure
    assert later.pending() == 0
    assert store.request("r1") == completed
    assert len(store.results_of("r1")) == 1


def test_error_and_success_buffered_together_end_completed(
    open_sink: Any, store: Any, make_record: Any
) -> None:
    sink = open_sink()
    sink.put_errors([error_outcome("r1")])
    sink.put_records([make_record("r1", [{"a": 1}]), make_record("r2", [{"a": 2}])])
    sink.put_errors([error_outcome("r2"), error_outcome("r3"), error_outcome("r3", "again")])
    sink.flush()
    assert store.request("r1")["state"] == "completed"
    assert store.request("r2")["state"] == "completed"
    import json

    r3 = store.request("r3")
    assert r3["state"] == "error"
    assert [e["message"] for e in json.loads(r3["errors"])] == ["predict failed", "again"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"result": [{"blob": "x" * 420_000}]}, "DynamoDB items hold at most 409600 bytes"),
        ({"result": [{"score": float("nan")}]}, "attribute 'score': nan is not a number"),
        ({"result": [{"label": "a"}], "s3_uri": ""}, "lacks the sort key 's3_uri'"),
        ({"request_id": None, "igata_id": None}, "needs a non-empty string field 'request_id'"),
    ],
    ids=["oversized", "nan", "no-sort-key", "no-request-id"],
)
def test_a_bad_record_is_rejected_and_the_others_written(
    open_sink: Any, store: Any, make_record: Any, bad: dict[str, Any], message: str
) -> None:
    sink = open_sink()
    record = make_record("bad")
    record.update(bad)
    record = {k: v for k, v in record.items() if v is not None}
    records = [make_record("r0", [{"a": 1}]), record, make_record("r2", [{"a": 2}])]
    rejections = sink.put_records(records)
    assert [r.index for r in rejections] == [1]
    assert message in rejections[0].message
    assert rejections[0].message.startswith("dynamodb: ")
    sink.flush()
    assert {item["request_id"] for item in store.requests()} == {"r0", "r2"}
    assert len(store.results()) == 2


def test_open_refuses_a_table_whose_keys_have_other_types(ddb: Any, aws: Any) -> None:
    """A RESULTS table with a numeric range key would refuse every item: exit 2 at once."""
    from igata_dynamodb.tables import Capacity, requests_table_spec

    layout = Layout("req", "res")
    ddb.create_table(**requests_table_spec(layout, Capacity()))
    ddb.create_table(
        TableName="res",
        AttributeDefinitions=[
            {"AttributeName": "hashkey", "AttributeType": "S"},
            {"AttributeName": "s3_uri", "AttributeType": "N"},  # the layout says S
        ],
        KeySchema=[
            {"AttributeName": "hashkey", "KeyType": "HASH"},
            {"AttributeName": "s3_uri", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    sink = DynamoDbSink({"requests_tablename": "req", "results_tablename": "res"})
    with pytest.raises(ConfigurationError) as raised:
        sink.open()
    sink.close()
    message = str(raised.value)
    assert "RESULTS table 'res'" in message
    assert "keyed [hashkey (HASH, S), s3_uri (RANGE, N)]" in message
    assert "configured for [hashkey (HASH, S), s3_uri (RANGE, S)]" in message
    assert "igata dynamodb create-tables" in message


def test_many_requests_in_one_flush(open_sink: Any, store: Any, make_record: Any) -> None:
    sink = open_sink(concurrency=8)
    records = [make_record(f"r{i:03d}", [{"n": j} for j in range(3)]) for i in range(120)]
    for start in range(0, len(records), 15):
        assert sink.put_records(records[start : start + 15]) == []
    sink.flush()
    assert len(store.requests()) == 120
    assert len(store.results()) == 360
    assert {item["state"] for item in store.requests()} == {"completed"}


def test_open_fails_with_the_fix_when_a_table_is_missing(aws: Any) -> None:
    sink = DynamoDbSink({"requests_tablename": "nope", "results_tablename": "nope2"})
    with pytest.raises(TableProblem, match=r"'nope' does not exist.*igata dynamodb create-tables"):
        sink.open()
    sink.close()


def test_open_fails_when_a_table_is_keyed_otherwise(ddb: Any, layout: Layout) -> None:
    sink = DynamoDbSink(
        {
            "requests_tablename": layout.requests_table,
            "results_tablename": layout.results_table,
            "requests_hashkey_keyname": "job_id",
        }
    )
    with pytest.raises(TableProblem, match="REQUESTS_TABLE_HASHKEY_KEYNAME"):
        sink.open()
    sink.close()


def test_the_original_dynamodb_endpoint_variable_is_honoured(
    layout: Layout, aws: Any, monkeypatch: pytest.MonkeyPatch, make_record: Any, store: Any
) -> None:
    url = aws.url_for("dynamodb")  # moto, or a strict emulator
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    monkeypatch.setenv("DYNAMODB_ENDPOINT", url)
    sink = DynamoDbSink(
        {"requests_tablename": layout.requests_table, "results_tablename": layout.results_table},
        RunContext(concurrency=2),
    )
    sink.open()
    try:
        assert sink._client.meta.endpoint_url == url
        sink.put_records([make_record("r1")])
        sink.flush()
    finally:
        sink.close()
    assert store.request("r1")["state"] == "completed"


def test_close_reports_unwritten_requests(
    open_sink: Any, make_record: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = open_sink()
    sink.put_records([make_record("r1")])
    sink.close()
    sink.close()
    assert "1 requests were never written" in caplog.text
