from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
from typing import Any

import pytest

from igata_core.components import (
    RECORD_ID_KEY,
    RECORD_INPUT_KEY,
    ConfigurationError,
    RunContext,
    ServiceUnavailable,
)
from igata_core.options import OptionsError
from igata_core.plugins import build_registry
from igata_s3 import sinks as sinks_module
from igata_s3.errors import S3ConfigurationError
from igata_s3.sinks import S3CsvSink, S3JsonlSink


def _records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"label": f"cat {i}", "score": i / 8, RECORD_ID_KEY: f"s3://in/{i}.jpg",
         RECORD_INPUT_KEY: f"s3://in/{i}.jpg"}
        for i in range(start, start + n)
    ]  # fmt: skip


def _sink(cls: type, bucket: str, **options: Any) -> Any:
    sink = cls({"bucket": bucket, **options}, RunContext(run_id="run-1"))
    sink.open()
    return sink


def _objects(s3: Any, bucket: str) -> dict[str, bytes]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found


def _csv_rows(data: bytes) -> list[dict[str, str]]:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def _as_text(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{k: str(v) for k, v in r.items()} for r in records]


def test_registered_with_the_original_alias() -> None:
    registry = build_registry()
    assert registry.get("sink", "s3-csv").obj is S3CsvSink
    assert registry.get("sink", "S3BucketCsvFileOutputCtxManager").obj is S3CsvSink
    assert registry.get("sink", "s3-jsonl").obj is S3JsonlSink


def test_csv_object_reads_back_equal_to_the_records(s3: Any, out_bucket: str) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    records = _records(20)
    assert sink.put_records(records[:15]) == []
    assert sink.put_records(records[15:]) == []
    sink.flush()
    sink.close()
    objects = _objects(s3, out_bucket)
    assert list(objects) == ["run-1/part-00000.csv"]
    text = objects["run-1/part-00000.csv"].decode()
    assert text.splitlines()[0] == "label,score,igata_id,igata_input"
    assert _csv_rows(objects["run-1/part-00000.csv"]) == _as_text(records)
    head = s3.head_object(Bucket=out_bucket, Key="run-1/part-00000.csv")
    assert head["ContentType"].startswith("text/csv")
    assert head["Metadata"] == {"igata-run-id": "run-1", "igata-part": "0", "igata-records": "20"}


def test_flush_makes_records_durable_in_s3_and_rewrites_one_object(
    s3: Any, out_bucket: str
) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    records = _records(12)
    for flush in range(4):
        sink.put_records(records[3 * flush : 3 * flush + 3])
        sink.flush()
        objects = _objects(s3, out_bucket)
        assert list(objects) == ["run-1/part-00000.csv"], "a flush does not add an object"
        assert _csv_rows(objects["run-1/part-00000.csv"]) == _as_text(records[: 3 * flush + 3])
    sink.close()


def test_flush_with_nothing_new_uploads_nothing(s3: Any, out_bucket: str, inject: Any) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    inject.count(sink.client, "PutObject")
    sink.flush()
    sink.put_records(_records(2))
    sink.flush()
    sink.flush()
    sink.close()
    assert inject.calls == {"PutObject": 1}


def test_parts_rotate_by_records_and_each_is_a_complete_csv(s3: Any, out_bucket: str) -> None:
    sink = _sink(S3CsvSink, out_bucket, part_max_records=4, prefix="results/")
    records = _records(10)
    for start in range(0, 10, 2):
        sink.put_records(records[start : start + 2])
        sink.flush()
    sink.close()
    objects = _objects(s3, out_bucket)
    assert list(objects) == [
        "results/run-1/part-00000.csv",
        "results/run-1/part-00001.csv",
        "results/run-1/part-00002.csv",
    ]
    assert sink.keys == list(objects)
    parts = [_csv_rows(data) for data in objects.values()]
    assert [len(p) for p in parts] == [4, 4, 2]
    assert [row for part in parts for row in part] == _as_text(records)


