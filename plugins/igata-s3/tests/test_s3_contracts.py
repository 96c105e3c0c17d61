"""igata-core's contract tests, run against the s3 source and both S3 sinks."""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from igata_core.components import Sink, Source
from igata_core.testing.contracts import SinkContract, SourceContract
from igata_s3.sinks import S3CsvSink, S3JsonlSink
from igata_s3.source import S3Source

OUT = "contract-out"


class _S3SinkContract(SinkContract):
    # Each sink (each worker run) writes its own part objects: a record redelivered to a
    # new run is in both runs' parts, with the same igata_id for consumers to de-duplicate.
    # Within one sink instance a record is written once (checked by the tests below too).
    deduplicates = False
    sink_class: type[Sink] = S3CsvSink
    extra: dict[str, Any] = {}

    @pytest.fixture(autouse=True)
    def _endpoint(self, aws: Any, inject: Any) -> None:
        self.aws = aws
        self.inject = inject
        self.s3 = aws.client("s3")
        self.s3.create_bucket(Bucket=OUT)
        self.prefix = f"t-{uuid.uuid4().hex[:8]}/"

    def make_sink(self, tmp_path: Path) -> Sink:
        # One attempt per request: the outage below reaches the sink without backoff.
        sink = self.sink_class(
            {"bucket": OUT, "prefix": self.prefix, "max_attempts": 1, **self.extra}
        )
        sink.open()
        return sink

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        listed = self.s3.list_objects_v2(Bucket=OUT, Prefix=self.prefix).get("Contents", [])
        for obj in sorted(listed, key=lambda o: o["Key"]):
            data = self.s3.get_object(Bucket=OUT, Key=obj["Key"])["Body"].read()
            if obj["Key"].endswith(".gz"):
                data = gzip.decompress(data)
            text = data.decode("utf-8")
            if ".csv" in obj["Key"]:
                rows.extend(csv.DictReader(io.StringIO(text, newline="")))
            else:
                rows.extend(json.loads(line) for line in text.splitlines())
        return rows

    def break_store(self, sink: Sink) -> None:
        # An outage (S3 answers 503 SlowDown to every upload), not a configuration error:
        # a missing or denied bucket stops the run instead (test_s3_sinks.py).
        for operation in ("PutObject", "CreateMultipartUpload", "UploadPart"):
            self.inject.fail(sink.client, operation, 503, "SlowDown")  # type: ignore[attr-defined]

    def repair_store(self, sink: Sink) -> None:
        self.inject.remove()

    def test_a_redelivery_within_one_sink_is_written_once(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        records = self.make_records(5)
        self.put(sink, records[:3])
        sink.flush()
        self.put(sink, records[1:])
        sink.flush()
        stored = self.read_back(sink)
        assert sorted(r["igata_id"] for r in stored) == sorted(r["igata_id"] for r in records)


class TestS3CsvSinkContract(_S3SinkContract):
    sink_class = S3CsvSink


class TestS3CsvGzipSinkContract(_S3SinkContract):
    sink_class = S3CsvSink
    extra = {"gzip": True, "part_max_records": 4}


class TestS3JsonlSinkContract(_S3SinkContract):
    sink_class = S3JsonlSink


class TestS3SourceContract(SourceContract):
    # Without a ledger every run lists the prefix again: nothing is remembered.
    remembers_acks = False

    @pytest.fixture(autouse=True)
    def _endpoint(self, aws: Any) -> None:
        self.s3 = aws.client("s3")
        self.s3.create_bucket(Bucket="contract-in")

    def make_inputs(self, tmp_path: Path, n: int) -> Any:
        prefix = f"t-{uuid.uuid4().hex[:8]}/"
        for i in range(n):
            self.s3.put_object(Bucket="contract-in", Key=f"{prefix}{i}.jpg", Body=b"x")
        return {"inputs": [f"s3://contract-in/{prefix}"]}

    def make_source(self, inputs: Any) -> Source:
        source = S3Source(inputs)
        source.open()
        return source


class TestS3SourceWithLocalLedgerContract(TestS3SourceContract):
    remembers_acks = True

    def make_inputs(self, tmp_path: Path, n: int) -> Any:
        options = super().make_inputs(tmp_path, n)
        return {**options, "ledger": str(tmp_path / "ledger.jsonl")}


class TestS3SourceWithS3LedgerContract(TestS3SourceContract):
    remembers_acks = True

    def make_inputs(self, tmp_path: Path, n: int) -> Any:
        options = super().make_inputs(tmp_path, n)
        return {**options, "ledger": f"s3://contract-in/ledgers/{uuid.uuid4().hex[:8]}"}
