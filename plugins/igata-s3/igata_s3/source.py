"""The ``s3`` source: S3 objects and prefixes, streamed while the listing goes on.

The source only lists; the objects are downloaded by the ``s3`` loader in the engine's
worker pool. Each listing page (up to 1000 keys) is turned into envelopes as it arrives,
so memory stays bounded however large the prefix is.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from igata_core.components import Envelope, Item, RunContext, ServiceUnavailable, Source
from igata_core.options import Option, OptionsError
from igata_s3.client import s3_client
from igata_s3.errors import (
    WRONG_REGION,
    S3ConfigurationError,
    S3RecordError,
    configured_error,
    describe_client_error,
    error_code,
    transport_kind,
)
from igata_s3.ledger import Ledger, longest_segment_key, open_ledger
from igata_s3.loader import ALLOWED_BUCKETS_OPTION, CLIENT_OPTIONS, check_allowed, client_settings
from igata_s3.uris import (
    MAX_KEY_BYTES,
    InvalidS3Uri,
    S3Location,
    abbreviate,
    format_uri,
    parse_uri,
)

log = logging.getLogger("igata.s3.source")

#: Images and CSV files (the decoders of igata-core); ``.csv.gz`` is gunzipped by the engine.
DEFAULT_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".csv", ".csv.gz",
)  # fmt: skip

# Several URIs in one argument, as the original accepted: split only where a new URI
# starts, so that a comma inside a key survives.
_URI_LIST_SPLIT = re.compile(r",\s*(?=s3://)")


def split_inputs(values: Sequence[str]) -> list[str]:
    """Input arguments as single URIs (comma-separated lists are split)."""
    inputs: list[str] = []
    for value in values:
        inputs.extend(part.strip() for part in _URI_LIST_SPLIT.split(value) if part.strip())
    return inputs


class S3Source(Source):
    """Objects (``s3://b/k.jpg``) and prefixes (``s3://b/photos/``, ``s3://b``) of S3.

    One envelope per object; its item's identity is the object URI (with ``?versionId=``
    when the input named a version), its meta the object's bucket, key, s3_uri, size, etag
    and last_modified. With a ``ledger`` the source runs as a job: objects completed by an
    earlier run (same identity and etag) are skipped, and acks are recorded.
    """

    name = "s3"
    aliases = ("S3BucketImageInputCtxManager",)
    description = "S3 objects and prefixes (images, CSV), listed lazily and loaded in parallel"
    finite = True
    options: ClassVar[tuple[Option, ...]] = (
        Option("inputs", "list", default=[],
               help="Object URIs (s3://bucket/key.jpg; several may be comma-separated in "
               "one argument) and prefixes (s3://bucket/photos/ or s3://bucket: every "
               "object under it). The command's INPUTS."),
        Option("extensions", "list", default=list(DEFAULT_EXTENSIONS),
               help="Under a prefix, only keys ending with one of these (case-insensitive); "
               "'*' for all. Objects named one by one are never filtered."),
        Option("pattern", default="",
               help="Under a prefix, only keys matching this glob (fnmatch on the whole key, "
               "e.g. 'photos/2024-*/*.jpg'); replaces the extensions filter."),
        Option("ledger", default="",
               help="Job mode: a local file or an s3:// URI recording completed objects; a "
               "rerun skips them and processes only failed, changed and new objects."),
        Option("ledger_flush_records", "int", default=1000, minimum=1,
               help="S3 ledger only: write the ledger after this many acks."),
        Option("ledger_flush_seconds", "float", default=30.0, minimum=0,
               help="S3 ledger only: write the ledger when this many seconds passed since "
               "the last write (checked on each ack)."),
        Option("count_limit", "int", default=10_000, minimum=0,
               help="total() lists the inputs to count objects for progress and ETA, up to "
               "this many objects (about one request per 1000); beyond it the total is "
               "unknown. 0: never count."),
        ALLOWED_BUCKETS_OPTION,
        *CLIENT_OPTIONS,
    )  # fmt: skip

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: RunContext | None = None):  # fmt: skip
        super().__init__(options, context)
        self._inputs = split_inputs(self.opts["inputs"])
        if not self._inputs:
            raise OptionsError([
                "no inputs; give S3 URIs as arguments "
                "(igata run ... s3://bucket/key.jpg s3://bucket/prefix/)"
            ])  # fmt: skip
        exts = [e.lower() for e in self.opts["extensions"]]
        self._all_extensions = "*" in exts
        self._extensions = tuple(e if e.startswith(".") else f".{e}" for e in exts if e != "*")
        self._pattern = self.opts["pattern"] or ""
        self._allowed = list(self.opts["allowed_buckets"])
        self._settings = client_settings(self.opts)
        ledger = self.opts["ledger"] or ""
        if ledger.startswith("s3://"):
            try:
                where = parse_uri(ledger, allow_prefix=True)
            except InvalidS3Uri as exc:
                raise OptionsError([f"option 'ledger': {exc}"]) from None
            if not where.key.strip("/"):
                raise OptionsError([
                    f"option 'ledger': {ledger!r} names no ledger inside the bucket "
                    "(e.g. s3://bucket/ledgers/job-1)"
                ])  # fmt: skip
            segment = longest_segment_key(where, self.context.run_id or "run")
            if len(segment.encode("utf-8")) > MAX_KEY_BYTES:
                raise OptionsError([
                    f"option 'ledger': its segment objects' keys would be up to "
                    f"{len(segment.encode('utf-8'))} bytes ({abbreviate(segment)!r}), over "
                    f"S3's limit of {MAX_KEY_BYTES}; use a shorter ledger name"
                ])  # fmt: skip
        self._ledger_location = ledger
        self._ledger: Ledger | None = None
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._total: int | None = None
        self._total_counted = False
        self.skipped = 0

    @property
    def client(self) -> Any:
        return s3_client(max(10, self.context.concurrency + 2), self._settings)

    def open(self) -> None:
        self._check_inputs()
        if self._ledger_location:
            self._ledger = open_ledger(
                self._ledger_location,
                self.context.run_id or "run",
                lambda: self.client,
                flush_records=self.opts["ledger_flush_records"],
                flush_seconds=self.opts["ledger_flush_seconds"],
            )
        self._opened.set()

    # -- listing -------------------------------------------------------------------------

    def _wanted(self, key: str) -> bool:
        if key.endswith("/"):
            return False  # a "folder" marker, not an object
        if self._pattern:
            return fnmatch.fnmatchcase(key, self._pattern)
        return self._all_extensions or key.lower().endswith(self._extensions)

    def _locations(self) -> Iterator[tuple[str, S3Location | None, str | None]]:
        """(input, parsed location or None, error message or None) for every input."""
        for given in self._inputs:
            try:
                location = parse_uri(given, allow_prefix=True)
                check_allowed(location, self._allowed, given)
            except S3RecordError as exc:
                yield given, None, str(exc)
                continue
            except InvalidS3Uri as exc:
                yield given, None, str(exc)
                continue
            yield given, location, None

    def _pages(self, location: S3Location, given: str) -> Iterator[list[dict[str, Any]]]:
        """Listing pages of a prefix.

        The prefix is named by the options, so a bucket that does not exist, a denied
        listing and refused credentials raise :class:`S3ConfigurationError`; throttling,
        5xx, the network and a refused clock :class:`ServiceUnavailable`; anything else
        :class:`S3RecordError` (that input's error).
        """
        from botocore import exceptions as bx

        paginator = self.client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=location.bucket,
                Prefix=location.key,
                PaginationConfig={"PageSize": 1000},
            )
        )
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except bx.ClientError as exc:
                raise self._listing_error(exc, location, given) from None
            except (bx.BotoCoreError, OSError) as exc:
                raise self._transport_error(exc, f"listing {given}") from exc
            yield page.get("Contents", [])

    def _listing_error(self, exc: BaseException, location: S3Location, given: str) -> Exception:
        prefix = location.key
        error = configured_error(
            exc,
            component="s3",
            what=f"the bucket {location.bucket!r} of the input {given}",
            doing=f"listing {given}",
            needs=f"s3:ListBucket on arn:aws:s3:::{location.bucket}"
            + (f" (for the prefix {prefix!r})" if prefix else ""),
            fix="create it or fix the input (the command's INPUTS)",
        )
        if error is not None:
            return error
        return describe_client_error(exc, uri=given, bucket=location.bucket, key=prefix,
                                     action="s3:ListBucket")  # fmt: skip

    @staticmethod
    def _transport_error(exc: BaseException, doing: str) -> Exception:
        if transport_kind(exc) == "configuration":
            return S3ConfigurationError(
                f"s3: cannot sign a request while {doing} ({type(exc).__name__}: "
                f"{exc}); give the worker credentials and a region (AWS_REGION)"
            )
        return ServiceUnavailable(f"s3: {doing} failed: {type(exc).__name__}: {exc}")

    def _check_inputs(self) -> None:
        """Fail at once on an input bucket that does not exist or may not be listed.

        The inputs are options: a bucket missing or denied is a configuration error (exit
        2 before anything is read), not one error record per object. One request per
        bucket: the first prefix given in it is listed (one key), a bucket of objects
        named one by one gets a HEAD. A HEAD answers 403 without saying why (a worker may
        read objects without s3:ListBucket), so only 404 and a region redirect count
        there; the loader reports the rest per object.
        """
        from botocore import exceptions as bx

        prefixes: dict[str, tuple[S3Location, str]] = {}
        objects: dict[str, str] = {}
        for given, location, _error in self._locations():
            if location is None:
                continue
            if location.is_prefix:
                prefixes.setdefault(location.bucket, (location, given))
            objects.setdefault(location.bucket, given)
        for bucket, (location, given) in prefixes.items():
            try:
                self.client.list_objects_v2(Bucket=bucket, Prefix=location.key, MaxKeys=1)
            except bx.ClientError as exc:
                error = self._listing_error(exc, location, given)
                if not isinstance(error, S3RecordError):
                    raise error from None
            except (bx.BotoCoreError, OSError) as exc:
                raise self._transport_error(exc, f"listing {given}") from exc
        for bucket, given in objects.items():
            if bucket in prefixes:
                continue
            try:
                self.client.head_bucket(Bucket=bucket)
            except bx.ClientError as exc:
                code = error_code(exc)
                if code in ("404", "NoSuchBucket") or code in WRONG_REGION:
                    error = configured_error(
                        exc,
                        code="NoSuchBucket" if code == "404" else code,
                        component="s3",
                        what=f"the bucket {bucket!r} of the input {given}",
                        doing=f"checking the bucket of {given}",
                        needs=f"s3:GetObject on arn:aws:s3:::{bucket}/*",
                        fix="create it or fix the input (the command's INPUTS)",
                    )
                    if error is not None:
                        raise error from None
                log.debug("s3: cannot check bucket %s (%s); the loader will tell", bucket, code)
            except (bx.BotoCoreError, OSError) as exc:
                if transport_kind(exc) == "configuration":
                    raise self._transport_error(exc, f"checking {given}") from exc
                log.debug("s3: cannot check bucket %s (%s); the loader will tell", bucket, exc)

    def envelopes(self) -> Iterator[Envelope]:
        for envelope in self._envelopes():
            if self._ledger is not None and self._ledger.refused:
                # The ledger (an option) was refused during the run: a configuration error.
                raise S3ConfigurationError(self._ledger.refused)
            yield envelope

    def _envelopes(self) -> Iterator[Envelope]:
        for given, location, error in self._locations():
            if self._stop.is_set():
                return
            if location is None:
                yield _error_envelope(given, error or "invalid input")
            elif location.is_prefix:
                yield from self._prefix_envelopes(given, location)
            else:
                envelope = self._object_envelope(location)
                if envelope is not None:
                    yield envelope
        if self.skipped:
            log.info("s3: skipped %d objects already completed (ledger %s)",
                     self.skipped, self._ledger_location)  # fmt: skip

    def _prefix_envelopes(self, given: str, location: S3Location) -> Iterator[Envelope]:
        matched = 0
        try:
            for contents in self._pages(location, given):
                for obj in contents:
                    if self._stop.is_set():
                        return
                    key = obj["Key"]
                    if not self._wanted(key):
                        continue
                    matched += 1
                    envelope = self._listed_envelope(location.bucket, obj)
                    if envelope is not None:
                        yield envelope
        except S3RecordError as exc:
            yield _error_envelope(given, str(exc))
            return
        if not matched:
            log.warning("s3: no objects matched under %s (extensions %s%s)", given,
                        "*" if self._all_extensions else ",".join(self._extensions),
                        f", pattern {self._pattern!r}" if self._pattern else "")  # fmt: skip

    def _listed_envelope(self, bucket: str, obj: Mapping[str, Any]) -> Envelope | None:
        key = obj["Key"]
        uri = format_uri(bucket, key)
        etag = str(obj.get("ETag", "")).strip('"')
        if self._completed(bucket, obj):
            self.skipped += 1
            return None
        meta = {
            "bucket": bucket,
            "key": key,
            "s3_uri": uri,
            "size": obj.get("Size"),
            "etag": etag,
            "last_modified": obj.get("LastModified"),
        }
        return Envelope(ref=uri, items=[Item(identity=uri, uri=uri, meta=meta)],
                        handle=(uri, etag))  # fmt: skip

    def _object_envelope(self, location: S3Location) -> Envelope | None:
        uri = location.uri
        meta: dict[str, Any] = {
            "bucket": location.bucket,
            "key": location.key,
            "s3_uri": format_uri(location.bucket, location.key),
        }
        etag = ""
        if self._ledger is not None:
            # Job mode needs the etag to know whether this object was completed as it is.
            head = self._head(location)
            if head is not None:
                etag = str(head.get("ETag", "")).strip('"')
                if self._ledger.is_done(uri, etag):
                    self.skipped += 1
                    return None
                meta.update(size=head.get("ContentLength"), etag=etag,
                            last_modified=head.get("LastModified"))  # fmt: skip
        return Envelope(ref=uri, items=[Item(identity=uri, uri=uri, meta=meta)],
                        handle=(uri, etag) if etag else None)  # fmt: skip

    def _head(self, location: S3Location) -> Mapping[str, Any] | None:
        from botocore import exceptions as bx

        request: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key}
        if location.version_id:
            request["VersionId"] = location.version_id
        try:
            return self.client.head_object(**request)
        except (bx.ClientError, bx.BotoCoreError):
            return None  # the loader reports the precise error for this record

    # -- delivery ------------------------------------------------------------------------

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        if self._ledger is not None:
            self._ledger.record([env.handle for env in envelopes if env.handle])

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        """Nothing to do: failed objects are not in the ledger, so a rerun retries them."""

    def stop(self) -> None:
        self._stop.set()

    def total(self) -> int | None:
        """Objects to process, counted by listing up to ``count_limit`` (else None).

        May be called from another thread before ``open``; in job mode it waits for the
        ledger to be loaded so that completed objects are not counted.
        """
        if self._ledger_location and not self._opened.wait(timeout=60):
            return None
        if not self._total_counted:
            self._total_counted = True
            self._total = self._count()
        return self._total

    def _count(self) -> int | None:
        limit = self.opts["count_limit"]
        if not limit:
            return None
        count = 0
        for given, location, _error in self._locations():
            if location is None or not location.is_prefix:
                count += 1
                continue
            try:
                for contents in self._pages(location, given):
                    for obj in contents:
                        if self._wanted(obj["Key"]) and not self._completed(location.bucket, obj):
                            count += 1
                    if count > limit:
                        return None
            except S3RecordError:
                count += 1  # that prefix yields one error envelope
            except (ServiceUnavailable, S3ConfigurationError):
                return None  # the listing itself reports it
        return count

    def _completed(self, bucket: str, obj: Mapping[str, Any]) -> bool:
        if self._ledger is None:
            return False
        etag = str(obj.get("ETag", "")).strip('"')
        return self._ledger.is_done(format_uri(bucket, obj["Key"]), etag)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


def _error_envelope(given: str, message: str) -> Envelope:
    return Envelope(ref=given, items=[Item(identity=given, error=message)])
