"""Endpoint, region and client settings shared by the AWS plugins.

Pure environment look-ups: this module imports no AWS library (the core never does). The
plugins build their boto3 clients from what it returns::

    import boto3
    from botocore.config import Config
    client = boto3.client("sqs", **client_kwargs("sqs"), config=Config(**config_kwargs("sqs")))
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: The original igata's per-service endpoint variables.
ORIGINAL_ENDPOINT_VARS = {
    "s3": "S3_ENDPOINT",
    "sqs": "SQS_ENDPOINT",
    "sns": "SNS_ENDPOINT",
    "dynamodb": "DYNAMODB_ENDPOINT",
}

#: The original's default region, used when nothing else names one.
DEFAULT_REGION = "ap-northeast-1"


def endpoint_url(service: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The endpoint to pass to boto3, or None to let boto3 resolve it.

    Precedence: ``AWS_ENDPOINT_URL_<SERVICE>`` (boto3 reads it itself), then the original's
    ``<SERVICE>_ENDPOINT`` (``S3_ENDPOINT``…), then ``AWS_ENDPOINT_URL`` (boto3 again).
    """
    environ = os.environ if environ is None else environ
    if environ.get(f"AWS_ENDPOINT_URL_{service.upper()}"):
        return None
    original = ORIGINAL_ENDPOINT_VARS.get(service)
    if original and environ.get(original):
        return environ[original]
    return None


def uses_custom_endpoint(service: str, environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return bool(
        environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
        or endpoint_url(service, environ)
        or environ.get("AWS_ENDPOINT_URL")
    )


def region(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def client_kwargs(service: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``boto3.client(service, ...)``: endpoint and region."""
    kwargs: dict[str, Any] = {"region_name": region(environ)}
    url = endpoint_url(service, environ)
    if url:
        kwargs["endpoint_url"] = url
    return kwargs


def config_kwargs(
    service: str,
    *,
    max_pool_connections: int = 10,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_attempts: int = 5,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``botocore.config.Config``.

    Explicit timeouts (botocore's 60 s defaults stall a worker on a network fault),
    botocore's ``standard`` retry mode, a pool sized to the caller's concurrency, and
    path-style S3 addressing when a custom endpoint is in use (local servers need it).
    """
    kwargs: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "retries": {"mode": "standard", "total_max_attempts": max_attempts},
        "max_pool_connections": max_pool_connections,
    }
    if service == "s3" and uses_custom_endpoint("s3", environ):
        kwargs["s3"] = {"addressing_style": "path"}
    return kwargs
