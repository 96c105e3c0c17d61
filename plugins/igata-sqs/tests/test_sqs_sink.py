"""The sqs sink against a moto server: batching, attributes, limits, FIFO, failures."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import numpy as np
import pytest

from igata_sqs.clients import make_client
from igata_sqs.sink import SqsSink


@pytest.fixture
def make_sink(aws):
    made = []

    def make(queue_url, **options):
        sink = SqsSink({"queue_url": queue_url, **options})
        sink.open()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close()


def records(n, start=0, **extra):
    return [{"igata_id": f"r-{i}", "label": f"l{i}", **extra} for i in range(start, start + n)]


def test_records_are_sent_in_batches_only_on_flush(queues, make_sink, recorder):
    url = queues.create("results")
    sink = make_sink(url)
    calls = recorder(sink._client)
    sink._client = calls
    assert sink.put_records(records(15)) == []
    assert sink.put_records(records(10, start=15)) == []
    assert queues.counts(url) == (0, 0), "put_records only buffers"
    sink.flush()
    sizes = sorted(len(kwargs["Entries"]) for name, kwargs, _ in calls.events)
    assert sizes == [5, 10, 10]
    stored = queues.drain(url)
    assert sorted(json.loads(m["Body"])["igata_id"] for m in stored) == sorted(
        f"r-{i}" for i in range(25)
    )
    attributes = {m["MessageAttributes"]["igata_id"]["StringValue"] for m in stored}
    assert attributes == {f"r-{i}" for i in range(25)}
    sink.flush()  # nothing buffered: no call
    assert len(calls.events) == 3


def test_numpy_decimal_and_datetime_values_are_serialised(queues, make_sink):
    url = queues.create("results")
    sink = make_sink(url)
    record = {
        "igata_id": "r-1",
        "scores": np.array([0.5, 0.25], dtype=np.float32),
        "count": np.int64(3),
        "price": Decimal("1.50"),
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "text": "画像 ok",
    }
    assert sink.put_records([record]) == []
    sink.flush()
    (body,) = queues.results(url)
    assert body == {
        "igata_id": "r-1",
        "scores": [0.5, 0.25],
        "count": 3,
        "price": 1.5,
        "at": "2024-01-02T03:04:05+00:00",
        "text": "画像 ok",
    }


def test_unserialisable_and_too_large_records_are_rejections(queues, make_sink):
    url = queues.create("results")
    sink = make_sink(url)
    batch = [
        {"igata_id": "ok"},
        {"igata_id": "nan", "score": float("nan")},
        {"igata_id": "big", "blob": "x" * 300_000},
        {"igata_id": "obj", "value": object()},
    ]
    rejections = sink.put_records(batch)
    assert [(r.index, r.error_type) for r in rejections] == [
        (1, "NotSerializable"),
        (2, "RecordTooLarge"),
        (3, "NotSerializable"),
    ]
    assert "over the 262,144-byte message limit (queue results" in rejections[1].message
    sink.flush()
    assert [body["igata_id"] for body in queues.results(url)] == ["ok"]


def test_batches_respect_the_request_size_limit(queues, make_sink, recorder):
    url = queues.create("results")
    sink = make_sink(url)
    calls = recorder(sink._client)
    sink._client = calls
    sink.put_records(records(6, blob="y" * 100_000))
    sink.flush()
    sizes = [len(kwargs["Entries"]) for _, kwargs, _ in calls.events]
    assert sizes == [2, 2, 2]
    assert len(queues.drain(url)) == 6


class FailingEntries:
    """A client whose send_message_batch reports the first entries failed, ``times`` times."""

    def __init__(self, client, times, sender_fault=False):
        self.client = client
        self.times = times
        self.sender_fault = sender_fault
        self.calls = 0

    def send_message_batch(self, QueueUrl, Entries):
        self.calls += 1
        if self.times <= 0:
            return self.client.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
        self.times -= 1
        failed, passed = Entries[:2], Entries[2:]
        response = {"Successful": [], "Failed": []}
        if passed:
            response = self.client.send_message_batch(QueueUrl=QueueUrl, Entries=passed)
            response.setdefault("Failed", [])
        response["Failed"] += [
            {"Id": e["Id"], "SenderFault": self.sender_fault, "Code": "InternalError",
             "Message": "injected"}
            for e in failed
        ]  # fmt: skip
        return response


def test_entries_reported_failed_are_retried(queues, make_sink):
    url = queues.create("results")
    sink = make_sink(url)
    sink._client = FailingEntries(sink._client, times=1)
    sink.put_records(records(5))
    sink.flush()
    assert sorted(b["igata_id"] for b in queues.results(url)) == [f"r-{i}" for i in range(5)]


def test_flush_raises_while_entries_keep_failing_and_keeps_them(queues, make_sink):
    url = queues.create("results")
    sink = make_sink(url)
    failing = FailingEntries(sink._client, times=10)
    sink._client = failing
    sink.put_records(records(5))
    with pytest.raises(RuntimeError, match="refused 2 message"):
        sink.flush()
    assert len(queues.results(url)) == 3
    failing.times = 0
    sink.flush()  # the engine's retry: the two refused records are sent now
    assert sorted(b["igata_id"] for b in queues.results(url)) == ["r-0", "r-1"]


def test_unreachable_queue_raises_and_keeps_the_buffer(queues, make_sink, closed_port_url):
    url = queues.create("results")
    sink = make_sink(url)
    healthy = sink._client
    sink._client = make_client("sqs", endpoint_url=closed_port_url, max_attempts=1)
    sink.put_records(records(3))
    with pytest.raises(RuntimeError, match=r"cannot send to queue .*3 record"):
        sink.flush()
    sink._client = healthy
    sink.flush()
    assert len(queues.results(url)) == 3


def test_fifo_queue_gets_group_and_deduplication_ids(queues, make_sink, recorder):
    url = queues.create("results", fifo=True)
    sink = make_sink(url, message_group_field="collection_id")
    calls = recorder(sink._client)
    sink._client = calls
    batch = [
        {"igata_id": "r-1", "collection_id": "events:1"},
        {"igata_id": "r-2", "collection_id": "events:1"},
        {"igata_id": "r-3"},
        {"igata_id": "x" * 200, "collection_id": "events:2"},
    ]
    sink.put_records(batch)
    sink.flush()
    entries = calls.events[0][1]["Entries"]
    assert [e["MessageGroupId"] for e in entries[:3]] == ["events:1", "events:1", "r-3"]
    assert [e["MessageDeduplicationId"] for e in entries[:3]] == ["r-1", "r-2", "r-3"]
    assert len(entries[3]["MessageDeduplicationId"]) == 64, "over 128 characters: hashed"
    # SQS drops a redelivered result inside its deduplication window.
    sink.put_records(batch[:1])
    sink.flush()
    assert len(queues.drain(url)) == 4


def test_original_environment_variable_names_the_queue():
    from igata_core.options import resolve

    values, problems = resolve(
        SqsSink.options,
        owner="sink 'sqs'",
        environ={"OUTPUT_CTXMGR_SQS_QUEUE_URL": "http://localhost:4576/queue/test-queue"},
    )
    assert problems == []
    assert values.values["queue_url"] == "http://localhost:4576/queue/test-queue"


def test_queue_url_is_checked_before_any_io():
    with pytest.raises(ValueError, match="is not a queue URL"):
        SqsSink({"queue_url": "test-queue"})
