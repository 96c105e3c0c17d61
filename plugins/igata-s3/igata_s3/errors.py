"""What an S3 failure means, in words a user can act on, and which of the three kinds it is.

DESIGN.md's three kinds of service error, decided by S3's error code (the HTTP status for
codes not listed, and for HEAD requests, which have no body):

* *content*: a problem of one record (:class:`S3RecordError` from the loader, a
  ``Rejection`` from a sink);
* *configuration*: S3 refuses what the options ask for, or who the worker is
  (:class:`S3ConfigurationError`: the run stops with exit code 2);
* *outage*: throttling, 5xx, timeouts, the network, a refused clock
  (:class:`ServiceUnavailable` or the botocore error: the engine retries).

Whether a missing or denied bucket is content or configuration depends on who named it:
:func:`describe_client_error` is for objects a *request* names (the loader),
:func:`configured_error` for buckets and keys the *options* name (the ``s3`` source's
inputs and ledger, the sinks' output bucket). botocore's ``standard`` retries have run
before an error reaches this module.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from igata_core.components import ConfigurationError, RecordError, ServiceUnavailable
from igata_s3.uris import MAX_KEY_BYTES, abbreviate, format_uri

# The three kinds of service error (DESIGN.md), by S3's error code. HEAD requests carry no
# body: botocore gives their HTTP status as the code ("404", "403"), hence the numbers.
_THROTTLING = {
    "SlowDown",
    "SlowDownRead",
    "SlowDownWrite",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "503",
    "429",
}
#: Outages: throttling, S3's own failures, a request S3 gave up waiting for; retried.
OUTAGE = _THROTTLING | {
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "OperationAborted",
    "500",
    "502",
    "504",
}
#: The worker's own credentials: every request of the worker fails alike (configuration).
CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "NotSignedUp",
}
_NO_KEY = {"NoSuchKey", "404", "NotFound"}
NO_BUCKET = {"NoSuchBucket"}
#: Denied on one resource (a bucket policy, an IAM policy that names buckets or prefixes).
DENIED = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}
#: The bucket lives in another region than the client's (AWS answers 301 to a HEAD).
WRONG_REGION = {
    "PermanentRedirect",
    "301",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}
#: AWS says KeyTooLongError; Ceph's RADOS Gateway says InvalidObjectName for the same key.
KEY_REFUSED = {"KeyTooLongError", "InvalidObjectName"}
#: An object S3 will not store at this size (413: a proxy in front of S3 said it).
TOO_LARGE = {"EntityTooLarge", "413"}
CLOCK_SKEW = "RequestTimeTooSkewed"
# A measured clock difference below this is noise (the Date header has 1 s resolution),
# not the difference S3 refused (15 minutes on AWS and RGW).
_MEANINGFUL_SKEW_SECONDS = 60.0
_CREDENTIAL_HINTS = {
    "InvalidAccessKeyId": "S3 does not know the access key id",
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is malformed or invalid",
    "TokenRefreshRequired": "the session token must be refreshed",
}


class S3RecordError(RecordError):
    """One object could not be read; ``code`` is S3's error code (``NoSuchKey``…)."""

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message, stage="load")
        self.code = code


class S3ConfigurationError(ConfigurationError):
    """S3 refuses what the component's options ask for (a part key too long, a configured
    bucket that does not exist or is denied, the worker's credentials).

    Permanent: retrying cannot help until the options change. The message says which.
    """


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def is_outage(exc: BaseException) -> bool:
    """Throttling, an S3 failure (5xx) or a timeout S3 reported: retry later."""
    status = http_status(exc)
    return error_code(exc) in OUTAGE or (status is not None and (status >= 500 or status == 429))


