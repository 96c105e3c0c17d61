"""Worker processes: the original README's commands, SIGKILL and SIGTERM, a sink outage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
IGATA = str(Path(sys.executable).parent / "igata")


@pytest.fixture
def worker(aws, tmp_path):
    """``worker(args, **env)``: start ``args`` with the local AWS environment; killed after."""
    started = []

    def start(args, **env):
        environ = {**os.environ, **aws.env(), "PYTHONPATH": str(TESTS), **env}
        log = tmp_path / f"worker-{len(started)}.log"
        process = subprocess.Popen(
            args, env=environ, stdout=subprocess.PIPE, stderr=log.open("w"), text=True
        )
        process.log = log
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def finish(process, timeout=30):
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"worker did not finish in {timeout} s:\n{process.log.read_text()[-3000:]}")
    return process.returncode, out, process.log.read_text()


def sqs_worker(url, out, *extra, predictor="sqs_predictors:Slow"):
    return [
        IGATA, "run", "--source", "sqs", "--sink", "sqs", "--predictor", predictor,
        "--source-opt", f"queue_url={url}", "--source-opt", "wait_time_seconds=1",
        "--sink-opt", f"queue_url={out}", "--flush-interval", "0.2", *extra,
    ]  # fmt: skip


@pytest.fixture
def readme_setup(aws, queues, jpeg):
    """The original README's example objects: test-bucket, its JPEG, test-queue."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="test-bucket")
    s3.put_object(Bucket="test-bucket", Key="720503_273_2014960_tn.jpg", Body=jpeg(12, 9))
    return queues.create("test-queue")


@pytest.mark.parametrize(
    "command",
    [[IGATA, "run"], [sys.executable, "-m", "igata.cli"]],
    ids=["igata run", "python -m igata.cli"],
)
def test_original_readme_example(command, readme_setup, queues, worker):
    process = worker(
        [*command, "s3://test-bucket/720503_273_2014960_tn.jpg"],
        PREDICTOR_MODULE="sqs_predictors",
        PREDICTOR_CLASS_NAME="Shape",
        OUTPUT_CTXMGR_SQS_QUEUE_URL=readme_setup,
    )
    code, _, log = finish(process)
    assert code == 0, log
    (record,) = queues.results(readme_setup)
    assert record["shape"] == [9, 12, 3]
    assert record["igata_input"] == "s3://test-bucket/720503_273_2014960_tn.jpg"


def test_original_sqs_worker_variables_and_endpoints(
    aws, queues, images, requests_for, worker, closed_port_url
):
    url, out = queues.create(), queues.create("results")
    queues.send(url, requests_for(images(3)))
    process = worker(
        [sys.executable, "-m", "igata.cli"],
        # The original's endpoint variables win over AWS_ENDPOINT_URL (pointed nowhere here).
        AWS_ENDPOINT_URL=closed_port_url, S3_ENDPOINT=aws.url, SQS_ENDPOINT=aws.url,
        PREDICTOR_MODULE="sqs_predictors", PREDICTOR_CLASS_NAME="Shape",
        INPUT_CONTEXT_MANAGER="SQSMessageS3InputImageCtxManager",
        INPUT_CTXMANAGER_SQS_QUEUE_URL=url,
        OUTPUT_CONTEXT_MANAGER="SQSRecordOutputCtxManager",
        OUTPUT_CTXMGR_SQS_QUEUE_URL=out,
        SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION="0",
        INPUT_CTXMGR_IDLE_TIMEOUT="1", INPUT_CTXMGR_WAIT_TIME_SECONDS="1",
    )  # fmt: skip
    code, _, log = finish(process)
    assert code == 0, log
    assert sorted(r["igata_id"] for r in queues.results(out)) == [
        "images:0",
        "images:1",
        "images:2",
    ]
    assert queues.counts(url) == (0, 0)


def test_sigkill_mid_run_loses_nothing(queues, images, requests_for, worker):
    url, out = queues.create(visibility=2), queues.create("results")
    requests = requests_for(images(30))
    for i in range(0, 30, 2):
        queues.send(url, requests[i : i + 2])
    first = worker(sqs_worker(url, out, "--batch-size", "1", "--concurrency", "1"),
                   SQS_TEST_SLEEP="0.1")  # fmt: skip
    deadline = time.monotonic() + 20
    while queues.counts(out)[0] < 4:
        assert time.monotonic() < deadline, first.log.read_text()[-3000:]
        assert first.poll() is None, first.log.read_text()[-3000:]
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert queues.counts(url) != (0, 0), "killed mid-run: some messages were still unfinished"
    second = worker(sqs_worker(url, out, "--source-opt", "idle_timeout=2"), SQS_TEST_SLEEP="0")
    code, _, log = finish(second, timeout=60)
    assert code == 0, log
    ids = [r["igata_id"] for r in queues.results(out)]
    assert sorted(set(ids)) == sorted(r["image_id"] for r in requests), "every request answered"
    assert queues.counts(url) == (0, 0), "the input queue ends empty"


