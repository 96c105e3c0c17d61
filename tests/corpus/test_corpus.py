"""Every hostile input of the corpus (cases.py) through a real ``igata run`` SQS worker, into
the ``sqs`` sink and into the ``dynamodb`` sink: each case ends as its table says, the other
cases are not disturbed, nothing is lost, and the worker exits 0."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from cases import BUCKET, CASES, FAILED, Case
from conformance_world import REQUESTS_TABLE, RESULTS_TABLE, World, jpeg

MAX_RECEIVE = 2


def enqueue(world: World) -> dict[str, Case]:
    """Upload the cases' objects, send one message per case; message id -> case."""
    world.input_queue(max_receive=MAX_RECEIVE)
    for case in CASES:
        if case.name != "uri-missing-object":
            world.s3.put_object(Bucket=BUCKET, Key=case.key, Body=jpeg())
    sent = {}
    for case in CASES:
        message_id = world.sqs.send_message(
            QueueUrl=world.queue_url, MessageBody=case.message_body()
        )["MessageId"]
        sent[message_id] = case
    return sent


def errors_by_case(errors: list[dict[str, Any]], sent: dict[str, Case]) -> dict[str, set[str]]:
    """The stages of the error outcomes of each case."""
    by_uri = {case.uri(): case for case in sent.values()}
    stages: dict[str, set[str]] = defaultdict(set)
    for error in errors:
        source = error["input"]
        case = sent.get(source.removeprefix("sqs:")) or by_uri.get(source)
        assert case is not None, f"an error outcome of no case: {error}"
        stages[case.name].add(error["stage"])
    return stages


def check_failures(world: World, sent: dict[str, Case], sink: str, worker: Any) -> set[str]:
    """Failed cases: the right stage, dead-lettered once; returns the delivered cases' names."""
    assert worker.code == 0, worker.log[-4000:]
    stages = errors_by_case(worker.errors, sent)
    dead = {m["MessageId"] for m in world.queues.drain(world.dead_letter_url)}
    assert world.queues.counts(world.queue_url) == (0, 0), "every message settled"
    problems = []
    delivered = set()
    for message_id, case in sent.items():
        outcome = getattr(case, sink)
        if outcome in FAILED:
            if stages.get(case.name) != {FAILED[outcome]}:
                problems.append(f"{case.name}: expected stage {FAILED[outcome]!r}, got "
                                f"{sorted(stages.get(case.name, ()))}")  # fmt: skip
            if message_id not in dead:
                problems.append(f"{case.name}: not dead-lettered")
        else:
            if case.name in stages:
                problems.append(f"{case.name}: expected {outcome}, got errors at "
                                f"{sorted(stages[case.name])}")  # fmt: skip
            if message_id in dead:
                problems.append(f"{case.name}: dead-lettered")
            if outcome == "delivered":
                delivered.add(case.name)
    assert not problems, "\n".join(problems)
    return delivered


def test_the_corpus_through_the_sqs_sink(world: World) -> None:
    sent = enqueue(world)
    out = world.queues.create("corpus-results")
    worker = world.run("--sink-opt", f"queue_url={out}", predictor="conformance_predictors:Echo")
    delivered = check_failures(world, sent, "sqs", worker)
    bodies = [json.loads(message["Body"]) for message in world.queues.drain(out)]
    image_ids = [body["image_id"] for body in bodies]
    expected = sorted(case.image_id for case in CASES if case.name in delivered)
    assert sorted(image_ids) == expected, "each delivered case once, and nothing else"
    by_image = {body["image_id"]: body for body in bodies}
    for case in CASES:
        if case.name in delivered and "request_id" in case.fields:
            assert by_image[case.image_id]["request_id"] == case.fields["request_id"]
        if case.name in delivered and "value" in case.fields:
            assert by_image[case.image_id]["result"][0]["value"] == pytest.approx(
                case.fields["value"], rel=1e-12
            )


def test_the_corpus_through_the_dynamodb_sink(world: World) -> None:
    sent = enqueue(world)
    world.tables()
    worker = world.run(sink="dynamodb", predictor="conformance_predictors:Echo")
    delivered = check_failures(world, sent, "dynamodb", worker)
    requests = {
        item["request_id"]["S"]: item
        for item in world.scan(REQUESTS_TABLE)
        if item.get("state", {}).get("S") == "completed"
    }
    # The identity: the request id, or the image id when the request id is empty.
    expected = {
        case.fields.get("request_id", f"request:{case.name}") or case.image_id
        for case in CASES
        if case.name in delivered
    }
    assert set(requests) == expected
    results = world.scan(RESULTS_TABLE)
    assert sorted(item["request_id"]["S"] for item in results) == sorted(expected), (
        "one RESULTS item per delivered request"
    )
    for item in results:
        if item["request_id"]["S"] == "request:number-tiny":
            assert item["value"]["N"] in ("0", "0E-6", "0.000000")
