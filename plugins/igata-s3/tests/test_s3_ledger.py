from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from igata_core.components import ConfigurationError, Envelope
from igata_s3 import ledger as ledger_module
from igata_s3.client import ClientSettings, s3_client
from igata_s3.ledger import LocalLedger, S3Ledger
from igata_s3.source import S3Source


def _source(options: dict[str, Any]) -> S3Source:
    source = S3Source(options)
    source.open()
    return source


def _keys(envelopes: list[Envelope]) -> list[str]:
    return [e.items[0].meta["key"] for e in envelopes]


def test_local_ledger_survives_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "jobs" / "ledger.jsonl"
    ledger = LocalLedger(str(path), "r1")
    ledger.open()
    ledger.record([("s3://b/a.jpg", "e1"), ("s3://b/b.jpg", "e2")])
    ledger.close()
    ledger.close()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"identity": "s3://b/c.jp')  # the writer was killed mid-line
    again = LocalLedger(str(path), "r2")
    again.open()
    assert again.loaded == 2
    assert again.is_done("s3://b/a.jpg", "e1")
    assert not again.is_done("s3://b/a.jpg", "changed-etag")
    again.record([("s3://b/c.jpg", "e3")])
    again.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1])["identity"] == "s3://b/c.jpg"
    third = LocalLedger(str(path), "r3")
    third.open()
    assert third.loaded == 3 and third.is_done("s3://b/c.jpg", "e3")
    third.close()


