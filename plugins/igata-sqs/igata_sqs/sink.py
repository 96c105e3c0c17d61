"""The ``sqs`` sink: each result record becomes one SQS message (JSON body).

Records are buffered by ``put_records`` and sent by ``flush`` with ``SendMessageBatch``
(10 messages and at most ``max_message_bytes`` per call). What SQS answers is read with
:mod:`igata_sqs.errors`:

* an entry refused for its content (invalid characters, over the size limit, an invalid
  parameter value) is that record's :class:`~igata_core.Rejection`, returned by ``flush``;
  a whole call refused for the content of one of its entries is split until the refused
  entry is alone, so every other entry is written;
* an entry or a call failed on SQS's side (throttling, 5xx, network) stays buffered and
  ``flush`` raises: the engine retries it, and only the entries not yet accepted are sent
  again (no entry SQS accepted is ever sent twice);
* a queue that does not exist, access denied or credentials SQS does not know raise
  :class:`~igata_core.ConfigurationError` (exit 2), checked first in ``open()``.

Every message carries the record's identity in the ``igata_id`` message attribute, so that
consumers can de-duplicate redelivered results; an identity SQS cannot carry in an
attribute (empty, or holding characters outside XML 1.0 such as U+FFFE, U+0000 or a lone
surrogate) is carried as ``igata_id_digest`` (``sha256:<hex>``) instead, and in the body
as always. A body holding such characters is sent with JSON escapes (``\\ufffe``), which
SQS accepts. FIFO queues get a message group id and a deduplication id from configurable
record fields, hashed when SQS would not take them.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar

from igata_core import RECORD_ID_KEY, ConfigurationError, Option, Rejection, RunContext, Sink
from igata_core.serialize import NotSerializable, dumps
from igata_sqs import errors
from igata_sqs.batching import MAX_PAYLOAD_BYTES, batches
from igata_sqs.clients import check_queue_url, describe, error_code, make_client, queue_name
from igata_sqs.limits import digest, fifo_id, has_invalid_character, valid_attribute_value

log = logging.getLogger("igata.sqs")

BATCH_SIZE = 10
#: SendMessageBatch calls of one flush made at the same time.
_PARALLEL_SENDS = 4
#: The attribute that carries the digest of an identity SQS cannot take as an attribute.
DIGEST_ATTRIBUTE = RECORD_ID_KEY + "_digest"


@dataclass
class _Entry:
    key: str
    #: The record's position among the records put since the last flush that returned.
    index: int
    identity: str | None
    entry: dict[str, Any]
    size: int


@dataclass
class _Outcome:
    """What SQS did with one batch (or the parts it was split into)."""

    sent: list[str] = field(default_factory=list)
    refused: list[tuple[_Entry, str, str]] = field(default_factory=list)
    #: Keys of entries SQS failed on its side (they stay buffered).
    unsent: list[str] = field(default_factory=list)
    problem: str = ""
    cause: BaseException | None = None
    configuration: str = ""

    def merge(self, other: _Outcome) -> None:
        self.sent += other.sent
        self.refused += other.refused
        self.unsent += other.unsent
        self.problem = self.problem or other.problem
        self.cause = self.cause or other.cause
        self.configuration = self.configuration or other.configuration


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
               "256 KiB limit by default; raise it up to the queue's MaximumMessageSize "
               "(a smaller MaximumMessageSize of the queue wins)."),
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
        self.max_bytes: int = self.opts["max_message_bytes"]
        self._client: Any = None
        self._senders: _Senders | None = None
        self._buffer: dict[str, _Entry] = {}
        self._keys = itertools.count()
        #: Records put since the last flush that returned normally (rejection indexes).
        self._put = 0
        #: Rejections found by flushes that raised, for the flush that finally returns.
        self._rejections: list[Rejection] = []

    def open(self) -> None:
        # The engine retries a failing flush itself: keep botocore's own retries short.
        self._client = make_client(
            "sqs",
            endpoint_url=self.opts["endpoint_url"],
            read_timeout=15.0,
            max_attempts=3,
            pool_size=_PARALLEL_SENDS,
        )
        self._check_queue()
        self._senders = _Senders(_PARALLEL_SENDS)

    def _check_queue(self) -> None:
        """A missing queue, access denied or unknown credentials stop the run at once."""
        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["FifoQueue", "MaximumMessageSize"]
            ).get("Attributes", {})
        except Exception as exc:
            if errors.classify(exc) == errors.CONFIGURATION:
                raise ConfigurationError(self._refusal(describe(exc), exc)) from None
            # An outage now may be over by the first write, which is retried within the
            # engine's budget: do not stop for it here.
            log.warning(
                "sqs sink: cannot read the attributes of queue %s (%s); writing anyway",
                self.queue_url, describe(exc),
            )  # fmt: skip
            return
        if "FifoQueue" in attributes:
            self.fifo = str(attributes["FifoQueue"]).lower() == "true"
        try:
            queue_limit = int(attributes.get("MaximumMessageSize", 0))
        except ValueError:
            queue_limit = 0
        if 0 < queue_limit < self.max_bytes:
            log.info(
                "sqs sink: queue %s takes messages of at most %d bytes (MaximumMessageSize); "
                "larger records are refused before sending", self.queue_name, queue_limit,
            )  # fmt: skip
            self.max_bytes = queue_limit

    def _refusal(self, problem: str, cause: BaseException | Mapping[str, Any]) -> str:
        return (
            f"sqs sink: queue {self.queue_url} refused by SQS ({problem}); "
            f"{errors.configuration_hint(cause)} (option queue_url, or "
            "OUTPUT_CTXMGR_SQS_QUEUE_URL)"
        )

    # -- buffering -----------------------------------------------------------------------

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        rejections: list[Rejection] = []
        base = self._put
        self._put += len(records)
        for position, record in enumerate(records):
            raw = record.get(RECORD_ID_KEY)
            identity = None if raw is None else str(raw)
            try:
                body = _body(record)
            except (NotSerializable, TypeError, ValueError) as exc:
                rejections.append(
                    Rejection(
                        position, f"sqs sink: cannot serialise record: {exc}", "NotSerializable"
                    )
                )
                continue
            entry: dict[str, Any] = {"MessageBody": body}
            size = len(body.encode("utf-8"))
            if identity is not None:
                name, value = _identity_attribute(identity)
                entry["MessageAttributes"] = {name: {"DataType": "String", "StringValue": value}}
                size += len(name) + len("String") + len(value.encode("utf-8"))
            if size > self.max_bytes:
                rejections.append(
                    Rejection(position, self._too_large(identity, size), "RecordTooLarge")
                )
                continue
            if self.fifo:
                entry["MessageGroupId"] = _fifo_value(
                    record.get(self.opts["message_group_field"]), identity, body
                )
                entry["MessageDeduplicationId"] = _fifo_value(
                    record.get(self.opts["deduplication_field"]), identity, body
                )
            key = str(next(self._keys))
            self._buffer[key] = _Entry(key, base + position, identity, entry, size)
        return rejections

    def _too_large(self, identity: str | None, size: int) -> str:
        return (
            f"sqs sink: record {_shown(identity)} is {size:,} bytes as a message, over the "
            f"{self.max_bytes:,}-byte message limit (queue {self.queue_name}, option "
            "max_message_bytes and the queue's MaximumMessageSize); return less from the "
            "predictor or use a sink for large results (s3-jsonl, dynamodb)"
        )

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> list[Rejection]:
        """Send everything buffered; returns the records SQS refused for their content.

        Raises (keeping only the entries not yet accepted) when SQS failed some on its side.
        """
        if self._buffer:
            if self._client is None or self._senders is None:
                raise RuntimeError("sqs sink: flush() before open()")
            groups = list(
                batches(
                    list(self._buffer.values()),
                    max_count=BATCH_SIZE,
                    max_bytes=self.max_bytes,
                    size=lambda e: e.size,
                )
            )
            # The batches go out together: a flush costs one round trip, not one per batch.
            outcome = _Outcome()
            for part in self._senders.map(self._send, groups):
                outcome.merge(part)
            for key in outcome.sent:
                self._buffer.pop(key, None)
            for entry, message, error_type in outcome.refused:
                self._buffer.pop(entry.key, None)
                self._rejections.append(Rejection(entry.index, message, error_type))
            if outcome.configuration:
                raise ConfigurationError(outcome.configuration)
            if self._buffer:
                raise RuntimeError(
                    f"sqs sink: cannot send {len(self._buffer)} record(s) to queue "
                    f"{self.queue_url}: {outcome.problem or 'not accepted'}; they stay "
                    "buffered"
                ) from outcome.cause
        rejections, self._rejections = self._rejections, []
        self._put = 0
        return rejections

    def _send(self, batch: list[_Entry]) -> _Outcome:
        """One SendMessageBatch call, split when SQS refuses the call for one entry."""
        outcome = _Outcome()
        try:
            response = self._client.send_message_batch(
                QueueUrl=self.queue_url, Entries=[{"Id": e.key, **e.entry} for e in batch]
            )
        except Exception as exc:
            kind = errors.classify(exc)
            if kind == errors.CONFIGURATION:
                outcome.configuration = self._refusal(describe(exc), exc)
            elif kind == errors.CONTENT or errors.has_code(exc, errors.SPLIT_CODES):
                if len(batch) == 1:
                    outcome.refused.append(self._refused(batch[0], describe(exc), exc))
                    return outcome
                if errors.has_code(exc, errors.REQUEST_CODES):
                    log.error("sqs sink: SQS refused a batch of %d (%s); splitting it (a bug "
                              "of igata)", len(batch), describe(exc))  # fmt: skip
                half = len(batch) // 2
                outcome.merge(self._send(batch[:half]))
                outcome.merge(self._send(batch[half:]))
                return outcome
            outcome.unsent = [entry.key for entry in batch]
            outcome.problem = describe(exc)
            outcome.cause = exc
            return outcome
        by_key = {entry.key: entry for entry in batch}
        outcome.sent = [str(s["Id"]) for s in response.get("Successful", [])]
        for failure in response.get("Failed", []):
            entry = by_key.get(str(failure.get("Id")))
            if entry is None:
                continue
            kind = errors.classify_entry(failure)
            text = errors.entry_text(failure)
            if kind == errors.CONTENT:
                outcome.refused.append(self._refused(entry, text, failure))
            elif kind == errors.CONFIGURATION:
                outcome.configuration = self._refusal(text, failure)
            else:
                outcome.unsent.append(entry.key)
                outcome.problem = outcome.problem or text
        return outcome

    def _refused(
        self, entry: _Entry, problem: str, cause: BaseException | Mapping[str, Any]
    ) -> tuple[_Entry, str, str]:
        if errors.has_code(cause, errors.TOO_LONG_CODES):
            message = (
                f"sqs sink: queue {self.queue_name} refused record {_shown(entry.identity)} "
                f"({entry.size:,} bytes as a message) as too large ({problem}); return less "
                "from the predictor or use a sink for large results (s3-jsonl, dynamodb)"
            )
            return entry, message, "RecordTooLarge"
        code = cause.get("Code") if isinstance(cause, Mapping) else error_code(cause)
        message = (
            f"sqs sink: queue {self.queue_name} refused record {_shown(entry.identity)} ({problem})"
        )
        return entry, message, f"SQS.{str(code or 'Refused').rsplit('.', 1)[-1]}"

    def close(self) -> None:
        if self._senders is not None:
            self._senders.close()
            self._senders = None
        if self._buffer:
            log.warning(
                "sqs sink: %d record(s) were never accepted by queue %s; their inputs were not "
                "acknowledged and will be processed again", len(self._buffer), self.queue_name,
            )  # fmt: skip
            self._buffer.clear()


class _Senders:
    """A few daemon threads for the parallel sends of a flush.

    Not a ThreadPoolExecutor: Python joins its threads at exit, and a send hanging on a
    dead network would hold a worker that was told to stop (a fatal error) for minutes.
    """

    def __init__(self, size: int):
        self._tasks: queue.Queue[Any] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"igata-sqs-send-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            function, argument, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(argument))
            except BaseException as exc:
                future.set_exception(exc)

    def map(self, function: Callable[[Any], _Outcome], arguments: list[Any]) -> list[_Outcome]:
        if len(arguments) == 1:
            return [function(arguments[0])]
        futures: list[Future[_Outcome]] = []
        for argument in arguments:
            future: Future[_Outcome] = Future()
            self._tasks.put((function, argument, future))
            futures.append(future)
        return [future.result() for future in futures]

    def close(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)


def _body(record: Mapping[str, Any]) -> str:
    body = dumps(record, ensure_ascii=False)
    if has_invalid_character(body):
        # Characters SQS refuses (U+FFFE, U+0000, lone surrogates…) go as JSON escapes.
        body = dumps(record, ensure_ascii=True)
    return body


def _identity_attribute(identity: str) -> tuple[str, str]:
    """The message attribute carrying the identity: ``igata_id`` when SQS can take it as
    it is, else ``igata_id_digest`` with its SHA-256 (never a refused message)."""
    if valid_attribute_value(identity):
        return RECORD_ID_KEY, identity
    return DIGEST_ATTRIBUTE, digest(identity)


def _fifo_value(value: Any, identity: str | None, body: str) -> str:
    """A valid FIFO group/deduplication id from a record value (hashed when unusable)."""
    text = str(value) if value is not None and value != "" else (identity or "")
    if not text:
        text = digest(body)
    return fifo_id(text)


def _shown(identity: str | None) -> str:
    if identity is None:
        return "?"
    return ascii(identity) if has_invalid_character(identity) or not identity else identity
