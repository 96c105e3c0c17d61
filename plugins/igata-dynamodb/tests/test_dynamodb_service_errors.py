"""DynamoDB's errors in their three kinds (igata_dynamodb.errors), on moto and on dynalite.

* content refused: a record whose item DynamoDB refuses fails alone at stage ``sink``; the
  others are written once; a BatchWriteItem refused whole is split to find the item;
* configuration refused: a missing table, a table keyed otherwise, access denied: exit 2
  at once, the input left in its queue, the message naming the table and the fix;
* outage: throttling is retried (the flush raises; nothing is rejected).

Refusals the sink's own checks catch first are also sent to DynamoDB here, with those checks
turned off (``unchecked``), to prove that the safety net (bisecting) finds them too.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest

from igata_core import Envelope, Item, PredictorBase, Source
from igata_core.components import ConfigurationError, ErrorOutcome, RunContext
from igata_core.testing import run_pipeline
from igata_dynamodb.errors import Kind, classify
from igata_dynamodb.layout import Layout
from igata_dynamodb.sink import DynamoDbSink, DynamoDbWriteError
from igata_dynamodb.tables import Capacity, create_tables, requests_table_spec

REQUESTS = "igata-requests"
RESULTS = "igata-results"
SINK_OPTIONS = {"requests_tablename": REQUESTS, "results_tablename": RESULTS}
LONG_URI = "s3://bucket/" + "k" * 1100  # over DynamoDB's 1024 bytes for a sort key value


def client_error(code: str, message: str = "", status: int = 400, op: str = "Op") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


# -- the classification ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        ("ValidationException", "Attempting to store more than 38 significant digits in a "
         "Number", 400, Kind.CONTENT),
        ("ValidationException", "Number overflow. Attempting to store a number with magnitude "
         "larger than supported range", 400, Kind.CONTENT),
        ("ValidationException", "Item size has exceeded the maximum allowed size", 400,
         Kind.CONTENT),
        ("ValidationException", "One or more parameter values are not valid. The AttributeValue "
         "for a key attribute cannot contain an empty string value. Key: s3_uri", 400,
         Kind.CONTENT),
        ("ValidationException", "One or more parameter values were invalid: Type mismatch for "
         "Index Key valid_number Expected: S Actual: N IndexName: x", 400, Kind.CONTENT),
        ("ValidationException", "The provided key element does not match the schema", 400,
         Kind.CONFIGURATION),
        ("ValidationException", "One or more parameter values were invalid: Missing the key "
         "request_id in the item", 400, Kind.CONFIGURATION),
        ("ItemCollectionSizeLimitExceededException", "", 400, Kind.CONTENT),
        ("ResourceNotFoundException", "Requested resource not found", 400, Kind.CONFIGURATION),
        ("AccessDeniedException", "not authorized", 400, Kind.CONFIGURATION),
        ("UnrecognizedClientException", "The security token is invalid", 400,
         Kind.CONFIGURATION),
        ("InvalidSignatureException", "The request signature we calculated does not match", 400,
         Kind.CONFIGURATION),
        ("InvalidSignatureException", "Signature expired: 20250101T000000Z is now earlier than "
         "20250101T001000Z", 400, Kind.OUTAGE),
        ("MissingAuthenticationTokenException", "", 400, Kind.CONFIGURATION),
        ("ProvisionedThroughputExceededException", "", 400, Kind.OUTAGE),
        ("ThrottlingException", "", 400, Kind.OUTAGE),
        ("RequestLimitExceeded", "", 400, Kind.OUTAGE),
        ("InternalServerError", "", 500, Kind.OUTAGE),
        ("ServiceUnavailable", "", 503, Kind.OUTAGE),
        ("TransactionConflictException", "", 400, Kind.OUTAGE),
        ("SomethingNew", "", 502, Kind.OUTAGE),
        ("ConditionalCheckFailedException", "", 400, Kind.EXPECTED),
        ("com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "", 400,
         Kind.CONFIGURATION),
        ("ValidationException", "1 validation error detected: Value 'a b' at 'tableName' "
         "failed to satisfy constraint: Member must satisfy regular expression pattern", 400,
         Kind.CONFIGURATION),
    ],
)  # fmt: skip
def test_every_error_code_has_its_kind(code: str, message: str, status: int, kind: Kind) -> None:
    assert classify(client_error(code, message, status)).kind is kind


def test_errors_without_an_answer_have_their_kind() -> None:
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    assert classify(EndpointConnectionError(endpoint_url="http://x")).kind is Kind.OUTAGE
    assert classify(ReadTimeoutError(endpoint_url="http://x")).kind is Kind.OUTAGE
    assert classify(NoCredentialsError()).kind is Kind.CONFIGURATION
    assert classify(OSError("connection reset")).kind is Kind.OUTAGE


# -- a client that counts, throttles and refuses by plan -------------------------------


class Plan:
    """What the wrapped client does besides calling DynamoDB."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.puts: dict[str, int] = {}  # hashkey -> successful puts
        self.throttle: int = 0  # next BatchWriteItem calls refused as throttled
        self.outage_uris: set[str] = set()  # a BatchWriteItem with these s3_uri values: 500
        self.denied: set[str] = set()  # operations answered AccessDeniedException
        self.schema_refused: set[str] = set()  # s3_uri values refused as "key … schema"
        self.describes = 0