def test_parts_rotate_by_bytes_and_by_uploads(s3: Any, out_bucket: str) -> None:
    by_bytes = _sink(S3JsonlSink, out_bucket, part_max_bytes=200, key_template="b/{part}.jsonl")
    by_uploads = _sink(S3JsonlSink, out_bucket, part_max_uploads=3, key_template="u/{part}.jsonl")
    for sink in (by_bytes, by_uploads):
        for i in range(6):
            sink.put_records(_records(1, start=i))
            sink.flush()
        sink.close()
    objects = _objects(s3, out_bucket)
    bytes_parts = sorted(k for k in objects if k.startswith("b/"))
    assert len(bytes_parts) > 1
    assert all(len(objects[k]) < 200 + 200 for k in bytes_parts)
    assert sorted(k for k in objects if k.startswith("u/")) == ["u/0.jsonl", "u/1.jsonl"]
    for prefix in ("b/", "u/"):
        lines = [json.loads(line) for k in sorted(objects) if k.startswith(prefix)
                 for line in objects[k].decode().splitlines()]  # fmt: skip
        assert [r[RECORD_ID_KEY] for r in lines] == [f"s3://in/{i}.jpg" for i in range(6)]


def test_gzip_parts_are_complete_gzip_after_every_flush(s3: Any, out_bucket: str) -> None:
    sink = _sink(S3CsvSink, out_bucket, gzip=True)
    records = _records(9)
    for start in range(0, 9, 3):
        sink.put_records(records[start : start + 3])
        sink.flush()
        data = _objects(s3, out_bucket)["run-1/part-00000.csv.gz"]
        # One gzip stream per part (compressed as a whole), complete at every upload.
        assert gzip.decompress(data).count(b"\n") == start + 3 + 1
        assert _csv_rows(data) == _as_text(records[: start + 3])
    sink.close()
    head = s3.head_object(Bucket=out_bucket, Key="run-1/part-00000.csv.gz")
    assert head["ContentType"] == "application/gzip"


def test_fieldnames_option_sets_the_header_and_leaves_other_keys_out(
    s3: Any, out_bucket: str
) -> None:
    sink = _sink(S3CsvSink, out_bucket, fieldnames=["igata_id", "label", "missing"])
    sink.put_records(_records(2))
    sink.close()
    rows = _csv_rows(_objects(s3, out_bucket)["run-1/part-00000.csv"])
    assert rows == [
        {"igata_id": "s3://in/0.jpg", "label": "cat 0", "missing": ""},
        {"igata_id": "s3://in/1.jpg", "label": "cat 1", "missing": ""},
    ]


def test_values_are_serialised_for_csv_and_jsonl(s3: Any, out_bucket: str) -> None:
    import numpy as np

    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    record = {RECORD_ID_KEY: "id-1", "last_modified": when, "boxes": [[1, 2], [3, 4]],
              "score": np.float32(0.5), "meta": {"a": "日本"}}  # fmt: skip
    csv_sink = _sink(S3CsvSink, out_bucket, key_template="c/{part}.csv")
    jsonl_sink = _sink(S3JsonlSink, out_bucket, key_template="j/{part}.jsonl")
    for sink in (csv_sink, jsonl_sink):
        assert sink.put_records([record]) == []
        sink.close()
    objects = _objects(s3, out_bucket)
    (row,) = _csv_rows(objects["c/0.csv"])
    assert row == {
        "igata_id": "id-1", "last_modified": "2024-05-01T12:30:00+00:00",
        "boxes": "[[1, 2], [3, 4]]", "score": "0.5", "meta": '{"a": "日本"}',
    }  # fmt: skip
    assert json.loads(objects["j/0.jsonl"]) == {
        "igata_id": "id-1", "last_modified": "2024-05-01T12:30:00+00:00",
        "boxes": [[1, 2], [3, 4]], "score": 0.5, "meta": {"a": "日本"},
    }  # fmt: skip


def test_unserialisable_record_is_rejected_alone(s3: Any, out_bucket: str) -> None:
    sink = _sink(S3JsonlSink, out_bucket)
    records = _records(3)
    records[1]["bad"] = float("nan")
    rejections = sink.put_records(records)
    assert [r.index for r in rejections] == [1]
    assert "NaN" in rejections[0].message
    sink.close()
    lines = _objects(s3, out_bucket)["run-1/part-00000.jsonl"].decode().splitlines()
    assert [json.loads(line)[RECORD_ID_KEY] for line in lines] == ["s3://in/0.jpg", "s3://in/2.jpg"]


def test_a_record_already_written_by_this_sink_is_not_written_twice(
    s3: Any, out_bucket: str
) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    records = _records(4)
    sink.put_records(records[:3])
    sink.flush()
    sink.put_records(records[1:])
    sink.close()
    rows = _csv_rows(_objects(s3, out_bucket)["run-1/part-00000.csv"])
    assert [r[RECORD_ID_KEY] for r in rows] == [r[RECORD_ID_KEY] for r in records]


