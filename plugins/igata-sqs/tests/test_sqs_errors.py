"""igata_sqs.errors: every SQS and SNS error code, in every spelling, has one kind."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
)

from igata_sqs import errors
from igata_sqs.errors import CONFIGURATION, CONTENT, OUTAGE, REQUEST

CODES = {
    CONTENT: [
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "InvalidMessageContents",
        "InvalidAttributeValue",
        "InvalidAttributeName",
        "MessageTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "BatchRequestTooLong",
        "MissingParameter",
        "ReceiptHandleIsInvalid",
        "InvalidParameter",  # SNS
    ],
    CONFIGURATION: [
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "com.amazonaws.sqs#QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAddress",
        "InvalidSecurity",
        "KmsAccessDenied",
        "KmsDisabled",
        "KmsNotFound",
        "KMS.AccessDeniedException",
        "NotFound",  # SNS
        "AuthorizationError",  # SNS
        "KMSAccessDenied",  # SNS
        "KMSNotFound",
        "KMSDisabled",
    ],
    OUTAGE: [
        "RequestThrottled",
        "ThrottlingException",
        "Throttling",
        "AWS.SimpleQueueService.OverLimit",
        "OverLimit",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KmsThrottled",
        "Throttled",  # SNS
        "KMSThrottling",  # SNS
        "RequestExpired",
    ],
    REQUEST: [
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        "TooManyEntriesInBatchRequest",
        "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        "EmptyBatchRequest",
    ],
}


@pytest.mark.parametrize(
    "kind, code", [(kind, code) for kind, codes in CODES.items() for code in codes]
)
def test_every_code_has_its_kind(client_error, kind, code):
    assert errors.classify(client_error(code)) == kind
    assert errors.classify_entry({"Code": code, "SenderFault": kind != OUTAGE}) == kind
    assert errors.classify_entry({"Code": code, "SenderFault": kind == OUTAGE}) == kind, (
        "a known code decides, whatever SenderFault says"
    )


def test_localstack_and_aws_json_spellings(client_error):
    """LocalStack and SQS's JSON protocol: Code in one spelling, QueryErrorCode in the other."""
    missing = client_error(
        "AWS.SimpleQueueService.NonExistentQueue", QueryErrorCode="QueueDoesNotExist"
    )
    assert errors.classify(missing) == CONFIGURATION
    assert errors.has_code(missing, errors.MISSING_QUEUE_CODES)
    by_header = client_error("Unknown")
    by_header.response["ResponseMetadata"]["HTTPHeaders"] = {
        "x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"
    }
    assert errors.classify(by_header) == CONFIGURATION
    # LocalStack: invalid characters in a body are reported with SenderFault false.
    entry = {"Code": "InvalidMessageContents", "SenderFault": False, "Message": "Invalid"}
    assert errors.classify_entry(entry) == CONTENT


@pytest.mark.parametrize(
    "status, kind", [(500, OUTAGE), (503, OUTAGE), (429, OUTAGE), (403, CONFIGURATION),
                     (401, CONFIGURATION), (400, OUTAGE)],
)  # fmt: skip
def test_unknown_codes_fall_back_on_the_http_status(client_error, status, kind):
    assert errors.classify(client_error("SomethingNew", status=status)) == kind


def test_unknown_entry_codes_follow_sender_fault():
    assert errors.classify_entry({"Code": "New", "SenderFault": True}) == CONTENT
    assert errors.classify_entry({"Code": "New", "SenderFault": False}) == OUTAGE
    assert errors.classify_entry({}) == OUTAGE


@pytest.mark.parametrize(
    "exc, kind",
    [
        (EndpointConnectionError(endpoint_url="http://x"), OUTAGE),
        (ConnectTimeoutError(endpoint_url="http://x"), OUTAGE),
        (ReadTimeoutError(endpoint_url="http://x"), OUTAGE),
        (ConnectionResetError(), OUTAGE),
        (TimeoutError(), OUTAGE),
        (RuntimeError("anything else"), OUTAGE),
        (NoCredentialsError(), CONFIGURATION),
        (NoRegionError(), CONFIGURATION),
        (ParamValidationError(report="bad"), REQUEST),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value,
)
def test_exceptions_without_a_code(exc, kind):
    assert errors.classify(exc) == kind


def test_configuration_hints_name_the_fix(client_error):
    assert "queue URL" in errors.configuration_hint(client_error("QueueDoesNotExist"))
    assert "permissions" in errors.configuration_hint(client_error("AccessDenied"))
    assert "credentials" in errors.configuration_hint(client_error("InvalidClientTokenId"))
    assert "KMS" in errors.configuration_hint(client_error("KmsAccessDenied"))
    assert "topic ARN" in errors.configuration_hint(client_error("NotFound"))