class PlannedClient:
    def __init__(self, client: Any, plan: Plan):
        self._client = client
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _deny(self, operation: str) -> None:
        if operation in self._plan.denied:
            raise client_error(
                "AccessDeniedException",
                f"User: arn:aws:iam::123456789012:user/w is not authorized to perform: "
                f"dynamodb:{operation}",
                op=operation,
            )

    def describe_table(self, **kwargs: Any) -> Any:
        with self._plan.lock:
            self._plan.describes += 1
        self._deny("DescribeTable")
        return self._client.describe_table(**kwargs)

    def update_item(self, **kwargs: Any) -> Any:
        self._deny("UpdateItem")
        return self._client.update_item(**kwargs)

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> Any:
        plan = self._plan
        self._deny("BatchWriteItem")
        [(table, requests)] = RequestItems.items()
        items = [r["PutRequest"]["Item"] for r in requests if "PutRequest" in r]
        with plan.lock:
            if plan.throttle > 0:
                plan.throttle -= 1
                raise client_error("ProvisionedThroughputExceededException", "slow down")
        uris = {item.get("s3_uri", {}).get("S") for item in items}
        if uris & plan.outage_uris:
            raise client_error("InternalServerError", "down", 500)
        if any(item.get("s3_uri", {}).get("S") in plan.schema_refused for item in items):
            raise client_error(
                "ValidationException", "The provided key element does not match the schema"
            )
        response = self._client.batch_write_item(RequestItems=RequestItems)
        left = response.get("UnprocessedItems", {}).get(table, [])
        unprocessed = {json.dumps(r, sort_keys=True) for r in left}
        with plan.lock:
            for request in requests:
                if "PutRequest" not in request:
                    continue
                if json.dumps(request, sort_keys=True) not in unprocessed:
                    key = request["PutRequest"]["Item"]["hashkey"]["S"]
                    plan.puts[key] = plan.puts.get(key, 0) + 1
        return response


def planned_sink(plan: Plan) -> type[DynamoDbSink]:
    class PlannedSink(DynamoDbSink):
        def make_client(self, max_pool_connections: int) -> Any:
            return PlannedClient(super().make_client(max_pool_connections), plan)

    return PlannedSink


@pytest.fixture
def plan() -> Plan:
    return Plan()


