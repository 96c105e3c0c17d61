"""SNS completion notices: the original's body, per-request topics, failures, size limit."""

from __future__ import annotations

import json
import logging

import pytest

from igata_core import Envelope, Item
from igata_core.testing import run_pipeline
from igata_sqs.notices import CompletionNotifier, NoticeSettings


@pytest.fixture
def topics(aws, moto_queues):
    """``topics(name)``: a topic and a queue subscribed to it; returns (arn, queue url).

    SNS is moto's, so the subscribed queue is moto's own too, even when the worker's SQS
    goes to a strict emulator (moto's SNS delivers only into moto's queues)."""
    sns = aws.client("sns")
    sqs = moto_queues.sqs

    def make(name):
        arn = sns.create_topic(Name=name)["TopicArn"]
        url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        return arn, url

    return make


@pytest.fixture
def notices(moto_queues):
    """``notices(url)``: the published notice bodies (the ``default`` message) received by
    the inbox queue ``url``."""

    def read(url):
        return [json.loads(json.loads(m["Body"])["Message"]) for m in moto_queues.drain(url)]

    return read


def run_worker(url, out, predictor="sqs_predictors:Shape", **options):
    options = {"queue_url": url, "idle_timeout": 1, "wait_time_seconds": 1, **options}
    return run_pipeline(
        "sqs", "sqs", predictor, source_options=options, sink_options={"queue_url": out}
    )


def test_acked_requests_are_announced_on_their_topics(
    queues, images, requests_for, topics, notices
):
    done_a, inbox_a = topics("done-a")
    done_b, inbox_b = topics("done-b")
    url, out = queues.create(), queues.create("results")
    uris = images(3)
    a0, a1, b2 = requests_for(uris)
    queues.send(url, [{**a0, "request_id": "r-0", "sns_topic_arn": done_a},
                      {**a1, "request_id": "r-1", "sns_topic_arn": done_a}])  # fmt: skip
    queues.send(url, [{**b2, "request_id": "r-2", "sns_topic_arn": done_b}])
    result = run_worker(url, out)
    assert result.exit_code == 0, result.summary
    assert notices(inbox_a) == [["r-0", "r-1"]]
    assert notices(inbox_b) == [["r-2"]]
    assert len(queues.results(out)) == 3


def test_fallback_topic_and_detailed_format(queues, images, requests_for, topics, notices):
    fallback, inbox = topics("all-done")
    url, out = queues.create(), queues.create("results")
    queues.send(url, requests_for(images(2)))
    result = run_worker(url, out, sns_topic_arn=fallback, notice_format="detailed")
    assert result.exit_code == 0
    (notice,) = notices(inbox)
    assert sorted(notice, key=lambda n: n["request_id"]) == [
        {"request_id": "images:0", "collection_id": "events:1", "status": "completed"},
        {"request_id": "images:1", "collection_id": "events:1", "status": "completed"},
    ]


def test_final_failure_is_announced_with_status_error(
    queues, images, requests_for, topics, notices
):
    topic, inbox = topics("done")
    url, out = queues.create(max_receive=1), queues.create("results")
    (request,) = requests_for(images(1), poison=True, sns_topic_arn=topic)
    queues.send(url, [request])
    result = run_worker(url, out, "sqs_predictors:FailPoison", notice_format="detailed")
    assert result.summary["failed"] == 1
    (notice,) = notices(inbox)
    (entry,) = notice
    assert entry["status"] == "error" and entry["request_id"] == "images:0"
    assert entry["errors"], entry
    assert queues.results(out) == []


def test_no_notice_before_the_final_attempt(queues, images, requests_for, topics, notices):
    topic, inbox = topics("done")
    url, out = queues.create(max_receive=3), queues.create("results")
    queues.send(url, requests_for(images(1), poison=True, sns_topic_arn=topic))
    result = run_worker(url, out, "sqs_predictors:FailPoison", max_messages=1)
    assert result.summary["nacked"] == 1
    assert notices(inbox) == []


class FakeSns:
    def __init__(self, fail=0, code="InternalError"):
        self.fail = fail
        self.code = code
        self.published = []

    def publish(self, **kwargs):
        from botocore.exceptions import ClientError

        if self.fail:
            self.fail -= 1
            raise ClientError({"Error": {"Code": self.code, "Message": "injected"}}, "Publish")
        self.published.append(kwargs)
        return {"MessageId": "m"}


def envelope(*ids, topic="arn:aws:sns:us-east-1:123456789012:t"):
    items = [Item(identity=i, meta={"request_id": i, "sns_topic_arn": topic}) for i in ids]
    return Envelope(ref="sqs:m", items=items, handle="m")


def notifier(client, **overrides):
    settings = {"id_field": "request_id", "topic_field": "sns_topic_arn", "default_topic": None,
                "detailed": False, **overrides}  # fmt: skip
    return CompletionNotifier(NoticeSettings(**settings), lambda: client)


def test_notice_body_is_the_originals():
    client = FakeSns()
    notifier(client).completed([envelope("r-1", "r-2"), envelope("r-3")])
    (call,) = client.published
    assert call["MessageStructure"] == "json"
    assert call["TopicArn"] == "arn:aws:sns:us-east-1:123456789012:t"
    assert json.loads(call["Message"]) == {"default": json.dumps(["r-1", "r-2", "r-3"])}


def test_notices_are_split_under_the_sns_size_limit():
    client = FakeSns()
    ids = [f"request-{i:08d}-" + "x" * 40 for i in range(12_000)]
    notifier(client).completed([envelope(*ids)])
    assert len(client.published) > 1
    sent = []
    for call in client.published:
        assert len(call["Message"].encode()) <= 256 * 1024
        sent += json.loads(json.loads(call["Message"])["default"])
    assert sent == ids


def test_failed_publish_is_retried_then_reported_without_raising(caplog):
    client = FakeSns(fail=1)
    notifier(client).completed([envelope("r-1")])
    assert len(client.published) == 1, "a transient failure is retried"
    broken = FakeSns(fail=10, code="NotFound")
    sink = notifier(broken)
    with caplog.at_level(logging.ERROR, logger="igata.sqs"):
        sink.completed([envelope("r-1", "r-2")])
    assert sink.unpublished == 2 and broken.fail == 9, "a missing topic is not retried"
    assert "could not be published" in caplog.text and "r-1, r-2" in caplog.text
    assert "check the topic ARN" in caplog.text


@pytest.mark.parametrize(
    "code, attempts",
    [("NotFound", 1), ("AuthorizationError", 1), ("InvalidParameter", 1),
     ("KMSAccessDenied", 1), ("KMSDisabled", 1), ("Throttled", 3), ("KMSThrottling", 3),
     ("InternalError", 3)],
)  # fmt: skip
def test_sns_errors_are_retried_only_when_they_are_outages(code, attempts, monkeypatch):
    monkeypatch.setattr("igata_sqs.notices.time.sleep", lambda seconds: None)
    broken = FakeSns(fail=10, code=code)
    sink = notifier(broken)
    sink.completed([envelope("r-1")])
    assert (sink.unpublished, 10 - broken.fail) == (1, attempts)


def test_requests_without_topic_get_no_notice():
    client = FakeSns()
    notifier(client).completed([envelope("r-1", topic=None)])
    assert client.published == []
