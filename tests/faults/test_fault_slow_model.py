"""Slow and failing models: the heartbeat, SIGTERM in the middle of a batch, a poison message.

* A model slower than the queue's visibility timeout: the heartbeat keeps each message
  invisible while it waits and while it is predicted, so a second worker on the same queue
  never gets it and no request is predicted twice.
* SIGTERM while a batch is being predicted: the batch finishes, is written and acked, the
  messages not yet started are handed back at once, the worker exits 0, and a restart
  completes the rest; nothing lost, nothing predicted twice.
* A poison message (``predict`` raises for one of its requests on every attempt) is retried
  ``maxReceiveCount`` times and then lands in the dead-letter queue, while every other
  message is processed once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fault_workers import Job, Workers, assert_settled, read_calls, wait_until


@pytest.mark.timeout(60)
def test_model_slower_than_the_visibility_timeout_is_not_delivered_twice(
    aws: Any, workers: Workers, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.txt"
    job = Job(aws, visibility=2, max_receive=5, images=3)
    job.add(3, per_message=1)
    env = {"FAULT_SLEEP": "3", "FAULT_CALLS": str(calls)}
    args = ["--batch-size", "1", "--concurrency", "1", "--prefetch", "1"]
    # Two workers on one queue: a lapsed lease would hand the message to the other one.
    pair = [workers.start(job.queue_url, env=env, args=args) for _ in range(2)]
    codes = [worker.finish(timeout=45) for worker in pair]
    logs = "\n".join(f"--- {w.name}:\n{w.log()[-3000:]}" for w in pair)
    assert codes == [0, 0], logs

    predicted = Counter(request_id for _, _, request_id in read_calls(calls))
    assert predicted == {r["request_id"]: 1 for r in job.requests}, logs
    assert "delivered again" not in logs and "refused" not in logs, logs
    assert_settled(job)


@pytest.mark.timeout(60)
def test_sigterm_during_a_batch_finishes_it_and_hands_back_the_rest(
    aws: Any, workers: Workers, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.txt"
    # A long visibility timeout: a message neither deleted nor handed back would stay
    # invisible long after the worker exits.
    job = Job(aws, visibility=30, max_receive=5, images=5)
    job.add(20, per_message=1)
    args = ["--batch-size", "4", "--concurrency", "2", "--prefetch", "4"]
    env = {"FAULT_SLEEP": "0.4", "FAULT_CALLS": str(calls)}
    worker = workers.start(job.queue_url, predictor="BatchDetector", env=env, args=args)
    wait_until(lambda: read_calls(calls), 20, "the first batch to start", workers=[worker],
               interval=0.02)  # fmt: skip
    worker.terminate()
    code = worker.finish(timeout=20)
    log = worker.log()
    assert code == 0, log[-4000:]

    events = read_calls(calls)
    started = {rid for _, event, rid in events if event == "batch-start"}
    ended = {rid for _, event, rid in events if event == "batch-end"}
    assert started and started == ended, f"a batch was cut short: {events}"
    assert job.completed() == ended, "every finished batch is written, nothing else"
    # Finished messages are deleted; the others are visible again at once, none in flight.
    assert job.counts() == (len(job.requests) - len(ended), 0), log[-4000:]
    assert "handed back" in log, log[-4000:]

    restart = workers.start(job.queue_url, predictor="BatchDetector",
                            env={**env, "FAULT_SLEEP": "0"}, args=args)  # fmt: skip
    assert restart.finish(timeout=30) == 0, restart.log()[-4000:]
    assert_settled(job)
    ends = Counter(rid for _, event, rid in read_calls(calls) if event == "batch-end")
    assert ends == {r["request_id"]: 1 for r in job.requests}, "each request predicted once"


@pytest.mark.timeout(60)
def test_poison_message_goes_to_the_dead_letter_queue_and_the_others_go_on(
    aws: Any, workers: Workers, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.txt"
    max_receive = 3
    job = Job(aws, visibility=2, max_receive=max_receive, images=10)
    # Message 10 holds requests 30, 31 and 32; request 31 crashes predict every time.
    job.add(60, per_message=3, poison=[31])
    poison, neighbours = "req-00031", {"req-00030", "req-00032"}
    worker = workers.start(job.queue_url, env={"FAULT_CALLS": str(calls)},
                           args=["--batch-size", "4"])  # fmt: skip
    assert worker.finish(timeout=40) == 0, worker.log()[-4000:]

    summary = worker.summary()
    assert summary["failed"] == max_receive, summary
    assert_settled(job, failing={poison})
    predicted = Counter(request_id for _, _, request_id in read_calls(calls))
    # The whole message is retried: its good requests too (rewritten under the same keys).
    assert predicted[poison] == max_receive, predicted
    assert all(predicted[rid] == max_receive for rid in neighbours), predicted
    others = {rid: n for rid, n in predicted.items() if rid != poison and rid not in neighbours}
    assert others == {r["request_id"]: 1 for r in job.requests if r["request_id"] not in
                      {poison, *neighbours}}  # fmt: skip

    item = job.request_items()[poison]
    assert item["attempt"] == max_receive, item
    assert '"final": true' in item["errors"] and "poisoned request" in item["errors"], item
    assert "failed on its final attempt" in worker.log()