@pytest.fixture
def planned(layout: Layout, plan: Plan) -> Iterator[Any]:
    """Makes opened sinks whose client follows ``plan``."""
    made: list[DynamoDbSink] = []

    def factory(concurrency: int = 4, **options: Any) -> DynamoDbSink:
        sink = planned_sink(plan)({**SINK_OPTIONS, **options}, RunContext(concurrency))
        sink.open()
        made.append(sink)
        return sink

    yield factory
    for sink in made:
        sink.close()


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn off the sink's checks of key values and item sizes: DynamoDB must refuse."""
    import igata_dynamodb.records as records

    monkeypatch.setattr(records, "key_value_problem", lambda *args: None)
    monkeypatch.setattr(records, "MAX_ITEM_BYTES", 10**9)


# -- content refused at write time: bisect --------------------------------------------


def test_a_refused_item_fails_its_record_alone_and_the_rest_is_written_once(
    planned: Any, plan: Plan, store: Any, make_record: Any, unchecked: None
) -> None:
    sink = planned()
    records = [make_record(f"r{i:02d}", [{"n": i}, {"n": -i}]) for i in range(30)]
    records[7] = make_record("r07", [{"n": 7}], s3_uri=LONG_URI)  # key value too long
    records[22] = make_record("r22", [{"blob": "x" * 420_000}])  # item over 400 KB
    for start in range(0, 30, 15):  # two chunks: indexes count across them
        assert sink.put_records(records[start : start + 15]) == []
    rejections = sink.flush()

    assert sorted(r.index for r in rejections) == [7, 22]
    by_index = {r.index: r for r in rejections}
    assert "range keys has exceeded" in by_index[7].message
    assert "Item size" in by_index[22].message
    assert {r.error_type for r in rejections} == {"ValidationException"}
    assert sink.pending() == 0
    good = [f"r{i:02d}" for i in range(30) if i not in (7, 22)]
    assert sorted(item["request_id"] for item in store.requests()) == good
    assert len(store.results()) == 2 * len(good)
    assert set(plan.puts.values()) == {1}, "every item written exactly once"
    assert len(plan.puts) == 2 * len(good)
    assert sink.flush() == [], "rejections are returned once"


def test_rejections_found_before_an_outage_come_with_the_flush_that_succeeds(
    planned: Any, plan: Plan, store: Any, make_record: Any, unchecked: None
) -> None:
    sink = planned()
    records = [make_record(f"r{i:02d}", [{"n": j} for j in range(5)]) for i in range(20)]
    records[3] = make_record("r03", [{"n": 1}], s3_uri=LONG_URI)  # in the first call
    sink.put_records(records[:10])
    sink.put_records(records[10:])
    plan.outage_uris = {"s3://bucket/r17.jpg"}  # in the last call
    with pytest.raises(DynamoDbWriteError, match="InternalServerError"):
        sink.flush()
    assert plan.puts, "the other calls were written before the outage"
    # The last call (items 75..95 of 96) holds r15's last item and r16..r19: only they stay.
    assert sink.pending() == 5, "only the unwritten rest stays buffered"
    plan.outage_uris = set()
    rejections = sink.flush()
    assert [r.index for r in rejections] == [3], "found before the outage, returned now"
    assert set(plan.puts.values()) == {1}, "items written before the outage are not sent again"
    assert len(store.results()) == 19 * 5
    assert sink.pending() == 0
    assert sink.flush() == []


def test_a_key_schema_refusal_of_one_item_on_a_table_keyed_as_configured_is_content(
    planned: Any, plan: Plan, store: Any, make_record: Any
) -> None:
    sink = planned()
    plan.schema_refused = {"s3://bucket/r2.jpg"}
    sink.put_records([make_record(f"r{i}", [{"n": i}]) for i in range(4)])
    describes = plan.describes
    rejections = sink.flush()
    assert [r.index for r in rejections] == [2]
    assert plan.describes == describes + 1, "the table is described again, once"
    assert sorted(item["request_id"] for item in store.requests()) == ["r0", "r1", "r3"]


