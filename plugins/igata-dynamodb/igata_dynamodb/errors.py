"""Every error DynamoDB (or the way to it) returns, sorted into igata's three kinds.

* **content refused**: this record's item breaks a DynamoDB rule (a number of 39 digits, an
  item over 400 KB, a key value that is empty or too long, a value of the wrong type for
  an index key). That record becomes an error outcome; the rest of the batch is written.
* **configuration refused**: no such table, a table keyed otherwise than configured,
  access denied, credentials refused. Retrying cannot help: :class:`ConfigurationError`,
  the run stops with exit code 2, naming the table and the fix.
* **outage**: throttling, 5xx, network errors, timeouts. Retried (botocore's ``standard``
  mode, then the engine within ``--sink-retry-budget``; exit code 3 if it lasts).
* **expected**: ``ConditionalCheckFailedException`` is the ``completed`` guard doing its job.

The kind follows DynamoDB's error code (``exc.response["Error"]["Code"]``) and, for
``ValidationException``, its message; the HTTP status is the fallback (5xx and 429 are an
outage). Never which server answered: AWS and the local emulators give the same codes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from igata_core.components import ConfigurationError


class Kind(enum.Enum):
    CONTENT = "content refused"
    CONFIGURATION = "configuration refused"
    OUTAGE = "outage"
    EXPECTED = "expected"


#: Codes whose kind does not depend on the message.
CONTENT_CODES = frozenset({"ItemCollectionSizeLimitExceededException"})
CONFIGURATION_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",  # unless a clock skew (below)
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "NotAuthorized",
        "UnknownOperationException",
    }
)
OUTAGE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "LimitExceededException",
        "InternalServerError",
        "InternalFailure",
        "InternalServerErrorException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionConflictException",
        "TransactionInProgressException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
EXPECTED_CODES = frozenset({"ConditionalCheckFailedException"})
CREDENTIAL_CODES = CONFIGURATION_CODES - {
    "ResourceNotFoundException",
    "AccessDeniedException",
    "AccessDenied",
    "NotAuthorized",
    "UnknownOperationException",
}
DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied", "NotAuthorized"})

VALIDATION = "ValidationException"
NOT_FOUND = "ResourceNotFoundException"
CONDITION_FAILED = "ConditionalCheckFailedException"

#: ValidationException messages about the table's keys rather than one item's values: the
#: item lacks a key attribute or gives it another type than the table declares (AWS and
#: dynalite say "The provided key element does not match the schema" in BatchWriteItem), or
#: an update sets a key attribute. Our items always carry the configured keys with the
#: types the table declared at ``open()``, so these mean the table is keyed otherwise.
KEY_SCHEMA_MESSAGES = re.compile(
    r"key element does not match the schema|Missing the key|Type mismatch for key "
    r"|This attribute is part of the key",
    re.IGNORECASE,
)
#: ValidationException messages about the table's name (checked before any call too).
TABLE_NAME_MESSAGES = re.compile(
    r"at 'tableName' failed to satisfy constraint|Map keys must satisfy constraint",
    re.IGNORECASE,
)
#: An InvalidSignatureException that is the worker's clock, not its credentials: an outage
#: (as in igata-s3), since no record and no option is at fault.
CLOCK_SKEW_MESSAGES = re.compile(r"Signature expired|Signature not yet current", re.IGNORECASE)


@dataclass(frozen=True)
class ServiceError:
    """What one failure means: its kind, DynamoDB's code and message, the HTTP status."""

    kind: Kind
    code: str
    message: str
    status: int | None = None

    @property
    def key_schema(self) -> bool:
        """A ValidationException about the table's keys (see :data:`KEY_SCHEMA_MESSAGES`)."""
        return self.code == VALIDATION and bool(KEY_SCHEMA_MESSAGES.search(self.message))

    def describe(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code


def error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str):
            # "com.amazonaws.dynamodb.v20120810#ValidationException" -> "ValidationException"
            return code.rsplit("#", 1)[-1]
    return None


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        message = response.get("Error", {}).get("Message")
        if message:
            return str(message)
    return str(exc)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def _botocore_kind(exc: BaseException) -> Kind | None:
    """The kind of botocore's own exceptions (raised before or instead of an answer)."""
    try:
        from botocore import exceptions as bx
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    configuration = (
        bx.NoCredentialsError,
        bx.PartialCredentialsError,
        bx.NoRegionError,
        bx.ParamValidationError,
        bx.UnknownEndpointError,
        bx.InvalidEndpointConfigurationError,
    )
    if isinstance(exc, configuration):
        return Kind.CONFIGURATION
    # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError…
    if isinstance(exc, (bx.HTTPClientError, bx.ConnectionError)):
        return Kind.OUTAGE
    return None


