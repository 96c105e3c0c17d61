"""The ``s3`` loader: resolves ``s3://bucket/key`` URIs to bytes for every source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from igata_core.components import Loaded, Loader, RunContext
from igata_core.options import Option
from igata_s3.client import ClientSettings, s3_client
from igata_s3.errors import S3RecordError, describe_client_error, describe_transport_error
from igata_s3.uris import S3Location, format_uri, parse_uri

ALLOWED_BUCKETS_ENV = "IGATA_S3_ALLOWED_BUCKETS"

#: Options shared by every component that builds an S3 client.
CLIENT_OPTIONS: tuple[Option, ...] = (
    Option("connect_timeout", "float", default=5.0, minimum=0.1,
           help="Seconds to wait for a connection to S3 (botocore's default is 60).",
           env=("IGATA_S3_CONNECT_TIMEOUT",)),
    Option("read_timeout", "float", default=30.0, minimum=0.1,
           help="Seconds to wait for S3 to send data on an open connection.",
           env=("IGATA_S3_READ_TIMEOUT",)),
    Option("max_attempts", "int", default=5, minimum=1,
           help="Attempts per S3 request, first try included (botocore 'standard' retry "
           "mode: throttling, 5xx and network errors are retried with backoff).",
           env=("IGATA_S3_MAX_ATTEMPTS",)),
)  # fmt: skip

ALLOWED_BUCKETS_OPTION = Option(
    "allowed_buckets",
    "list",
    default=[],
    help="Only these buckets may be read (comma-separated); a reference to any other "
    "bucket becomes an error record and is never fetched. Empty: any bucket.",
    env=(ALLOWED_BUCKETS_ENV,),
)


def client_settings(opts: Mapping[str, Any]) -> ClientSettings:
    return ClientSettings(
        connect_timeout=opts["connect_timeout"],
        read_timeout=opts["read_timeout"],
        max_attempts=opts["max_attempts"],
    )


def check_allowed(location: S3Location, allowed: list[str], uri: str) -> None:
    """Raise a record error if ``location``'s bucket is not allowed."""
    if allowed and location.bucket not in allowed:
        raise S3RecordError(
            f"{uri}: bucket {location.bucket!r} is not in allowed_buckets "
            f"({', '.join(allowed)}); refused without fetching (to allow it, add it to "
            f"{ALLOWED_BUCKETS_ENV} or the loader option s3.allowed_buckets)",
            code="NotAllowed",
        )


class S3Loader(Loader):
    """Reads S3 objects with one shared client whose pool matches the run's concurrency.

    ``load`` refuses an object over ``max_object_bytes`` from the response headers, before
    reading its body, and turns every S3 failure into a precise per-record error.
    """

    name = "s3"
    schemes = ("s3",)
    description = "S3 objects (s3://bucket/key URIs) through boto3"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "max_object_bytes",
            "int",
            default=1 << 30,
            minimum=0,
            help="Refuse objects larger than this many bytes (checked before download).",
            env=("IGATA_S3_MAX_OBJECT_BYTES",),
        ),
        ALLOWED_BUCKETS_OPTION,
        *CLIENT_OPTIONS,
    )

    def __init__(self, options: Mapping[str, Any] | None = None,
                 context: RunContext | None = None):  # fmt: skip
        super().__init__(options, context)
        self._settings = client_settings(self.opts)
        self._allowed = list(self.opts["allowed_buckets"])
        # Room for every loading worker plus the source's listing and a sink's upload.
        self._pool_size = max(10, self.context.concurrency + 2)

    @property
    def client(self) -> Any:
        return s3_client(self._pool_size, self._settings)

    def load(self, uri: str) -> Loaded:
        from botocore import exceptions as bx

        location = parse_uri(uri)
        check_allowed(location, self._allowed, uri)
        request: dict[str, Any] = {"Bucket": location.bucket, "Key": location.key}
        if location.version_id:
            request["VersionId"] = location.version_id
        try:
            response = self.client.get_object(**request)
        except bx.ClientError as exc:
            raise describe_client_error(
                exc,
                uri=uri,
                bucket=location.bucket,
                key=location.key,
                version_id=location.version_id,
            ) from None
        except (bx.BotoCoreError, OSError) as exc:
            raise describe_transport_error(exc, uri=uri) from exc
        size = int(response.get("ContentLength") or 0)
        body = response["Body"]
        limit = self.opts["max_object_bytes"]
        if size > limit:
            # Closing instead of reading drops the connection: cheaper than the body.
            body.close()
            raise S3RecordError(
                f"{uri}: object is {size} bytes, over max_object_bytes ({limit}); not "
                "downloaded (raise IGATA_S3_MAX_OBJECT_BYTES to load it)",
                code="TooLarge",
            )
        try:
            data = body.read()
        except (bx.BotoCoreError, OSError) as exc:
            raise describe_transport_error(exc, uri=uri) from exc
        finally:
            body.close()
        return Loaded(data, object_meta(location, response, size))


def object_meta(location: S3Location, response: Mapping[str, Any], size: int) -> dict[str, Any]:
    """Loaded.meta of an object: bucket, key, s3_uri, size, etag, last_modified (+ version)."""
    meta: dict[str, Any] = {
        "bucket": location.bucket,
        "key": location.key,
        "s3_uri": format_uri(location.bucket, location.key),
        "size": size,
        "etag": str(response.get("ETag", "")).strip('"'),
        "last_modified": response.get("LastModified"),
    }
    version = response.get("VersionId")
    if version and version != "null":
        meta["version_id"] = version
    return meta
