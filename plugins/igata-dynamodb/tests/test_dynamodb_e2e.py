"""SQS -> predictor -> DynamoDB with real worker processes: a worker is SIGKILLed mid-run,
another one finishes, and each request has exactly one outcome in both tables."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("igata_sqs", reason="the end-to-end test needs igata-sqs installed")
pytest.importorskip("igata_s3", reason="the end-to-end test needs igata-s3 installed")

REQUESTS = 30
PER_MESSAGE = 3
TESTS = Path(__file__).parent


def png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def worker(aws: Any, queue_url: str, sleep: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **aws.env(),
        "PYTHONPATH": str(TESTS),
        "DDB_TEST_SLEEP": str(sleep),
        "OUTPUT_CTXMGR_REQUESTS_TABLENAME": "igata-requests",
        "OUTPUT_CTXMGR_RESULTS_TABLENAME": "igata-results",
    }
    igata = os.path.join(os.path.dirname(sys.executable), "igata")
    return subprocess.Popen(
        [
            igata, "run", "--source", "sqs", "--sink", "dynamodb",
            "--predictor", "dynamodb_e2e_predictors:SlowDetector",
            "--source-opt", f"queue_url={queue_url}",
            "--source-opt", "visibility_timeout=2",
            "--source-opt", "wait_time_seconds=1",
            "--source-opt", "idle_timeout=2",
            "--batch-size", "4", "--chunk-size", "4", "--flush-interval", "0.2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_one_outcome_per_request_after_a_worker_is_killed(
    aws: Any, layout: Any, store: Any
) -> None:
    s3 = aws.client("s3")
    sqs = aws.client("sqs")
    s3.create_bucket(Bucket="images")
    queue_url = sqs.create_queue(QueueName="requests", Attributes={"VisibilityTimeout": "2"})[
        "QueueUrl"
    ]
    requests = []
    for i in range(REQUESTS):
        s3.put_object(Bucket="images", Key=f"{i}.png", Body=png(i * 8))
        requests.append(
            {
                "collection_id": "events:1",
                "image_id": f"images-{i}",
                "request_id": f"req-{i:02d}",
                "s3_uri": f"s3://images/{i}.png",
            }
        )
    for start in range(0, REQUESTS, PER_MESSAGE):
        sqs.send_message(
            QueueUrl=queue_url, MessageBody=json.dumps(requests[start : start + PER_MESSAGE])
        )

    first = worker(aws, queue_url, sleep=0.15)
    deadline = time.monotonic() + 30
    completed = 0
    while time.monotonic() < deadline and first.poll() is None:
        completed = sum(1 for r in store.requests() if r.get("state") == "completed")
        if completed >= 6:
            break
        time.sleep(0.1)
    assert first.poll() is None, f"the first worker ended early: {first.communicate()}"
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert 0 < completed < REQUESTS, "the kill must come mid-run"

    second = worker(aws, queue_url, sleep=0.0)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err

    items = store.requests()
    assert sorted(item["request_id"] for item in items) == [r["request_id"] for r in requests]
    assert {item["state"] for item in items} == {"completed"}
    expected = sum(i % 3 for i in range(REQUESTS))
    results = store.results()
    assert len(results) == expected, "re-processing must overwrite RESULTS items, not add"
    assert len({(r["hashkey"], r["s3_uri"]) for r in results}) == expected
    for i, request in enumerate(requests):
        mine = store.results_of(request["request_id"])
        assert len(mine) == i % 3
        assert all(item["s3_uri"] == request["s3_uri"] for item in mine)
        assert [item["label"] for item in mine] == [f"object-{j}" for j in range(i % 3)]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
