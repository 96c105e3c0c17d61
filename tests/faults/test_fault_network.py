"""The network to AWS fails while a worker runs (a fault-injecting TCP proxy in between).

Short outages (refused, reset, slow, black-holed connections for ~2 s) must be ridden out:
the worker retries with backoff, acknowledges nothing it has not written, and finishes with
every request completed exactly once. A long outage must end the run with exit code 3 and
a clear error, leaving every unwritten message in the queue, with its receive count intact
(not one moved towards the dead-letter queue).

Whole-endpoint outages put the proxy in front of every service (``AWS_ENDPOINT_URL``);
single-service outages (``AWS_ENDPOINT_URL_DYNAMODB``, ``_S3``, ``_SQS``) leave the others
reachable, so a worker that mistook an outage for a bad record would visibly record it as
failed, nack it and push it towards the dead-letter queue. A relay that cuts S3 responses
in the middle of their bodies (:mod:`cut_proxy`) checks the one fault whose timing the TCP
proxy cannot choose.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from cut_proxy import BodyCutProxy
from fault_workers import Job, Worker, Workers, assert_settled, wait_until

from igata_core.testing.proxy import FaultProxy

REQUESTS = 80
# Enough for a lapsed lease or two; burnt receive counts are checked separately.
MAX_RECEIVE = 4
ENV = {
    "FAULT_SLEEP": "0.04",
    # The S3 loader's client options: a dead endpoint is noticed within seconds.
    "IGATA_S3_CONNECT_TIMEOUT": "1",
    "IGATA_S3_READ_TIMEOUT": "1",
    "IGATA_S3_MAX_ATTEMPTS": "2",
}
ARGS = ["--batch-size", "4", "--concurrency", "4"]
#: A short outage must not exhaust any budget.
PATIENT = ["--sink-retry-budget", "30", "--load-retry-budget", "30",
           "--source-opt", "unavailable_after=30"]  # fmt: skip
#: A long outage must exhaust them.
IMPATIENT = ["--sink-retry-budget", "2", "--load-retry-budget", "2",
             "--source-opt", "unavailable_after=2"]  # fmt: skip
UNAVAILABLE = re.compile(
    r"ERROR\s+igata\.pipeline: (sink 'dynamodb' stayed unavailable for 2 s|source 'sqs' "
    r"unavailable|input unavailable for 2 s)"
)


def through(proxy: FaultProxy, *services: str) -> dict[str, str]:
    """Worker environment sending ``services`` (default: all) through the proxy."""
    if not services:
        return {"AWS_ENDPOINT_URL": proxy.url}
    return {f"AWS_ENDPOINT_URL_{service.upper()}": proxy.url for service in services}


def start(workers: Workers, queue_url: str, env: dict[str, str], args: list[str]) -> Worker:
    return workers.start(queue_url, env={**ENV, **env}, args=[*ARGS, *args])


def mid_run(job: Job, worker: Worker, done: int = 16) -> None:
    """Wait until ``done`` requests are completed: the fault then hits a running worker."""
    wait_until(lambda: len(job.completed()) >= done, 30, f"{done} requests done",
               workers=[worker], interval=0.2)  # fmt: skip


def assert_intact(job: Job) -> None:
    """After a worker gave up: nothing failed, nothing dead-lettered, nothing deleted
    unwritten, no receive count burnt. The messages still queued are received by this
    check and visible again 3 s later."""
    states = job.states()
    assert set(states) <= {"completed"}, f"an outage was recorded as a request failure: {states}"
    assert job.counts(job.dlq_url) == (0, 0), "an outage pushed messages to the dead-letter queue"
    # The worker is gone: its leases lapse within one visibility timeout.
    wait_until(lambda: job.counts()[1] == 0, 10, "the stopped worker's messages to reappear")
    queued = job.receive_all(job.queue_url, hide=3)
    completed = job.completed()
    held = {tuple(r["request_id"] for r in json.loads(m["Body"])) for m in queued}
    for body in job.messages:
        ids = tuple(r["request_id"] for r in body)
        if ids not in held:
            unwritten = [rid for rid in ids if rid not in completed]
            assert not unwritten, f"message deleted before its requests were written: {unwritten}"
    counts = sorted(int(m["Attributes"]["ApproximateReceiveCount"]) for m in queued)
    # At most one receive by the worker and one by this check.
    assert all(count <= 2 for count in counts), f"receive counts burnt by the outage: {counts}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["refuse", "reset", "delay", "blackhole"])
def test_short_outage_is_ridden_out(
    aws: Any, workers: Workers, fault_proxy: FaultProxy, mode: str
) -> None:
    job = Job(aws, visibility=2, max_receive=MAX_RECEIVE, images=20)
    job.add(REQUESTS)
    worker = start(workers, job.via(fault_proxy.url), through(fault_proxy), PATIENT)
    mid_run(job, worker)
    fault_proxy.set_mode(mode, delay=0.3)
    time.sleep(2.0)
    fault_proxy.mode = "pass"
    during = len(job.completed())
    assert during < REQUESTS, "the outage came after the run: make the run longer"

    code = worker.finish(timeout=45)
    log = worker.log()
    assert code == 0, log[-4000:]
    assert worker.summary()["failed"] == 0, log[-4000:]
    if mode in ("refuse", "reset"):
        # The outage outlasted botocore's own retries: igata's retries had to ride it out.
        # (A black hole only holds calls until the connections close; botocore retries them.)
        assert re.search(r"retrying|pausing intake", log), log[-4000:]
    assert_settled(job)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["refuse", "reset"])
def test_long_outage_exits_3_and_leaves_the_messages_intact(
    aws: Any, workers: Workers, fault_proxy: FaultProxy, mode: str
) -> None:
    job = Job(aws, visibility=2, max_receive=MAX_RECEIVE, images=20)
    job.add(REQUESTS)
    worker = start(workers, job.via(fault_proxy.url), through(fault_proxy), IMPATIENT)
    mid_run(job, worker)
    fault_proxy.mode = mode
    code = worker.finish(timeout=45)
    log = worker.log()
    assert code == 3, log[-4000:]
    assert UNAVAILABLE.search(log), log[-4000:]
    assert "exit 3:" in log, log[-4000:]
    fault_proxy.mode = "pass"
    assert len(job.completed()) < REQUESTS, "the outage came after the run"
    assert_intact(job)

    # The network is back: a new worker (straight to the endpoint) finishes the job.
    restart = workers.start(job.queue_url, env={**ENV, "FAULT_SLEEP": "0"}, args=ARGS)
    assert restart.finish(timeout=45) == 0, restart.log()[-4000:]
    assert_settled(job)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("service", "mode"),
    [("dynamodb", "refuse"), ("s3", "refuse"), ("s3", "blackhole"), ("sqs", "refuse")],
)
def test_one_service_down_exits_3_without_failing_or_nacking_anything(
    aws: Any, workers: Workers, fault_proxy: FaultProxy, service: str, mode: str
) -> None:
    """The other services stay reachable: a worker that took the outage for a bad record
    would write ``error`` states and nack, and its messages would cycle to the DLQ."""
    job = Job(aws, visibility=2, max_receive=MAX_RECEIVE, images=20)
    job.add(REQUESTS)
    worker = start(workers, job.queue_url, through(fault_proxy, service), IMPATIENT)
    mid_run(job, worker)
    fault_proxy.mode = mode
    code = worker.finish(timeout=45)
    log = worker.log()
    assert code == 3, log[-4000:]
    expected = {
        "dynamodb": "sink 'dynamodb' stayed unavailable",
        "s3": "input unavailable",
        "sqs": "source 'sqs' unavailable",
    }[service]
    assert re.search(rf"ERROR\s+igata\.pipeline: {expected}", log), log[-4000:]
    summary = worker.summary()
    assert summary["failed"] == 0, log[-4000:]
    fault_proxy.mode = "pass"
    if service == "sqs":
        # The queue going away stops intake, but what was taken is finished and written
        # (the deletes fail: those messages come back and are rewritten in place).
        assert summary["written"] == summary["read"] > 0, summary
    else:
        assert len(job.completed()) < REQUESTS, "the outage came after the run"
    assert_intact(job)

    restart = workers.start(job.queue_url, env={**ENV, "FAULT_SLEEP": "0"}, args=ARGS)
    assert restart.finish(timeout=45) == 0, restart.log()[-4000:]
    assert_settled(job)


@pytest.mark.timeout(60)
def test_s3_downloads_broken_mid_body_are_retried_not_failed(aws: Any, workers: Workers) -> None:
    """A connection that drops while an object's body is read is the network's trouble, like
    one that drops before the response: the load is retried, the record does not fail (which
    would nack its message and burn a receive towards the dead-letter queue)."""
    job = Job(aws, visibility=2, max_receive=MAX_RECEIVE, images=20)
    job.add(REQUESTS)
    endpoint = urlsplit(aws.url)
    assert endpoint.hostname and endpoint.port
    with BodyCutProxy(endpoint.hostname, endpoint.port) as cutter:
        worker = start(workers, job.queue_url, {"AWS_ENDPOINT_URL_S3": cutter.url}, PATIENT)
        mid_run(job, worker)
        cutter.cutting = True
        wait_until(lambda: cutter.cuts, 10, "a download cut short", workers=[worker])
        time.sleep(1.0)
        cutter.cutting = False
        code = worker.finish(timeout=45)
    log = worker.log()
    assert code == 0, log[-4000:]
    failed = [line for line in log.splitlines() if "failed at load" in line]
    assert not failed, "broken downloads failed their records:\n" + "\n".join(failed[:5])
    assert_settled(job)
