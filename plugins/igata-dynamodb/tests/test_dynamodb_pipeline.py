"""The sink driven by the engine (run_pipeline): acks only after durable writes, sink
rejections and predictor failures recorded as ``state = error``, options from the
original's environment variables."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from igata_core import Envelope, Item, PredictorBase, Source
from igata_core.testing import run_pipeline


class RequestsSource(Source):
    """Ready-made requests (as the SQS source would give them); checks the store on ack."""

    name = "test-requests"

    def __init__(self, requests: list[dict[str, Any]], on_ack: Any = None):
        super().__init__({})
        self.requests = requests
        self.on_ack = on_ack
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
        if self.on_ack is not None:
            self.on_ack(envelopes)
        with self._lock:
            self.acked += [e.items[0].identity for e in envelopes]

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        with self._lock:
            self.nacked += [e.items[0].identity for e in envelopes]


class Detector(PredictorBase):
    """``value`` boxes per request; a negative value fails, ``nan`` gives an unstorable score."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if input_record == "nan":
            return {"result": [{"score": float("nan")}]}
        if input_record < 0:
            raise ValueError(f"cannot predict {input_record}")
        return {"result": [{"box": {"x": i * 0.5}, "score": 0.9} for i in range(input_record)]}


def request(rid: str, value: Any) -> dict[str, Any]:
    return {"request_id": rid, "s3_uri": f"s3://b/{rid}.jpg", "collection_id": "c1", "value": value}


SINK_OPTIONS = {"requests_tablename": "igata-requests", "results_tablename": "igata-results"}


def test_envelopes_are_acked_only_once_their_writes_are_durable(store: Any) -> None:
    checked: list[str] = []

    def on_ack(envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            rid = envelope.items[0].identity
            item = store.request(rid)
            assert item is not None and item["state"] == "completed", f"{rid} acked too early"
            assert len(store.results_of(rid)) == item["results_count"]
            checked.append(rid)

    requests = [request(f"r{i:02d}", i % 4) for i in range(40)]
    source = RequestsSource(requests, on_ack)
    result = run_pipeline(
        source, "dynamodb", Detector, sink_options=SINK_OPTIONS, chunk_size=7, batch_size=5
    )
    assert result.exit_code == 0, result.summary
    assert sorted(checked) == sorted(source.acked) == [r["request_id"] for r in requests]
    assert len(store.results()) == sum(i % 4 for i in range(40))
    assert store.results_json("r03")[2] == {"box": {"x": 1.0}, "score": 0.9}


def test_failures_and_rejections_are_recorded_as_error_state(store: Any) -> None:
    requests = [request("ok", 2), request("fails", -1), request("unstorable", "nan")]
    source = RequestsSource(requests)
    result = run_pipeline(source, "DynamodbOutputCtxManager", Detector, sink_options=SINK_OPTIONS)
    assert result.exit_code == 1
    assert source.acked == ["ok"]
    assert sorted(source.nacked) == ["fails", "unstorable"]
    stages = {o.identity: o.stage for o in result.outcomes}
    assert stages == {"fails": "predict", "unstorable": "sink"}

    assert store.request("ok")["state"] == "completed"
    fails = store.request("fails")
    assert fails["state"] == "error"
    assert "cannot predict -1" in json.loads(fails["errors"])[0]["message"]
    unstorable = store.request("unstorable")
    assert unstorable["state"] == "error"
    assert "nan is not a number" in json.loads(unstorable["errors"])[0]["message"]
    assert store.results_of("unstorable") == []


def test_options_come_from_the_original_environment_variables(ddb: Any, aws: Any) -> None:
    from igata_dynamodb.layout import Layout
    from igata_dynamodb.tables import Capacity, create_tables

    create_tables(
        ddb, Layout("jobs", "job-results", request_key="job_id", sort_key="image"), Capacity()
    )
    environ = {
        **aws.env(),
        "OUTPUT_CTXMGR_REQUESTS_TABLENAME": "jobs",
        "OUTPUT_CTXMGR_RESULTS_TABLENAME": "job-results",
        "REQUESTS_TABLE_HASHKEY_KEYNAME": "job_id",
        "RESULTS_SORTKEY_KEYNAME": "image",
        "RESULTS_ADDITIONAL_PARENT_FIELDS": "job_id,image,collection_id",
        "REQUESTS_TABLE_RESULTS_KEYNAME": "result",
        "DYNAMODB_DECIMAL_PRECISION_DIGITS": "1",
    }
    requests = [{"job_id": "j1", "image": "s3://b/1.png", "collection_id": "c", "value": 2}]
    source = RequestsSource([{**r, "request_id": r["job_id"]} for r in requests])
    result = run_pipeline(source, "dynamodb", Detector, environ=environ)
    assert result.exit_code == 0, result.outcomes
    job = ddb.get_item(TableName="jobs", Key={"job_id": {"S": "j1"}})["Item"]
    assert job["state"] == {"S": "completed"}
    items = ddb.scan(TableName="job-results")["Items"]
    assert sorted(item["box__x"]["N"] for item in items) == ["0", "0.5"]
    assert {item["collection_id"]["S"] for item in items} == {"c"}
