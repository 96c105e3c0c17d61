"""Whole runs in-process: sqs source -> S3 loader -> predictor -> sqs sink."""

from __future__ import annotations

import sys

import pytest

from igata_core.testing import run_pipeline
from igata_sqs.sink import SqsSink

SHAPE = "sqs_predictors:Shape"


def run_worker(url, out, predictor=SHAPE, sink_options=None, settings=None, **options):
    options = {"queue_url": url, "idle_timeout": 1, "wait_time_seconds": 1, **options}
    return run_pipeline(
        "sqs", "sqs", predictor,
        source_options=options,
        sink_options={"queue_url": out, **(sink_options or {})},
        **(settings or {}),
    )  # fmt: skip


def by_id(results):
    return {r["igata_id"]: r for r in results}


def test_image_requests_end_to_end(queues, images, requests_for):
    url, out = queues.create(), queues.create("results")
    requests = requests_for(images(5), sns_topic_arn="")
    queues.send(url, requests[:3])
    queues.send(url, requests[3])  # a single request object, not an array
    queues.send(url, [requests[4]])
    result = run_worker(url, out)
    assert result.exit_code == 0, result.summary
    assert (result.summary["succeeded"], result.summary["acked"]) == (5, 3)
    results = by_id(queues.results(out))
    assert sorted(results) == [f"images:{i}" for i in range(5)]
    first = results["images:0"]
    assert first["shape"] == [6, 8, 3]
    assert first["collection_id"] == "events:1" and first["s3_uri"] == "s3://images/img/0.jpg"
    assert "ReceiptHandle" not in first and "ApproximateReceiveCount" not in str(first)
    assert queues.counts(url) == (0, 0)


def test_csv_requests_end_to_end(aws, queues):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="tables")
    s3.put_object(Bucket="tables", Key="a.csv", Body=b"x,y\n1,2\n3,4\n5,6\n")
    s3.put_object(Bucket="tables", Key="b", Body=b"x,y\n1,2\n")  # no extension: still CSV
    url, out = queues.create(), queues.create("results")
    queues.send(url, [
        {"collection_id": "c", "file_id": "f-a", "s3_uri": "s3://tables/a.csv"},
        {"collection_id": "c", "image_id": "f-b", "s3_uri": "s3://tables/b"},
    ])  # fmt: skip
    result = run_pipeline(
        "SQSMessageS3InputCSVCtxManager", "SQSRecordOutputCtxManager", SHAPE,
        source_options={"queue_url": url, "idle_timeout": 1, "wait_time_seconds": 1},
        sink_options={"queue_url": out},
    )  # fmt: skip
    assert result.exit_code == 0, result.outcomes
    results = by_id(queues.results(out))
    assert (results["f-a"]["rows"], results["f-b"]["rows"]) == (3, 1)


def test_bad_requests_fail_alone_and_their_message_is_retried(queues, images, requests_for):
    url, out = queues.create(visibility=30), queues.create("results")
    good, missing, foreign = requests_for(images(3))
    del missing["s3_uri"]
    foreign["s3_uri"] = "file:///etc/passwd"
    mixed_id = queues.send(url, [good, missing, foreign])
    garbage_id = queues.send(url, "{not json")
    # idle_timeout would wait for the failed messages to come back: stop after taking both.
    result = run_worker(url, out, retry_delay=60, idle_timeout=0, max_messages=2)
    assert result.exit_code == 0, "a worker's failures go to retry/DLQ, not its exit code"
    assert result.summary["nacked"] == 2 and result.summary["acked"] == 0
    assert sorted(by_id(queues.results(out))) == ["images:0"], "good requests are written"
    outcomes = {o.identity: o for o in result.outcomes}
    assert set(outcomes) == {"images:1", "images:2", f"sqs:{garbage_id}"}
    assert all(o.stage == "parse" for o in result.outcomes)
    assert outcomes["images:1"].message == (
        f"sqs: message {mixed_id} (queue requests): request #2 (image_id 'images:1') "
        "lacks required field 's3_uri'"
    )
    assert "uses scheme 'file'" in outcomes["images:2"].message
    assert "body is not JSON" in outcomes[f"sqs:{garbage_id}"].message
    assert all(not o.final for o in result.outcomes)
    assert queues.counts(url) == (0, 2), "failed messages wait for their retry, never deleted"


def test_several_uri_fields_give_the_predictor_a_dict(queues, images, monkeypatch):
    monkeypatch.setenv("REQUEST_S3URI_KEYS", "s3_uri,mask_uri")
    url, out = queues.create(), queues.create("results")
    photo, mask = images(2)
    queues.send(url, [{"collection_id": "c", "image_id": "i", "s3_uri": photo, "mask_uri": mask}])
    result = run_worker(url, out)
    assert result.exit_code == 0, result.outcomes
    (record,) = queues.results(out)
    assert record["fields"] == {"mask_uri": {"shape": [6, 8, 3]}, "s3_uri": {"shape": [6, 8, 3]}}


def test_allowed_buckets_of_the_s3_loader_apply(queues, images, requests_for, monkeypatch):
    monkeypatch.setenv("IGATA_S3_ALLOWED_BUCKETS", "somewhere-else")
    url, out = queues.create(), queues.create("results")
    queues.send(url, requests_for(images(1)))
    result = run_worker(url, out, retry_delay=60, idle_timeout=0, max_messages=1)
    (outcome,) = result.outcomes
    assert outcome.stage == "load" and "images" in outcome.message


