"""``igata export``: a collection's RESULTS (and errors) through the existing sinks.

Reading, by ``--read``:

* ``keys`` (the default when the REQUESTS items carry the RESULTS sort key, as ``igata
  submit`` writes them): the ``completed`` requests of the collection come from the
  ``collection_id-state-index``; each request's RESULTS items are addressed by their keys
  (the dynamodb sink's ``hashkey`` of the request id and position, for every position
  below ``results_count``, and the request's sort key value) and read with
  ``BatchGetItem``, 100 keys a call, calls in parallel.
* ``scan``: a parallel ``Scan`` of RESULTS in ``--segments`` segments, keeping the items
  of the collection's completed requests (their ids from the index; RESULTS items carry
  the request id as a parent field). For RESULTS items whose sort key is not the request's.

Writing: ``jsonl`` or ``csv`` sink for a local file, ``s3-jsonl`` or ``s3-csv`` for an
``s3://bucket/prefix/`` (part objects ``part-00000.jsonl`` …).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from igata_jobs.aws import JobError, JobUnavailable, dynamodb_failure
from igata_jobs.index import plain, query_pages

COMPLETED, ERROR = "completed", "error"
#: BatchGetItem takes at most 100 keys.
MAX_GET = 100
#: Records handed to the sink per put_records call, and between flushes.
CHUNK = 500
FLUSH_EVERY = 20_000


@dataclass
class ExportSettings:
    collection_id: str
    dest: str
    requests_table: str
    results_table: str
    request_key: str = "request_id"
    state_key: str = "state"
    sort_key: str = "s3_uri"
    format: str = "auto"
    fields: list[str] = field(default_factory=list)
    errors_to: str | None = None
    read: str = "auto"
    segments: int = 4
    workers: int = 8


@dataclass
class ExportReport:
    completed: int = 0
    expected: int = 0
    results: int = 0
    missing: int = 0
    errors: int = 0
    rejected: int = 0
    read: str = ""
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)


def _sink_for(dest: str, fmt: str, fields: list[str]) -> Any:
    """An opened sink writing to ``dest`` (a local file or ``s3://bucket/prefix/``)."""
    from igata_core.components import RunContext

    kind = fmt
    if kind == "auto":
        kind = "csv" if dest.lower().rstrip("/").endswith(".csv") else "jsonl"
    if dest.startswith("s3://"):
        from igata_s3.sinks import S3CsvSink, S3JsonlSink
        from igata_s3.uris import InvalidS3Uri, parse_uri

        try:
            where = parse_uri(dest, allow_prefix=True)
        except InvalidS3Uri as exc:
            raise JobError(f"--to: {exc}") from None
        prefix = where.key if where.key.endswith("/") or not where.key else where.key + "/"
        options: dict[str, Any] = {
            "bucket": where.bucket,
            "prefix": prefix,
            "key_template": f"part-{{part:05d}}.{kind}",
        }
        cls = S3CsvSink if kind == "csv" else S3JsonlSink
    else:
        from igata_core.builtins.sinks import CsvSink, JsonlSink

        options = {"path": dest}
        cls = CsvSink if kind == "csv" else JsonlSink
    if kind == "csv" and fields:
        options["fieldnames"] = fields
    from igata_core.options import OptionsError, resolve

    resolved, problems = resolve(cls.options, owner=f"sink {cls.name!r}", cli=options)
    if problems:
        raise JobError("; ".join(problems))
    try:
        sink = cls(resolved.values, RunContext(run_id="export"))
    except OptionsError as exc:
        raise JobError(str(exc)) from None
    try:
        sink.open()
    except Exception as exc:
        raise _sink_failure(exc, dest) from exc
    return sink


def _sink_failure(exc: BaseException, dest: str) -> Exception:
    from igata_core import ConfigurationError

    if isinstance(exc, ConfigurationError | OSError):
        return JobError(f"export: cannot write {dest}: {exc}")
    return JobUnavailable(f"export: writing {dest} failed: {type(exc).__name__}: {exc}")


class Writer:
    """Records to a sink in chunks, flushed now and then and at the end."""

    def __init__(self, sink: Any, dest: str):
        self.sink = sink
        self.dest = dest
        self.buffer: list[dict[str, Any]] = []
        self.written = 0
        self.rejected = 0
        self._since_flush = 0
        self.lock = threading.Lock()

    def add(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            self.buffer.extend(records)
            while len(self.buffer) >= CHUNK:
                self._put(self.buffer[:CHUNK])
                del self.buffer[:CHUNK]

    def _put(self, records: list[dict[str, Any]]) -> None:
        try:
            rejections = self.sink.put_records(records) or []
        except Exception as exc:
            raise _sink_failure(exc, self.dest) from exc
        self.rejected += len(rejections)
        self.written += len(records) - len(rejections)
        self._since_flush += len(records)
        if self._since_flush >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        try:
            rejections = self.sink.flush() or []
        except Exception as exc:
            raise _sink_failure(exc, self.dest) from exc
        self.rejected += len(rejections)
        self.written -= len(rejections)
        self._since_flush = 0

    def close(self) -> None:
        with self.lock:
            if self.buffer:
                self._put(self.buffer)
                self.buffer = []
            self._flush()
            try:
                self.sink.close()
            except Exception as exc:
                raise _sink_failure(exc, self.dest) from exc


class _NeedScan(Exception):
    """The REQUESTS items do not carry the RESULTS sort key: read by scan instead."""


class Exporter:
    def __init__(self, settings: ExportSettings, ddb: Any, layout: Any):
        self.settings = settings
        self.ddb = ddb
        self.layout = layout

    # -- completed requests ----------------------------------------------------------------

    def completed(self, projection: list[str]) -> Iterator[list[dict[str, Any]]]:
        """Pages of the collection's completed REQUESTS items (plain values)."""
        for page in query_pages(
            self.ddb, self.layout, self.settings.collection_id, COMPLETED, projection=projection
        ):
            yield [plain(item) for item in page.get("Items", [])]

    # -- keys: BatchGetItem ----------------------------------------------------------------

    def by_keys(self, writer: Writer, report: ExportReport, *, auto: bool = False) -> None:
        """With ``auto``, raise :class:`_NeedScan` (before anything is written) when the
        first page of completed requests lacks the sort key."""
        from igata_dynamodb.layout import RESULTS_COUNT_ATTRIBUTE, RESULTS_HASH_KEY
        from igata_dynamodb.records import results_hashkey

        layout = self.layout
        attributes = [layout.request_key, RESULTS_COUNT_ATTRIBUTE, layout.sort_key]
        with ThreadPoolExecutor(self.settings.workers) as pool:
            futures = []
            keys: list[dict[str, Any]] = []
            for number, page in enumerate(self.completed(attributes)):
                if auto and number == 0 and any(layout.sort_key not in i for i in page):
                    raise _NeedScan
                for item in page:
                    report.completed += 1
                    count = int(item.get(RESULTS_COUNT_ATTRIBUTE, 0) or 0)
                    sort_value = item.get(layout.sort_key)
                    if count and sort_value is None:
                        raise JobError(
                            f"export: the REQUESTS item {item.get(layout.request_key)!r} has "
                            f"no {layout.sort_key!r} to find its RESULTS items by key; use "
                            "--read scan"
                        )
                    report.expected += count
                    rid = str(item[layout.request_key])
                    for position in range(count):
                        keys.append(
                            {
                                RESULTS_HASH_KEY: {"S": results_hashkey(rid, position)},
                                layout.sort_key: {"S": str(sort_value)},
                            }
                        )
                        if len(keys) == MAX_GET:
                            futures.append(pool.submit(self._get, keys, writer))
                            keys = []
                futures = self._settle(futures, report, keep=4 * self.settings.workers)
            if keys:
                futures.append(pool.submit(self._get, keys, writer))
            self._settle(futures, report, keep=0)
        report.missing = report.expected - report.results

    def _settle(self, futures: list[Any], report: ExportReport, keep: int) -> list[Any]:
        while len(futures) > keep:
            report.results += futures.pop(0).result()
        return futures

    def _get(self, keys: list[dict[str, Any]], writer: Writer) -> int:
        table = self.layout.results_table
        request = {table: {"Keys": keys}}
        found: list[dict[str, Any]] = []
        for attempt in range(10):
            if attempt:
                time.sleep(min(2.0, 0.05 * 2**attempt))
            try:
                response = self.ddb.batch_get_item(RequestItems=request)
            except Exception as exc:
                raise dynamodb_failure(
                    exc,
                    role="RESULTS",
                    table=table,
                    action="BatchGetItem",
                    client=self.ddb,
                    layout=self.layout,
                ) from exc
            found += response.get("Responses", {}).get(table, [])
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise JobUnavailable(
                f"dynamodb: BatchGetItem on {table!r} kept keys unprocessed "
                "(throttled); run the export again"
            )
        writer.add([plain(item) for item in found])
        return len(found)

    # -- scan ------------------------------------------------------------------------------

    def by_scan(self, writer: Writer, report: ExportReport) -> None:
        from igata_dynamodb.layout import RESULTS_COUNT_ATTRIBUTE

        layout = self.layout
        wanted: set[str] = set()
        for page in self.completed([layout.request_key, RESULTS_COUNT_ATTRIBUTE]):
            for item in page:
                report.completed += 1
                report.expected += int(item.get(RESULTS_COUNT_ATTRIBUTE, 0) or 0)
                wanted.add(str(item[layout.request_key]))
        segments = self.settings.segments
        with ThreadPoolExecutor(segments) as pool:
            counts = pool.map(lambda s: self._scan(s, segments, wanted, writer), range(segments))
            report.results = sum(counts)
        report.missing = report.expected - report.results

    def _scan(self, segment: int, total: int, wanted: set[str], writer: Writer) -> int:
        table = self.layout.results_table
        request: dict[str, Any] = {"TableName": table, "Segment": segment, "TotalSegments": total}
        key = self.layout.request_key
        written = 0
        while True:
            try:
                page = self.ddb.scan(**request)
            except Exception as exc:
                raise dynamodb_failure(
                    exc,
                    role="RESULTS",
                    table=table,
                    action="Scan",
                    client=self.ddb,
                    layout=self.layout,
                ) from exc
            records = []
            for raw in page.get("Items", []):
                item = plain(raw)
                if str(item.get(key, item.get("request_id", ""))) in wanted:
                    records.append(item)
            writer.add(records)
            written += len(records)
            start = page.get("LastEvaluatedKey")
            if not start:
                return written
            request["ExclusiveStartKey"] = start

    # -- errors ----------------------------------------------------------------------------

    def errors(self, writer: Writer, report: ExportReport) -> None:
        for page in query_pages(self.ddb, self.layout, self.settings.collection_id, ERROR):
            records = []
            for raw in page.get("Items", []):
                item = plain(raw)
                text = item.get("errors")
                if isinstance(text, str):
                    with contextlib.suppress(ValueError):
                        item["errors"] = json.loads(text)
                records.append(item)
            writer.add(records)
            report.errors += len(records)


def export(settings: ExportSettings, say: Callable[[str], None] | None = None) -> ExportReport:
    from igata_jobs.aws import check_table, dynamodb_client
    from igata_jobs.aws import layout as make_layout

    layout = make_layout(
        settings.requests_table,
        settings.results_table,
        request_key=settings.request_key,
        state_key=settings.state_key,
        sort_key=settings.sort_key,
    )
    ddb = dynamodb_client(pool_size=max(10, settings.workers + settings.segments + 2))
    # Both tables described at once (one round trip instead of two); a REQUESTS problem
    # is reported first.
    with ThreadPoolExecutor(2) as pool:
        checks = [pool.submit(check_table, ddb, layout, role) for role in ("REQUESTS", "RESULTS")]
        for check in checks:
            check.result()
    exporter = Exporter(settings, ddb, layout)
    started = time.monotonic()
    writer = Writer(_sink_for(settings.dest, settings.format, settings.fields), settings.dest)
    report = ExportReport(read="scan" if settings.read == "scan" else "keys")
    if report.read == "keys":
        try:
            exporter.by_keys(writer, report, auto=settings.read == "auto")
        except _NeedScan:
            report = ExportReport(read="scan")
    if report.read == "scan":
        exporter.by_scan(writer, report)
    writer.close()
    report.rejected += writer.rejected
    report.outputs.append(settings.dest)
    if settings.errors_to:
        errors = Writer(_sink_for(settings.errors_to, settings.format, []), settings.errors_to)
        exporter.errors(errors, report)
        errors.close()
        report.rejected += errors.rejected
        report.outputs.append(settings.errors_to)
    report.seconds = time.monotonic() - started
    return report
