"""``igata export``: RESULTS of a collection through the sinks, by keys and by scan."""

from __future__ import annotations

import csv
import json

import pytest
from igata_jobs.cli import export, status, submit
from job_world import BUCKET, REQUESTS, RESULTS, invoke, png, run_workers


@pytest.fixture
def job(world):
    """A collection of 7 images (one poison) submitted and processed by a worker."""
    world.objects(6, body=png())
    world.objects(1, prefix="photos/poison-", body=png())
    world.tables()
    url = world.queue(dlq=True)
    result = invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--requests-table",
        REQUESTS,
        "--collection-id",
        "x1",
        "--per-message",
        "1",
    )
    assert result.exit_code == 0, result.output
    run = run_workers(url)
    assert run.exit_code in (0, 1), run.summary
    code = invoke(status, "x1", "--requests-table", REQUESTS, "--json").exit_code
    assert code == 1  # done with errors: the poison image
    return world


def tables(*args):
    return ["--requests-table", REQUESTS, "--results-table", RESULTS, *args]


def test_export_to_jsonl_by_keys_with_errors(job, tmp_path):
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    result = invoke(export, "x1", "--to", str(out), "--errors-to", str(errors), *tables())
    assert result.exit_code == 0, result.output
    assert "export: 6 results of 6 completed requests" in result.output
    assert "(keys," in result.output and "1 failed requests to" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    assert {r["label"] for r in rows} == {"green"} and all(r["score"] == 0.75 for r in rows)
    assert {r["s3_uri"] for r in rows} == {
        f"s3://{BUCKET}/photos/img-{i:04d}.jpg" for i in range(6)
    }
    failed = [json.loads(line) for line in errors.read_text().splitlines()]
    assert len(failed) == 1 and "poison" in failed[0]["s3_uri"]
    assert failed[0]["errors"][-1]["error_type"] == "ValueError"


def test_export_by_parallel_scan_gives_the_same_rows(job, tmp_path):
    keys, scan = tmp_path / "keys.jsonl", tmp_path / "scan.jsonl"
    invoke(export, "x1", "--to", str(keys), "--workers", "2", *tables())
    result = invoke(export, "x1", "--to", str(scan), "--read", "scan", "--segments", "3", *tables())
    assert result.exit_code == 0, result.output
    assert "(scan," in result.output
    by_key = sorted(keys.read_text().splitlines())
    assert sorted(scan.read_text().splitlines()) == by_key and len(by_key) == 6


def test_export_to_csv_with_fields_and_format(job, tmp_path):
    out = tmp_path / "out.csv"
    result = invoke(export, "x1", "--to", str(out), "--fields", "s3_uri,label,score", *tables())
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and list(rows[0]) == ["s3_uri", "label", "score"]
    forced = tmp_path / "out.txt"
    invoke(export, "x1", "--to", str(forced), "--format", "csv", *tables())
    assert forced.read_text().splitlines()[0].startswith(("hashkey", "s3_uri", "label"))
    assert len(forced.read_text().splitlines()) == 7


def test_export_to_s3_parts(job):
    job.s3.create_bucket(Bucket="job-exports")
    result = invoke(export, "x1", "--to", "s3://job-exports/x1/", *tables())
    assert result.exit_code == 0, result.output
    body = job.s3.get_object(Bucket="job-exports", Key="x1/part-00000.jsonl")["Body"].read()
    assert len(body.decode().splitlines()) == 6
    missing = invoke(export, "x1", "--to", "s3://no-such-export-bucket/x/", *tables())
    assert missing.exit_code == 2


def test_a_missing_results_item_is_exit_1(job, tmp_path):
    item = job.items(RESULTS)[0]
    job.ddb.delete_item(
        TableName=RESULTS, Key={"hashkey": {"S": item["hashkey"]}, "s3_uri": {"S": item["s3_uri"]}}
    )
    result = invoke(export, "x1", "--to", str(tmp_path / "o.jsonl"), *tables())
    assert result.exit_code == 1
    assert "1 RESULTS items counted by REQUESTS were not found" in result.output


def test_environment_and_configuration_errors(world, tmp_path):
    world.tables()
    env = {"OUTPUT_CTXMGR_REQUESTS_TABLENAME": REQUESTS, "OUTPUT_CTXMGR_RESULTS_TABLENAME": RESULTS}
    empty = invoke(export, "none", "--to", str(tmp_path / "o.jsonl"), env=env)
    assert empty.exit_code == 0 and "export: 0 results of 0 completed" in empty.output
    assert invoke(export, "c", "--to", "o.jsonl", "--requests-table", REQUESTS).exit_code == 2
    assert invoke(export, "c", "--to", "o.jsonl", "--results-table", RESULTS).exit_code == 2
    missing = invoke(export, "c", "--to", "o.jsonl", *tables()[:2], "--results-table", "nope-t")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_results_sortkey_names_the_range_key(job, tmp_path):
    result = invoke(
        export, "x1", "--to", str(tmp_path / "o.jsonl"), "--results-sortkey", "image_key", *tables()
    )
    assert result.exit_code == 2 and "image_key" in result.output


def test_auto_reads_by_scan_when_requests_lack_the_sort_key(job, tmp_path):
    for item in job.items(REQUESTS):
        job.ddb.update_item(
            TableName=REQUESTS,
            Key={"request_id": {"S": item["request_id"]}},
            UpdateExpression="REMOVE s3_uri",
        )
    out = tmp_path / "o.jsonl"
    result = invoke(export, "x1", "--to", str(out), *tables())
    assert result.exit_code == 0, result.output
    assert "(scan," in result.output and len(out.read_text().splitlines()) == 6
    keys = invoke(export, "x1", "--to", str(out), "--read", "keys", *tables())
    assert keys.exit_code == 2 and "use --read scan" in keys.output
