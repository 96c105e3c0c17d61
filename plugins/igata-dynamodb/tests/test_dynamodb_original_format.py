"""Messages exactly as the original README documents them (collection_id, image_id, s3_uri;
no request_id) through ``igata run --source sqs --sink dynamodb`` with the tables of
``igata dynamodb create-tables`` and default settings: each request is completed, keyed by
its identity (its image_id), found through ``collection_id-state-index``, with one RESULTS
item; nothing is dead-lettered. Worker processes as users run them, on moto and on the
strict emulators."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from igata_dynamodb.records import results_hashkey

pytest.importorskip("igata_sqs", reason="the end-to-end test needs igata-sqs installed")
pytest.importorskip("igata_s3", reason="the end-to-end test needs igata-s3 installed")

TESTS = Path(__file__).parent
IGATA = os.path.join(os.path.dirname(sys.executable), "igata")
TABLES = {
    "OUTPUT_CTXMGR_REQUESTS_TABLENAME": "original-requests",
    "OUTPUT_CTXMGR_RESULTS_TABLENAME": "original-results",
}


def png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, format="PNG")
    return buffer.getvalue()


def igata(aws: Any, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IGATA, *args],
        env={**os.environ, **aws.env(), "PYTHONPATH": str(TESTS), **TABLES, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_original_messages_are_completed_keyed_by_image_id(aws: Any) -> None:
    s3, sqs, ddb = aws.client("s3"), aws.client("sqs"), aws.client("dynamodb")
    created = igata(aws, "dynamodb", "create-tables")
    assert created.returncode == 0, created.stderr
    assert "created: original-requests" in created.stdout

    dlq_url = sqs.create_queue(QueueName="original-dlq")["QueueUrl"]
    dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
    dlq_arn = dlq["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName="original-requests",
        Attributes={
            "VisibilityTimeout": "2",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
        },
    )["QueueUrl"]
    s3.create_bucket(Bucket="original-images")
    requests = []
    for i, collection in enumerate(["events:1234", "events:1234", "events:5678"]):
        s3.put_object(Bucket="original-images", Key=f"{i}.png", Body=png(30, 20 + i))
        requests.append(
            {
                "collection_id": collection,
                "image_id": f"images:{i}",
                "s3_uri": f"s3://original-images/{i}.png",
            }
        )
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(requests[:2]))
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(requests[2:]))

    run = igata(
        aws,
        "run", "--source", "sqs", "--sink", "dynamodb",
        "--predictor", "dynamodb_e2e_predictors:OneFinding",
        "--source-opt", "wait_time_seconds=1", "--source-opt", "idle_timeout=2",
        INPUT_CTXMANAGER_SQS_QUEUE_URL=queue_url,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "needs a non-empty string field" not in run.stderr

    items = ddb.scan(TableName="original-requests", ConsistentRead=True)["Items"]
    by_id = {item["request_id"]["S"]: item for item in items}
    assert sorted(by_id) == ["images:0", "images:1", "images:2"]
    for request in requests:
        item = by_id[request["image_id"]]
        assert item["state"] == {"S": "completed"}
        assert item["collection_id"] == {"S": request["collection_id"]}
        assert item["results_count"] == {"N": "1"}
        assert json.loads(item["errors"]["S"]) == []

    results = ddb.scan(TableName="original-results", ConsistentRead=True)["Items"]
    assert len(results) == len(requests)
    by_hashkey = {item["hashkey"]["S"]: item for item in results}
    for i, request in enumerate(requests):
        item = by_hashkey[results_hashkey(request["image_id"], 0)]
        assert item["request_id"] == {"S": request["image_id"]}
        assert item["s3_uri"] == {"S": request["s3_uri"]}
        assert item["label"] == {"S": "photo"}
        # Whole numbers as written, whichever type the predictor used.
        assert item["height"] == {"N": str(20 + i)}
        assert item["width"] == item["mean"] == {"N": "30"}
        assert item["pixels"] == {"N": str(30 * (20 + i))}

    found = ddb.query(
        TableName="original-requests",
        IndexName="collection_id-state-index",
        KeyConditionExpression="collection_id = :c AND #s = :s",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":c": {"S": "events:1234"}, ":s": {"S": "completed"}},
    )["Items"]
    assert sorted(item["request_id"]["S"] for item in found) == ["images:0", "images:1"]

    for url in (queue_url, dlq_url):
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0", url
        assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0", url
