"""End to end: igata's engine with the s3 source, the s3 loader and the S3 sinks."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from igata_core.predictor import PredictorBase
from igata_core.testing import run_pipeline


class ShapePredictor(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if hasattr(input_record, "shape"):
            shape = "x".join(str(n) for n in input_record.shape)
            return {"shape": shape, "dtype": str(input_record.dtype)}
        return {"rows": len(input_record)}


PREDICTOR_MODULE = textwrap.dedent(
    """
    import time
    from igata_core import PredictorBase

    class ShapePredictor(PredictorBase):
        def predict(self, input_record, meta):
            time.sleep(float(__import__("os").environ.get("PREDICT_SLEEP", "0")))
            return {"shape": "x".join(str(n) for n in input_record.shape)}
    """
)


def _jsonl_records(s3: Any, bucket: str) -> list[dict[str, Any]]:
    records = []
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        records.extend(json.loads(line) for line in body.decode().splitlines())
    return records


def test_mixed_good_and_bad_objects(s3: Any, bucket: str, out_bucket: str,
                                    make_image: Any) -> None:  # fmt: skip
    jpeg = make_image("JPEG", size=(64, 48))
    good = {
        "data/rgb.jpg": jpeg,
        "data/my photo.jpg": jpeg,
        "data/gray.png": make_image("PNG", "L", (5, 4)),
        "data/rgba.png": make_image("PNG", "RGBA", (5, 4)),
        "data/deep.png": make_image("PNG", "I;16", (5, 4)),
        "data/table.csv": b"a,b\n1,2\n3,4\n",
        "data/table2.csv.gz": gzip.compress(b"a,b\n1,2\n"),
    }
    bad = {
        "data/truncated.jpg": jpeg[: len(jpeg) // 2],
        "data/empty.jpg": b"",
        "data/not-an-image.jpg": b"this is text",
    }
    for key, body in {**good, **bad}.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    inputs = [
        f"s3://{bucket}/data/",
        f"s3://{bucket}/missing.jpg,s3://no-such-bucket-zz/x.jpg",
    ]
    result = run_pipeline("s3", "s3-jsonl", ShapePredictor, inputs=inputs,
                          sink_options={"bucket": out_bucket}, concurrency=8,
                          chunk_size=4, flush_interval=0.1)  # fmt: skip

    assert result.exit_code == 1
    assert result.summary["succeeded"] == len(good)
    assert result.summary["failed"] == 5
    errors = {o.input: o for o in result.outcomes}
    expected = {
        f"s3://{bucket}/data/truncated.jpg": ("decode", "corrupt or truncated image"),
        f"s3://{bucket}/data/empty.jpg": ("decode", "empty file (0 bytes)"),
        f"s3://{bucket}/data/not-an-image.jpg": ("decode", "not an image"),
        f"s3://{bucket}/missing.jpg": ("load", "no such key 'missing.jpg'"),
        "s3://no-such-bucket-zz/x.jpg": ("load", "bucket 'no-such-bucket-zz' does not exist"),
    }
    assert set(errors) == set(expected)
    for uri, (stage, text) in expected.items():
        assert errors[uri].stage == stage, (uri, errors[uri])
        assert text in errors[uri].message, (uri, errors[uri].message)

    records = {r["key"]: r for r in _jsonl_records(s3, out_bucket)}
    assert set(records) == set(good)
    assert records["data/rgb.jpg"]["shape"] == "48x64x3"
    assert records["data/gray.png"]["shape"] == "4x5x3"
    assert records["data/rgba.png"]["shape"] == "4x5x3"
    assert records["data/deep.png"]["shape"] == "4x5x3"
    assert {records[k]["dtype"] for k in good if k.endswith(("jpg", "png"))} == {"uint8"}
    assert records["data/table.csv"]["rows"] == 2
    assert records["data/table2.csv.gz"]["rows"] == 1
    photo = records["data/my photo.jpg"]
    assert photo["igata_id"] == photo["s3_uri"] == f"s3://{bucket}/data/my photo.jpg"
    assert photo["bucket"] == bucket and photo["size"] == len(jpeg) and photo["etag"]
    assert photo["last_modified"].endswith("+00:00")  # ISO 8601 from the datetime


def test_allowed_buckets_from_the_environment_refuses_other_buckets(
    s3: Any, bucket: str, out_bucket: str, make_image: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.create_bucket(Bucket="someone-elses")
    s3.put_object(Bucket="someone-elses", Key="x.png", Body=make_image("PNG"))
    s3.put_object(Bucket=bucket, Key="ok.png", Body=make_image("PNG"))
    monkeypatch.setenv("IGATA_S3_ALLOWED_BUCKETS", f"{bucket},{out_bucket}")
    result = run_pipeline(
        "s3", "s3-csv", ShapePredictor,
        inputs=[f"s3://{bucket}/ok.png", "s3://someone-elses/x.png", "s3://someone-elses/"],
        sink_options={"bucket": out_bucket},
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.summary["succeeded"] == 1
    messages = {o.input: o.message for o in result.outcomes}
    assert (
        "bucket 'someone-elses' is not in allowed_buckets" in messages["s3://someone-elses/x.png"]
    )
    assert "bucket 'someone-elses' is not in allowed_buckets" in messages["s3://someone-elses/"]


def _worker_env(aws: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "shapepred.py").write_text(PREDICTOR_MODULE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "IGATA_"))}
    env.update(aws.env())
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def test_the_original_environment_variables_drive_a_cli_run(
    aws: Any, s3: Any, bucket: str, out_bucket: str, make_image: Any, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=make_image("JPEG", size=(3, 2)))
    s3.put_object(Bucket=bucket, Key="b.jpg", Body=make_image("JPEG", size=(4, 2)))
    env = _worker_env(aws, tmp_path,
                      INPUT_CONTEXT_MANAGER="S3BucketImageInputCtxManager",
                      OUTPUT_CONTEXT_MANAGER="S3BucketCsvFileOutputCtxManager",
                      OUTPUT_CTXMGR_OUTPUT_S3_BUCKET=out_bucket,
                      OUTPUT_CTXMGR_FIELDNAMES="igata_id,shape",
                      PREDICTOR_MODULE="shapepred",
                      PREDICTOR_CLASS_NAME="ShapePredictor")  # fmt: skip
    # The original's endpoint variable instead of AWS_ENDPOINT_URL.
    env["S3_ENDPOINT"] = env.pop("AWS_ENDPOINT_URL_S3", None) or env.pop("AWS_ENDPOINT_URL")
    done = subprocess.run(
        [sys.executable, "-m", "igata_core", "-q", "run",
         f"s3://{bucket}/a.jpg,s3://{bucket}/b.jpg"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (obj,) = s3.list_objects_v2(Bucket=out_bucket)["Contents"]
    text = s3.get_object(Bucket=out_bucket, Key=obj["Key"])["Body"].read().decode()
    header, *rows = csv.reader(io.StringIO(text))
    assert header == ["igata_id", "shape"]
    assert sorted(rows) == [[f"s3://{bucket}/a.jpg", "2x3x3"], [f"s3://{bucket}/b.jpg", "2x4x3"]]


def test_a_worker_killed_mid_run_leaves_only_complete_objects(
    aws: Any, s3: Any, bucket: str, out_bucket: str, make_image: Any, tmp_path: Path
) -> None:
    image = make_image("PNG", size=(4, 4))
    for i in range(60):
        s3.put_object(Bucket=bucket, Key=f"in/{i:03d}.png", Body=image)
    env = _worker_env(aws, tmp_path, PREDICT_SLEEP="0.05")
    worker = subprocess.Popen(
        [sys.executable, "-m", "igata_core", "-q", "run", "--source", "s3", "--sink", "s3-csv",
         "--sink-opt", f"bucket={out_bucket}", "--sink-opt", "gzip=true",
         "--sink-opt", "part_max_records=7", "--chunk-size", "3", "--batch-size", "1",
         "--predictor", "shapepred:ShapePredictor", f"s3://{bucket}/in/"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = s3.list_objects_v2(Bucket=out_bucket).get("Contents", [])
            if len(listed) >= 2:
                break
            assert worker.poll() is None, worker.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.05)
        else:
            pytest.fail("the worker wrote nothing within 30 s")
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait(10)

    assert worker.returncode == -signal.SIGKILL
    rows: list[dict[str, str]] = []
    for obj in s3.list_objects_v2(Bucket=out_bucket)["Contents"]:
        data = s3.get_object(Bucket=out_bucket, Key=obj["Key"])["Body"].read()
        text = gzip.decompress(data).decode()  # a cut-short gzip stream would raise here
        part = list(csv.DictReader(io.StringIO(text, newline="")))
        assert part, f"{obj['Key']}: an object without records"
        for row in part:
            assert None not in row and None not in row.values(), f"{obj['Key']}: cut row {row}"
            assert row["shape"] == "4x4x3"
        rows.extend(part)
    assert 0 < len(rows) < 60, "killed mid-way"
    assert len({r["igata_id"] for r in rows}) == len(rows)
    assert s3.list_multipart_uploads(Bucket=out_bucket).get("Uploads", []) == []


def test_a_prefix_too_long_for_s3_keys_is_a_usage_error_of_the_cli(
    aws: Any, s3: Any, bucket: str, out_bucket: str, make_image: Any, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=make_image("JPEG"))
    done = subprocess.run(
        [sys.executable, "-m", "igata_core", "-q", "run", "--source", "s3", "--sink", "s3-jsonl",
         "--sink-opt", f"bucket={out_bucket}", "--sink-opt", f"prefix={'p' * 1000}/",
         "--predictor", "shapepred:ShapePredictor", f"s3://{bucket}/a.jpg"],
        env=_worker_env(aws, tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "error: sink 's3-jsonl': options 'prefix' and 'key_template': part keys would be" in (
        done.stderr
    )
    assert "over S3's limit of 1024 bytes (UTF-8)" in done.stderr
    assert s3.list_objects_v2(Bucket=out_bucket).get("KeyCount") == 0


def _refused_key_run(bucket: str, out_bucket: str, sink: Any, tmp_path: Path) -> Any:
    ledger = tmp_path / "ledger.jsonl"
    result = run_pipeline("s3", sink, ShapePredictor, inputs=[f"s3://{bucket}/a.jpg"],
                          source_options={"ledger": str(ledger)}, sink_retry_budget=0.5,
                          flush_interval=0.05)  # fmt: skip
    assert result.exit_code == 2  # a configuration error: stopped at once, not retried
    assert result.summary["written"] == 0
    assert not ledger.exists() or ledger.read_text() == "", "nothing unwritten is acked"
    return result


def test_a_part_key_s3_refuses_stops_the_run_with_the_reason(
    s3: Any, bucket: str, out_bucket: str, make_image: Any, inject: Any, tmp_path: Path
) -> None:
    from igata_s3.sinks import S3JsonlSink

    s3.put_object(Bucket=bucket, Key="a.jpg", Body=make_image("JPEG"))
    sink = S3JsonlSink({"bucket": out_bucket})
    inject.fail(sink.client, "PutObject", 400, "KeyTooLongError")
    result = _refused_key_run(bucket, out_bucket, sink, tmp_path)
    reason = result.summary["reason"]
    assert result.exit_code == 2  # a configuration error: stopped at once, not retried
    assert reason.startswith("sink 's3-jsonl' is misconfigured:")
    assert "(KeyTooLongError): S3 does not accept this key. This is a configuration error" in (
        reason
    )
    assert inject.calls["PutObject"] == 1, "the engine's retries do not resend a refused key"


def test_a_part_key_over_1024_bytes_stops_the_run_on_a_strict_s3(
    s3: Any, bucket: str, out_bucket: str, make_image: Any, strict_s3: None, tmp_path: Path
) -> None:
    from igata_s3.sinks import S3JsonlSink

    s3.put_object(Bucket=bucket, Key="a.jpg", Body=make_image("JPEG"))
    sink = S3JsonlSink({"bucket": out_bucket})
    sink.part_key = lambda number: "k" * 1100 + f"-{number}"  # type: ignore[method-assign]
    result = _refused_key_run(bucket, out_bucket, sink, tmp_path)
    assert "the key is 1102 bytes, over S3's limit of 1024" in result.summary["reason"]
    assert s3.list_objects_v2(Bucket=out_bucket).get("KeyCount") == 0


def _skewed_run(bucket: str, out_bucket: str) -> Any:
    result = run_pipeline("s3", "s3-jsonl", ShapePredictor, inputs=[f"s3://{bucket}/a.jpg"],
                          sink_options={"bucket": out_bucket}, load_retry_budget=1.0)  # fmt: skip
    assert result.exit_code == 3
    assert result.summary["failed"] == 0, "no record is failed for the worker's clock"
    assert result.outcomes == []
    reason = result.summary["reason"]
    assert reason.startswith("input unavailable for 1 s: s3: S3 refused reading ")
    assert "(RequestTimeTooSkewed" in reason and "check the worker's clock" in reason
    return result


def test_a_refused_clock_pauses_loads_then_stops_the_run(
    s3: Any, bucket: str, out_bucket: str, make_image: Any, inject: Any
) -> None:
    from igata_s3.client import s3_client

    s3.put_object(Bucket=bucket, Key="a.jpg", Body=make_image("JPEG"))
    inject.fail(s3_client(), "GetObject", 403, "RequestTimeTooSkewed")
    _skewed_run(bucket, out_bucket)
    assert inject.calls["GetObject"] > 1, "loads are retried within --load-retry-budget"


def test_a_refused_clock_stops_the_run_on_a_strict_s3(
    s3: Any, bucket: str, out_bucket: str, make_image: Any, strict_s3: None, skewed_clock: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=make_image("JPEG"))
    skewed_clock()
    _skewed_run(bucket, out_bucket)
