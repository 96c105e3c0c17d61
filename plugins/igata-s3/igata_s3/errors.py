"""What a botocore failure means for one S3 object, in words a user can act on.

Throttling and network errors have already been retried by botocore (``standard`` mode)
when they reach this module. Some failures are not the object's: a worker clock that S3
refuses (``RequestTimeTooSkewed``) fails every request of the worker alike, so it is a
:class:`ServiceUnavailable`, never a record error.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from collections.abc import Mapping
from typing import Any

from igata_core.components import ConfigurationError, RecordError, ServiceUnavailable
from igata_s3.uris import format_uri

_THROTTLING = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "503",
}
_NO_KEY = {"NoSuchKey", "404", "NotFound"}
#: AWS says KeyTooLongError; Ceph's RADOS Gateway says InvalidObjectName for the same key.
KEY_REFUSED = {"KeyTooLongError", "InvalidObjectName"}
CLOCK_SKEW = "RequestTimeTooSkewed"
# A measured clock difference below this is noise (the Date header has 1 s resolution),
# not the difference S3 refused (15 minutes on AWS and RGW).
_MEANINGFUL_SKEW_SECONDS = 60.0
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "ExpiredToken", "AccountProblem"}  # fmt: skip


class S3RecordError(RecordError):
    """One object could not be read; ``code`` is S3's error code (``NoSuchKey``…)."""

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message, stage="load")
        self.code = code


class S3ConfigurationError(ConfigurationError):
    """S3 refuses what the component's options ask for (a part key too long).

    Permanent: retrying cannot help until the options change. The message says which.
    """


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_client_error(
    exc: BaseException,
    *,
    uri: str,
    bucket: str,
    key: str,
    action: str = "s3:GetObject",
    version_id: str | None = None,
) -> S3RecordError | ServiceUnavailable:
    """A precise error for a botocore ``ClientError`` on ``uri``.

    A per-record :class:`S3RecordError`, except for a clock S3 refuses: that is the
    worker's trouble, a :class:`ServiceUnavailable` (the engine pauses and retries).
    ``version_id``: the version the request asked for, if any.
    """
    code = error_code(exc)
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    attempts = response.get("ResponseMetadata", {}).get("RetryAttempts")
    if code == CLOCK_SKEW:
        doing = "listing" if action == "s3:ListBucket" else "reading"
        return clock_skew_error(exc, doing=f"{doing} {uri}")
    if version_id and code in (_NO_KEY | {"NoSuchVersion"}):
        # AWS says NoSuchVersion, RGW NoSuchKey, also when the key exists in other versions:
        # the prefix hint below would mislead.
        return S3RecordError(
            f"{uri}: no such version {version_id!r} of {format_uri(bucket, key)}", code=code
        )
    if version_id and code == "InvalidArgument":
        message = response.get("Error", {}).get("Message") or "invalid argument"
        return S3RecordError(
            f"{uri}: S3 refused version id {version_id!r} of {format_uri(bucket, key)} "
            f"(InvalidArgument: {message}); version ids are the VersionId values S3 returns",
            code=code,
        )
    if code in _NO_KEY:
        hint = (
            ""
            if key.endswith("/")
            else ("; to read every object under a prefix, end the URI with '/'")
        )
        return S3RecordError(f"{uri}: no such key {key!r} in bucket {bucket!r}{hint}", code=code)
    if code == "NoSuchBucket":
        return S3RecordError(
            f"{uri}: bucket {bucket!r} does not exist (check the name, the account and the "
            "endpoint)",
            code=code,
        )
    if code in _DENIED:
        return S3RecordError(
            f"{uri}: access denied ({code}); the worker's credentials need {action} on "
            f"arn:aws:s3:::{bucket}/{key if action == 's3:GetObject' else '*'}",
            code=code,
        )
    if code in _THROTTLING:
        tries = f" after {attempts + 1} attempts" if isinstance(attempts, int) else ""
        return S3RecordError(
            f"{uri}: S3 throttled the request ({code}){tries}; the record can be retried "
            "later, or lower --concurrency",
            code=code,
        )
    message = response.get("Error", {}).get("Message") or str(exc)
    return S3RecordError(f"{uri}: S3 error {code or 'unknown'} (HTTP {status}): {message}",
                         code=code)  # fmt: skip


def clock_skew_error(exc: BaseException, *, doing: str) -> ServiceUnavailable:
    """S3 refused the request's time: every request of this worker will fail alike."""
    response = getattr(exc, "response", None) or {}
    skew = clock_skew_seconds(response)
    measured = ""
    if skew is not None and abs(skew) >= _MEANINGFUL_SKEW_SECONDS:
        measured = f"; this worker's clock is {_duration(abs(skew))} " + (
            "behind S3's" if skew < 0 else "ahead of S3's"
        )
    return ServiceUnavailable(
        f"s3: S3 refused {doing} because the request was signed with a time too far from "
        f"S3's clock ({CLOCK_SKEW}{measured}); check the worker's clock and its time "
        "synchronisation (NTP: e.g. `timedatectl status`, `chronyc tracking`)"
    )


def clock_skew_seconds(response: Mapping[str, Any], now: float | None = None) -> float | None:
    """The worker's clock minus S3's, in seconds, from an error response (None: unknown).

    AWS puts ``RequestTime`` and ``ServerTime`` in the error body; other S3s (RGW) give only
    the HTTP ``Date`` header, compared with this worker's clock ``now``.
    """
    error = response.get("Error", {})
    server = _parse_time(error.get("ServerTime"))
    request = _parse_time(error.get("RequestTime"))
    if server is not None and request is not None:
        return (request - server).total_seconds()
    if server is None:
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        server = _parse_time(headers.get("date"))
    if server is None:
        return None
    return (time.time() if now is None else now) - server.timestamp()


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def describe_transport_error(exc: BaseException, *, uri: str) -> Exception:
    """An endpoint that cannot be reached is the service's trouble, not the record's."""
    from botocore import exceptions as bx

    # Refused, reset, closed or timed-out connections (after botocore's own retries) are
    # the network's trouble: the engine pauses and retries instead of failing the record.
    if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
        return ServiceUnavailable(
            f"s3: cannot reach the S3 endpoint while reading {uri} ({exc}); check "
            "AWS_ENDPOINT_URL / S3_ENDPOINT and the network"
        )
    return S3RecordError(f"{uri}: connection failed while reading the object ({exc})")
