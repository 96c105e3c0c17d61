"""The sqs sink: batching, attributes, limits, FIFO, and each kind of service error."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import numpy as np
import pytest

import igata_sqs.sink as sink_module
from igata_core import ConfigurationError
from igata_sqs.clients import make_client
from igata_sqs.limits import digest
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


def failing_entries(code, sender_fault=False, which=lambda entry: entry["Id"] in ("0", "1")):
    """A send_message_batch that sends the entries ``which`` does not pick and reports the
    others failed with ``code`` (as SQS does for a partial failure)."""

    def send(client, QueueUrl, Entries):
        failed = [e for e in Entries if which(e)]
        passed = [e for e in Entries if not which(e)]
        response = {"Successful": [], "Failed": []}
        if passed:
            response = client.send_message_batch(QueueUrl=QueueUrl, Entries=passed)
            response.setdefault("Failed", [])
        response["Failed"] += [
            {"Id": e["Id"], "SenderFault": sender_fault, "Code": code, "Message": "injected"}
            for e in failed
        ]
        return response

    return send


def sent_ids(client):
    """The igata_ids in the bodies of every SendMessageBatch call, per call."""
    return [
        [json.loads(e["MessageBody"])["igata_id"] for e in kwargs["Entries"]]
        for name, kwargs in client.calls
        if name == "send_message_batch"
    ]


@pytest.mark.parametrize("code", ["InternalError", "ServiceUnavailable", "RequestThrottled"])
def test_server_fault_keeps_only_the_failed_entries_and_resends_only_them(
    queues, make_sink, faulty, code
):
    url = queues.create("results")
    sink = make_sink(url)
    sink._client = client = faulty(sink._client, send_message_batch=[failing_entries(code)])
    assert sink.put_records(records(5)) == []
    with pytest.raises(RuntimeError, match=rf"cannot send 2 record\(s\) .*{code}"):
        sink.flush()
    assert sorted(b["igata_id"] for b in queues.results(url)) == ["r-2", "r-3", "r-4"]
    assert sink.flush() == []  # the engine's retry: the two failed entries, and only them
    assert sent_ids(client) == [[f"r-{i}" for i in range(5)], ["r-0", "r-1"]]
    assert sorted(b["igata_id"] for b in queues.results(url)) == ["r-0", "r-1"]
    assert sink.flush() == [] and len(sent_ids(client)) == 2, "nothing left to send"


def test_whole_call_outage_keeps_the_batch_and_sends_it_once_later(
    queues, make_sink, faulty, client_error
):
    url = queues.create("results")
    sink = make_sink(url)
    sink._client = faulty(
        sink._client,
        send_message_batch=[client_error("ServiceUnavailable", status=503)] * 4,
    )
    sink.put_records(records(12))  # two batches: 10 and 2
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"cannot send \d+ record"):
            sink.flush()
    assert sink.flush() == []
    stored = [b["igata_id"] for b in queues.results(url)]
    assert sorted(stored) == sorted(f"r-{i}" for i in range(12)), "every record exactly once"


def test_content_refused_entries_are_rejections_and_the_rest_written_once(
    queues, make_sink, faulty
):
    url = queues.create("results")
    sink = make_sink(url)
    refuse = failing_entries("InvalidMessageContents", which=lambda e: '"r-1"' in e["MessageBody"])
    sink._client = client = faulty(sink._client, send_message_batch=[refuse])
    assert sink.put_records(records(3)) == []
    assert sink.put_records(records(3, start=3)) == []
    (rejection,) = sink.flush()
    # The index counts every record put since the last flush, across put_records calls.
    assert rejection.index == 1 and rejection.error_type == "SQS.InvalidMessageContents"
    assert "refused record r-1" in rejection.message
    assert sorted(b["igata_id"] for b in queues.results(url)) == ["r-0", "r-2", "r-3", "r-4", "r-5"]
    assert sink.flush() == [] and len(sent_ids(client)) == 1, "refused entries are not resent"


def test_rejections_found_by_a_failed_flush_come_with_the_one_that_succeeds(
    queues, make_sink, faulty
):
    url = queues.create("results")
    sink = make_sink(url)

    def mixed(client, QueueUrl, Entries):
        refused = failing_entries("InvalidParameterValue", sender_fault=True,
                                  which=lambda e: '"r-4"' in e["MessageBody"])  # fmt: skip
        response = refused(
            client, QueueUrl, [e for e in Entries if '"r-0"' not in e["MessageBody"]]
        )
        response["Failed"] += [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "boom"}
            for e in Entries
            if '"r-0"' in e["MessageBody"]
        ]
        return response

    sink._client = client = faulty(sink._client, send_message_batch=[mixed])
    sink.put_records(records(2))
    sink.put_records(records(3, start=2))
    with pytest.raises(RuntimeError, match="cannot send 1 record"):
        sink.flush()
    (rejection,) = sink.flush()
    assert (rejection.index, rejection.error_type) == (4, "SQS.InvalidParameterValue")
    assert sent_ids(client)[1] == ["r-0"]
    assert sorted(b["igata_id"] for b in queues.results(url)) == ["r-0", "r-1", "r-2", "r-3"]
    sink.put_records(records(1, start=9))
    assert sink.flush() == [], "indexes and rejections start again after a flush returned"


def test_a_message_over_the_queues_limit_is_refused_alone(queues, make_sink, faulty):
    """The queue's MaximumMessageSize shrinks after open(): SQS itself refuses the message
    (moto: the whole call, LocalStack and AWS: that entry), and only that one."""
    url = queues.create("results")
    sink = make_sink(url)
    queues.sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})
    sink._client = client = faulty(sink._client)
    batch = records(5)
    batch[3]["blob"] = "z" * 2000
    assert sink.put_records(batch) == []
    (rejection,) = sink.flush()
    assert rejection.index == 3 and "refused record r-3" in rejection.message
    assert sorted(b["igata_id"] for b in queues.results(url)) == ["r-0", "r-1", "r-2", "r-4"]
    delivered = [i for call in sent_ids(client) for i in call]
    assert sorted(set(delivered)) == [f"r-{i}" for i in range(5)]
    assert sink.flush() == []


def test_batch_request_too_long_is_split(queues, make_sink, faulty, client_error):
    url = queues.create("results")
    sink = make_sink(url)
    sink._client = client = faulty(
        sink._client,
        send_message_batch=[
            client_error(
                "AWS.SimpleQueueService.BatchRequestTooLong", QueryErrorCode="BatchRequestTooLong"
            )
        ],
    )
    sink.put_records(records(4))
    assert sink.flush() == []
    assert [len(call) for call in sent_ids(client)] == [4, 2, 2]
    assert len(queues.results(url)) == 4


def test_unreachable_queue_raises_and_keeps_the_buffer(queues, make_sink, closed_port_url):
    url = queues.create("results")
    sink = make_sink(url)
    healthy = sink._client
    sink._client = make_client("sqs", endpoint_url=closed_port_url, max_attempts=1)
    sink.put_records(records(3))
    with pytest.raises(RuntimeError, match=r"cannot send 3 record.* to queue"):
        sink.flush()
    sink._client = healthy
    sink.flush()
    assert len(queues.results(url)) == 3


def test_never_more_than_ten_entries_a_call(queues, make_sink, faulty):
    url = queues.create("results")
    sink = make_sink(url)
    sink._client = client = faulty(sink._client)
    for start in range(0, 45, 15):
        sink.put_records(records(15, start=start))
    assert sink.flush() == []
    assert max(len(call) for call in sent_ids(client)) == 10
    assert len(queues.results(url)) == 45


# -- values SQS does not take as they are ------------------------------------------------------

ODD_IDS = {"fffe": "id-\ufffe", "nul": "id-\x00", "surrogate": "id-\ud800", "empty": ""}


def test_identities_sqs_refuses_as_attributes_are_delivered_with_a_digest(queues, make_sink):
    url = queues.create("results")
    sink = make_sink(url)
    batch = [{"igata_id": value, "label": name} for name, value in ODD_IDS.items()]
    batch.append({"igata_id": "plain", "label": "plain", "note": "\ufffe and \x00 in a value"})
    assert sink.put_records(batch) == []
    assert sink.flush() == []
    stored = {json.loads(m["Body"])["label"]: m for m in queues.drain(url)}
    assert sorted(stored) == sorted([*ODD_IDS, "plain"]), "every record delivered"
    for name, value in ODD_IDS.items():
        message = stored[name]
        assert json.loads(message["Body"])["igata_id"] == value, "the body keeps the identity"
        attributes = message["MessageAttributes"]
        assert "igata_id" not in attributes
        assert attributes["igata_id_digest"]["StringValue"] == digest(value)
    plain = stored["plain"]
    assert plain["MessageAttributes"]["igata_id"]["StringValue"] == "plain"
    assert json.loads(plain["Body"])["note"] == "\ufffe and \x00 in a value"
    assert "\\ufffe" in plain["Body"], "characters SQS refuses travel as JSON escapes"


def test_fifo_ids_sqs_would_refuse_are_hashed(queues, make_sink):
    url = queues.create("results", fifo=True)
    sink = make_sink(url, message_group_field="collection_id")
    batch = [
        {"igata_id": "a b", "collection_id": "group with spaces"},
        {"igata_id": "é" * 10, "collection_id": "x" * 129},
        {"igata_id": "\ufffe", "collection_id": ""},
        {"igata_id": "", "collection_id": None},
    ]
    assert sink.put_records(batch) == []
    assert sink.flush() == []
    assert len(queues.drain(url)) == 4


# -- open(): the queue is checked --------------------------------------------------------------


def test_missing_output_queue_is_a_configuration_error_on_open(queues, aws):
    url = queues.create("results").replace("results", "no-such-queue")
    sink = SqsSink({"queue_url": url})
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=r"queue .*no-such-queue") as caught:
        sink.open()
    assert time.monotonic() - started < 5
    assert "check the queue URL" in str(caught.value)
    sink.close()


@pytest.mark.parametrize(
    "code, status",
    [
        ("AccessDenied", 403),
        ("AccessDeniedException", 400),
        ("InvalidClientTokenId", 403),
        ("UnrecognizedClientException", 400),
        ("SignatureDoesNotMatch", 403),
        ("KmsAccessDenied", 400),
        ("InvalidAddress", 404),
    ],
)
def test_refused_queue_is_a_configuration_error_on_open(
    queues, monkeypatch, faulty, client_error, code, status
):
    error = client_error(code, status=status)
    url = queues.create("results")
    real = sink_module.make_client
    monkeypatch.setattr(
        sink_module, "make_client",
        lambda *a, **k: faulty(real(*a, **k), get_queue_attributes=[error]),
    )  # fmt: skip
    sink = SqsSink({"queue_url": url})
    with pytest.raises(ConfigurationError, match=rf"queue {url} refused by SQS"):
        sink.open()


def test_outage_on_open_does_not_stop_the_sink(queues, monkeypatch, faulty, client_error):
    url = queues.create("results")
    real = sink_module.make_client
    monkeypatch.setattr(
        sink_module, "make_client",
        lambda *a, **k: faulty(real(*a, **k), get_queue_attributes=[
            client_error("ThrottlingException")]),
    )  # fmt: skip
    sink = SqsSink({"queue_url": url})
    sink.open()
    sink.put_records(records(2))
    assert sink.flush() == []
    sink.close()
    assert len(queues.results(url)) == 2


def test_missing_queue_on_write_is_a_configuration_error(queues, make_sink):
    url = queues.create("results")
    sink = make_sink(url)
    queues.sqs.delete_queue(QueueUrl=url)
    sink.put_records(records(2))
    with pytest.raises(ConfigurationError, match=r"does not exist|NonExistentQueue"):
        sink.flush()


def test_queue_maximum_message_size_lowers_the_limit(queues, make_sink):
    url = queues.create("results")
    queues.sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})
    sink = make_sink(url)
    (rejection,) = sink.put_records([{"igata_id": "big", "blob": "b" * 2000}])
    assert (
        rejection.error_type == "RecordTooLarge" and "1,024-byte message limit" in rejection.message
    )


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
