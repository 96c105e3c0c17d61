"""What an SQS or SNS error means: content refused, configuration refused, or an outage.

Every error igata-sqs meets goes through :func:`classify` (an exception: a whole call
failed) or :func:`classify_entry` (one entry of a batch call failed), which answer with
one of the kinds of DESIGN.md ("Three kinds of service error"):

* :data:`CONTENT`: this message's data breaks a rule of the service (invalid characters,
  a size limit, an invalid parameter value, a stale receipt handle). That record's error
  (the sink returns a :class:`~igata_core.Rejection`); never retried as it is.
* :data:`CONFIGURATION`: the service refuses what the options ask for (no such queue or
  topic, access denied, credentials it does not know, a KMS key it may not use). Retrying
  cannot help: :class:`~igata_core.ConfigurationError`, exit code 2 at once.
* :data:`OUTAGE`: throttling, 5xx, network trouble, timeouts: retried within a budget,
  then exit code 3 (sinks raise, sources raise :class:`~igata_core.ServiceUnavailable`).
* :data:`REQUEST`: a batch request igata should never send (more than 10 entries, ids that
  are not distinct): a bug of igata, treated as an outage so that nothing is lost.

The code is read from ``Error.Code``, ``Error.QueryErrorCode`` and the
``x-amzn-query-error`` header, in every spelling the services and their emulators use
(``QueueDoesNotExist``, ``AWS.SimpleQueueService.NonExistentQueue``,
``InvalidParameterValueException``, ``KmsAccessDenied``/``KMSAccessDenied``); the HTTP
status decides when the code is unknown (5xx and 429: outage; 401 and 403: configuration).
The README's "Service errors" table lists what each code makes igata do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CONTENT = "content"
CONFIGURATION = "configuration"
OUTAGE = "outage"
REQUEST = "request"

_PREFIX = "aws.simplequeueservice."


def _normal(code: str) -> str:
    """``AWS.SimpleQueueService.NonExistentQueue`` -> ``nonexistentqueue``; drops a
    ``namespace#`` prefix, dots and an ``Exception`` suffix, case-insensitively."""
    text = code.strip().lower()
    text = text.rsplit("#", 1)[-1]
    if text.startswith(_PREFIX):
        text = text[len(_PREFIX) :]
    text = text.replace(".", "")
    if text.endswith("exception") and len(text) > len("exception"):
        text = text[: -len("exception")]
    return text


def _set(*codes: str) -> frozenset[str]:
    return frozenset(_normal(code) for code in codes)


#: This message's content breaks a rule of the service.
CONTENT_CODES = _set(
    "InvalidParameterValue",
    "InvalidParameterValueException",
    "InvalidMessageContents",
    "InvalidAttributeValue",
    "InvalidAttributeName",
    "MessageTooLong",
    "BatchRequestTooLong",
    "MissingParameter",
    "MissingRequiredParameter",
    "ReceiptHandleIsInvalid",
    "InvalidIdFormat",
    "MessageNotInflight",
    # SNS
    "InvalidParameter",
    "ValidationError",
)
#: The service refuses what the options ask for: fix the configuration.
CONFIGURATION_CODES = _set(
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
    "NonExistentQueue",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAddress",
    "InvalidSecurity",
    "UnsupportedOperation",
    "InvalidAction",
    "OptInRequired",
    "KmsAccessDenied",
    "KmsDisabled",
    "KmsNotFound",
    "KmsInvalidState",
    "KmsInvalidKeyUsage",
    "KmsOptInRequired",
    # SNS
    "NotFound",
    "AuthorizationError",
    "KMSAccessDenied",
    "KMSDisabled",
    "KMSNotFound",
    "KMSInvalidState",
    "KMSOptInRequired",
)
#: The service is busy or broken for now: retry.
OUTAGE_CODES = _set(
    "RequestThrottled",
    "ThrottlingException",
    "Throttling",
    "Throttled",
    "OverLimit",
    "KmsThrottled",
    "KMSThrottling",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestExpired",
)
#: Batch requests igata never sends.
REQUEST_CODES = _set(
    "TooManyEntriesInBatchRequest",
    "BatchEntryIdsNotDistinct",
    "EmptyBatchRequest",
    "InvalidBatchEntryId",
)
#: The queue does not exist (or these credentials may not see it).
MISSING_QUEUE_CODES = _set(
    "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "NonExistentQueue"
)
#: Codes that say a batch request is too large as a whole: send it in smaller parts.
SPLIT_CODES = _set("BatchRequestTooLong", "TooManyEntriesInBatchRequest")
#: A message (or one entry) is over the service's size limit.
TOO_LONG_CODES = _set("MessageTooLong", "BatchRequestTooLong")

