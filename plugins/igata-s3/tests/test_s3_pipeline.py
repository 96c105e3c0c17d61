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

from igata_core.components import Envelope, Item, Source
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


# With --decode-processes the S3 loader runs in worker processes: the same records, errors
# and metadata (a datetime among it) come back.
@pytest.mark.parametrize("decode_processes", [0, 2])
def test_mixed_good_and_bad_objects(s3: Any, bucket: str, out_bucket: str,
                                    make_image: Any, decode_processes: int) -> None:  # fmt: skip
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
    inputs = [f"s3://{bucket}/data/", f"s3://{bucket}/missing.jpg"]
    result = run_pipeline("s3", "s3-jsonl", ShapePredictor, inputs=inputs,
                          sink_options={"bucket": out_bucket}, concurrency=8,
                          chunk_size=4, flush_interval=0.1,
                          decode_processes=decode_processes)  # fmt: skip

    assert result.exit_code == 1
    assert result.summary["succeeded"] == len(good)
    assert result.summary["failed"] == 4
    errors = {o.input: o for o in result.outcomes}
    expected = {
        f"s3://{bucket}/data/truncated.jpg": ("decode", "corrupt or truncated image"),
        f"s3://{bucket}/data/empty.jpg": ("decode", "empty file (0 bytes)"),
        f"s3://{bucket}/data/not-an-image.jpg": ("decode", "not an image"),
        f"s3://{bucket}/missing.jpg": ("load", "no such key 'missing.jpg'"),
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


# -- the three kinds of service error, end to end --------------------------------------------


class RequestSource(Source):
    """Requests naming S3 objects, one per envelope, as the SQS sources deliver them: the
    buckets and keys come from the messages, not from the worker's options."""

    name = "test-requests"

    def __init__(self, uris: list[str]):
        super().__init__()
        self.uris = uris
        self.acked: list[str] = []
        self.nacked: list[str] = []

    def envelopes(self) -> Any:
        for number, uri in enumerate(self.uris):
            yield Envelope(ref=uri, items=[Item(identity=f"request-{number}", uri=uri)])

    def ack(self, envelopes: Any) -> None:
        self.acked += [e.ref for e in envelopes]

    def nack(self, envelopes: Any) -> None:
        self.nacked += [e.ref for e in envelopes]


def test_requests_naming_a_missing_bucket_key_or_a_denied_object_fail_alone(
    s3: Any, bucket: str, out_bucket: str, make_image: Any, inject: Any
) -> None:
    from igata_s3.client import s3_client

    for key in ["a.png", "b.png", "secret.png"]:
        s3.put_object(Bucket=bucket, Key=key, Body=make_image("PNG"))
    inject.fail(s3_client(), "GetObject", 403, "AccessDenied",
                when=lambda url: url.endswith("/secret.png"))  # fmt: skip
    good = [f"s3://{bucket}/a.png", f"s3://{bucket}/b.png"]
    bad = {
        "s3://no-such-bucket-zz/x.png": "bucket 'no-such-bucket-zz' does not exist",
        f"s3://{bucket}/missing.png": "no such key 'missing.png'",
        f"s3://{bucket}/secret.png": "access denied (AccessDenied)",
    }
    source = RequestSource([good[0], *bad, good[1]])
    result = run_pipeline(source, "s3-jsonl", ShapePredictor,
                          sink_options={"bucket": out_bucket}, flush_interval=0.1)  # fmt: skip
    assert result.exit_code == 1, result.summary
    assert sorted(source.acked) == sorted(good), "the other requests go on"
    assert sorted(source.nacked) == sorted(bad), "each bad request is its own error"
    messages = {o.input: (o.stage, o.message) for o in result.outcomes}
    for uri, text in bad.items():
        assert messages[uri][0] == "load" and text in messages[uri][1], messages[uri]
    assert sorted(r["igata_input"] for r in _jsonl_records(s3, out_bucket)) == sorted(good)


def test_credentials_refused_while_loading_stop_the_run_with_nothing_settled(
    s3: Any, bucket: str, make_image: Any, inject: Any
) -> None:
    from igata_s3.client import s3_client

    for key in ["a.png", "b.png"]:
        s3.put_object(Bucket=bucket, Key=key, Body=make_image("PNG"))
    inject.fail(s3_client(), "GetObject", 403, "InvalidAccessKeyId")
    source = RequestSource([f"s3://{bucket}/a.png", f"s3://{bucket}/b.png"])
    started = time.monotonic()
    result = run_pipeline(source, "null", ShapePredictor)
    assert result.exit_code == 2, result.summary
    assert time.monotonic() - started < 10
    assert "InvalidAccessKeyId: S3 does not know the access key id" in result.summary["reason"]
    assert source.acked == [] and source.nacked == [], "no request is failed for the worker"
    assert result.summary["failed"] == 0


def test_a_wrong_secret_stops_the_run_on_a_strict_s3(
    s3: Any, bucket: str, make_image: Any, strict_s3: None, wrong_secret: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="a.png", Body=make_image("PNG"))
    wrong_secret()
    source = RequestSource([f"s3://{bucket}/a.png"])
    result = run_pipeline(source, "null", ShapePredictor)
    assert result.exit_code == 2, result.summary
    assert "(SignatureDoesNotMatch: the secret key" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []


def test_a_throttled_input_pauses_then_stops_the_run_without_failing_records(
    s3: Any, bucket: str, make_image: Any, inject: Any
) -> None:
    from igata_s3.client import ClientSettings, s3_client

    s3.put_object(Bucket=bucket, Key="a.png", Body=make_image("PNG"))
    inject.fail(s3_client(10, ClientSettings(max_attempts=1)), "GetObject", 503, "SlowDown")
    source = RequestSource([f"s3://{bucket}/a.png"])
    result = run_pipeline(source, "null", ShapePredictor, load_retry_budget=1.0,
                          loader_options={"s3": {"max_attempts": 1}})  # fmt: skip
    assert result.exit_code == 3, result.summary
    assert result.summary["reason"].startswith("input unavailable for 1 s: s3: S3 throttled")
    assert source.acked == [] and source.nacked == [] and result.outcomes == []


def test_an_input_bucket_that_does_not_exist_stops_the_run_before_anything_is_read(
    s3: Any, bucket: str, out_bucket: str, make_image: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="a.png", Body=make_image("PNG"))
    result = run_pipeline("s3", "s3-jsonl", ShapePredictor,
                          inputs=[f"s3://{bucket}/a.png", "s3://no-such-bucket-zz/x.png"],
                          sink_options={"bucket": out_bucket})  # fmt: skip
    assert result.exit_code == 2, result.summary
    assert result.summary["reason"] == (
        "source 's3' is misconfigured: s3: the bucket 'no-such-bucket-zz' of the input "
        "s3://no-such-bucket-zz/x.png does not exist (NoSuchBucket); create it or fix the "
        "input (the command's INPUTS)"
    )
    assert result.summary["read"] == 0
    assert s3.list_objects_v2(Bucket=out_bucket).get("KeyCount") == 0


class DeletesTheOutputBucket(ShapePredictor):
    """Deletes the (still empty) output bucket before its first prediction."""

    bucket = ""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        from igata_s3.client import s3_client

        if self.bucket:
            s3_client().delete_bucket(Bucket=self.bucket)
            type(self).bucket = ""
        return super().predict(input_record, meta)


def test_an_output_bucket_deleted_during_the_run_stops_it_with_nothing_acked(
    s3: Any, bucket: str, out_bucket: str, make_image: Any, tmp_path: Path
) -> None:
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"{i}.png", Body=make_image("PNG"))
    DeletesTheOutputBucket.bucket = out_bucket
    ledger = tmp_path / "ledger.jsonl"
    result = run_pipeline("s3", "s3-jsonl", DeletesTheOutputBucket, inputs=[f"s3://{bucket}/"],
                          source_options={"ledger": str(ledger)},
                          sink_options={"bucket": out_bucket}, sink_retry_budget=30,
                          flush_interval=0.1)  # fmt: skip
    assert result.exit_code == 2, result.summary
    assert result.summary["reason"].startswith(
        "sink 's3-jsonl' is misconfigured: s3-jsonl: the output bucket 'igata-out' does not "
        "exist (NoSuchBucket)"
    )
    assert result.summary["acked"] == 0 and ledger.read_text() == ""


@pytest.mark.parametrize("source", ["s3", "files"])
def test_an_output_bucket_that_does_not_exist_is_a_usage_error_of_the_cli(
    aws: Any, s3: Any, bucket: str, make_image: Any, tmp_path: Path, source: str
) -> None:
    image = make_image("PNG")
    s3.put_object(Bucket=bucket, Key="a.png", Body=image)
    (tmp_path / "a.png").write_bytes(image)
    given = f"s3://{bucket}/a.png" if source == "s3" else str(tmp_path / "a.png")
    ledger = tmp_path / "ledger.jsonl"
    ledger_options = ["--source-opt", f"ledger={ledger}"] if source == "s3" else []
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "igata_core", "-q", "run", "--source", source,
         "--sink", "s3-csv", "--sink-opt", "bucket=no-such-output", *ledger_options,
         "--sink-retry-budget", "60", "--predictor", "shapepred:ShapePredictor", given],
        env=_worker_env(aws, tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - started < 20, "at once, not after the sink's retry budget"
    assert "the output bucket 'no-such-output' does not exist (NoSuchBucket)" in done.stderr
    assert not ledger.exists() or ledger.read_text() == "", "nothing acked"
