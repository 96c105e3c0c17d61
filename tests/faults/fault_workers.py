"""Jobs, worker processes and read-backs for the fault and scale-out tests.

Shared by ``tests/faults/`` and ``tests/test_scale_out.py``:

* :class:`Job` puts a job on the local AWS endpoint: small PNGs on S3, image requests that
  reference them by ``s3_uri`` sent in messages of up to 10 to a queue with a dead-letter
  queue, and the REQUESTS/RESULTS tables of the ``dynamodb`` sink. It reads all of it back.
* :class:`Workers` starts real ``python -m igata_core run --source sqs --sink dynamodb``
  processes (environment from ``aws.env()``, predictors from :mod:`fault_predictors`) and
  kills whatever is still running at the end.
* :func:`assert_settled` checks the end state every test expects: each request has exactly
  one outcome, its RESULTS items and no others, the queue is empty and the dead-letter queue
  holds exactly the messages that had to fail.

Only boto3 calls made straight to moto (never through a fault proxy) read the state back.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FAULTS_DIR = Path(__file__).parent
BUCKET = "fault-images"
REQUESTS_TABLE = "fault-requests"
RESULTS_TABLE = "fault-results"
PER_MESSAGE = 10

_SUMMARY = re.compile(
    r"summary: read (?P<read>\d+), succeeded (?P<succeeded>\d+), failed (?P<failed>\d+), "
    r"written (?P<written>\d+)"
)


def png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade % 256, (shade * 7) % 256, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    workers: Iterable[Worker] = (),
    interval: float = 0.1,
) -> Any:
    """Poll ``predicate`` until it returns something true; fail with the workers' logs."""
    watched = list(workers)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        ended = [w for w in watched if w.process.poll() is not None]
        if ended or time.monotonic() > deadline:
            why = "a worker ended" if ended else f"not within {timeout:g} s"
            logs = "\n".join(f"--- {w.name}:\n{w.log()[-3000:]}" for w in watched)
            pytest.fail(f"waiting for {what}: {why}\n{logs}")
        time.sleep(interval)