#: botocore exceptions that no retry can cure (no credentials, no region, bad profile).
_CONFIGURATION_EXCEPTIONS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "NoRegionError",
    "ProfileNotFound",
    "InvalidRegionError",
    "UnknownServiceError",
    "CredentialRetrievalError",
    "InvalidConfigError",
    "UnknownCredentialError",
)


def codes(exc: BaseException) -> tuple[str, ...]:
    """The normalised error codes of a botocore ``ClientError`` (empty for others)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return ()
    error = response.get("Error") or {}
    found = [str(error.get("Code") or ""), str(error.get("QueryErrorCode") or "")]
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    query_error = str(headers.get("x-amzn-query-error") or "")
    if query_error:
        found.append(query_error.split(";", 1)[0])
    return tuple(dict.fromkeys(_normal(code) for code in found if code))


def status(exc: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (None for other exceptions)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None
    value = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return int(value) if isinstance(value, int) else None


def _by_codes(found: Iterable[str]) -> str | None:
    found = tuple(found)
    for kind, table in (
        (CONFIGURATION, CONFIGURATION_CODES),
        (CONTENT, CONTENT_CODES),
        (REQUEST, REQUEST_CODES),
        (OUTAGE, OUTAGE_CODES),
    ):
        if any(code in table for code in found):
            return kind
    return None


def classify(exc: BaseException) -> str:
    """The kind of a failed call's exception (``CONTENT``, ``CONFIGURATION``, ``OUTAGE``
    or ``REQUEST``). Unknown errors are outages: retried, then exit 3, nothing lost."""
    kind = _by_codes(codes(exc))
    if kind is not None:
        return kind
    http = status(exc)
    if http is not None:
        if http in (401, 403):
            return CONFIGURATION
        return OUTAGE
    if any(cls.__name__ in _CONFIGURATION_EXCEPTIONS for cls in type(exc).__mro__):
        return CONFIGURATION
    if type(exc).__name__ == "ParamValidationError":
        return REQUEST
    return OUTAGE


def classify_entry(failure: Mapping[str, Any]) -> str:
    """The kind of one ``Failed`` entry of a batch call.

    A known code decides (LocalStack reports ``InvalidMessageContents`` with
    ``SenderFault: false``, yet it is about the content); an unknown one is content when
    the service blames the sender, else an outage.
    """
    kind = _by_codes([_normal(str(failure.get("Code") or ""))])
    if kind is not None:
        return kind
    return CONTENT if failure.get("SenderFault") else OUTAGE


def has_code(exc_or_failure: BaseException | Mapping[str, Any], table: frozenset[str]) -> bool:
    """Whether an exception or a ``Failed`` entry carries one of the codes of ``table``."""
    if isinstance(exc_or_failure, Mapping):
        return _normal(str(exc_or_failure.get("Code") or "")) in table
    return any(code in table for code in codes(exc_or_failure))


def entry_text(failure: Mapping[str, Any]) -> str:
    """``Code: Message (sender fault)`` of a ``Failed`` entry."""
    text = f"{failure.get('Code', '?')}: {failure.get('Message', '')}".strip().rstrip(":")
    return text + (" (sender fault)" if failure.get("SenderFault") else "")


def configuration_hint(exc_or_failure: BaseException | Mapping[str, Any]) -> str:
    """What to do about a configuration error, by its code (appended to its message)."""
    if isinstance(exc_or_failure, Mapping):
        found: tuple[str, ...] = (_normal(str(exc_or_failure.get("Code") or "")),)
    else:
        found = codes(exc_or_failure)
    if any(code in MISSING_QUEUE_CODES for code in found):
        return (
            "check the queue URL (aws sqs get-queue-url prints it), the region and the "
            "endpoint, or create the queue"
        )
    if any(code in _set("NotFound") for code in found):
        return "check the topic ARN and the region, or create the topic"
    if any(code.startswith("kms") for code in found):
        return (
            "the queue or topic is encrypted with a KMS key these credentials may not use: "
            "grant "
            "kms:GenerateDataKey and kms:Decrypt on the key, or check that it is enabled"
        )
    if any(code in _set("AccessDenied", "AuthorizationError", "OptInRequired") for code in found):
        return (
            "grant these credentials the needed permissions (docs/deploy.md, 'IAM: the "
            "least a worker needs')"
        )
    if any(
        code
        in _set(
            "InvalidClientTokenId",
            "UnrecognizedClientException",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "MissingAuthenticationToken",
            "InvalidAccessKeyId",
            "ExpiredToken",
        )
        for code in found
    ):
        return (
            "the service does not accept these credentials: check AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (or the role), the region and the endpoint"
        )
    if any(code in _set("InvalidAddress", "InvalidSecurity", "InvalidAction") for code in found):
        return "check the endpoint URL and that it is SQS's (HTTPS, Signature Version 4)"
    if not isinstance(exc_or_failure, Mapping) and classify(exc_or_failure) == CONFIGURATION:
        return "check the credentials, the region and the endpoint"
    return "check the options"
