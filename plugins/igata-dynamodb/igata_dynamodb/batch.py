"""``BatchWriteItem`` as AWS requires it: at most 25 requests, no key twice, retried parts.

botocore's ``standard`` retry mode retries a call that was throttled as a whole; a call
that succeeds with ``UnprocessedItems`` (partly throttled) is retried here, with
exponential backoff and jitter, as the DynamoDB developer guide asks.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("igata.dynamodb")

K = TypeVar("K", bound=Hashable)

#: AWS refuses a BatchWriteItem call with more requests (moto does not).
MAX_BATCH = 25


class UnprocessedItemsError(Exception):
    """Items stayed unprocessed (throttled) after every retry; the flush fails (an outage).

    ``unprocessed``: the requests DynamoDB handed back last; the others were written.
    """

    def __init__(self, message: str, unprocessed: Sequence[dict[str, Any]] = ()):
        super().__init__(message)
        self.unprocessed = list(unprocessed)


@dataclass
class Backoff:
    """How often and how long to wait for ``UnprocessedItems``."""

    attempts: int = 8
    base: float = 0.05
    cap: float = 2.0
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int) -> None:
        # Full jitter: spreads the retries of concurrent writers apart.
        self.sleep(random.uniform(0, min(self.cap, self.base * 2**attempt)))


def chunks(
    requests: Iterable[tuple[K, dict[str, Any]]], size: int = MAX_BATCH
) -> list[list[tuple[K, dict[str, Any]]]]:
    """Requests in calls of at most ``size``, each key once (the last request for it wins)."""
    unique: dict[K, dict[str, Any]] = {}
    for key, request in requests:
        unique.pop(key, None)
        unique[key] = request
    ordered = list(unique.items())
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def batch_write(
    client: Any,
    table: str,
    requests: Sequence[dict[str, Any]],
    backoff: Backoff | None = None,
) -> None:
    """Write ``requests`` (wire-format Put/DeleteRequests) to ``table``; all or raise.

    Raises :class:`UnprocessedItemsError` when throttling outlasts the backoff, and
    botocore's ``ClientError`` for a refused call (``ValidationException``: an item is
    invalid; the whole call wrote nothing).
    """
    if len(requests) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} requests per BatchWriteItem, got {len(requests)}")
    backoff = backoff or Backoff()
    pending = list(requests)
    for attempt in range(backoff.attempts):
        if attempt:
            backoff.wait(attempt)
        response = client.batch_write_item(RequestItems={table: pending})
        pending = response.get("UnprocessedItems", {}).get(table, [])
        if not pending:
            return
        log.debug("dynamodb: %d items to %s unprocessed; retrying", len(pending), table)
    raise UnprocessedItemsError(
        f"dynamodb: {len(pending)} of {len(requests)} items to table {table!r} stayed "
        f"unprocessed after {backoff.attempts} attempts (throttled: raise the table's "
        "capacity or lower --concurrency); they stay buffered and are retried",
        pending,
    )