def test_poison_message_ends_in_the_dead_letter_queue(queues, images, requests_for):
    url, out = queues.create(visibility=1, max_receive=2), queues.create("results")
    requests = requests_for(images(4))
    requests[1]["poison"] = True
    for request in requests:
        queues.send(url, [request])
    result = run_worker(url, out, "sqs_predictors:FailPoison", retry_delay=0)
    assert result.exit_code == 0
    assert sorted(by_id(queues.results(out))) == ["images:0", "images:2", "images:3"]
    assert [o.final for o in result.outcomes] == [False, True]
    (dead,) = queues.drain(queues.dead_letter[url])
    assert '"poison": true' in dead["Body"]
    assert queues.counts(url) == (0, 0)


def test_slow_predictor_outlives_the_visibility_timeout_without_duplicates(
    queues, images, requests_for, monkeypatch
):
    slow = sys.modules["sqs_predictors"].Slow
    slow.calls.clear()
    monkeypatch.setenv("SQS_TEST_SLEEP", "1.3")
    url, out = queues.create(visibility=1), queues.create("results")
    for request in requests_for(images(3)):
        queues.send(url, [request])
    result = run_worker(
        url, out, "sqs_predictors:Slow", settings={"concurrency": 1, "batch_size": 1}
    )
    assert result.exit_code == 0, result.summary
    assert slow.calls == {f"images:{i}": 1 for i in range(3)}, "each message processed once"
    assert sorted(r["igata_id"] for r in queues.results(out)) == [f"images:{i}" for i in range(3)]
    assert queues.counts(url) == (0, 0)


def test_sink_outage_neither_nacks_nor_deletes(queues, images, requests_for, closed_port_url):
    url, out = queues.create(visibility=2, max_receive=2), queues.create("results")
    for request in requests_for(images(3)):
        queues.send(url, [request])
    result = run_worker(
        url, out,
        sink_options={"endpoint_url": closed_port_url},
        settings={"sink_retry_budget": 2},
    )  # fmt: skip
    assert result.exit_code == 3, result.summary
    assert "stayed unavailable" in result.summary["reason"]
    assert (result.summary["acked"], result.summary["nacked"]) == (0, 0)
    visible, in_flight = queues.counts(url)
    assert visible + in_flight == 3, "nothing deleted"
    # Left to reappear: each message was received once, so the outage burnt no retry.
    back = queues.drain(url) if visible == 3 else []
    if not back:
        queues.wait_for(url, visible=3, timeout=4)
        back = queues.drain(url)
    assert sorted(int(m["Attributes"]["ApproximateReceiveCount"]) for m in back) == [2, 2, 2]
    assert queues.drain(queues.dead_letter[url]) == []


@pytest.mark.parametrize("alias", ["sqs", "SQSMessageS3InputImageCtxManager"])
def test_source_aliases(alias, queues, images, requests_for):
    url, out = queues.create(), queues.create("results")
    queues.send(url, requests_for(images(1)))
    result = run_pipeline(
        alias, "sqs", SHAPE,
        source_options={"queue_url": url, "idle_timeout": 1, "wait_time_seconds": 1},
        sink_options={"queue_url": out},
    )  # fmt: skip
    assert result.exit_code == 0 and len(queues.results(out)) == 1


def test_record_over_the_output_queues_limit_fails_alone(queues, images, requests_for):
    """The output queue takes 1 KiB messages: the one large result is that record's error
    (stage sink, its message retried), the others are written exactly once; a worker's
    failures do not change its exit code (0)."""
    url, out = queues.create(visibility=30), queues.create("results")
    queues.sqs.set_queue_attributes(QueueUrl=out, Attributes={"MaximumMessageSize": "1024"})
    requests = requests_for(images(4))
    requests[2]["poison"] = True
    queues.send(url, requests[:3])
    queues.send(url, [requests[3]])
    result = run_worker(url, out, "sqs_predictors:BigPoison", retry_delay=60, idle_timeout=0,
                        max_messages=2)  # fmt: skip
    assert result.exit_code == 0, result.summary
    (outcome,) = result.outcomes
    assert (outcome.identity, outcome.stage, outcome.error_type) == (
        "images:2",
        "sink",
        "RecordTooLarge",
    )
    assert (result.summary["acked"], result.summary["nacked"]) == (1, 1)
    written = [r["igata_id"] for r in queues.results(out)]
    assert sorted(written) == ["images:0", "images:1", "images:3"], "each exactly once"


class ShrinkingQueueSink(SqsSink):
    """An sqs sink whose queue lowers its MaximumMessageSize right after open(): the limit
    is then enforced by SQS itself, not by the sink's check before sending."""

    def open(self):
        super().open()
        self._client.set_queue_attributes(
            QueueUrl=self.queue_url, Attributes={"MaximumMessageSize": "1024"}
        )


def test_message_refused_by_sqs_fails_alone(queues, images, requests_for):
    url, out = queues.create(visibility=30), queues.create("results")
    requests = requests_for(images(4))
    requests[1]["poison"] = True
    queues.send(url, requests[:2])
    queues.send(url, requests[2:])
    result = run_pipeline(
        "sqs", ShrinkingQueueSink({"queue_url": out}), "sqs_predictors:BigPoison",
        source_options={"queue_url": url, "wait_time_seconds": 1, "retry_delay": 60,
                        "max_messages": 2},
    )  # fmt: skip
    assert result.exit_code == 0, result.summary
    (outcome,) = result.outcomes
    assert (outcome.identity, outcome.stage) == ("images:1", "sink")
    assert "refused record images:1" in outcome.message
    assert (result.summary["acked"], result.summary["nacked"]) == (1, 1)
    written = [r["igata_id"] for r in queues.results(out)]
    assert sorted(written) == ["images:0", "images:2", "images:3"], "each exactly once"
    assert queues.counts(url) == (0, 1), "the failed message waits for its retry"
