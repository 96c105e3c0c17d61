"""The ``s3-csv`` and ``s3-jsonl`` sinks: result records as part objects in a bucket.

Durability and object count, both required:

* ``flush()`` makes every record put so far durable **in S3** before it returns (the engine
  acks the source only after that). S3 has no append, so a flush uploads the current part
  *as it is so far* to the part's key, replacing the previous upload of that part.
* Every upload is a complete object: a CSV part always starts with its header, a gzip part
  is always a finished gzip stream, and an S3 PUT (or a completed multipart upload) is
  atomic. A reader or a killed worker never leaves a half-written object.
* The part moves on to a new key when it reaches ``part_max_records``, ``part_max_bytes``
  or ``part_max_uploads`` (checked after each flush). The last bound is the trade-off: each
  flush re-uploads the part so far, so the bytes sent are about ``part_max_uploads / 2``
  times the data, while the number of objects is the number of flushes divided by
  ``part_max_uploads``. Few large flushes (a larger ``--chunk-size`` and
  ``--flush-interval``) make both small.

The current part lives in a local temporary file (the spool) between uploads; with gzip it
holds the compressed stream up to the last flush, and each upload adds the stream's end.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import IO, Any, ClassVar

from igata_core.components import RECORD_ID_KEY, Rejection, RunContext, Sink
from igata_core.options import Option, OptionsError
from igata_core.serialize import NotSerializable, dumps
from igata_s3.client import ClientSettings, s3_client
from igata_s3.errors import (
    CLOCK_SKEW,
    KEY_REFUSED,
    TOO_LARGE,
    WRONG_REGION,
    S3ConfigurationError,
    clock_skew_error,
    configured_error,
    error_code,
    transport_kind,
)
from igata_s3.uris import MAX_KEY_BYTES, abbreviate, bucket_problem, format_uri

log = logging.getLogger("igata.s3.sink")

MIB = 1 << 20
#: Parts larger than this are sent as multipart uploads (S3's minimum part is 5 MiB).
MULTIPART_THRESHOLD = 8 * MIB
#: The part number the key-length check assumes: one part per second for three years
#: (part_max_uploads=1 and a 1 s flush interval), far beyond any real run.
LONGEST_PART = 99_999_999


def _sink_options(extension: str) -> tuple[Option, ...]:
    return (
        Option("bucket", required=True, env=("OUTPUT_CTXMGR_OUTPUT_S3_BUCKET",),
               help="Bucket the part objects are written to."),
        Option("prefix", default="",
               help="Prepended to every object key (e.g. 'results/'; add the '/')."),
        Option("key_template", default=f"{{run_id}}/part-{{part:05d}}{extension}",
               help="Object key after the prefix; fields {run_id}, {date} (UTC date the part "
               "was started, YYYY-MM-DD) and {part} (0, 1, …; required). '.gz' is added "
               "when gzip is on."),
        Option("gzip", "bool", default=False, help="Write gzip-compressed parts."),
        Option("part_max_records", "int", default=100_000, minimum=1,
               help="Start a new part after this many records."),
        Option("part_max_bytes", "int", default=16 * MIB, minimum=1,
               help="Start a new part once the object is this many bytes (compressed size "
               "with gzip)."),
        Option("part_max_uploads", "int", default=200, minimum=1,
               help="Start a new part after it was uploaded this many times (each flush "
               "uploads the part so far): bounds the bytes re-sent, about half this "
               "factor times the data."),
        Option("connect_timeout", "float", default=5.0, minimum=0.1,
               help="Seconds to wait for a connection to S3.",
               env=("IGATA_S3_CONNECT_TIMEOUT",)),
        Option("read_timeout", "float", default=60.0, minimum=0.1,
               help="Seconds to wait for S3 to answer an upload request."),
        Option("max_attempts", "int", default=5, minimum=1,
               help="Attempts per S3 request (botocore 'standard' retry mode).",
               env=("IGATA_S3_MAX_ATTEMPTS",)),
    )  # fmt: skip


def _new_run_id() -> str:
    now = dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


class _KeepOpen:
    """The spool as boto3 may read it: s3transfer closes the file object it uploads."""

    def __init__(self, inner: IO[bytes]):
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        """The spool stays open for the next flush."""


class _TooLarge(Exception):
    """S3 refused a part as too large (``code``: EntityTooLarge, or a proxy's 413)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


class _Part:
    """One part object being built: its key, its spool and what is in it."""

    def __init__(self, number: int, key: str, compress: bool):
        self.number = number
        self.key = key
        # Imported here: tempfile (with shutil, bz2, lzma) costs every igata start ~3 ms.
        import tempfile

        self.spool: IO[bytes] = tempfile.TemporaryFile(prefix="igata-s3-part-")  # noqa: SIM115
        self.size = 0
        self.records = 0
        self.uploads = 0
        self.dirty = False
        #: (Rejection index, igata_id) of the records appended since the last upload.
        self.unsent: list[tuple[int, Any]] = []
        # One gzip stream per part, sync-flushed at each flush; a copy of the compressor
        # gives the stream's end for each upload without ending the stream itself.
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, 31) if compress else None

    def append(self, data: bytes, records: int) -> None:
        if self.compressor is not None:
            data = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        self.spool.seek(0, io.SEEK_END)
        self.spool.write(data)
        self.size += len(data)
        self.records += records
        self.dirty = True

    def tail(self) -> bytes:
        return self.compressor.copy().flush() if self.compressor is not None else b""

    def close(self) -> None:
        self.spool.close()