def test_sigterm_drains_and_hands_back(queues, images, requests_for, worker):
    url, out = queues.create(visibility=30), queues.create("results")
    for request in requests_for(images(12)):
        queues.send(url, [request])
    process = worker(
        sqs_worker(url, out, "--batch-size", "1", "--concurrency", "1", "--prefetch", "1"),
        SQS_TEST_SLEEP="0.3",
    )
    deadline = time.monotonic() + 20
    while queues.counts(out)[0] < 1:
        assert time.monotonic() < deadline and process.poll() is None, process.log.read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    code, _, log = finish(process, timeout=10)
    assert code == 0, log
    written = [r["igata_id"] for r in queues.results(out)]
    assert len(written) == len(set(written)) < 12
    # Finished messages were deleted; the others are visible again at once, none in flight.
    assert queues.counts(url) == (12 - len(written), 0), log


def test_sigterm_during_a_long_poll_exits_promptly(queues, worker):
    url, out = queues.create(), queues.create("results")
    process = worker(sqs_worker(url, out, "--source-opt", "wait_time_seconds=20"))
    deadline = time.monotonic() + 15
    while "reading queue" not in process.log.read_text():
        assert time.monotonic() < deadline and process.poll() is None, process.log.read_text()
        time.sleep(0.05)
    time.sleep(0.5)  # inside the long poll now
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, _, log = finish(process, timeout=10)
    assert code == 0, log
    assert time.monotonic() - started < 3, "a 20 s long poll must not delay the stop"


def test_sink_outage_exits_3_and_leaves_input_alone(
    queues, images, requests_for, worker, closed_port_url
):
    url, out = queues.create(visibility=2, max_receive=2), queues.create("results")
    for request in requests_for(images(3)):
        queues.send(url, [request])
    process = worker(sqs_worker(
        url, out, "--sink-opt", f"endpoint_url={closed_port_url}", "--sink-retry-budget", "2",
    ), SQS_TEST_SLEEP="0")  # fmt: skip
    code, _, log = finish(process)
    assert code == 3, log
    assert "stayed unavailable" in log
    assert sum(queues.counts(url)) == 3, "no input message deleted"
    queues.wait_for(url, visible=3, timeout=4)
    back = queues.drain(url)
    assert sorted(int(m["Attributes"]["ApproximateReceiveCount"]) for m in back) == [2, 2, 2]
    assert queues.drain(queues.dead_letter[url]) == []


# -- configuration refused and fatal errors: exit at once ------------------------------------------


def test_missing_output_queue_exits_2_within_seconds(queues, images, requests_for, worker):
    url = queues.create(visibility=30)
    for request in requests_for(images(2)):
        queues.send(url, [request])
    missing = url.replace("/requests", "/no-such-results")
    started = time.monotonic()
    code, _, log = finish(worker(sqs_worker(url, missing), SQS_TEST_SLEEP="0"), timeout=20)
    assert code == 2, log
    assert time.monotonic() - started < 10, "no minute of retries for a missing queue"
    assert "no-such-results" in log and "does not exist" in log, log
    assert sum(queues.counts(url)) == 2, "no input message deleted"


def test_missing_input_queue_exits_2_within_seconds_consuming_nothing(queues, worker):
    out = queues.create("results")
    missing = out.replace("/results", "/no-such-requests")
    started = time.monotonic()
    code, _, log = finish(worker(sqs_worker(missing, out)), timeout=20)
    assert code == 2, log
    assert time.monotonic() - started < 10
    assert "no-such-requests" in log and "does not exist" in log, log
    assert queues.counts(out) == (0, 0), "nothing consumed, nothing written"


def test_fatal_error_exits_4_and_hands_messages_back_at_once(queues, images, requests_for, worker):
    url, out = queues.create(visibility=30, max_receive=3), queues.create("results")
    requests = requests_for(images(6))
    requests[0]["poison"] = True
    for request in requests:
        queues.send(url, [request])
    started = time.monotonic()
    process = worker(
        sqs_worker(url, out, "--batch-size", "1", "--concurrency", "1",
                   predictor="sqs_predictors:FatalPoison"),
        SQS_TEST_SLEEP="0.3",
    )  # fmt: skip
    code, _, log = finish(process, timeout=30)
    assert code == 4, log
    assert time.monotonic() - started < 20, "no thread may keep the process alive"
    written = {r["igata_id"] for r in queues.results(out)}
    # Everything not written is visible again at once (30 s visibility otherwise).
    visible, in_flight = queues.wait_for(url, visible=6 - len(written), timeout=3)
    assert (visible, in_flight) == (6 - len(written), 0), log
    assert "images:0" not in written
    back = queues.drain(url)
    assert {json.loads(m["Body"])[0]["image_id"] for m in back} == {
        r["image_id"] for r in requests
    } - written
    assert queues.drain(queues.dead_letter[url]) == []