class Job:
    """Images, a request queue with its dead-letter queue, and the sink's tables."""

    def __init__(
        self,
        aws: Any,
        *,
        visibility: int = 2,
        max_receive: int = 5,
        images: int = 50,
        queue: str = "fault-requests",
    ):
        from igata_dynamodb.layout import Layout
        from igata_dynamodb.tables import Capacity, create_tables

        self.aws = aws
        self.images = images
        self.s3 = aws.client("s3")
        self.sqs = aws.client("sqs")
        self.ddb = aws.client("dynamodb")
        self.s3.create_bucket(Bucket=BUCKET)
        for i in range(images):
            self.s3.put_object(Bucket=BUCKET, Key=f"img-{i}.png", Body=png(i * 5))
        self.dlq_url = self.sqs.create_queue(QueueName=f"{queue}-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}
        self.queue_url = self.sqs.create_queue(
            QueueName=queue,
            Attributes={"VisibilityTimeout": str(visibility), "RedrivePolicy": json.dumps(redrive)},
        )["QueueUrl"]
        self.max_receive = max_receive
        self.layout = Layout(REQUESTS_TABLE, RESULTS_TABLE)
        create_tables(self.ddb, self.layout, Capacity())
        self.requests: list[dict[str, Any]] = []
        #: The body of each message sent, in order.
        self.messages: list[list[dict[str, Any]]] = []

    # -- the job -----------------------------------------------------------------------

    def add(
        self,
        count: int,
        *,
        per_message: int = PER_MESSAGE,
        poison: Iterable[int] = (),
    ) -> list[list[dict[str, Any]]]:
        """Send ``count`` more requests, ``per_message`` to a message; returns the bodies.

        Request ``i`` asks for ``i % 3`` detections of image ``i % images``; the indexes in
        ``poison`` (counted from 0 within this call) fail in ``predict`` on every attempt.
        """
        poisoned = set(poison)
        start = len(self.requests)
        new = []
        for offset in range(count):
            i = start + offset
            request: dict[str, Any] = {
                "collection_id": "events:1",
                "image_id": f"images:{i}",
                "request_id": f"req-{i:05d}",
                "s3_uri": f"s3://{BUCKET}/img-{i % self.images}.png",
                "n_results": i % 3,
            }
            if offset in poisoned:
                request["poison"] = True
            new.append(request)
        bodies = [new[i : i + per_message] for i in range(0, len(new), per_message)]
        for first in range(0, len(bodies), 10):
            entries = [
                {"Id": str(n), "MessageBody": json.dumps(body)}
                for n, body in enumerate(bodies[first : first + 10])
            ]
            response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            assert not response.get("Failed"), response["Failed"]
        self.requests += new
        self.messages += bodies
        return bodies

    def via(self, endpoint: str) -> str:
        """The queue URL as a worker reaching AWS through ``endpoint`` must name it."""
        return self.queue_url.replace(self.aws.url, endpoint)

    # -- reading back ----------------------------------------------------------------------

    def _scan(self, table: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        plain = TypeDeserializer()
        items = []
        for page in self.ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
            items += [{k: plain.deserialize(v) for k, v in item.items()} for item in page["Items"]]
        return items

    def request_items(self) -> dict[str, dict[str, Any]]:
        return {item["request_id"]: item for item in self._scan(REQUESTS_TABLE)}

    def result_items(self) -> list[dict[str, Any]]:
        return self._scan(RESULTS_TABLE)

    def states(self) -> Counter[str]:
        return Counter(str(item.get("state")) for item in self.request_items().values())

    def completed(self) -> set[str]:
        # .get: moto applies an update's SET actions one by one, so a scan that races a
        # worker's update can see the item before its state is set.
        items = self.request_items().items()
        return {rid for rid, item in items if item.get("state") == "completed"}

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the queue (default: the request queue)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def receive_all(self, url: str, *, hide: int = 30) -> list[dict[str, Any]]:
        """Every visible message of ``url``, received (hidden for ``hide`` s), not deleted."""
        found: dict[str, dict[str, Any]] = {}
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=hide,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            if not batch:
                return list(found.values())
            for message in batch:
                found[message["MessageId"]] = message

    def dead_letters(self) -> list[list[dict[str, Any]]]:
        """The bodies of the messages in the dead-letter queue."""
        return [json.loads(m["Body"]) for m in self.receive_all(self.dlq_url)]


@dataclass
class Worker:
    """A running ``igata run`` process; its standard error goes to ``log_path``."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def finish(self, timeout: float = 30) -> int:
        """Wait for the exit code; past ``timeout`` kill the worker and fail the test."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not finish in {timeout:g} s:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a node dies."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        """SIGTERM, as an orchestrator stopping a container."""
        self.process.send_signal(signal.SIGTERM)

    def summary(self) -> dict[str, int]:
        """The counts of the worker's final summary line."""
        found = _SUMMARY.search(self.log())
        assert found, f"{self.name} wrote no summary line:\n{self.log()[-3000:]}"
        return {key: int(value) for key, value in found.groupdict().items()}

    def wait_for_log(self, text: str, timeout: float = 15) -> None:
        wait_until(lambda: text in self.log(), timeout, f"{text!r} in the log", workers=[self])


@dataclass
class Workers:
    """Starts workers for one test; :meth:`close` kills those still running."""

    aws: Any
    log_dir: Path
    started: list[Worker] = field(default_factory=list)

    def start(
        self,
        queue_url: str,
        *,
        predictor: str = "Detector",
        args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        idle_timeout: float = 2,
    ) -> Worker:
        """Start a worker on ``queue_url``. ``env`` overrides the environment (e.g.
        ``AWS_ENDPOINT_URL`` of a proxy); ``args`` are added to the command line."""
        name = f"worker-{len(self.started)}"
        environ = {
            **os.environ,
            **self.aws.env(),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(FAULTS_DIR), os.environ.get("PYTHONPATH")])
            ),
            "OUTPUT_CTXMGR_REQUESTS_TABLENAME": REQUESTS_TABLE,
            "OUTPUT_CTXMGR_RESULTS_TABLENAME": RESULTS_TABLE,
            # Failed messages come back at once: the tests wait for the DLQ, not for backoff.
            "SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION": "0",
            **(env or {}),
        }
        command = [
            sys.executable, "-m", "igata_core", "run",
            "--source", "sqs", "--sink", "dynamodb",
            "--predictor", f"fault_predictors:{predictor}",
            "--source-opt", f"queue_url={queue_url}",
            "--source-opt", "wait_time_seconds=1",
            "--source-opt", f"idle_timeout={idle_timeout:g}",
            "--flush-interval", "0.2",
            *args,
        ]  # fmt: skip
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, env=environ, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        worker = Worker(name, process, log_path)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.kill()