def test_a_refused_requests_update_rejects_its_record(
    aws: Any, open_sink: Any, ddb: Any, store: Any, make_record: Any
) -> None:
    # Someone else's attributes fill the REQUESTS item: the results JSON no longer fits.
    ddb.put_item(
        TableName=REQUESTS,
        Item={"request_id": {"S": "full"}, "payload": {"S": "p" * 300_000}},
    )
    sink = open_sink()
    big = [{"label": "y" * 600} for _ in range(200)]  # about 122 KB of JSON
    sink.put_records([make_record("ok", [{"a": 1}]), make_record("full", big)])
    rejections = sink.flush()
    assert [r.index for r in rejections] == [1]
    assert "igata-requests" in rejections[0].message
    assert "refused the update of request 'full'" in rejections[0].message
    assert store.request("ok")["state"] == "completed"
    # The engine then records the refusal as the request's error: that write fits.
    sink.put_errors([sink_error("full", rejections[0].message)])
    assert sink.flush() == []
    if "dynamodb" not in aws.strict:
        pytest.skip("moto applies part of a refused UpdateItem (state=completed) before "
                    "refusing it; DynamoDB and dynalite do not")  # fmt: skip
    assert store.request("full")["state"] == "error"


def sink_error(request_id: str, message: str) -> ErrorOutcome:
    return ErrorOutcome(
        identity=request_id,
        input=f"sqs:msg-{request_id}",
        stage="sink",
        error_type="ValidationException",
        message=message,
        meta={"request_id": request_id},
    )


def test_recording_an_error_is_not_refused(open_sink: Any, store: Any) -> None:
    sink = open_sink()
    message = "boom \ud800 " + "é" * 500_000  # a lone surrogate, and far over 400 KB
    outcomes = [sink_error("r1", message) for _ in range(30)]
    sink.put_errors(outcomes)
    assert sink.flush() == []
    item = store.request("r1")
    assert item["state"] == "error"
    errors = json.loads(item["errors"])
    assert 1 <= len(errors) <= 10
    assert errors[-1]["message"].startswith("boom ? éé")
    assert len(item["errors"].encode()) <= 64 * 1024


def test_an_error_too_big_for_its_request_item_is_recorded_shorter(
    open_sink: Any, ddb: Any, store: Any
) -> None:
    ddb.put_item(
        TableName=REQUESTS,
        Item={"request_id": {"S": "r1"}, "payload": {"S": "p" * 400_000}},
    )
    sink = open_sink()
    sink.put_errors([sink_error("r1", f"failure {i} " + "m" * 990) for i in range(10)])
    assert sink.flush() == []
    errors = json.loads(store.request("r1")["errors"])
    assert len(errors) == 1
    assert errors[0]["message"].startswith("failure 9 ")


# -- checked before any call ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"s3_uri": LONG_URI}, "the sort key 's3_uri' (RESULTS_SORTKEY_KEYNAME) is 1112 bytes"),
        ({"request_id": "r" * 2049}, "the request id in 'request_id' is 2049 bytes"),
        ({"result": [{"valid_number": 3}]},
         "'valid_number' is a key of the index 'collection_id-valid_number-index'"),
        ({"result": [{"score": Decimal("1E+126")}]}, "outside DynamoDB's number range"),
        ({"result": [{"score": Decimal("1" * 39)}]}, "39 significant digits"),
        ({"result": [{"blob": "x" * 420_000}]}, "DynamoDB items hold at most 409600 bytes"),
    ],
    ids=["long-sort-key", "long-request-id", "index-key-type", "overflow", "39-digits",
         "oversized"],
)  # fmt: skip
def test_what_dynamodb_refuses_is_found_before_any_call(
    open_sink: Any, make_record: Any, fields: dict[str, Any], message: str
) -> None:
    sink = open_sink()
    record = make_record("bad", [{"a": 1}])
    record.update(fields)
    rejections = sink.put_records([make_record("ok", [{"a": 1}]), record])
    assert [r.index for r in rejections] == [1]
    assert message in rejections[0].message
    assert sink.flush() == []


