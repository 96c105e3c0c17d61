"""Request messages in the original igata's format, and their deterministic ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Requests per message by default (the original's producers sent up to 10).
DEFAULT_PER_MESSAGE = 10
#: SQS's size limit of one message and of one SendMessageBatch call (bytes).
MAX_MESSAGE_BYTES = 256 * 1024
#: SQS takes at most 10 entries per batch call.
BATCH_ENTRIES = 10


def request_id(collection_id: str, bucket: str, key: str, version_id: str | None) -> str:
    """The request id of an object in a collection: the same inputs, the same id, so a
    resubmission overwrites instead of adding (32 hex digits of a SHA-256)."""
    text = "\x1f".join((collection_id, bucket, key, version_id or ""))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def build_request(
    collection_id: str,
    bucket: str,
    key: str,
    version_id: str | None = None,
    image_id: str | None = None,
    *,
    id_field: str = "request_id",
) -> dict[str, Any]:
    """``{collection_id, image_id, s3_uri, request_id}`` (the id also under ``id_field``)."""
    from igata_s3.uris import format_uri

    uri = format_uri(bucket, key, version_id)
    rid = request_id(collection_id, bucket, key, version_id)
    request = {
        "collection_id": collection_id,
        "image_id": image_id if image_id is not None else uri,
        "s3_uri": uri,
        "request_id": rid,
    }
    if id_field != "request_id":
        request[id_field] = rid
    return request


def encode(requests: list[dict[str, Any]]) -> str:
    """A message body: a JSON array, ASCII only (SQS refuses some Unicode characters)."""
    return json.dumps(requests, ensure_ascii=True, separators=(",", ":"))


@dataclass
class Message:
    requests: list[dict[str, Any]] = field(default_factory=list)
    body: str = "[]"
    #: Where its last request is in its source (the cursor's position once it is sent).
    position: Any = None

    @property
    def size(self) -> int:
        return len(self.body.encode("utf-8"))


class Packer:
    """Requests into messages of at most ``per_message`` requests and ``max_bytes`` each."""

    def __init__(self, per_message: int = DEFAULT_PER_MESSAGE, max_bytes: int = MAX_MESSAGE_BYTES):
        self.per_message = per_message
        self.max_bytes = max_bytes
        self._current: list[dict[str, Any]] = []
        self._size = 2  # "[]"
        self._position: Any = None

    def add(self, request: dict[str, Any], position: Any = None) -> Iterator[Message]:
        """Add a request; yields the message it closed, if any."""
        size = len(encode([request])) - 2 + (1 if self._current else 0)
        if self._current and (
            len(self._current) >= self.per_message or self._size + size > self.max_bytes
        ):
            yield self._close()
            size -= 1
        self._current.append(request)
        self._size += size
        self._position = position

    def finish(self) -> Iterator[Message]:
        if self._current:
            yield self._close()

    def _close(self) -> Message:
        message = Message(self._current, encode(self._current), self._position)
        self._current = []
        self._size = 2
        return message
