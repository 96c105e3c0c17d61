"""boto3 clients for SQS and SNS, configured from :mod:`igata_core.awsconfig`.

Endpoints come from ``AWS_ENDPOINT_URL_SQS``/``AWS_ENDPOINT_URL_SNS``, the original's
``SQS_ENDPOINT``/``SNS_ENDPOINT`` or ``AWS_ENDPOINT_URL`` unless a component's
``endpoint_url`` option names one. Timeouts are explicit: botocore's 60 s defaults would
stall a worker for a minute on a network fault.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from igata_core import awsconfig


def make_client(
    service: str,
    *,
    endpoint_url: str | None = None,
    read_timeout: float = 30.0,
    connect_timeout: float = 5.0,
    max_attempts: int = 5,
    pool_size: int = 10,
) -> Any:
    """A thread-safe client of ``service`` (``sqs`` or ``sns``) built on a private session.

    boto3's default session is not safe to build clients from several threads at once.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        **awsconfig.config_kwargs(
            service,
            max_pool_connections=pool_size,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )
    )
    kwargs = awsconfig.client_kwargs(service)
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return boto3.session.Session().client(service, config=config, **kwargs)


def queue_name(queue_url: str) -> str:
    """The queue's name: the last path segment of its URL."""
    return urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1] or queue_url


def check_queue_url(queue_url: str, what: str) -> None:
    """Raise ValueError unless ``queue_url`` looks like an SQS queue URL."""
    parts = urlsplit(queue_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") == "":
        raise ValueError(
            f"{what} {queue_url!r} is not a queue URL; expected "
            "https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE (aws sqs get-queue-url prints it)"
        )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for other exceptions)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def describe(exc: BaseException) -> str:
    """A one-line description of an AWS/transport exception."""
    code = error_code(exc)
    text = str(exc) or type(exc).__name__
    return text if code and code in text else f"{type(exc).__name__}: {text}"