def classify(exc: BaseException) -> ServiceError:
    """The kind of a failed DynamoDB call (see the module docstring and the README)."""
    code = error_code(exc)
    status = _status(exc)
    if code is None:
        if isinstance(exc, ConfigurationError):
            return ServiceError(Kind.CONFIGURATION, type(exc).__name__, str(exc))
        if isinstance(exc, UnicodeError):
            # Text boto3 cannot encode (a lone surrogate): the item's content.
            return ServiceError(Kind.CONTENT, type(exc).__name__, str(exc))
        kind = _botocore_kind(exc) or Kind.OUTAGE
        return ServiceError(kind, type(exc).__name__, str(exc))
    message = error_message(exc)
    if code in EXPECTED_CODES:
        kind = Kind.EXPECTED
    elif code == VALIDATION:
        # About an item, unless about the table's keys (KEY_SCHEMA_MESSAGES).
        about_table = KEY_SCHEMA_MESSAGES.search(message) or TABLE_NAME_MESSAGES.search(message)
        kind = Kind.CONFIGURATION if about_table else Kind.CONTENT
    elif code in CONTENT_CODES:
        kind = Kind.CONTENT
    elif code == "InvalidSignatureException" and CLOCK_SKEW_MESSAGES.search(message):
        kind = Kind.OUTAGE
    elif code in CONFIGURATION_CODES:
        kind = Kind.CONFIGURATION
    else:
        # OUTAGE_CODES, 5xx, 429, and what we do not know: retrying within the budget and
        # then exit 3 loses nothing (the input comes back), where guessing "content" would
        # dead-letter good records and "configuration" would stop every worker.
        kind = Kind.OUTAGE
    return ServiceError(kind, code, message, status)


class DynamoDbConfigurationError(ConfigurationError):
    """DynamoDB refuses what the options ask for; the message names the table and the fix."""


TABLE_ENV = {
    "REQUESTS": ("requests_tablename", "OUTPUT_CTXMGR_REQUESTS_TABLENAME"),
    "RESULTS": ("results_tablename", "OUTPUT_CTXMGR_RESULTS_TABLENAME"),
}


def where(client: Any) -> str:
    """``region R, endpoint E`` of a client, for messages."""
    meta = getattr(client, "meta", None)
    region = getattr(meta, "region_name", None) or "?"
    endpoint = getattr(meta, "endpoint_url", None)
    return f"region {region}" + (f", endpoint {endpoint}" if endpoint else "")


def missing_table_fix(role: str, table: str, layout: Any) -> str:
    option, env = TABLE_ENV[role]
    return (
        f"create it (for development: `igata dynamodb create-tables --requests-table "
        f"{layout.requests_table} --results-table {layout.results_table}`), or set {env} "
        f"(option {option}) to an existing table; check AWS_REGION and the endpoint too"
    )


def configuration_error(
    error: ServiceError,
    *,
    role: str,
    table: str,
    action: str,
    client: Any,
    layout: Any,
) -> DynamoDbConfigurationError:
    """The message for a configuration refusal of ``action`` on the ``role`` table."""
    at = where(client)
    if error.code == NOT_FOUND:
        text = (
            f"dynamodb: the {role} table {table!r} does not exist ({at}; {error.describe()}); "
            + missing_table_fix(role, table, layout)
        )
    elif error.code in DENIED_CODES:
        text = (
            f"dynamodb: access denied to dynamodb:{action} on the {role} table {table!r} "
            f"({at}; {error.describe()}); allow the worker's role or user dynamodb:{action} "
            f"on arn:aws:dynamodb:<region>:<account>:table/{table} (see the IAM policy in "
            "the deploy guide)"
        )
    elif error.code in CREDENTIAL_CODES:
        text = (
            f"dynamodb: the credentials were refused calling {action} on the {role} table "
            f"{table!r} ({at}; {error.describe()}); set valid credentials (AWS_PROFILE, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the task's role) for this account "
            "and region"
        )
    elif error.key_schema:
        text = (
            f"dynamodb: the {role} table {table!r} refused the keys igata writes "
            f"({at}; {error.describe()}): it is keyed otherwise than configured. "
            + key_fix(role, layout)
        )
    else:
        text = (
            f"dynamodb: {action} on the {role} table {table!r} refused ({at}; "
            f"{error.describe()}); check the sink's options and the table"
        )
    return DynamoDbConfigurationError(text)


def key_fix(role: str, layout: Any) -> str:
    if role == "REQUESTS":
        return (
            f"igata needs a hash key {layout.request_key!r} of type S and no range key: set "
            "REQUESTS_TABLE_HASHKEY_KEYNAME to the table's hash key, or use a table made by "
            "`igata dynamodb create-tables`"
        )
    return (
        f"igata needs the hash key 'hashkey' (S) and the range key {layout.sort_key!r} (S): "
        "set RESULTS_SORTKEY_KEYNAME to the table's range key, or use a table made by "
        "`igata dynamodb create-tables`"
    )
