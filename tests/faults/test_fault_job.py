"""A batch job through failure: ``igata submit`` killed mid-listing and resumed, workers
SIGKILLed mid-job, a poison image. At the end every submitted request is accounted for
exactly once: one REQUESTS item, ``completed`` (with its one RESULTS item) or ``error``
(the poison image, dead-lettered and replayable with ``igata replay``); ``igata status``
says done with errors and ``igata export`` exports every result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fault_workers import png, wait_until
from job_helpers import environment, start, worker_args

pytest.importorskip("igata_jobs")

BUCKET = "job-fault-images"
REQUESTS_TABLE = "job-fault-requests"
RESULTS_TABLE = "job-fault-results"
IMAGES = 60
COLLECTION = "fault-job"


def _scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    plain = TypeDeserializer()
    items = []
    for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items += [{k: plain.deserialize(v) for k, v in item.items()} for item in page["Items"]]
    return items


def _cursor_requests(state: Path) -> int:
    """Requests the submit's cursor records as sent (0 before its first write)."""
    for path in state.glob("submit/*.json"):
        try:
            return int(json.loads(path.read_text())["requests"])
        except (ValueError, KeyError):
            return 0
    return 0


def _igata(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "igata_core", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.timeout(120)
def test_job_survives_killed_submit_killed_workers_and_a_poison_image(
    aws: Any, tmp_path: Path
) -> None:
    from igata_dynamodb.layout import Layout
    from igata_dynamodb.records import results_hashkey
    from igata_dynamodb.tables import Capacity, create_tables

    s3, sqs, ddb = aws.client("s3"), aws.client("sqs"), aws.client("dynamodb")
    s3.create_bucket(Bucket=BUCKET)
    keys = [f"photos/img-{i:03d}.png" for i in range(IMAGES - 1)] + ["photos/poison-1.png"]
    for n, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key, Body=png(n * 3))
    dlq = sqs.create_queue(QueueName="job-fault-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    # Kills add at most one receive per message; the poison needs the rest.
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 4})
    queue = sqs.create_queue(QueueName="job-fault-queue", Attributes={
        "VisibilityTimeout": "2", "RedrivePolicy": redrive})["QueueUrl"]  # fmt: skip
    create_tables(ddb, Layout(REQUESTS_TABLE, RESULTS_TABLE), Capacity())
    env = environment(aws, REQUESTS_TABLE, RESULTS_TABLE, queue)
    env["IGATA_STATE_DIR"] = str(tmp_path / "state")
    env["FAULT_SLEEP"] = "0.05"
    submit = ["submit", f"s3://{BUCKET}/photos/", "--collection-id", COLLECTION,
              "--per-message", "2", "--requests-table", REQUESTS_TABLE]  # fmt: skip
    processes = []
    try:
        # 1. A submit killed mid-way (paced so that the kill lands in the middle).
        first = start("submit-1", [*submit, "--rate", "40/s"], env, tmp_path)
        processes.append(first)
        wait_until(lambda: _cursor_requests(tmp_path / "state") >= 16, 30,
                   "a quarter submitted", workers=[first])  # fmt: skip
        first.kill()
        submitted_before = len(_scan(ddb, REQUESTS_TABLE))
        assert submitted_before < IMAGES, "the submit finished before it was killed"

        # 2. Workers start on the partial job; the submit resumes meanwhile.
        workers = [start(f"worker-{n}", worker_args(), env, tmp_path) for n in range(2)]
        processes += workers
        resumed = _igata(submit, env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "resumed after" in resumed.stdout, resumed.stdout

        # 3. A worker SIGKILLed mid-job, and a new one in its place.
        def completed() -> int:
            return sum(1 for i in _scan(ddb, REQUESTS_TABLE) if i.get("state") == "completed")

        wait_until(lambda: completed() >= 12, 60, "some requests completed", workers=workers)
        workers[0].kill()
        replacement = start("worker-2", worker_args(), env, tmp_path)
        processes.append(replacement)
        for worker in (workers[1], replacement):
            assert worker.finish(60) == 0, worker.log()[-3000:]
    finally:
        for process in processes:
            process.kill()

    # Every submitted request exactly once, in its final state.
    items = _scan(ddb, REQUESTS_TABLE)
    assert len(items) == IMAGES
    assert {i["collection_id"] for i in items} == {COLLECTION}
    by_uri = {i["s3_uri"]: i for i in items}
    assert set(by_uri) == {f"s3://{BUCKET}/{key}" for key in keys}
    states = Counter(i["state"] for i in items)
    assert states == {"completed": IMAGES - 1, "error": 1}, states
    assert by_uri[f"s3://{BUCKET}/photos/poison-1.png"]["state"] == "error"
    results = _scan(ddb, RESULTS_TABLE)
    hashkeys = Counter(r["hashkey"] for r in results)
    assert all(n == 1 for n in hashkeys.values())
    assert set(hashkeys) == {results_hashkey(i["request_id"], 0) for i in items
                             if i["state"] == "completed"}  # fmt: skip
    # The queue is empty; the poison message alone is in the dead-letter queue.
    counts = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0)
    bodies = [json.loads(m["Body"]) for m in dead.get("Messages", [])]
    assert len(bodies) == 1 and any("poison" in r["s3_uri"] for r in bodies[0])

    # status: done with errors; export: every result; replay would move the poison back.
    status = _igata(["status", COLLECTION, "--json"], env)
    assert status.returncode == 1, status.stdout + status.stderr
    found = json.loads(status.stdout)
    assert found["states"] == {"queued": 0, "completed": IMAGES - 1, "error": 1}
    assert found["errors"][0]["error"].startswith("predict: ValueError: poisoned image")
    out = tmp_path / "results.jsonl"
    exported = _igata(["export", COLLECTION, "--to", str(out)], env)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert len(out.read_text().splitlines()) == IMAGES - 1
    replay = _igata(["replay", "--from-dlq", dlq, "--to", queue, "--dry-run"], env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "matched 1" in replay.stdout + replay.stderr