class _S3PartSink(Sink):
    """Shared machinery of the S3 sinks; subclasses say how records become bytes."""

    extension: ClassVar[str] = ""
    content_type: ClassVar[str] = ""

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: RunContext | None = None):  # fmt: skip
        super().__init__(options, context)
        problems: list[str] = []
        bucket = self.opts["bucket"] or ""
        why = bucket_problem(bucket)
        if why:
            problems.append(f"option 'bucket': {why}")
        self.run_id = self.context.run_id or _new_run_id()
        self._template = self.opts["key_template"]
        self._gzip = bool(self.opts["gzip"])
        try:
            sample = self._render(0, "2000-01-01")
            if self._render(1, "2000-01-01") == sample:
                problems.append(
                    f"option 'key_template' {self._template!r} has no "
                    "{part} field: every part would overwrite the previous one"
                )
            else:
                problems += self._key_length_problems()
        except (KeyError, IndexError, ValueError) as exc:
            problems.append(
                f"option 'key_template' {self._template!r} is not a "
                f"valid template ({type(exc).__name__}: {exc}); fields: run_id, date, part"
            )
        if problems:
            raise OptionsError(problems)
        self.bucket = bucket
        self._settings = ClientSettings(
            connect_timeout=self.opts["connect_timeout"],
            read_timeout=self.opts["read_timeout"],
            max_attempts=self.opts["max_attempts"],
        )
        self._seen: set[str] = set()
        self._pending: list[str] = []
        self._pending_records = 0
        # (index among the records put since the last flush that returned, igata_id) of
        # each pending line, and the count that index runs over (Rejection.index).
        self._pending_index: list[tuple[int, Any]] = []
        self._passed = 0
        # Rejections found by flushes that then raised: returned by the next that returns.
        self._rejections: list[Rejection] = []
        self._part: _Part | None = None
        self._next_part = 0
        self._closed = False
        # Set when S3 refused a part's key: that key cannot change, so every later flush
        # fails at once instead of sending the same refused upload again.
        self._refused: str | None = None
        #: Keys of the part objects written so far, in order.
        self.keys: list[str] = []

    @property
    def client(self) -> Any:
        return s3_client(10, self._settings)

    def open(self) -> None:
        """Fail at once on an output bucket that does not exist (or lives in another
        region): a configuration error, exit 2 before anything is read.

        A HEAD's 403 says no more than "not allowed": a write-only role may not read the
        bucket, so the first upload tells (AccessDenied there is a configuration error
        too). A HEAD that times out or is throttled is left to the first flush, which the
        engine retries within its budget.
        """
        from botocore import exceptions as bx

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except bx.ClientError as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket") or code in WRONG_REGION:
                error = self._configured(
                    exc, "checking the output bucket", "NoSuchBucket" if code == "404" else code
                )
                if isinstance(error, S3ConfigurationError):
                    raise error from None
            log.debug("%s: cannot check bucket %s (%s); the first upload will tell",
                      self.name, self.bucket, code)  # fmt: skip
        except (bx.BotoCoreError, OSError) as exc:
            if transport_kind(exc) == "configuration":
                raise self._no_credentials(exc) from exc
            log.warning("%s: cannot check bucket %s (%s: %s); the first upload will tell",
                        self.name, self.bucket, type(exc).__name__, exc)  # fmt: skip

    def _configured(
        self, exc: BaseException, doing: str, code: str | None = None
    ) -> Exception | None:
        return configured_error(
            exc,
            component=self.name,
            what=f"the output bucket {self.bucket!r}",
            doing=doing,
            needs=f"s3:PutObject on arn:aws:s3:::{self.bucket}/{self.opts['prefix']}*",
            fix="create it or fix the sink option 'bucket' (OUTPUT_CTXMGR_OUTPUT_S3_BUCKET)",
            code=code,
        )

    def _no_credentials(self, exc: BaseException) -> S3ConfigurationError:
        return S3ConfigurationError(
            f"{self.name}: cannot sign requests to S3 ({type(exc).__name__}: {exc}); give "
            "the worker credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or an instance or task role) and a region (AWS_REGION)"
        )

    def part_key(self, number: int) -> str:
        return self._render(number, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))

    def _render(self, number: int, date: str) -> str:
        key = self.opts["prefix"] + self._template.format(
            run_id=self.run_id, date=date, part=number
        )
        if self._gzip and not key.endswith(".gz"):
            key += ".gz"
        return key

    def _key_length_problems(self) -> list[str]:
        """S3 refuses keys over 1024 bytes at the first flush: say so before any I/O."""
        longest = self._render(LONGEST_PART, "2000-01-01")
        size = len(longest.encode("utf-8"))
        if size <= MAX_KEY_BYTES:
            return []
        prefix_size = len(self.opts["prefix"].encode("utf-8"))
        return [
            f"options 'prefix' and 'key_template': part keys would be up to {size} bytes "
            f"({abbreviate(longest)!r}; the prefix is {prefix_size} bytes, the rest "
            f"{size - prefix_size}), over S3's limit of {MAX_KEY_BYTES} bytes (UTF-8); "
            "shorten the prefix or the key_template"
        ]

    # -- what subclasses provide ---------------------------------------------------------

    def encode(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def header(self) -> str:
        """Text that starts every part (the CSV header)."""
        return ""

    # -- Sink -----------------------------------------------------------------------------

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        if self._closed:
            raise RuntimeError(f"sink {self.name!r}: put_records after close")
        rejections: list[Rejection] = []
        base = self._passed
        self._passed += len(records)
        for index, record in enumerate(records):
            identity = record.get(RECORD_ID_KEY)
            if identity is not None and identity in self._seen:
                continue  # a redelivered record: written once per sink instance
            try:
                line = self.encode(record)
            except (NotSerializable, TypeError, ValueError) as exc:
                rejections.append(
                    Rejection(index, f"cannot serialise record: {exc}", "NotSerializable")
                )
                continue
            self._pending.append(line)
            self._pending_records += 1
            self._pending_index.append((base + index, identity))
            if identity is not None:
                self._seen.add(identity)
        return rejections

    def flush(self) -> list[Rejection]:
        """Upload the current part so far; return only when S3 has it.

        Returns a :class:`Rejection` for a record S3 refused alone (a part holding only it
        was too large for the store). Raises :class:`S3ConfigurationError` when S3 refuses
        what the options ask (the output bucket missing or denied, the part's key, the
        worker's credentials, parts too large for the store): the key refusal permanently,
        again at every later call; ``ServiceUnavailable`` or botocore's errors for an
        outage or a refused clock (retried by the engine).
        """
        if self._refused is not None:
            raise S3ConfigurationError(self._refused)
        if self._pending:
            current = self._current_part()
            text = "".join(self._pending)
            if current.records == 0:
                text = self.header() + text
            current.append(text.encode("utf-8"), self._pending_records)
            current.unsent.extend(self._pending_index)
            self._pending = []
            self._pending_records = 0
            self._pending_index = []
        part = self._part
        if part is not None and part.dirty:
            # If the upload fails, the spool keeps everything and the next flush retries it.
            try:
                self._upload(part)
            except _TooLarge as too_large:
                self._too_large(part, too_large)
            else:
                if (
                    part.records >= self.opts["part_max_records"]
                    or part.size >= self.opts["part_max_bytes"]
                    or part.uploads >= self.opts["part_max_uploads"]
                ):
                    part.close()
                    self._part = None
        rejections, self._rejections = self._rejections, []
        self._passed = 0
        return rejections

    def _too_large(self, part: _Part, too_large: _TooLarge) -> None:
        """S3 refused the part as too large: that record's error if it holds one record
        never uploaded before, else the options' (parts larger than the store accepts)."""
        size = part.size + len(part.tail())
        if part.uploads == 0 and len(part.unsent) == 1:
            index, identity = part.unsent[0]
            self._rejections.append(Rejection(
                index,
                f"S3 refused the part object holding only this record ({size} bytes, "
                f"{too_large.code}): the record is too large for this store",
                "EntityTooLarge",
            ))  # fmt: skip
            if identity is not None:
                self._seen.discard(identity)
            # Nothing was written at this key: the next part takes its number again.
            part.close()
            self._part = None
            self._next_part = part.number
            return
        raise S3ConfigurationError(
            f"{self.name}: S3 refused part {part.number} "
            f"(s3://{self.bucket}/{abbreviate(part.key)}, {size} bytes, {part.records} "
            f"records) as too large ({too_large.code}): this store's object size limit is "
            f"below the parts this sink writes; lower the sink option 'part_max_bytes' (now "
            f"{self.opts['part_max_bytes']}) and --chunk-size so that a part and the "
            "records of one flush stay under it. Records not written are not acknowledged"
        ) from too_large.__cause__

    def _current_part(self) -> _Part:
        if self._part is None:
            self._part = _Part(self._next_part, self.part_key(self._next_part), self._gzip)
            self._next_part += 1
        return self._part

    def _upload(self, part: _Part) -> None:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        tail = part.tail()
        spool = part.spool
        spool.seek(0, io.SEEK_END)
        spool.write(tail)
        spool.seek(0)
        try:
            self.client.upload_fileobj(
                _KeepOpen(spool),
                self.bucket,
                part.key,
                ExtraArgs={
                    "ContentType": "application/gzip" if self._gzip else self.content_type,
                    "Metadata": {
                        "igata-run-id": self.run_id,
                        "igata-part": str(part.number),
                        "igata-records": str(part.records),
                    },
                },
                Config=TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD,
                    multipart_chunksize=MULTIPART_THRESHOLD,
                    max_concurrency=4,
                ),
            )
        except ClientError as exc:
            code = error_code(exc)
            where = format_uri(self.bucket, part.key)
            if code in KEY_REFUSED:
                self._refused = self._key_refused(part, code)
                raise S3ConfigurationError(self._refused) from exc
            if code in TOO_LARGE:
                raise _TooLarge(code) from exc
            if code == CLOCK_SKEW:
                raise clock_skew_error(exc, doing=f"the upload of {where}") from exc
            error = self._configured(exc, f"uploading {where}")
            if error is None:
                raise
            raise error from exc
        except (BotoCoreError, OSError) as exc:
            if transport_kind(exc) == "configuration":
                raise self._no_credentials(exc) from exc
            raise
        finally:
            # Take the stream's end off again: the next flush continues the stream.
            spool.truncate(part.size)
        part.dirty = False
        part.unsent = []
        part.uploads += 1
        if not self.keys or self.keys[-1] != part.key:
            self.keys.append(part.key)
        log.debug("s3: uploaded %s (%d records, %d bytes, upload %d)",
                  format_uri(self.bucket, part.key), part.records, part.size + len(tail),
                  part.uploads)  # fmt: skip

    def _key_refused(self, part: _Part, code: str) -> str:
        size = len(part.key.encode("utf-8"))
        why = (
            f"the key is {size} bytes, over S3's limit of {MAX_KEY_BYTES}"
            if size > MAX_KEY_BYTES
            else "S3 does not accept this key"
        )
        return (
            f"{self.name}: S3 refused to write part {part.number} to "
            f"s3://{self.bucket}/{abbreviate(part.key)} ({code}): {why}. This is a "
            "configuration error, not an outage; retrying cannot help: shorten or fix the "
            f"sink options 'prefix' and 'key_template' ({self._template!r}). Records not "
            "written are not acknowledged"
        )

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._part is not None:
            self._part.close()
            self._part = None