def test_numbers_at_dynamodbs_limits_are_written_and_read_back(
    open_sink: Any, ddb: Any, make_record: Any
) -> None:
    limits = {
        "largest": Decimal("9.9999999999999999999999999999999999999E+125"),
        "smallest": Decimal("1E-130"),
        "negative": Decimal("-9.99E+125"),
        "digits38": Decimal("1234567890.1234567890123456789012345678"),
    }
    sink = open_sink()
    assert sink.put_records([make_record("r1", [limits])]) == []
    assert sink.flush() == []
    [item] = ddb.scan(TableName=RESULTS)["Items"]
    # Read raw: a server may give 1E-130 back as 0.000…1, more than boto3's 38-digit
    # deserializer takes.
    assert {name: Decimal(item[name]["N"]) for name in limits} == limits


# -- through the engine: one record fails at stage sink, its message nacked -------------


class RequestsSource(Source):
    """Ready-made requests; records what was acked and nacked."""

    name = "test-requests"

    def __init__(self, requests: list[dict[str, Any]]):
        super().__init__({})
        self.requests = requests
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self._lock = threading.Lock()

    def envelopes(self) -> Iterator[Envelope]:
        for request in self.requests:
            rid = request["request_id"]
            yield Envelope(
                ref=f"sqs:msg-{rid}",
                items=[Item(identity=rid, data=request["value"], meta=dict(request))],
            )

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        with self._lock:
            self.acked += [e.items[0].identity for e in envelopes]

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        with self._lock:
            self.nacked += [e.items[0].identity for e in envelopes]