def test_large_parts_use_multipart_upload(
    s3: Any, out_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sinks_module, "MULTIPART_THRESHOLD", 5 * sinks_module.MIB)
    sink = _sink(S3JsonlSink, out_bucket)
    big = {RECORD_ID_KEY: "big", "blob": "x" * (7 * sinks_module.MIB)}
    sink.put_records([big])
    sink.close()
    head = s3.head_object(Bucket=out_bucket, Key="run-1/part-00000.jsonl")
    assert head["ETag"].strip('"').endswith("-2"), "two parts of a multipart upload"
    data = _objects(s3, out_bucket)["run-1/part-00000.jsonl"]
    assert json.loads(data) == big


def test_abandoned_sink_leaves_only_complete_objects(s3: Any, out_bucket: str) -> None:
    sink = _sink(S3CsvSink, out_bucket, gzip=True)
    records = _records(6)
    sink.put_records(records[:4])
    sink.flush()
    sink.put_records(records[4:])  # never flushed: the worker dies here
    del sink
    objects = _objects(s3, out_bucket)
    assert _csv_rows(objects["run-1/part-00000.csv.gz"]) == _as_text(records[:4])


def test_failed_upload_keeps_the_records_for_the_next_flush(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = _sink(S3CsvSink, out_bucket, max_attempts=1)
    records = _records(4)
    sink.put_records(records[:2])
    inject.fail(sink.client, "PutObject", 500, "InternalError", times=1)
    with pytest.raises(Exception, match="InternalError"):
        sink.flush()
    assert _objects(s3, out_bucket) == {}
    sink.flush()
    sink.put_records(records[2:])
    sink.close()
    assert _csv_rows(_objects(s3, out_bucket)["run-1/part-00000.csv"]) == _as_text(records)


def test_keys_follow_the_template(out_bucket: str) -> None:
    sink = S3CsvSink({"bucket": out_bucket, "prefix": "out/", "gzip": True,
                      "key_template": "{date}/{run_id}-{part:03d}.csv"},
                     RunContext(run_id="r9"))  # fmt: skip
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert sink.part_key(2) == f"out/{today}/r9-002.csv.gz"
    assert S3CsvSink({"bucket": out_bucket}).run_id, "a run id is made when the run has none"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"bucket": "Bad_Bucket"}, "option 'bucket': bucket name 'Bad_Bucket' is invalid"),
        ({"bucket": "ok-bucket", "key_template": "{run_id}.csv"}, "has no {part} field"),
        ({"bucket": "ok-bucket", "key_template": "{job}/{part}.csv"}, "fields: run_id, date"),
    ],
)
def test_bad_options_are_usage_errors_before_any_io(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(OptionsError) as raised:
        S3CsvSink(options)
    assert problem in str(raised.value)


def test_a_missing_output_bucket_is_a_configuration_error_at_open(aws: Any) -> None:
    sink = S3JsonlSink({"bucket": "no-such-output"}, RunContext(run_id="r"))
    with pytest.raises(ConfigurationError) as raised:
        sink.open()
    assert str(raised.value) == (
        "s3-jsonl: the output bucket 'no-such-output' does not exist (NoSuchBucket); create "
        "it or fix the sink option 'bucket' (OUTPUT_CTXMGR_OUTPUT_S3_BUCKET)"
    )


def test_an_output_bucket_in_another_region_is_a_configuration_error_at_open(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = S3CsvSink({"bucket": out_bucket}, RunContext(run_id="r"))
    inject.fail(sink.client, "HeadBucket", 301, "301", headers={"x-amz-bucket-region": "eu-west-1"})
    with pytest.raises(ConfigurationError, match=r"is in region 'eu-west-1', not the worker's"):
        sink.open()


def test_an_output_bucket_deleted_during_the_run_is_a_configuration_error(
    s3: Any, out_bucket: str
) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    s3.delete_bucket(Bucket=out_bucket)
    sink.put_records(_records(2))
    with pytest.raises(ConfigurationError, match=r"output bucket 'igata-out' does not exist"):
        sink.flush()
    s3.create_bucket(Bucket=out_bucket)
    sink.flush()  # not sticky: the records were kept
    assert len(_csv_rows(_objects(s3, out_bucket)["run-1/part-00000.csv"])) == 2


def test_a_bucket_the_worker_may_not_list_is_checked_at_the_first_upload(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = S3CsvSink({"bucket": out_bucket}, RunContext(run_id="run-1"))
    inject.fail(sink.client, "HeadBucket", 403, "403")
    sink.open()
    sink.put_records(_records(1))
    sink.close()
    assert list(_objects(s3, out_bucket)) == ["run-1/part-00000.csv"]


@pytest.mark.parametrize("code", ["AccessDenied", "AllAccessDisabled"])
def test_an_upload_denied_is_a_configuration_error(
    s3: Any, out_bucket: str, inject: Any, code: str
) -> None:
    sink = _sink(S3JsonlSink, out_bucket, prefix="results/")
    inject.fail(sink.client, "PutObject", 403, code)
    sink.put_records(_records(2))
    with pytest.raises(ConfigurationError) as raised:
        sink.flush()
    assert str(raised.value).startswith(
        f"s3-jsonl: access denied while uploading s3://{out_bucket}/results/run-1/part-00000"
        f".jsonl ({code}); the worker's credentials need s3:PutObject on "
        f"arn:aws:s3:::{out_bucket}/results/*"
    )


@pytest.mark.parametrize(
    ("operation", "size"), [("PutObject", 10), ("CreateMultipartUpload", 6 * sinks_module.MIB)]
)
def test_refused_credentials_are_a_configuration_error(
    s3: Any, out_bucket: str, inject: Any, monkeypatch: pytest.MonkeyPatch, operation: str,
    size: int
) -> None:  # fmt: skip
    monkeypatch.setattr(sinks_module, "MULTIPART_THRESHOLD", 5 * sinks_module.MIB)
    sink = _sink(S3JsonlSink, out_bucket)
    inject.fail(sink.client, operation, 403, "InvalidAccessKeyId")
    sink.put_records([{RECORD_ID_KEY: "big", "blob": "x" * size}])
    with pytest.raises(
        ConfigurationError,
        match=r"refused the worker's credentials while "
        r"uploading .*\(InvalidAccessKeyId: S3 does not know the access key id\)",
    ):
        sink.flush()


def test_a_wrong_secret_on_a_strict_s3_is_a_configuration_error(
    s3: Any, out_bucket: str, strict_s3: None, wrong_secret: Any
) -> None:
    wrong_secret()
    sink = S3CsvSink({"bucket": out_bucket}, RunContext(run_id="r"))
    sink.open()  # a HEAD's bare 403 does not say why: the upload does
    sink.put_records(_records(1))
    with pytest.raises(ConfigurationError, match=r"\(SignatureDoesNotMatch: the secret key"):
        sink.flush()


def test_no_credentials_at_all_is_a_configuration_error(aws: Any, no_credentials: None) -> None:
    sink = S3CsvSink({"bucket": "igata-out"}, RunContext(run_id="r"))
    with pytest.raises(ConfigurationError, match=r"cannot sign requests to S3 .*NoCredentials"):
        sink.open()


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (400, "RequestTimeout"), (502, "BadGateway")],
)
def test_an_upload_outage_is_retried_not_a_configuration_error(
    s3: Any, out_bucket: str, inject: Any, status: int, code: str
) -> None:
    sink = _sink(S3CsvSink, out_bucket, max_attempts=1)
    inject.fail(sink.client, "PutObject", status, code, times=1)
    sink.put_records(_records(2))
    with pytest.raises(Exception) as raised:
        sink.flush()
    assert not isinstance(raised.value, ConfigurationError)
    assert code in str(raised.value)
    assert sink.flush() == []
    assert len(_csv_rows(_objects(s3, out_bucket)["run-1/part-00000.csv"])) == 2


def test_an_output_bucket_that_cannot_be_checked_for_an_outage_is_left_to_the_upload(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = S3CsvSink({"bucket": out_bucket, "max_attempts": 1}, RunContext(run_id="run-1"))
    inject.fail(sink.client, "HeadBucket", 503, "503", times=1)
    sink.open()
    sink.put_records(_records(1))
    sink.close()
    assert list(_objects(s3, out_bucket)) == ["run-1/part-00000.csv"]


def test_a_record_too_large_for_the_store_alone_is_that_records_error(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = _sink(S3JsonlSink, out_bucket, part_max_records=2)
    records = _records(5)
    sink.put_records(records[:2])
    assert sink.flush() == []  # part 0 is full: the next records start part 1
    # A redelivered record (skipped), then one the store refuses as too large.
    assert sink.put_records([records[0]]) == []
    assert sink.put_records([records[2]]) == []
    inject.fail(sink.client, "PutObject", 400, "EntityTooLarge", times=1)
    (rejection,) = sink.flush()
    assert rejection.index == 1, "its position among the records put since the last flush"
    assert rejection.error_type == "EntityTooLarge"
    assert rejection.message.startswith("S3 refused the part object holding only this record (")
    sink.put_records(records[3:])
    assert sink.flush() == []
    sink.close()
    objects = _objects(s3, out_bucket)
    assert list(objects) == ["run-1/part-00000.jsonl", "run-1/part-00001.jsonl"]
    ids = [json.loads(line)[RECORD_ID_KEY] for data in objects.values()
           for line in data.decode().splitlines()]  # fmt: skip
    assert ids == [r[RECORD_ID_KEY] for r in records[:2] + records[3:]]


def test_a_rejection_index_counts_every_record_put_since_the_last_flush(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = _sink(S3JsonlSink, out_bucket, max_attempts=1)
    unserialisable, big = _records(2)
    unserialisable["bad"] = float("nan")
    assert [r.index for r in sink.put_records([unserialisable])] == [0]
    inject.fail(sink.client, "PutObject", 500, "InternalError", times=1)
    sink.put_records([big])
    with pytest.raises(Exception, match="InternalError"):
        sink.flush()  # an outage: the record stays, its index too
    inject.remove()
    inject.fail(sink.client, "PutObject", 400, "EntityTooLarge", times=1)
    (rejection,) = sink.flush()
    assert rejection.index == 1
    assert sink.flush() == []
    assert _objects(s3, out_bucket) == {}


def test_parts_larger_than_the_store_accepts_are_a_configuration_error(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    inject.fail(sink.client, "PutObject", 400, "EntityTooLarge")
    sink.put_records(_records(3))
    with pytest.raises(ConfigurationError) as raised:
        sink.flush()
    message = str(raised.value)
    assert message.startswith(
        f"s3-csv: S3 refused part 0 (s3://{out_bucket}/run-1/part-00000.csv, "
    )
    assert "3 records) as too large (EntityTooLarge)" in message
    assert "lower the sink option 'part_max_bytes' (now 16777216) and --chunk-size" in message


# The default template after a run id of 5 characters, with the longest part number the
# check assumes: "run-1/part-99999999.jsonl".
_LONGEST_DEFAULT_KEY = 25


@pytest.mark.parametrize(
    ("options", "longest"),
    [
        ({"prefix": "p" * (1024 - _LONGEST_DEFAULT_KEY + 1)}, 1025),
        ({"prefix": "p" * (1024 - _LONGEST_DEFAULT_KEY - 3 + 1), "gzip": True}, 1025),
        # 334 characters, 1002 bytes of UTF-8: S3 counts bytes.
        ({"prefix": "日" * 334}, 1002 + _LONGEST_DEFAULT_KEY),
        ({"key_template": "{run_id}/" + "t" * 1010 + "/{part}.jsonl"}, 1031),
    ],
)
def test_keys_over_s3s_limit_are_a_usage_error_before_any_io(
    options: dict[str, Any], longest: int
) -> None:
    with pytest.raises(OptionsError) as raised:
        S3JsonlSink({"bucket": "ok-bucket", **options}, RunContext(run_id="run-1"))
    (problem,) = raised.value.problems
    assert problem.startswith(
        f"options 'prefix' and 'key_template': part keys would be up to {longest} bytes ("
    )
    assert problem.endswith(
        "over S3's limit of 1024 bytes (UTF-8); shorten the prefix or the key_template"
    )


@pytest.mark.parametrize(
    "options",
    [
        {"prefix": "p" * (1024 - _LONGEST_DEFAULT_KEY)},
        {"prefix": "p" * (1024 - _LONGEST_DEFAULT_KEY - 3), "gzip": True},
        {"prefix": "日" * 333},
    ],
)
def test_keys_up_to_s3s_limit_are_accepted(options: dict[str, Any]) -> None:
    sink = S3JsonlSink({"bucket": "ok-bucket", **options}, RunContext(run_id="run-1"))
    assert len(sink.part_key(99_999_999).encode("utf-8")) <= 1024


def test_a_key_of_exactly_1024_bytes_is_written(s3: Any, out_bucket: str) -> None:
    prefix = "p" * (1024 - _LONGEST_DEFAULT_KEY)
    sink = _sink(S3JsonlSink, out_bucket, prefix=prefix,
                 key_template="{run_id}/part-{part:08d}.jsonl")  # fmt: skip
    sink.put_records(_records(1))
    sink.close()
    assert list(_objects(s3, out_bucket)) == [f"{prefix}run-1/part-00000000.jsonl"]
    assert len(sink.keys[0].encode()) == 1024


@pytest.mark.parametrize("code", ["KeyTooLongError", "InvalidObjectName"])
def test_a_part_key_s3_refuses_is_a_configuration_error_sent_once(
    s3: Any, out_bucket: str, inject: Any, code: str
) -> None:
    # AWS says KeyTooLongError, Ceph's RADOS Gateway InvalidObjectName.
    sink = _sink(S3CsvSink, out_bucket, prefix="results/")
    inject.fail(sink.client, "PutObject", 400, code)
    sink.put_records(_records(2))
    with pytest.raises(S3ConfigurationError) as raised:
        sink.flush()
    assert str(raised.value) == (
        f"s3-csv: S3 refused to write part 0 to s3://{out_bucket}/results/run-1/part-00000.csv "
        f"({code}): S3 does not accept this key. This is a configuration error, not an "
        "outage; retrying cannot help: shorten or fix the sink options 'prefix' and "
        "'key_template' ('{run_id}/part-{part:05d}.csv'). Records not written are not "
        "acknowledged"
    )
    sink.put_records(_records(1, start=2))
    for _ in range(2):
        with pytest.raises(S3ConfigurationError, match=code):
            sink.flush()
    assert inject.calls["PutObject"] == 1, "a refused key is not sent again"
    assert _objects(s3, out_bucket) == {}


def _too_long_key(number: int) -> str:
    # Past the constructor's check: a key S3 itself must refuse.
    return "k" * 1090 + f"/part-{number:05d}.jsonl"


def test_a_key_over_1024_bytes_says_so(s3: Any, out_bucket: str, inject: Any) -> None:
    sink = _sink(S3JsonlSink, out_bucket)
    sink.part_key = _too_long_key  # type: ignore[method-assign]
    inject.fail(sink.client, "PutObject", 400, "KeyTooLongError")
    sink.put_records(_records(1))
    with pytest.raises(S3ConfigurationError) as raised:
        sink.flush()
    message = str(raised.value)
    assert f"s3-jsonl: S3 refused to write part 0 to s3://{out_bucket}/{'k' * 40}…" in message
    assert "(KeyTooLongError): the key is 1107 bytes, over S3's limit of 1024." in message


def test_a_key_over_1024_bytes_on_a_strict_s3(s3: Any, out_bucket: str, strict_s3: None) -> None:
    sink = _sink(S3JsonlSink, out_bucket)
    sink.part_key = _too_long_key  # type: ignore[method-assign]
    sink.put_records(_records(1))
    with pytest.raises(S3ConfigurationError) as raised:
        sink.flush()
    assert "the key is 1107 bytes, over S3's limit of 1024" in str(raised.value)
    assert _objects(s3, out_bucket) == {}


def test_a_refused_clock_is_the_workers_trouble_and_retried(
    s3: Any, out_bucket: str, inject: Any
) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    inject.fail(sink.client, "PutObject", 403, "RequestTimeTooSkewed", times=1)
    records = _records(3)
    sink.put_records(records)
    with pytest.raises(ServiceUnavailable) as raised:
        sink.flush()
    message = str(raised.value)
    assert message.startswith(
        f"s3: S3 refused the upload of s3://{out_bucket}/run-1/part-00000.csv because the "
        "request was signed with a time too far from S3's clock (RequestTimeTooSkewed"
    )
    assert "check the worker's clock and its time synchronisation (NTP" in message
    sink.flush()  # the clock was fixed: the retried flush sends everything
    sink.close()
    assert _csv_rows(_objects(s3, out_bucket)["run-1/part-00000.csv"]) == _as_text(records)


def test_a_refused_clock_on_a_strict_s3(
    s3: Any, out_bucket: str, strict_s3: None, skewed_clock: Any
) -> None:
    sink = _sink(S3CsvSink, out_bucket)
    sink.put_records(_records(1))
    skewed_clock()
    with pytest.raises(ServiceUnavailable, match=r"\(RequestTimeTooSkewed"):
        sink.flush()