def _csv_cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return dumps(value, ensure_ascii=False)


class S3CsvSink(_S3PartSink):
    """CSV part objects with a header row (``fieldnames``, or the first record's keys).

    Nested values (lists, dicts, arrays) are written as JSON text, datetimes as ISO 8601;
    keys not in the header are left out (logged once per key).
    """

    name = "s3-csv"
    aliases = ("S3BucketCsvFileOutputCtxManager",)
    description = "CSV part objects in an S3 bucket (durable in S3 at every flush)"
    extension = ".csv"
    content_type = "text/csv; charset=utf-8"
    options: ClassVar[tuple[Option, ...]] = (
        *_sink_options(".csv"),
        Option("fieldnames", "list", default=[], env=("OUTPUT_CTXMGR_FIELDNAMES",),
               help="Comma-separated header (default: the first record's keys)."),
    )  # fmt: skip

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: RunContext | None = None):  # fmt: skip
        super().__init__(options, context)
        self._fieldnames: list[str] = list(self.opts["fieldnames"])
        self._left_out: set[str] = set()

    def header(self) -> str:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(self._fieldnames)
        return buffer.getvalue()

    def encode(self, record: dict[str, Any]) -> str:
        if not self._fieldnames:
            self._fieldnames = list(record)
        extra = set(record).difference(self._fieldnames, self._left_out)
        if extra:
            self._left_out.update(extra)
            log.warning("s3-csv: field(s) %s not in the header (%s); left out of the CSV",
                        ", ".join(sorted(extra)), ",".join(self._fieldnames))  # fmt: skip
        buffer = io.StringIO()
        csv.writer(buffer).writerow([_csv_cell(record.get(name)) for name in self._fieldnames])
        return buffer.getvalue()


class S3JsonlSink(_S3PartSink):
    """JSON Lines part objects: one result record per line."""

    name = "s3-jsonl"
    description = "JSON Lines part objects in an S3 bucket (durable in S3 at every flush)"
    extension = ".jsonl"
    content_type = "application/x-ndjson"
    options: ClassVar[tuple[Option, ...]] = _sink_options(".jsonl")

    def encode(self, record: dict[str, Any]) -> str:
        return dumps(record, ensure_ascii=False) + "\n"
