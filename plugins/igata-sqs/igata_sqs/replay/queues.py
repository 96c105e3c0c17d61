"""Resolving the queues: their attributes and the default target of a dead-letter queue."""

from __future__ import annotations

from typing import Any

from igata_sqs import errors
from igata_sqs.clients import describe, queue_name
from igata_sqs.replay.exits import ReplayError, ReplayUnavailable


def queue_attributes(client: Any, url: str, what: str) -> dict[str, str]:
    try:
        return dict(
            client.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue", "QueueArn"])[
                "Attributes"
            ]
        )
    except Exception as exc:
        if errors.has_code(exc, errors.MISSING_QUEUE_CODES):
            raise ReplayError(
                f"replay: {what} {url} does not exist or is not visible to these credentials; "
                "check the URL (aws sqs get-queue-url prints it), the endpoint and the region"
            ) from None
        if errors.classify(exc) == errors.CONFIGURATION:
            raise ReplayError(
                f"replay: {what} {url} refused by SQS ({describe(exc)}); "
                f"{errors.configuration_hint(exc)}"
            ) from None
        raise ReplayUnavailable(
            f"replay: cannot read the attributes of {what} {url}: {describe(exc)}"
        ) from exc


def source_queues(client: Any, dlq_url: str) -> list[str]:
    """Queues whose redrive policy names ``dlq_url`` (at most two: enough to decide)."""
    urls: list[str] = []
    try:
        for page in client.get_paginator("list_dead_letter_source_queues").paginate(
            QueueUrl=dlq_url
        ):
            urls.extend(page.get("queueUrls", []))
            if len(urls) > 1:
                break
    except Exception as exc:
        if errors.classify(exc) == errors.CONFIGURATION:
            raise ReplayError(
                f"replay: cannot list the source queues of {dlq_url} ({describe(exc)}); "
                f"{errors.configuration_hint(exc)}, or pass --to"
            ) from None
        raise ReplayUnavailable(
            f"replay: cannot list the source queues of {dlq_url} ({describe(exc)}); pass --to"
        ) from exc
    return urls


def default_target(client: Any, dlq_url: str) -> str:
    urls = source_queues(client, dlq_url)
    if len(urls) == 1:
        return urls[0]
    if not urls:
        raise ReplayError(
            f"replay: no queue names {queue_name(dlq_url)} as its dead-letter queue, so the "
            "target is unknown; pass --to QUEUE_URL"
        )
    raise ReplayError(
        f"replay: several queues use {queue_name(dlq_url)} as their dead-letter queue "
        f"({', '.join(urls)}, …); pass --to QUEUE_URL to choose one"
    )


def is_fifo(attributes: dict[str, str], url: str) -> bool:
    return str(attributes.get("FifoQueue", "false")).lower() == "true" or url.endswith(".fifo")
