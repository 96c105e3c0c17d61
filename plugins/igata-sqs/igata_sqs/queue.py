"""The SQS calls of the worker: attributes, receive, and batched delete / visibility changes.

Batched calls report failures per entry, read with :mod:`igata_sqs.errors`. Entries that
failed on the service's side (an outage) are retried a few times; entries refused for
what they hold (an expired receipt handle) are logged, and the message comes back by
itself (processed again; sinks write idempotently). A queue that does not exist, access
denied or unknown credentials raise :class:`QueueRefused` (a
:class:`~igata_core.ConfigurationError`): retrying cannot help. Transport failures are
retried by botocore's ``standard`` retry mode first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from igata_core import ConfigurationError
from igata_sqs import errors
from igata_sqs.clients import describe
from igata_sqs.leases import Lease

log = logging.getLogger("igata.sqs")

#: SQS accepts at most 10 entries per batch call.
BATCH_SIZE = 10
#: Longest visibility timeout SQS accepts (12 hours).
MAX_VISIBILITY = 43_200
_ENTRY_ATTEMPTS = 3

RECEIVE_ATTRIBUTES = ["ApproximateReceiveCount", "MessageGroupId", "SequenceNumber"]


class QueueRefused(ConfigurationError):
    """SQS refuses this queue to these credentials (access denied, unknown credentials, a
    KMS key they may not use): a configuration error."""


class QueueMissing(QueueRefused):
    """The queue does not exist (or this identity may not see it)."""


def refused(url: str, what: str, exc: BaseException | dict[str, Any]) -> QueueRefused:
    """The :class:`QueueRefused` (or :class:`QueueMissing`) for a configuration error."""
    problem = errors.entry_text(exc) if isinstance(exc, dict) else describe(exc)
    hint = errors.configuration_hint(exc)
    if errors.has_code(exc, errors.MISSING_QUEUE_CODES):
        return QueueMissing(
            f"sqs: queue {url} does not exist or is not visible to these credentials "
            f"({problem}); {hint}"
        )
    return QueueRefused(f"sqs: {what} on queue {url} refused ({problem}); {hint}")


@dataclass(frozen=True)
class QueueInfo:
    """What the worker needs to know about its queue."""

    name: str
    visibility_timeout: int
    #: The redrive policy's maxReceiveCount (None: no dead-letter queue).
    max_receive_count: int | None
    dead_letter_arn: str | None
    fifo: bool


class SqsQueue:
    """One queue, through a thread-safe boto3 client."""

    def __init__(self, client: Any, url: str, name: str):
        self.client = client
        self.url = url
        self.name = name

    def info(self) -> QueueInfo:
        try:
            attributes = self.client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["All"]
            )["Attributes"]
        except Exception as exc:
            if errors.classify(exc) == errors.CONFIGURATION:
                raise refused(self.url, "GetQueueAttributes", exc) from None
            raise
        max_receive: int | None = None
        dead_letter: str | None = None
        if attributes.get("RedrivePolicy"):
            try:
                policy = json.loads(attributes["RedrivePolicy"])
                max_receive = int(policy["maxReceiveCount"])
                dead_letter = policy.get("deadLetterTargetArn")
            except (ValueError, KeyError, TypeError):
                log.warning(
                    "sqs: queue %s has an unreadable RedrivePolicy %r; no attempt is "
                    "treated as final", self.name, attributes["RedrivePolicy"],
                )  # fmt: skip
        return QueueInfo(
            name=self.name,
            visibility_timeout=int(attributes.get("VisibilityTimeout", 30)),
            max_receive_count=max_receive,
            dead_letter_arn=dead_letter,
            fifo=str(attributes.get("FifoQueue", "false")).lower() == "true"
            or self.url.endswith(".fifo"),
        )

    def receive(self, count: int, wait: int, visibility: int) -> list[dict[str, Any]]:
        response = self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=RECEIVE_ATTRIBUTES,
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def counts(self) -> tuple[int, int, int]:
        """(visible, in flight, delayed) messages as SQS approximately reports them."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def delete(self, leases: Sequence[Lease]) -> set[str]:
        """Delete messages by their newest receipt handles; returns the deleted ids."""
        return self._batched(
            "delete",
            [(lease, {"ReceiptHandle": lease.receipt_handle}) for lease in leases],
            self.client.delete_message_batch,
        )

    def change_visibility(
        self,
        changes: Sequence[tuple[Lease, int]],
        *,
        what: str = "visibility change",
        held: Callable[[str], bool] | None = None,
    ) -> set[str]:
        """Set each message's visibility timeout (seconds from now); returns the changed ids.

        ``held`` tells whether a message is still held: a refusal for one that was settled
        meanwhile (deleted while its heartbeat was on the way) is expected, not reported.
        """
        return self._batched(
            what,
            [
                (
                    lease,
                    {
                        "ReceiptHandle": lease.receipt_handle,
                        "VisibilityTimeout": max(0, min(int(timeout), MAX_VISIBILITY)),
                    },
                )
                for lease, timeout in changes
            ],
            self.client.change_message_visibility_batch,
            held,
        )

    def _batched(
        self,
        what: str,
        entries: list[tuple[Lease, dict[str, Any]]],
        call: Any,
        held: Callable[[str], bool] | None = None,
    ) -> set[str]:
        done: set[str] = set()
        for start in range(0, len(entries), BATCH_SIZE):
            chunk = entries[start : start + BATCH_SIZE]
            done |= self._one_batch(what, chunk, call, held)
        return done

    def _one_batch(
        self,
        what: str,
        chunk: list[tuple[Lease, dict[str, Any]]],
        call: Any,
        held: Callable[[str], bool] | None,
    ) -> set[str]:
        done: set[str] = set()
        todo = {str(index): pair for index, pair in enumerate(chunk)}
        problem = ""
        for attempt in range(_ENTRY_ATTEMPTS):
            if attempt:
                time.sleep(0.2 * 2**attempt)
            try:
                response = call(
                    QueueUrl=self.url,
                    Entries=[{"Id": key, **entry} for key, (_, entry) in todo.items()],
                )
            except Exception as exc:
                kind = errors.classify(exc)
                if kind == errors.CONFIGURATION:
                    raise refused(self.url, what, exc) from None
                problem = describe(exc)
                if kind == errors.CONTENT:
                    break  # refused as it is: the messages come back by themselves
                continue
            for success in response.get("Successful", []):
                lease, _ = todo.pop(success["Id"])
                done.add(lease.message_id)
            for failure in response.get("Failed", []):
                key = failure.get("Id", "")
                if key not in todo:
                    continue
                problem = errors.entry_text(failure)
                kind = errors.classify_entry(failure)
                if kind == errors.CONFIGURATION:
                    raise refused(self.url, what, failure)
                if kind == errors.CONTENT:
                    lease, _ = todo.pop(key)
                    if held is not None and not held(lease.message_id):
                        continue
                    log.warning(
                        "sqs: %s of message %s refused by queue %s (%s); the message will "
                        "reappear after its visibility timeout and be processed again "
                        "(results are keyed by request identity)",
                        what, lease.message_id, self.name, problem,
                    )  # fmt: skip
            if not todo:
                return done
        for lease, _ in todo.values():
            log.error(
                "sqs: %s of message %s on queue %s failed (%s); the message will reappear "
                "after its visibility timeout", what, lease.message_id, self.name, problem,
            )  # fmt: skip
        return done