class Boxes(PredictorBase):
    """``value`` boxes; "huge" gives a number DynamoDB refuses, "big" an item over 400 KB."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if input_record == "huge":
            return {"result": [{"score": Decimal("1E+126")}]}
        if input_record == "big":
            return {"result": [{"blob": "x" * 420_000}]}
        return {"result": [{"box": i, "score": 0.5} for i in range(input_record)]}


def req(rid: str, value: Any, **fields: Any) -> dict[str, Any]:
    return {"request_id": rid, "s3_uri": f"s3://b/{rid}.jpg", "value": value, **fields}


@pytest.mark.parametrize("checks", ["checked", "unchecked"])
def test_a_record_dynamodb_refuses_fails_alone_at_stage_sink(
    aws: Any, layout: Layout, store: Any, plan: Plan, checks: str, request: Any
) -> None:
    """Refused before any call (checked) or by DynamoDB and found by bisecting (unchecked)."""
    if checks == "unchecked":
        request.getfixturevalue("unchecked")
    requests = [
        req("a", 2), req("huge", "huge"), req("b", 3), req("big", "big"),
        req("long", 1, s3_uri=LONG_URI), req("c", 1),
    ]  # fmt: skip
    if checks == "unchecked" and "dynamodb" not in aws.strict:
        # moto stores 1E+126 (AWS and dynalite refuse it): unchecked, it would be written.
        requests = [r for r in requests if r["value"] != "huge"]
    source = RequestsSource(requests)
    result = run_pipeline(
        source, planned_sink(plan), Boxes, sink_options=SINK_OPTIONS, chunk_size=4, batch_size=3
    )
    bad = sorted(r["request_id"] for r in requests if r["request_id"] in ("huge", "big", "long"))
    assert result.exit_code == 1, result.summary
    assert sorted(source.acked) == ["a", "b", "c"]
    assert sorted(source.nacked) == bad
    assert sorted(o.identity for o in result.outcomes) == bad
    assert {o.stage for o in result.outcomes} == {"sink"}
    for rid in bad:
        item = store.request(rid)
        assert item["state"] == "error", rid
        assert json.loads(item["errors"])[0]["stage"] == "sink"
    assert [len(store.results_of(rid)) for rid in ("a", "b", "c")] == [2, 3, 1]
    good_keys = {item["hashkey"] for rid in "abc" for item in store.results_of(rid)}
    assert all(plan.puts[key] == 1 for key in good_keys), "good items written once"


def test_throttling_is_retried_as_an_outage(
    layout: Layout, store: Any, plan: Plan, caplog: pytest.LogCaptureFixture
) -> None:
    plan.throttle = 2  # two BatchWriteItem calls refused, as DynamoDB does under load
    source = RequestsSource([req(f"r{i}", 2) for i in range(6)])
    result = run_pipeline(
        source, planned_sink(plan), Boxes, sink_options=SINK_OPTIONS, sink_retry_budget=20
    )
    assert result.exit_code == 0, result.summary
    assert sorted(source.acked) == [f"r{i}" for i in range(6)]
    assert source.nacked == [] and result.outcomes == []
    assert plan.throttle == 0
    assert "ProvisionedThroughputExceededException" in caplog.text
    assert len(store.results()) == 12
    assert set(plan.puts.values()) == {1}


def test_a_throttled_flush_raises_and_rejects_nothing(
    planned: Any, plan: Plan, store: Any, make_record: Any
) -> None:
    sink = planned()
    sink.put_records([make_record(f"r{i}", [{"n": i}]) for i in range(3)])
    plan.throttle = 1
    with pytest.raises(DynamoDbWriteError, match="ProvisionedThroughputExceededException"):
        sink.flush()
    assert sink.pending() == 3
    assert sink.flush() == []
    assert len(store.results()) == 3


# -- configuration refused: exit 2 at once, the input still in its queue ----------------


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


class Never(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"result": [{"n": 1}]}


def run_worker(aws: Any) -> tuple[Any, float, str]:
    pytest.importorskip("igata_sqs", reason="needs igata-sqs")
    pytest.importorskip("igata_s3", reason="needs igata-s3")
    s3 = aws.client("s3")
    sqs = aws.client("sqs")
    s3.create_bucket(Bucket="images")
    s3.put_object(Bucket="images", Key="1.png", Body=png())
    queue_url = sqs.create_queue(QueueName="requests")["QueueUrl"]
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps({"request_id": "q1", "s3_uri": "s3://images/1.png"}),
    )
    started = time.monotonic()
    result = run_pipeline(
        "sqs",
        "dynamodb",
        Never,
        source_options={"queue_url": queue_url, "idle_timeout": 2, "wait_time_seconds": 1},
        sink_options=SINK_OPTIONS,
    )
    return result, time.monotonic() - started, queue_url


def messages_in(aws: Any, queue_url: str) -> int:
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_a_missing_table_stops_the_worker_with_exit_2(aws: Any, ddb: Any) -> None:
    ddb.create_table(**requests_table_spec(Layout(REQUESTS, RESULTS), Capacity()))
    result, elapsed, queue_url = run_worker(aws)
    assert result.exit_code == 2, result.summary
    assert elapsed < 10
    reason = result.run_summary.reason
    assert f"RESULTS table {RESULTS!r} does not exist" in reason
    assert "igata dynamodb create-tables" in reason
    assert "OUTPUT_CTXMGR_RESULTS_TABLENAME" in reason
    assert messages_in(aws, queue_url) == 1


def test_a_table_keyed_otherwise_stops_the_worker_with_exit_2(aws: Any, ddb: Any) -> None:
    create_tables(ddb, Layout(REQUESTS, RESULTS, request_key="job_id"), Capacity())
    result, elapsed, queue_url = run_worker(aws)
    assert result.exit_code == 2, result.summary
    assert elapsed < 10
    reason = result.run_summary.reason
    assert f"REQUESTS table {REQUESTS!r}" in reason
    assert "keyed [job_id (HASH, S)]" in reason
    assert "configured for [request_id (HASH, S)]" in reason
    assert "REQUESTS_TABLE_HASHKEY_KEYNAME" in reason
    assert messages_in(aws, queue_url) == 1


def test_an_index_on_state_of_another_type_is_refused_at_open(aws: Any, ddb: Any) -> None:
    spec = requests_table_spec(Layout(REQUESTS, RESULTS), Capacity())
    for attribute in spec["AttributeDefinitions"]:
        if attribute["AttributeName"] == "state":
            attribute["AttributeType"] = "N"
    ddb.create_table(**spec)
    sink = DynamoDbSink(SINK_OPTIONS)
    with pytest.raises(ConfigurationError, match=r"index .* keyed on 'state' of type N"):
        sink.open()
    sink.close()


def test_a_table_name_dynamodb_refuses_is_reported_with_the_options(aws: Any) -> None:
    with pytest.raises(ConfigurationError, match="'my requests' is not a valid name") as raised:
        DynamoDbSink({"requests_tablename": "my requests", "results_tablename": "results"})
    assert "OUTPUT_CTXMGR_REQUESTS_TABLENAME" in str(raised.value)
    from igata_core.options import OptionsError  # the CLI's exit code 2, before any I/O

    with pytest.raises(OptionsError, match="'rs' is not a valid name for the RESULTS table"):
        run_pipeline(
            RequestsSource([req("r1", 1)]), "dynamodb", Boxes,
            sink_options={**SINK_OPTIONS, "results_tablename": "rs"},
        )  # fmt: skip


def test_a_table_deleted_while_running_is_a_configuration_error(
    open_sink: Any, ddb: Any, make_record: Any
) -> None:
    sink = open_sink()
    ddb.delete_table(TableName=RESULTS)
    sink.put_records([make_record("r1", [{"a": 1}])])
    with pytest.raises(ConfigurationError, match=r"RESULTS table 'igata-results' does not exist"):
        sink.flush()
    assert sink.pending() == 1


def test_a_table_rekeyed_while_running_is_a_configuration_error(
    open_sink: Any, ddb: Any, make_record: Any
) -> None:
    sink = open_sink()
    ddb.delete_table(TableName=RESULTS)
    create_tables(ddb, Layout(REQUESTS, RESULTS, sort_key="image"), Capacity())
    sink.put_records([make_record("r1", [{"a": 1}]), make_record("r2", [{"a": 2}])])
    with pytest.raises(ConfigurationError, match="keyed otherwise than configured"):
        sink.flush()


def test_access_denied_on_writes_is_a_configuration_error(
    planned: Any, plan: Plan, make_record: Any
) -> None:
    sink = planned()
    plan.denied = {"BatchWriteItem"}
    sink.put_records([make_record("r1", [{"a": 1}])])
    with pytest.raises(ConfigurationError) as raised:
        sink.flush()
    message = str(raised.value)
    assert "access denied to dynamodb:BatchWriteItem on the RESULTS table 'igata-results'" in (
        message
    )
    assert "table/igata-results" in message
    plan.denied = {"UpdateItem"}
    with pytest.raises(ConfigurationError, match="dynamodb:UpdateItem on the REQUESTS table"):
        sink.flush()


def test_a_worker_that_may_not_describe_tables_still_writes(
    layout: Layout, plan: Plan, store: Any, make_record: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plan.denied = {"DescribeTable"}
    sink = planned_sink(plan)(SINK_OPTIONS, RunContext(concurrency=2))
    sink.open()
    try:
        assert "may not describe the REQUESTS table" in caplog.text
        sink.put_records([make_record("r1", [{"a": 1}])])
        assert sink.flush() == []
    finally:
        sink.close()
    assert store.request("r1")["state"] == "completed"


def test_refused_credentials_are_a_configuration_error(layout: Layout) -> None:
    class BadCredentials(DynamoDbSink):
        def make_client(self, max_pool_connections: int) -> Any:
            client = super().make_client(max_pool_connections)

            def describe_table(**kwargs: Any) -> Any:
                raise client_error(
                    "UnrecognizedClientException", "The security token included is invalid"
                )

            client.describe_table = describe_table
            return client

    sink = BadCredentials(SINK_OPTIONS)
    with pytest.raises(ConfigurationError, match="credentials were refused") as raised:
        sink.open()
    assert "REQUESTS table 'igata-requests'" in str(raised.value)
    sink.close()
