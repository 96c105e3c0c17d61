"""The job ledger of the ``s3`` source: which objects a job has already completed.

A rerun over the same inputs skips every object whose (identity, etag) is in the ledger, so
only failures and changed or new objects are processed again. Only acks are recorded: an
object is "completed" once every record derived from it was written and flushed by the
sink, which is exactly when the engine acks it.

Two stores, one format (JSON lines ``{"identity", "etag", "run_id", "at"}``):

* a local path: one append-only file; every ``record`` call appends and fsyncs, so an ack
  is durable before ``record`` returns. A line cut short by a crash is ignored on load.
* an ``s3://bucket/name`` URI: segment objects ``name/<run_id>-<n>.jsonl``. S3 has no
  append, so this run's newest segment is rewritten whole every ``flush_records`` acks or
  ``flush_seconds`` seconds, and at close; a segment is closed after ``SEGMENT_RECORDS``
  lines so that no rewrite is large. Acks since the last write are lost if the worker dies:
  those objects are simply processed again by the next run (at-least-once).

Membership is kept as 16-byte digests, about 70 bytes per completed object in memory.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from igata_core.components import ConfigurationError, ServiceUnavailable
from igata_s3.uris import S3Location, format_uri, parse_uri

log = logging.getLogger("igata.s3.ledger")

#: Lines per S3 segment object before a new one is started.
SEGMENT_RECORDS = 10_000
#: The segment number the key-length check assumes: a billion acks in one run.
LONGEST_SEGMENT = 99_999


def _digest(identity: str, etag: str) -> bytes:
    import hashlib  # here: this module is imported whenever the plugin registers (~4 ms)

    return hashlib.blake2b(f"{identity}\0{etag}".encode(), digest_size=16).digest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Ledger:
    """Completed (identity, etag) pairs: loaded by ``open``, extended by ``record``."""

    def __init__(self, location: str, run_id: str):
        self.location = location
        self.run_id = run_id
        self._done: set[bytes] = set()
        self._lock = threading.Lock()
        self.loaded = 0
        #: Set when the store refused the ledger during the run (a configuration error).
        self.refused: str | None = None

    def open(self) -> None:
        raise NotImplementedError

    def is_done(self, identity: str, etag: str) -> bool:
        with self._lock:
            return _digest(identity, etag) in self._done

    def record(self, entries: Sequence[tuple[str, str]]) -> None:
        """Mark these (identity, etag) pairs completed."""
        raise NotImplementedError

    def close(self) -> None:
        """Write what is pending (idempotent)."""

    def _line(self, identity: str, etag: str) -> str:
        record = {"identity": identity, "etag": etag, "run_id": self.run_id, "at": _now()}
        return json.dumps(record, ensure_ascii=False) + "\n"

    def _load_lines(self, lines: Iterable[str], where: str) -> None:
        count = 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._done.add(_digest(str(entry["identity"]), str(entry.get("etag", ""))))
                count += 1
            except (ValueError, KeyError, TypeError):
                # The last line of a file whose writer was killed may be cut short.
                log.warning("ledger %s: line %d is not a ledger entry; ignored", where, number)
        self.loaded += count


class LocalLedger(Ledger):
    """An append-only JSON-lines file, fsynced on every ``record``."""

    def __init__(self, location: str, run_id: str):
        super().__init__(location, run_id)
        self._handle: Any = None

    def open(self) -> None:
        try:
            self._open()
        except OSError as exc:
            raise ConfigurationError(
                f"s3: cannot open the ledger {self.location} ({exc.strerror or exc}); "
                "fix the source option 'ledger' or the file's permissions"
            ) from exc

    def _open(self) -> None:
        path = os.path.abspath(self.location)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as handle:
                self._load_lines(handle, path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        if self._handle.tell() > 0:
            # Start on a fresh line if the previous writer died mid-line.
            with open(path, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    self._handle.write("\n")

    def record(self, entries: Sequence[tuple[str, str]]) -> None:
        if not entries:
            return
        with self._lock:
            if self._handle is None:
                raise RuntimeError(f"ledger {self.location}: record after close")
            self._handle.write("".join(self._line(i, e) for i, e in entries))
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._done.update(_digest(i, e) for i, e in entries)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


class S3Ledger(Ledger):
    """Segment objects under ``<uri>/``; this run's newest segment is rewritten in batches."""

    def __init__(
        self,
        location: str,
        run_id: str,
        client: Callable[[], Any],
        *,
        flush_records: int = 1000,
        flush_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(location, run_id)
        parsed: S3Location = parse_uri(location, allow_prefix=True)
        self.bucket = parsed.bucket
        self.prefix = _segment_prefix(parsed)
        self._client = client
        self._flush_records = flush_records
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._segment = 0
        self._segment_lines: list[str] = []
        self._unwritten = 0
        self._last_write = clock()
        self._closed = False

    def segment_key(self, number: int) -> str:
        return _segment_key(self.prefix, self.run_id, number)

    def open(self) -> None:
        """Load every segment, then write this run's first one (empty) at once.

        The ledger is named by the options: a bucket that does not exist, a denied
        listing, read or write and refused credentials are configuration errors, found
        here rather than when the first acks are written (a job whose acks can never be
        recorded would redo everything on its rerun).
        """
        from botocore import exceptions as bx

        client = self._client()
        keys: set[str] = set()
        doing = f"listing the ledger {self.location}"
        try:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                for obj in page.get("Contents", []):
                    keys.add(obj["Key"])
                    if obj["Key"].endswith(".jsonl"):
                        doing = f"reading the ledger segment {format_uri(self.bucket, obj['Key'])}"
                        body = client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"]
                        text = body.read().decode("utf-8", errors="replace")
                        self._load_lines(text.splitlines(), format_uri(self.bucket, obj["Key"]))
            # A rerun with the same run id must not overwrite the segments of the earlier run.
            while self.segment_key(self._segment) in keys:
                self._segment += 1
            where = format_uri(self.bucket, self.segment_key(self._segment))
            doing = f"writing the ledger segment {where}"
            self._put(b"")
        except (bx.ClientError, bx.BotoCoreError, OSError) as exc:
            raise self._error(exc, doing) from exc

    def _error(self, exc: BaseException, doing: str) -> Exception:
        """The kind of a failed ledger request (the ledger is configuration, not input)."""
        from botocore import exceptions as bx

        from igata_s3.errors import S3ConfigurationError, configured_error, transport_kind

        if isinstance(exc, bx.ClientError):
            error = configured_error(
                exc,
                component="s3",
                what=f"the bucket {self.bucket!r} of the ledger {self.location}",
                doing=doing,
                needs=f"s3:ListBucket on arn:aws:s3:::{self.bucket} and s3:GetObject and "
                f"s3:PutObject on arn:aws:s3:::{self.bucket}/{self.prefix}*",
                fix="create it or fix the source option 'ledger'",
            )
            return error if error is not None else exc  # type: ignore[return-value]
        if transport_kind(exc) == "configuration":
            return S3ConfigurationError(
                f"s3: cannot sign a request while {doing} ({type(exc).__name__}: "
                f"{exc}); give the worker credentials and a region (AWS_REGION)"
            )
        return ServiceUnavailable(f"s3: {doing} failed: {type(exc).__name__}: {exc}")

    def _put(self, body: bytes) -> None:
        # A PUT is atomic: a reader sees the previous or the new segment, never half.
        self._client().put_object(
            Bucket=self.bucket,
            Key=self.segment_key(self._segment),
            Body=body,
            ContentType="application/x-ndjson",
        )

    def record(self, entries: Sequence[tuple[str, str]]) -> None:
        if not entries:
            return
        with self._lock:
            self._segment_lines.extend(self._line(i, e) for i, e in entries)
            self._done.update(_digest(i, e) for i, e in entries)
            self._unwritten += len(entries)
            due = (
                self._unwritten >= self._flush_records
                or self._clock() - self._last_write >= self._flush_seconds
            )
            if due:
                self._write_or_warn()

    def _write_or_warn(self) -> None:
        if self.refused:
            return
        try:
            self._write()
        except Exception as exc:
            where = format_uri(self.bucket, self.segment_key(self._segment))
            error = self._error(exc, f"writing the ledger segment {where}")
            if isinstance(error, ConfigurationError):
                # The ledger was refused since open (bucket deleted, policy changed): the
                # source stops the run at its next envelope.
                self.refused = str(error)
                log.error("%s", error)
                return
            # An outage is not fatal: the acks stay pending and are written with the next
            # batch; if they never are, the next run processes those objects again.
            log.warning(
                "ledger %s: could not write segment %s (%s); %d acks pending, retried later",
                self.location,
                self.segment_key(self._segment),
                exc,
                self._unwritten,
            )

    def _write(self) -> None:
        if not self._unwritten:
            return
        self._put("".join(self._segment_lines).encode("utf-8"))
        self._unwritten = 0
        self._last_write = self._clock()
        if len(self._segment_lines) >= SEGMENT_RECORDS:
            self._segment += 1
            self._segment_lines = []

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._write_or_warn()


def _segment_prefix(location: S3Location) -> str:
    return location.key.rstrip("/") + "/" if location.key.strip("/") else ""


def _segment_key(prefix: str, run_id: str, number: int) -> str:
    return f"{prefix}{run_id}-{number:05d}.jsonl"


def longest_segment_key(location: S3Location, run_id: str) -> str:
    """The longest segment key an S3 ledger at ``location`` writes (checked before any I/O)."""
    return _segment_key(_segment_prefix(location), run_id, LONGEST_SEGMENT)


def open_ledger(
    location: str,
    run_id: str,
    client: Callable[[], Any],
    *,
    flush_records: int = 1000,
    flush_seconds: float = 30.0,
) -> Ledger:
    """A ledger at a local path or an ``s3://`` URI, loaded."""
    ledger: Ledger
    if location.startswith("s3://"):
        ledger = S3Ledger(
            location, run_id, client, flush_records=flush_records, flush_seconds=flush_seconds
        )
    else:
        ledger = LocalLedger(location, run_id)
    ledger.open()
    log.info("ledger %s: %d objects already completed", location, ledger.loaded)
    return ledger