def test_a_rerun_skips_completed_objects_and_retries_the_rest(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    for key in ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    options = {"inputs": [f"s3://{bucket}/"], "ledger": str(tmp_path / "ledger.jsonl")}
    first = _source(options)
    envelopes = list(first.envelopes())
    assert first.total() == 4
    first.ack(envelopes[:2])  # a and b completed
    first.nack(envelopes[2:3])  # c failed, d never settled (the worker died)
    first.close()

    s3.put_object(Bucket=bucket, Key="b.jpg", Body=b"changed")  # new etag: process again
    s3.put_object(Bucket=bucket, Key="e.jpg", Body=b"new")
    second = _source(options)
    assert second.total() == 4
    assert _keys(list(second.envelopes())) == ["b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    assert second.skipped == 1
    second.close()


def test_named_objects_are_skipped_by_identity_and_etag(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="one.jpg", Body=b"1")
    options = {"inputs": [f"s3://{bucket}/one.jpg", f"s3://{bucket}/missing.jpg"],
               "ledger": str(tmp_path / "ledger.jsonl")}  # fmt: skip
    first = _source(options)
    envelopes = list(first.envelopes())
    assert envelopes[0].items[0].meta["etag"]
    first.ack(envelopes)  # the missing one has no etag: nothing to record for it
    first.close()
    second = _source(options)
    assert [e.ref for e in second.envelopes()] == [f"s3://{bucket}/missing.jpg"]
    second.close()


def test_s3_ledger_writes_segments_in_batches_and_at_close(
    s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "SEGMENT_RECORDS", 3)
    ledger = S3Ledger(f"s3://{bucket}/jobs/job-1", "r1", s3_client, flush_records=2,
                      flush_seconds=3600)  # fmt: skip
    ledger.open()

    def segments() -> dict[str, list[str]]:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="jobs/job-1/").get("Contents", [])
        return {
            o["Key"]: [json.loads(line)["identity"] for line in
                       s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().splitlines()]
            for o in listed
        }  # fmt: skip

    assert segments() == {"jobs/job-1/r1-00000.jsonl": []}, "written empty at open"
    ledger.record([("s3://x/1", "e")])
    assert segments() == {"jobs/job-1/r1-00000.jsonl": []}, "one ack is below the batch"
    ledger.record([("s3://x/2", "e")])
    assert segments() == {"jobs/job-1/r1-00000.jsonl": ["s3://x/1", "s3://x/2"]}
    ledger.record([("s3://x/3", "e"), ("s3://x/4", "e")])
    assert segments() == {
        "jobs/job-1/r1-00000.jsonl": ["s3://x/1", "s3://x/2", "s3://x/3", "s3://x/4"]
    }
    ledger.record([("s3://x/5", "e")])
    ledger.close()
    ledger.close()
    assert segments()["jobs/job-1/r1-00001.jsonl"] == ["s3://x/5"]

    # A rerun with the same run id adds segments instead of overwriting.
    again = S3Ledger(f"s3://{bucket}/jobs/job-1", "r1", s3_client)
    again.open()
    assert again.loaded == 5 and again.is_done("s3://x/5", "e")
    again.record([("s3://x/6", "e")])
    again.close()
    assert segments()["jobs/job-1/r1-00002.jsonl"] == ["s3://x/6"]


def test_s3_ledger_job_rerun(s3: Any, bucket: str) -> None:
    for key in ["a.png", "b.png", "c.png"]:
        s3.put_object(Bucket=bucket, Key=f"in/{key}", Body=b"x")
    options = {"inputs": [f"s3://{bucket}/in/"], "ledger": f"s3://{bucket}/ledgers/job"}
    first = _source(options)
    envelopes = list(first.envelopes())
    first.ack(envelopes[1:])
    first.close()
    second = _source(options)
    assert _keys(list(second.envelopes())) == ["in/a.png"]
    assert second.total() == 1
    second.close()


def _quick_client() -> Any:
    return s3_client(10, ClientSettings(max_attempts=1))


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown")])
def test_s3_ledger_write_outage_is_not_fatal(
    s3: Any, bucket: str, inject: Any, status: int, code: str
) -> None:
    ledger = S3Ledger(f"s3://{bucket}/l", "r1", _quick_client, flush_records=1)
    ledger.open()
    inject.fail(_quick_client(), "PutObject", status, code, times=1)
    ledger.record([("s3://x/1", "e")])  # logged, kept pending
    assert ledger.refused is None
    ledger.record([("s3://x/2", "e")])
    ledger.close()
    body = s3.get_object(Bucket=bucket, Key="l/r1-00000.jsonl")["Body"].read()
    assert [json.loads(line)["identity"] for line in body.splitlines()] == ["s3://x/1", "s3://x/2"]


def test_an_s3_ledger_in_a_bucket_that_does_not_exist_is_a_configuration_error(
    s3: Any, bucket: str
) -> None:
    source = S3Source({"inputs": [f"s3://{bucket}/"], "ledger": "s3://no-such-ledgers/job"})
    with pytest.raises(ConfigurationError) as raised:
        source.open()
    assert str(raised.value) == (
        "s3: the bucket 'no-such-ledgers' of the ledger s3://no-such-ledgers/job does not "
        "exist (NoSuchBucket); create it or fix the source option 'ledger'"
    )


@pytest.mark.parametrize("operation", ["ListObjectsV2", "GetObject", "PutObject"])
def test_an_s3_ledger_the_worker_may_not_use_is_a_configuration_error_at_open(
    s3: Any, bucket: str, inject: Any, operation: str
) -> None:
    s3.put_object(Bucket=bucket, Key="l/old-00000.jsonl", Body=b'{"identity": "a"}\n')
    inject.fail(s3_client(), operation, 403, "AccessDenied")
    ledger = S3Ledger(f"s3://{bucket}/l", "r1", s3_client)
    with pytest.raises(ConfigurationError) as raised:
        ledger.open()
    message = str(raised.value)
    assert message.startswith("s3: access denied while ")
    assert f"s3:PutObject on arn:aws:s3:::{bucket}/l/*" in message


def test_an_s3_ledger_refused_during_the_run_stops_the_source(
    s3: Any, bucket: str, inject: Any
) -> None:
    for key in ["a.jpg", "b.jpg", "c.jpg"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    source = _source({"inputs": [f"s3://{bucket}/"], "ledger": f"s3://{bucket}/l",
                      "ledger_flush_records": 1})  # fmt: skip
    envelopes = source.envelopes()
    first = next(envelopes)
    inject.fail(source.client, "PutObject", 403, "AccessDenied")
    source.ack([first])  # the ledger write is refused: logged, remembered
    with pytest.raises(ConfigurationError, match=r"access denied while writing the ledger"):
        next(envelopes)
    source.close()


def test_a_local_ledger_that_cannot_be_opened_is_a_configuration_error(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    source = S3Source({"inputs": [f"s3://{bucket}/"],
                       "ledger": str(tmp_path / "a-file" / "ledger.jsonl")})  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"s3: cannot open the ledger .*a-file"):
        source.open()
