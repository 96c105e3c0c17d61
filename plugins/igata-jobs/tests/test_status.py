"""``igata status``: counts by state, queue depths, throughput, ETA, errors, exit codes."""

from __future__ import annotations

import json
import threading
import time

import pytest
from igata_jobs.cli import status, submit
from job_world import BUCKET, REQUESTS, invoke, set_state


def submitted(world, count=10, *, dlq=True, collection="c1"):
    world.objects(count)
    world.tables()
    url = world.queue(dlq=dlq)
    result = invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--requests-table",
        REQUESTS,
        "--collection-id",
        collection,
        "--per-message",
        "5",
    )
    assert result.exit_code == 0, result.output
    ids = sorted(i["request_id"] for i in world.items())
    return url, ids


def as_json(*args, env=None):
    result = invoke(status, *args, "--json", env=env)
    return result.exit_code, json.loads(result.output)


def test_a_submitted_job_is_in_progress_with_its_queue(world):
    url, _ = submitted(world, 10)
    code, found = as_json("c1", "--requests-table", REQUESTS, "--queue", url)
    assert code == 4
    assert found["states"] == {"queued": 10, "completed": 0, "error": 0}
    assert found["total"] == 10 and found["phase"] == "in_progress" and not found["done"]
    assert found["queue"]["visible"] == 2 and found["queue"]["in_flight"] == 0
    assert found["queue"]["delayed"] == 0
    assert found["dead_letter_queue"]["visible"] == 0
    assert found["eta_seconds"] is None
    text = invoke(status, "c1", "--requests-table", REQUESTS, "--queue", url)
    assert text.exit_code == 0
    assert "collection c1: 0 of 10 done (0.0%)" in text.output
    assert "queued 10  completed 0  error 0" in text.output
    assert "queue job-queue: 2 visible, 0 in flight, 0 delayed; dead-letter queue" in text.output


def test_throughput_eta_errors_and_done_with_errors(world):
    _, ids = submitted(world, 10)
    old = time.time() - 600
    set_state(world, ids[:4], "completed", at=old)
    set_state(world, ids[4:7], "completed")
    bad = json.dumps([{"stage": "predict", "error_type": "ValueError", "message": "bad  pixel"}])
    set_state(world, ids[7:8], "error", errors=bad)
    code, found = as_json("c1", "--requests-table", REQUESTS)
    assert code == 4
    assert found["states"] == {"queued": 2, "completed": 7, "error": 1}
    assert found["finished_last_minute"] == 4
    assert abs(found["throughput_per_second"] - 4 / 60) < 1e-9
    assert abs(found["eta_seconds"] - 2 / (4 / 60)) < 1e-6
    assert found["errors"] == [{"error": "predict: ValueError: bad pixel", "count": 1}]
    set_state(world, ids[8:], "error", errors=bad)
    code, found = as_json("c1", "--requests-table", REQUESTS)
    assert code == 1 and found["phase"] == "done_with_errors" and found["eta_seconds"] == 0
    assert found["errors"] == [{"error": "predict: ValueError: bad pixel", "count": 3}]
    text = invoke(status, "c1", "--requests-table", REQUESTS).output
    assert "10 of 10 done (100.0%) - finished" in text
    assert "most common errors:\n       3  predict: ValueError: bad pixel" in text


def test_error_sample_bounds_the_errors_read(world):
    _, ids = submitted(world, 6)
    set_state(
        world,
        ids,
        "error",
        errors=json.dumps([{"stage": "load", "error_type": "E", "message": "m"}]),
    )
    _, found = as_json("c1", "--requests-table", REQUESTS, "--error-sample", "2")
    assert found["errors"] == [{"error": "load: E: m", "count": 2}]
    assert found["states"]["error"] == 6


def test_all_completed_is_done_and_watch_ends_there(world):
    _, ids = submitted(world, 4)
    set_state(world, ids[:2], "completed")
    timer = threading.Timer(0.5, set_state, (world, ids[2:], "completed"))
    timer.start()
    started = time.monotonic()
    result = invoke(status, "c1", "--requests-table", REQUESTS, "--watch", "--interval", "0.2")
    timer.join()
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.5
    assert result.output.count("collection c1:") >= 2
    assert "4 of 4 done (100.0%) - finished" in result.output
    code, found = as_json("c1", "--requests-table", REQUESTS)
    assert code == 0 and found["phase"] == "done"


