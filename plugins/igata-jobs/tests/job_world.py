"""Helpers of the igata-jobs tests (imported as ``job_world``; conftest loads it)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from click.testing import CliRunner, Result

BUCKET = "job-images"
REQUESTS = "job-requests"
RESULTS = "job-results"


def invoke(command: Any, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(command, list(args), env=env, catch_exceptions=False)


class World:
    """The local AWS of one test, with helpers to fill and read it."""

    def __init__(self, aws: Any):
        self.aws = aws
        self.s3 = aws.client("s3")
        self.sqs = aws.client("sqs")
        self.ddb = aws.client("dynamodb")

    def objects(
        self,
        count: int,
        *,
        bucket: str = BUCKET,
        prefix: str = "photos/",
        suffix: str = ".jpg",
        body: bytes = b"x",
    ) -> list[str]:
        with contextlib.suppress(Exception):  # already there
            self.s3.create_bucket(Bucket=bucket)
        keys = [f"{prefix}img-{i:04d}{suffix}" for i in range(count)]
        for key in keys:
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        return keys

    def queue(
        self, name: str = "job-queue", *, fifo: bool = False, dlq: bool = False, **attributes: str
    ) -> str:
        attrs = dict(attributes)
        if fifo:
            name += ".fifo"
            attrs["FifoQueue"] = "true"
        if dlq:
            dlq_name = name.replace(".fifo", "") + "-dlq" + (".fifo" if fifo else "")
            dlq_url = self.sqs.create_queue(
                QueueName=dlq_name, Attributes={"FifoQueue": "true"} if fifo else {}
            )["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            attrs["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": "2"}
            )
        return self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]

    def drain(self, url: str) -> list[dict[str, Any]]:
        """Every message of ``url``, received and deleted."""
        found: dict[str, dict[str, Any]] = {}
        empty = 0
        while empty < 2:
            batch = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
                VisibilityTimeout=30,
            ).get("Messages", [])
            if not batch:
                empty += 1
                continue
            for message in batch:
                found[message["MessageId"]] = message
            self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
                ],
            )
        return list(found.values())

    def requests_in(self, url: str) -> list[dict[str, Any]]:
        return [r for m in self.drain(url) for r in json.loads(m["Body"])]

    def tables(self, *, request_key: str = "request_id") -> None:
        from igata_dynamodb.layout import Layout
        from igata_dynamodb.tables import Capacity, create_tables

        create_tables(self.ddb, Layout(REQUESTS, RESULTS, request_key=request_key), Capacity())

    def items(self, table: str = REQUESTS) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        plain = TypeDeserializer()
        items = []
        for page in self.ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            items += [{k: plain.deserialize(v) for k, v in i.items()} for i in page["Items"]]
        return items


def png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


class Labeller:
    """One result per image; an image whose key holds 'poison' fails in predict."""

    @staticmethod
    def make() -> type:
        from igata_core import PredictorBase

        class _Labeller(PredictorBase):
            def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
                if "poison" in meta["s3_uri"]:
                    raise ValueError(f"cannot read {meta['s3_uri']}")
                return {"result": [{"label": "green", "score": 0.75, "pixels": 16}]}

        return _Labeller


def run_workers(queue_url: str, *, requests: str = REQUESTS, results: str = RESULTS) -> Any:
    """Drain the queue with an in-process sqs -> dynamodb worker."""
    from igata_core.testing import run_pipeline

    return run_pipeline(
        "sqs",
        "dynamodb",
        Labeller.make(),
        source_options={
            "queue_url": queue_url,
            "idle_timeout": 1,
            "wait_time_seconds": 1,
            "retry_delay": 0,
        },
        sink_options={"requests_tablename": requests, "results_tablename": results},
        flush_interval=0.1,
    )


def set_state(
    world: World, request_ids: list[str], state: str, *, errors: str = "[]", at: float | None = None
) -> None:
    import time

    for rid in request_ids:
        world.ddb.update_item(
            TableName=REQUESTS,
            Key={"request_id": {"S": rid}},
            UpdateExpression="SET #s = :s, updated_at_timestamp = :t, errors = :e",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":s": {"S": state},
                ":t": {"N": str(int(at or time.time()))},
                ":e": {"S": errors},
            },
        )
