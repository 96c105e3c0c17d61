"""Splitting entries into batches bounded by count and by total size (SQS/SNS limits)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: SQS's and SNS's limit on one message and on one batch request's total payload.
MAX_PAYLOAD_BYTES = 256 * 1024


def batches(
    entries: Sequence[T], *, max_count: int, max_bytes: int, size: Callable[[T], int]
) -> Iterator[list[T]]:
    """Consecutive batches of at most ``max_count`` entries and ``max_bytes`` in total.

    An entry larger than ``max_bytes`` on its own goes alone in its batch; callers reject
    such entries before batching.
    """
    batch: list[T] = []
    total = 0
    for entry in entries:
        entry_size = size(entry)
        if batch and (len(batch) >= max_count or total + entry_size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(entry)
        total += entry_size
    if batch:
        yield batch