def _attempts(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    attempts = response.get("ResponseMetadata", {}).get("RetryAttempts")
    return f" after {attempts + 1} attempts" if isinstance(attempts, int) else ""


def _bucket_region(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return str(headers.get("x-amz-bucket-region") or response.get("Error", {}).get("Region") or "")


def credentials_error(exc: BaseException, *, doing: str) -> S3ConfigurationError:
    """S3 refused who the worker is: every request fails alike until the settings change."""
    code = error_code(exc)
    hint = _CREDENTIAL_HINTS.get(code, "S3 refused the worker's account or credentials")
    return S3ConfigurationError(
        f"s3: S3 refused the worker's credentials while {doing} ({code}: {hint}); this is a "
        "configuration error, not the input's: check AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, AWS_SESSION_TOKEN, the instance or task "
        "role) and that the S3 endpoint is the one these keys belong to"
    )


def outage_error(exc: BaseException, *, doing: str) -> ServiceUnavailable:
    code = error_code(exc) or "unknown"
    status = http_status(exc)
    throttled = code in _THROTTLING or status == 429
    what = "S3 throttled the requests" if throttled else "S3 is unavailable"
    hint = "; lower --concurrency" if throttled else ""
    return ServiceUnavailable(
        f"s3: {what} while {doing} ({code}, HTTP {status}){_attempts(exc)}; not the "
        f"input's fault: the engine pauses and retries{hint}"
    )


def configured_error(
    exc: BaseException,
    *,
    component: str,
    what: str,
    doing: str,
    needs: str,
    fix: str,
    code: str | None = None,
) -> Exception | None:
    """The error for a refusal of a bucket or key the *options* name (not a request's).

    ``component`` starts the message (``s3-csv``), ``what`` names the resource (``the
    output bucket 'b'``), ``doing`` the request in words, ``needs`` the permission and
    ARN the worker needs (``s3:PutObject on arn:aws:s3:::b/results/*``), ``fix`` what to
    change when the bucket does not exist. Returns :class:`S3ConfigurationError` (exit 2
    at once), :class:`ServiceUnavailable` (outage, clock) or None when the code says
    nothing about the configuration (the caller decides). ``code``: S3's code if the
    response has none of its own (a HEAD's bare 404 means NoSuchBucket for a bucket).
    """
    code = code or error_code(exc)
    if code == CLOCK_SKEW:
        return clock_skew_error(exc, doing=doing)
    if code in CREDENTIALS:
        return credentials_error(exc, doing=doing)
    if is_outage(exc):
        return outage_error(exc, doing=doing)
    if code in NO_BUCKET:
        return S3ConfigurationError(f"{component}: {what} does not exist ({code}); {fix}")
    if code in DENIED:
        return S3ConfigurationError(
            f"{component}: access denied while {doing} ({code}); the worker's credentials "
            f"need {needs} (check the IAM policy and the bucket policy; with SSE-KMS also "
            "kms:GenerateDataKey and kms:Decrypt on the bucket's key)"
        )
    if code in WRONG_REGION:
        region = _bucket_region(exc)
        where = f"region {region!r}" if region else "another region"
        return S3ConfigurationError(
            f"{component}: {what} is in {where}, not the worker's ({code}); set AWS_REGION "
            "(or AWS_DEFAULT_REGION) to the bucket's region, or use a bucket there"
        )
    if code == "InvalidBucketName":
        return S3ConfigurationError(f"{component}: S3 refuses the name of {what} ({code})")
    return None


def describe_client_error(
    exc: BaseException,
    *,
    uri: str,
    bucket: str,
    key: str,
    action: str = "s3:GetObject",
    version_id: str | None = None,
) -> Exception:
    """A precise error for a botocore ``ClientError`` on ``uri``, an object a *request*
    names (the loader: the bucket and key came from the message, not the options).

    * the object's own trouble (no such key, version or bucket, access denied on it, a key
      or name S3 refuses): a per-record :class:`S3RecordError`;
    * the worker's credentials: :class:`S3ConfigurationError` (the run stops with exit 2);
    * throttling, 5xx, timeouts and a clock S3 refuses: :class:`ServiceUnavailable` (the
      engine pauses intake and retries within its budget).

    ``version_id``: the version the request asked for, if any.
    """
    code = error_code(exc)
    response = getattr(exc, "response", None) or {}
    status = http_status(exc)
    doing = f"{'listing' if action == 's3:ListBucket' else 'reading'} {uri}"
    if code == CLOCK_SKEW:
        return clock_skew_error(exc, doing=doing)
    if code in CREDENTIALS:
        return credentials_error(exc, doing=doing)
    if is_outage(exc):
        return outage_error(exc, doing=doing)
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
    if code in NO_BUCKET:
        return S3RecordError(
            f"{uri}: bucket {bucket!r} does not exist (check the name, the account and the "
            "endpoint)",
            code=code,
        )
    if code in DENIED:
        return S3RecordError(
            f"{uri}: access denied ({code}); the worker's credentials need {action} on "
            f"arn:aws:s3:::{bucket}/{key if action == 's3:GetObject' else '*'}",
            code=code,
        )
    if code in WRONG_REGION:
        region = _bucket_region(exc)
        where = f"region {region!r}" if region else "another region"
        return S3RecordError(
            f"{uri}: bucket {bucket!r} is in {where}, not the worker's ({code})", code=code
        )
    if code in KEY_REFUSED:
        return S3RecordError(
            f"{uri}: S3 refuses the key {abbreviate(key)!r} ({code}): "
            f"{len(key.encode('utf-8'))} bytes of UTF-8; S3 allows at most {MAX_KEY_BYTES}",
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
    # Imported here: the email package costs igata's start-up about 6 ms, and an HTTP date
    # is read only from a request-time-skew error.
    from email.utils import parsedate_to_datetime

    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


#: botocore's names for credentials it cannot find or use: the worker's configuration.
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound",
                   "NoRegionError", "UnauthorizedSSOTokenError", "SSOTokenLoadError")  # fmt: skip


def transport_kind(exc: BaseException) -> str:
    """``configuration`` (no credentials or region), ``request`` (botocore refused a value
    of the request before sending it) or ``outage`` (network, timeouts, a body cut short,
    a checksum that did not match: anything between the worker and S3)."""
    from botocore import exceptions as bx

    if type(exc).__name__ in _NO_CREDENTIALS:
        return "configuration"
    if isinstance(exc, bx.ParamValidationError):
        return "request"
    return "outage"


def describe_transport_error(exc: BaseException, *, uri: str) -> Exception:
    """A failure before S3 answered: the network's or the worker's trouble, not the record's
    (except a request value botocore refuses before sending it)."""
    kind = transport_kind(exc)
    if kind == "configuration":
        return S3ConfigurationError(
            f"s3: cannot sign a request while reading {uri} ({type(exc).__name__}: {exc}); "
            "give the worker credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or an instance or task role) and a region (AWS_REGION)"
        )
    if kind == "request":
        return S3RecordError(f"{uri}: botocore refused the request ({exc})", code="ParamValidation")
    # Refused, reset, closed or timed-out connections (after botocore's own retries) are
    # the network's trouble: the engine pauses and retries instead of failing the record.
    return ServiceUnavailable(
        f"s3: cannot reach the S3 endpoint while reading {uri} ({type(exc).__name__}: {exc}); "
        "check AWS_ENDPOINT_URL / S3_ENDPOINT and the network"
    )