def read_calls(path: Path) -> list[tuple[int, str, str]]:
    """The lines of a ``FAULT_CALLS`` file as (pid, event, request id)."""
    if not path.exists():
        return []
    calls = []
    for line in path.read_text().splitlines():
        pid, event, request_id = line.split(" ")
        calls.append((int(pid), event, request_id))
    return calls


def assert_settled(job: Job, *, failing: Iterable[str] = ()) -> None:
    """The job's end state: every request has exactly one outcome, and nothing is left over.

    * every request has its REQUESTS item: ``error`` for the ids in ``failing``,
      ``completed`` for the others, with ``results_count`` = its ``n_results``;
    * RESULTS holds exactly the items of the completed requests, one per position, no
      duplicates (``hashkey`` unique, each request's items at positions 0..n-1);
    * the request queue is empty; the dead-letter queue holds exactly the messages with a
      failing request, each once.
    """
    from igata_dynamodb.records import results_hashkey

    failing = set(failing)
    items = job.request_items()
    by_id = {request["request_id"]: request for request in job.requests}
    assert len(by_id) == len(job.requests)
    missing = sorted(set(by_id) - set(items))
    assert not missing, f"{len(missing)} request(s) have no REQUESTS item: {missing[:10]}"
    assert set(items) == set(by_id), f"unexpected REQUESTS items: {sorted(set(items) - set(by_id))}"
    wrong = {
        rid: item.get("state")
        for rid, item in items.items()
        if item.get("state") != ("error" if rid in failing else "completed")
    }
    assert not wrong, (
        f"{len(wrong)} request(s) in the wrong state: {dict(list(wrong.items())[:10])}"
    )
    miscounted = {
        rid: (item.get("results_count"), by_id[rid]["n_results"])
        for rid, item in items.items()
        if rid not in failing and item.get("results_count") != by_id[rid]["n_results"]
    }
    assert not miscounted, f"results_count differs (found, expected): {miscounted}"

    results = job.result_items()
    hashkeys = Counter(item["hashkey"] for item in results)
    duplicated = [key for key, n in hashkeys.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} RESULTS hash key(s) written more than once"
    expected = {
        results_hashkey(rid, position): rid
        for rid, request in by_id.items()
        if rid not in failing
        for position in range(request["n_results"])
    }
    found = {item["hashkey"]: item["request_id"] for item in results}
    assert found == expected, (
        f"RESULTS: {len(found)} items, {len(expected)} expected; "
        f"{len(set(found) - set(expected))} unexpected, {len(set(expected) - set(found))} missing"
    )
    assert all(item["s3_uri"] == by_id[item["request_id"]]["s3_uri"] for item in results)

    assert job.counts() == (0, 0), f"request queue not empty: {job.counts()}"
    dead = job.dead_letters()
    expected_dead = [body for body in job.messages if any(r["request_id"] in failing for r in body)]
    dead_ids = sorted(tuple(r["request_id"] for r in body) for body in dead)
    expected_ids = sorted(tuple(r["request_id"] for r in body) for body in expected_dead)
    assert dead_ids == expected_ids, f"dead-letter queue: {dead_ids}, expected {expected_ids}"
