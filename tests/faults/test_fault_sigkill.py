"""SIGKILL of a worker at random points of a run, then a restart.

A node dying takes the worker with it: no signal handler, no flush, no hand-back. Whatever
the moment (receiving, loading, predicting, between a DynamoDB write and the SQS delete),
nothing may be lost and nothing duplicated: every request ends ``completed`` or ``error``
exactly once, RESULTS holds each completed request's items once, and only the messages
that always fail reach the dead-letter queue.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from fault_workers import Job, Workers, assert_settled

REQUESTS = 300
KILLS = 3
# Poison messages need every receive SQS allows; kills add at most one receive per message.
MAX_RECEIVE = KILLS + 2
WORKER_ARGS = ["--batch-size", "8", "--concurrency", "4"]
ENV = {"FAULT_SLEEP": "0.03"}  # 300 requests take >= 9 s of predict: the kills come mid-run


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", [11, 2024])
def test_sigkill_at_random_points_then_restart_loses_and_duplicates_nothing(
    aws: Any, workers: Workers, seed: int
) -> None:
    rng = random.Random(seed)
    job = Job(aws, visibility=2, max_receive=MAX_RECEIVE, images=20)
    poison = sorted(rng.sample(range(REQUESTS), 3))
    job.add(REQUESTS, poison=poison)
    failing = {job.requests[i]["request_id"] for i in poison}

    kill_points = []
    for _ in range(KILLS):
        worker = workers.start(job.queue_url, args=WORKER_ARGS, env=ENV)
        worker.wait_for_log("reading queue")
        pause = rng.uniform(0.2, 2.5)
        time.sleep(pause)
        assert worker.process.poll() is None, worker.log()[-3000:]
        worker.kill()
        done = len(job.completed())
        kill_points.append((round(pause, 2), done))
        assert done < REQUESTS - len(failing), f"kill after the run ended: {kill_points}"

    # The restart: the killed workers' messages reappear within one visibility timeout.
    last = workers.start(job.queue_url, args=WORKER_ARGS, env={"FAULT_SLEEP": "0"})
    code = last.finish(timeout=60)
    assert code == 0, last.log()[-4000:]
    # Kill points (seconds after start-up, requests completed by then) for failure reports.
    assert last.summary()["succeeded"] > 0, f"the restart found nothing to do: {kill_points}"

    assert_settled(job, failing=failing)
    items = job.request_items()
    for request_id in failing:
        errors = items[request_id]["errors"]
        assert "poisoned request" in errors and '"stage": "predict"' in errors, errors
