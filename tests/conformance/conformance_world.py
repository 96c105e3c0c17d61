"""The world of the acceptance tests: images on S3, queues, tables, and ``igata run`` worker
processes against them, through the same endpoints as a user's fleet (moto, or the strict
emulators of ``nox -s aws-conformance``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from igata_core.testing.queues import Queues

HERE = Path(__file__).parent
IGATA = str(Path(sys.executable).parent / "igata")
BUCKET = "conformance-images"
REQUESTS_TABLE = "conformance-requests"
RESULTS_TABLE = "conformance-results"


def jpeg(width: int = 8, height: int = 6) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 160, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class Worker:
    """A finished ``igata run``: exit code, seconds it ran, its log, its errors file."""

    code: int
    seconds: float
    log: str
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class World:
    """A bucket of images, an input queue with a dead-letter queue, and helpers to run
    workers against them and read what they left."""

    aws: Any
    tmp_path: Path
    sqs: Any
    s3: Any
    dynamodb: Any
    queue_url: str = ""
    dead_letter_url: str = ""
    #: Create, count and drain queues (``queues.create(name)`` for an output queue).
    queues: Queues = field(init=False)

    def __post_init__(self) -> None:
        self.queues = Queues(self.sqs)

    def image(self, key: str, size: tuple[int, int] = (8, 6)) -> str:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=jpeg(*size))
        return f"s3://{BUCKET}/{key}"

    def input_queue(self, *, visibility: int = 2, max_receive: int = 2) -> str:
        """The input queue, with a dead-letter queue after ``max_receive`` receives."""
        self.queue_url = self.queues.create(
            "conformance-requests", visibility=visibility, max_receive=max_receive
        )
        self.dead_letter_url = self.queues.dead_letter[self.queue_url]
        return self.queue_url

    def send(self, requests: list[dict[str, Any]]) -> str:
        """One message holding ``requests`` (JSON: non-ASCII characters escaped)."""
        return self.queues.send(self.queue_url, requests)

    def tables(self, *, requests_key: str = "request_id") -> None:
        """The REQUESTS and RESULTS tables, REQUESTS keyed by ``requests_key``."""
        self.dynamodb.create_table(
            TableName=REQUESTS_TABLE,
            KeySchema=[{"AttributeName": requests_key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": requests_key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.results_table()

    def results_table(self) -> None:
        self.dynamodb.create_table(
            TableName=RESULTS_TABLE,
            KeySchema=[
                {"AttributeName": "hashkey", "KeyType": "HASH"},
                {"AttributeName": "s3_uri", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "hashkey", "AttributeType": "S"},
                {"AttributeName": "s3_uri", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )

    def run(
        self,
        *args: str,
        sink: str = "sqs",
        predictor: str = "conformance_predictors:Size",
        timeout: float = 90,
        **env: str,
    ) -> Worker:
        """``igata run --source sqs --sink SINK`` until the queue is idle; waits for it."""
        errors = self.tmp_path / f"errors-{time.monotonic_ns()}.jsonl"
        command = [
            IGATA, "run", "--source", "sqs", "--sink", sink, "--predictor", predictor,
            "--source-opt", f"queue_url={self.queue_url}",
            "--source-opt", "wait_time_seconds=1", "--source-opt", "idle_timeout=3",
            "--source-opt", "retry_delay=0",
            "--flush-interval", "0.2", "--sink-retry-budget", "20", "--errors", str(errors),
            *args,
        ]  # fmt: skip
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "OUTPUT_"))},
            **self.aws.env(),
            "PYTHONPATH": str(HERE),
            "OUTPUT_CTXMGR_REQUESTS_TABLENAME": REQUESTS_TABLE,
            "OUTPUT_CTXMGR_RESULTS_TABLENAME": RESULTS_TABLE,
            **env,
        }
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, env=environ, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"igata run did not finish in {timeout} s:\n{(exc.stderr or '')[-3000:]}")
        seconds = time.monotonic() - started
        lines = errors.read_text("utf-8").splitlines() if errors.exists() else []
        return Worker(done.returncode, seconds, done.stderr, [json.loads(x) for x in lines])

    def scan(self, table: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = self.dynamodb.scan(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
