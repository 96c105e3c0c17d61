"""What a strict AWS refuses, end to end through ``igata run`` workers: a poison request fails
alone, a refused configuration exits 2 at once, a fatal error in user code ends the worker.

Run on moto by ``nox -s tests`` and on LocalStack's SQS and dynalite by
``nox -s aws-conformance``: a guarantee that held only on moto would be no guarantee.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conformance_world import REQUESTS_TABLE, RESULTS_TABLE, World

#: Request ids that SQS will not carry as a message-attribute value.
HOSTILE_IDS = {
    "fffe": "bad-\ufffe-id",
    "nul": "nul-\x00-id",
    "surrogate": "lone-\ud800-id",
    "empty": "",
}


def request(world: World, request_id: str, key: str) -> dict[str, Any]:
    return {
        "collection_id": "conformance:1",
        "image_id": f"image:{key}",
        "request_id": request_id,
        "s3_uri": world.image(f"{key}.jpg"),
    }


def test_ids_sqs_cannot_carry_are_delivered_in_the_body(world: World) -> None:
    """An id that SQS refuses as a message attribute must not fail its request, let alone
    stop the worker: it travels in the body (JSON-escaped), every request once."""
    world.input_queue()
    out = world.queues.create("conformance-results")
    sent = {"ok": "plain-id", **HOSTILE_IDS}
    for key, request_id in sent.items():
        world.send([request(world, request_id, key)])
    worker = world.run("--sink-opt", f"queue_url={out}")
    assert worker.code == 0, worker.log[-3000:]
    assert worker.errors == []
    bodies = [json.loads(message["Body"]) for message in world.queues.drain(out)]
    by_image = {body["image_id"]: body for body in bodies}
    assert sorted(by_image) == sorted(f"image:{key}" for key in sent)
    assert len(bodies) == len(sent), "each request delivered once"
    for key, request_id in sent.items():
        assert by_image[f"image:{key}"]["request_id"] == request_id
    assert world.queues.counts(world.dead_letter_url) == (0, 0)


def test_a_request_the_store_refuses_fails_alone_and_is_dead_lettered(world: World) -> None:
    """A request id that DynamoDB cannot store (a lone surrogate is no Unicode text) is that
    request's error: recorded, retried, dead-lettered; the other requests are written once
    and the worker exits 0."""
    world.input_queue(max_receive=2)
    world.tables()
    good = [request(world, f"good-{i}", f"good-{i}") for i in range(4)]
    for item in good:
        world.send([item])
    poison_message = world.send([request(world, HOSTILE_IDS["surrogate"], "poison")])
    worker = world.run(sink="dynamodb")
    assert worker.code == 0, worker.log[-3000:]
    assert worker.errors, "the refused request's error is recorded"
    assert {error["stage"] for error in worker.errors} == {"sink"}
    assert all(error["identity"] == HOSTILE_IDS["surrogate"] for error in worker.errors)
    assert worker.errors[-1]["final"] is True
    dead = world.queues.drain(world.dead_letter_url)
    assert [message["MessageId"] for message in dead] == [poison_message]
    assert world.queues.counts(world.queue_url) == (0, 0)
    requests = {item["request_id"]["S"]: item for item in world.scan(REQUESTS_TABLE)}
    assert sorted(requests) == sorted(item["request_id"] for item in good)
    assert {item["state"]["S"] for item in requests.values()} == {"completed"}
    results = world.scan(RESULTS_TABLE)
    assert sorted(item["request_id"]["S"] for item in results) == sorted(requests)


def _missing_table(world: World) -> tuple[list[str], str]:
    world.results_table()  # REQUESTS is missing
    return ["--sink", "dynamodb"], REQUESTS_TABLE


def _table_keyed_otherwise(world: World) -> tuple[list[str], str]:
    world.tables(requests_key="job_id")
    return ["--sink", "dynamodb"], REQUESTS_TABLE


def _missing_output_queue(world: World) -> tuple[list[str], str]:
    missing = world.queue_url.replace("conformance-requests", "no-such-output-queue")
    return ["--sink", "sqs", "--sink-opt", f"queue_url={missing}"], "no-such-output-queue"


def _missing_input_queue(world: World) -> tuple[list[str], str]:
    out = world.queues.create("conformance-results")
    missing = world.queue_url.replace("conformance-requests", "no-such-input-queue")
    return [
        "--sink", "sqs", "--sink-opt", f"queue_url={out}", "--source-opt", f"queue_url={missing}",
    ], "no-such-input-queue"  # fmt: skip


@pytest.mark.parametrize(
    "refusal",
    [_missing_table, _table_keyed_otherwise, _missing_output_queue, _missing_input_queue],
    ids=["missing-table", "table-keyed-otherwise", "missing-output-queue", "missing-input-queue"],
)
def test_a_refused_configuration_exits_2_at_once_and_keeps_the_message(
    world: World, refusal: Any
) -> None:
    world.input_queue()
    world.send([request(world, "req-1", "one")])
    args, resource = refusal(world)
    sink = args[1]
    worker = world.run(*args[2:], sink=sink, timeout=60)
    assert worker.code == 2, worker.log[-3000:]
    assert worker.seconds < 20, f"exit 2 took {worker.seconds:.1f} s: refusals are not outages"
    assert resource in worker.log, "the message names the resource"
    visible, in_flight = world.queues.counts(world.queue_url)
    assert visible + in_flight == 1, "the input message is still in its queue"
    assert world.queues.counts(world.dead_letter_url) == (0, 0)


def test_sys_exit_in_the_predictor_stops_the_worker_and_hands_back_its_messages(
    world: World, tmp_path: Any
) -> None:
    """A predictor calling ``sys.exit()`` mid-run: the worker exits non-zero within 30 s,
    what it wrote is settled, and every unwritten message is back in the queue at once
    (not after the 30 s visibility timeout)."""
    world.input_queue(visibility=30, max_receive=5)
    out = world.queues.create("conformance-results")
    total = 12
    for i in range(total):
        world.send([request(world, f"req-{i}", f"img-{i}")])
    seen = tmp_path / "seen.txt"
    worker = world.run(
        "--sink-opt", f"queue_url={out}", "--batch-size", "1", "--chunk-size", "1",
        predictor="conformance_predictors:ExitMidRun", timeout=60,
        CONFORMANCE_EXIT_AFTER="3", CONFORMANCE_SEEN=str(seen),
    )  # fmt: skip
    assert worker.code not in (0, 1), worker.log[-3000:]
    assert worker.code == 4
    assert worker.seconds < 30
    assert "fatal error in predictor ExitMidRun: SystemExit: the model gave up" in worker.log
    written = [json.loads(m["Body"])["request_id"] for m in world.queues.drain(out)]
    assert len(written) <= 3 and len(set(written)) == len(written)
    # The unwritten messages are handed back: visible again well before their 30 s lapse.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        visible, in_flight = world.queues.counts(world.queue_url)
        if visible == total - len(written):
            break
        time.sleep(0.2)
    assert (visible, in_flight) == (total - len(written), 0)
    assert world.queues.counts(world.dead_letter_url) == (0, 0)