def test_environment_names_table_and_queue(world):
    url, _ = submitted(world, 3, dlq=False)
    env = {"OUTPUT_CTXMGR_REQUESTS_TABLENAME": REQUESTS, "INPUT_CTXMGR_SQS_QUEUE_URL": url}
    _, found = as_json("c1", env=env)
    assert found["states"]["queued"] == 3
    assert found["queue"]["visible"] == 1 and found["dead_letter_queue"] is None


def test_custom_key_and_state_names(world):
    world.objects(2)
    world.tables(request_key="job_id")
    url = world.queue()
    # The index of create-tables is collection_id/state: a state attribute named otherwise
    # needs its own index, so this table keeps 'state' and only the hash key differs.
    invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--requests-table",
        REQUESTS,
        "--requests-hashkey",
        "job_id",
        "--collection-id",
        "k1",
    )
    _, found = as_json(
        "k1",
        "--requests-table",
        REQUESTS,
        "--requests-hashkey",
        "job_id",
        "--state-keyname",
        "state",
    )
    assert found["states"]["queued"] == 2
    result = invoke(
        status,
        "k1",
        "--requests-table",
        REQUESTS,
        "--requests-hashkey",
        "job_id",
        "--state-keyname",
        "phase",
    )
    assert result.exit_code == 2 and "phase-index" in result.output


def test_unknown_collection_and_configuration_errors(world):
    submitted(world, 2)
    result = invoke(status, "nope", "--requests-table", REQUESTS)
    assert result.exit_code == 0 and "no REQUESTS items for collection 'nope'" in result.output
    assert invoke(status, "c1").exit_code == 2
    missing = invoke(status, "c1", "--requests-table", "no-such-table")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    queue = invoke(
        status,
        "c1",
        "--requests-table",
        REQUESTS,
        "--queue",
        world.queue().rsplit("/", 1)[0] + "/no-such-queue",
    )
    assert queue.exit_code == 2 and "does not exist" in queue.output


def test_watch_measures_throughput_between_refreshes():
    from igata_jobs.status import JobStatus, Rate

    rate = Rate()
    first = JobStatus("c", states={"queued": 100, "completed": 0, "error": 0}, total=100)
    rate.update(first, now=0.0)
    later = JobStatus("c", states={"queued": 70, "completed": 28, "error": 2}, total=100)
    rate.update(later, now=10.0)
    assert later.throughput_per_second == 3.0 and later.eta_seconds == 70 / 3
    assert "over the last 10 s; ETA 23s" in later.text()


def test_common_errors_are_grouped_without_the_object_named(world):
    _, ids = submitted(world, 3)
    for n, rid in enumerate(ids):
        text = json.dumps(
            [
                {
                    "stage": "decode",
                    "error_type": "RecordError",
                    "message": f"s3://{BUCKET}/photos/img-{n}.jpg: not an image",
                }
            ]
        )
        set_state(world, [rid], "error", errors=text)
    _, found = as_json("c1", "--requests-table", REQUESTS)
    assert found["errors"] == [{"error": "decode: RecordError: <uri>: not an image", "count": 3}]


@pytest.mark.parametrize("queued_items", [True, False], ids=["queued-items", "workers-only"])
def test_status_counts_what_the_workers_finished_by_state(world, queued_items):
    """Workers finish a job of 8 images (one poison), 3 requests a message: ``igata status
    --json`` counts every submitted request once, by state, from the collection index. The
    counts rest on the dynamodb sink writing ``collection_id`` on the REQUESTS items of
    completed and failed requests, also when submit wrote no ``queued`` item first."""
    from job_world import png, run_workers

    world.objects(7, body=png())
    world.objects(1, prefix="photos/poison-", body=png())
    world.tables()
    url = world.queue(dlq=True)
    args = [f"s3://{BUCKET}/photos/", "--queue", url, "--collection-id", "done1"]
    args += ["--per-message", "3"]
    if queued_items:
        args += ["--requests-table", REQUESTS]
    result = invoke(submit, *args)
    assert result.exit_code == 0, result.output
    assert "sent 8 requests in 3 messages" in result.output
    run = run_workers(url)
    assert run.exit_code in (0, 1), run.summary
    code, found = as_json("done1", "--requests-table", REQUESTS)
    assert found["states"] == {"queued": 0, "completed": 7, "error": 1}, found
    assert found["total"] == 8 and sum(found["states"].values()) == 8
    assert code == 1 and found["done"] and found["phase"] == "done_with_errors"
    # The same counts as the table itself holds.
    items = [i for i in world.items() if i.get("collection_id") == "done1"]
    assert len(items) == 8
    assert sorted(i["state"] for i in items) == ["completed"] * 7 + ["error"]
    (failed,) = (i for i in items if i["state"] == "error")
    assert "poison" in failed["errors"]
