"""What a botocore failure means for one S3 object, in words a user can act on.

Throttling and network errors have already been retried by botocore (``standard`` mode)
when they reach this module.
"""

from __future__ import annotations

from igata_core.components import RecordError, ServiceUnavailable

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
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "ExpiredToken", "AccountProblem"}  # fmt: skip


class S3RecordError(RecordError):
    """One object could not be read; ``code`` is S3's error code (``NoSuchKey``…)."""

    def __init__(self, message: str, *, code: str = ""):
        super().__init__(message, stage="load")
        self.code = code


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_client_error(exc: BaseException, *, uri: str, bucket: str, key: str,
                          action: str = "s3:GetObject") -> S3RecordError:  # fmt: skip
    """A precise per-record error for a botocore ``ClientError`` on ``uri``."""
    code = error_code(exc)
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    attempts = response.get("ResponseMetadata", {}).get("RetryAttempts")
    if code in _NO_KEY:
        hint = (
            ""
            if key.endswith("/")
            else ("; to read every object under a prefix, end the URI with '/'")
        )
        return S3RecordError(f"{uri}: no such key {key!r} in bucket {bucket!r}{hint}", code=code)
    if code == "NoSuchVersion":
        return S3RecordError(f"{uri}: no such version of key {key!r} in bucket {bucket!r}",
                             code=code)  # fmt: skip
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
