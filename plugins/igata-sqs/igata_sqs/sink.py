"""The ``sqs`` sink: each result record becomes one SQS message (JSON body).

Records are buffered by ``put_records`` and sent by ``flush`` with ``SendMessageBatch``
(10 messages and at most 256 KiB per call). ``flush`` returns only when SQS accepted every
buffered message; entries SQS reports failed are retried, and if some still fail, ``flush``
raises with what remains buffered, so the engine retries it and acks nothing meanwhile.
Every message carries the record's identity in the ``igata_id`` message attribute, so that
consumers can de-duplicate redelivered results. FIFO queues get a message group id and a
deduplication id from configurable record fields.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from igata_core import RECORD_ID_KEY, Option, Rejection, RunContext, Sink
from igata_core.serialize import NotSerializable, dumps
from igata_sqs.batching import MAX_PAYLOAD_BYTES, batches
from igata_sqs.clients import check_queue_url, describe, make_client, queue_name

log = logging.getLogger("igata.sqs")

BATCH_SIZE = 10
_ENTRY_ATTEMPTS = 3
#: SendMessageBatch calls of one flush made at the same time.
_PARALLEL_SENDS = 4
#: Characters SQS accepts in a message body (XML 1.0 characters).
_INVALID_BODY = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: What SQS accepts as a FIFO group or deduplication id.
_FIFO_ID = re.compile(r"^[!-~]{1,128}$")


@dataclass
class _Entry:
    key: str
    identity: str | None
    entry: dict[str, Any]
    size: int


class SqsSink(Sink):
    """Result records as JSON messages on an SQS queue (the original's default output)."""

    name = "sqs"
    aliases = ("SQSRecordOutputCtxManager",)
    description = "Result records as JSON messages on an SQS queue"
    options: ClassVar[tuple[Option, ...]] = (
        Option("queue_url", required=True, help="URL of the queue to send result records to.",
               env=("OUTPUT_CTXMGR_SQS_QUEUE_URL",)),
        Option("message_group_field", default=RECORD_ID_KEY,
               help="FIFO queues: record field whose value is the message group id (records "
               "of one group are delivered in order)."),
        Option("deduplication_field", default=RECORD_ID_KEY,
               help="FIFO queues: record field whose value is the deduplication id (a record "
               "sent again within SQS's 5-minute window is dropped by SQS)."),
        Option("max_message_bytes", "int", default=MAX_PAYLOAD_BYTES, minimum=1024,
               help="Largest message (and batch request) to send, in bytes: SQS's classic "
               "256 KiB limit by default; raise it up to the queue's MaximumMessageSize."),
        Option("endpoint_url", default=None,
               help="SQS endpoint (default: AWS_ENDPOINT_URL_SQS, SQS_ENDPOINT, "
               "AWS_ENDPOINT_URL, else AWS)."),
    )  # fmt: skip

    def __init__(self, options: Mapping[str, Any] | None = None, context: RunContext | None = None):
        super().__init__(options, context)
        check_queue_url(self.opts["queue_url"], "sqs sink: queue_url")
        self.queue_url: str = self.opts["queue_url"]
        self.queue_name = queue_name(self.queue_url)
        self.fifo = self.queue_name.endswith(".fifo")
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._buffer: dict[str, _Entry] = {}
        self._keys = itertools.count()

    def open(self) -> None:
        # The engine retries a failing flush itself: keep botocore's own retries short.
        self._client = make_client(
            "sqs",
            endpoint_url=self.opts["endpoint_url"],
            read_timeout=15.0,
            max_attempts=3,
            pool_size=_PARALLEL_SENDS,
        )
        self._pool = ThreadPoolExecutor(_PARALLEL_SENDS, thread_name_prefix="igata-sqs-send")

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        rejections: list[Rejection] = []
        for index, record in enumerate(records):
            identity = record.get(RECORD_ID_KEY)
            identity = None if identity is None else str(identity)
            try:
                body = _body(record)
            except (NotSerializable, TypeError, ValueError) as exc:
                rejections.append(
                    Rejection(index, f"sqs sink: cannot serialise record: {exc}", "NotSerializable")
                )
                continue
            entry: dict[str, Any] = {"MessageBody": body}
            size = len(body.encode("utf-8"))
            if identity is not None:
                entry["MessageAttributes"] = {
                    RECORD_ID_KEY: {"DataType": "String", "StringValue": identity}
                }
                size += len(RECORD_ID_KEY) + len("String") + len(identity.encode("utf-8"))
            if size > self.opts["max_message_bytes"]:
                rejections.append(
                    Rejection(
                        index,
                        f"sqs sink: record {identity or '?'} is {size:,} bytes as a message, over "
                        f"the {self.opts['max_message_bytes']:,}-byte message limit (queue "
                        f"{self.queue_name}, option max_message_bytes); "
                        "return less from the predictor or use a sink for large results "
                        "(s3-jsonl, dynamodb)",
                        "RecordTooLarge",
                    )
                )
                continue
            if self.fifo:
                entry["MessageGroupId"] = _fifo_id(
                    record.get(self.opts["message_group_field"]), identity, body
                )
                entry["MessageDeduplicationId"] = _fifo_id(
                    record.get(self.opts["deduplication_field"]), identity, body
                )
            key = str(next(self._keys))
            self._buffer[key] = _Entry(key, identity, entry, size)
        return rejections

    def flush(self) -> None:
        """Send everything buffered; returns only when SQS accepted all of it."""
        if not self._buffer:
            return
        if self._client is None or self._pool is None:
            raise RuntimeError("sqs sink: flush() before open()")
        problem = ""
        for attempt in range(_ENTRY_ATTEMPTS):
            if attempt:
                time.sleep(0.2 * 2**attempt)
            groups = list(
                batches(
                    list(self._buffer.values()),
                    max_count=BATCH_SIZE,
                    max_bytes=self.opts["max_message_bytes"],
                    size=lambda e: e.size,
                )
            )
            # The batches go out together: a flush costs one round trip, not one per batch.
            outcomes = list(self._pool.map(self._send, groups))
            errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    continue
                for success in outcome.get("Successful", []):
                    self._buffer.pop(success["Id"], None)
                for failure in outcome.get("Failed", []):
                    problem = (
                        f"{failure.get('Code', '?')}: {failure.get('Message', '')}"
                        f"{' (sender fault)' if failure.get('SenderFault') else ''}"
                    )
            if errors:
                raise RuntimeError(
                    f"sqs sink: cannot send to queue {self.queue_url}: {describe(errors[0])} "
                    f"({len(self._buffer)} record(s) still buffered)"
                ) from errors[0]
            if not self._buffer:
                return
            log.warning(
                "sqs sink: queue %s refused %d message(s) (%s); retrying",
                self.queue_name, len(self._buffer), problem,
            )  # fmt: skip
        raise RuntimeError(
            f"sqs sink: queue {self.queue_name} refused {len(self._buffer)} message(s) after "
            f"{_ENTRY_ATTEMPTS} attempts ({problem}); they stay buffered"
        )

    def _send(self, batch: list[_Entry]) -> Any:
        """One SendMessageBatch call; its response, or the exception it raised."""
        try:
            return self._client.send_message_batch(
                QueueUrl=self.queue_url, Entries=[{"Id": e.key, **e.entry} for e in batch]
            )
        except Exception as exc:
            return exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._buffer:
            log.warning(
                "sqs sink: %d record(s) were never accepted by queue %s; their inputs were not "
                "acknowledged and will be processed again", len(self._buffer), self.queue_name,
            )  # fmt: skip
            self._buffer.clear()


def _body(record: Mapping[str, Any]) -> str:
    body = dumps(record, ensure_ascii=False)
    if _INVALID_BODY.search(body):
        # Characters SQS refuses (U+FFFE, lone surrogates…) are sent as JSON escapes.
        body = dumps(record, ensure_ascii=True)
    return body


def _fifo_id(value: Any, identity: str | None, body: str) -> str:
    """A valid FIFO group/deduplication id from a record value (hashed when unusable)."""
    text = str(value) if value is not None and value != "" else (identity or "")
    if not text:
        text = hashlib.sha256(body.encode("utf-8")).hexdigest()
    if not _FIFO_ID.match(text):
        text = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text
