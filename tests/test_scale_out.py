"""Scale-out: N identical SQS workers on one queue, as DESIGN.md's "Scale" section says.

4 worker processes share 2,000 image requests (10 per message, 50 distinct PNGs on S3) and
write to DynamoDB. Every request must end with exactly one ``completed`` outcome and its
RESULTS items, nothing duplicated, and both queues empty.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

FAULTS_DIR = Path(__file__).parent / "faults"
if str(FAULTS_DIR) not in sys.path:
    sys.path.insert(0, str(FAULTS_DIR))
pytest.register_assert_rewrite("fault_workers")

from fault_workers import Job, Workers, assert_settled  # noqa: E402

REQUESTS = 2000
WORKERS = 4


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_four_workers_share_a_queue_and_answer_every_request_once(aws: Any, tmp_path: Path) -> None:
    job = Job(aws, visibility=2, max_receive=5, images=50)
    job.add(REQUESTS)
    assert len(job.messages) == REQUESTS // 10

    pool = Workers(aws, tmp_path)
    try:
        started = time.monotonic()
        workers = [
            pool.start(job.queue_url, args=["--batch-size", "16", "--chunk-size", "25"])
            for _ in range(WORKERS)
        ]
        codes = [worker.finish(timeout=100) for worker in workers]
        elapsed = time.monotonic() - started
    finally:
        pool.close()
    logs = "\n".join(f"--- {w.name}:\n{w.log()[-2000:]}" for w in workers)
    assert codes == [0] * WORKERS, logs

    summaries = [worker.summary() for worker in workers]
    # Every worker took a share: SQS is the work queue, not one worker with three idle.
    assert all(s["succeeded"] > 0 for s in summaries), summaries
    assert sum(s["failed"] for s in summaries) == 0, summaries
    # At-least-once: a request may be processed twice (a lapsed lease), never zero times.
    assert sum(s["succeeded"] for s in summaries) >= REQUESTS, summaries

    assert_settled(job)
    assert job.states() == {"completed": REQUESTS}
    print(f"{REQUESTS} requests, {WORKERS} workers: {elapsed:.1f} s; {summaries}")
