"""The SQS calls of the worker: attributes, receive, and batched delete / visibility changes.

Batched calls report failures per entry. Entries that failed on the service's side are
retried a few times; entries refused for the caller's fault (an expired receipt handle)
are logged, and the message comes back by itself (processed again; sinks write
idempotently). Transport failures are retried by botocore's ``standard`` retry mode first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from igata_sqs.clients import describe, error_code
from igata_sqs.leases import Lease

log = logging.getLogger("igata.sqs")

#: SQS accepts at most 10 entries per batch call.
BATCH_SIZE = 10
#: Longest visibility timeout SQS accepts (12 hours).
MAX_VISIBILITY = 43_200
_ENTRY_ATTEMPTS = 3

RECEIVE_ATTRIBUTES = ["ApproximateReceiveCount", "MessageGroupId", "SequenceNumber"]


class QueueMissing(Exception):
    """The queue does not exist (or this identity may not see it)."""


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
            if error_code(exc) in _MISSING_CODES:
                raise QueueMissing(
                    f"sqs: queue {self.url} does not exist or is not visible to these "
                    f"credentials ({describe(exc)}); check the queue URL and the endpoint"
                ) from None
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
                problem = describe(exc)
                continue
            for success in response.get("Successful", []):
                lease, _ = todo.pop(success["Id"])
                done.add(lease.message_id)
            for failure in response.get("Failed", []):
                key = failure.get("Id", "")
                if key not in todo:
                    continue
                problem = f"{failure.get('Code', '?')}: {failure.get('Message', '')}".strip()
                if failure.get("SenderFault"):
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
                "sqs: %s of message %s on queue %s failed after %d attempts (%s); the message "
                "will reappear after its visibility timeout",
                what, lease.message_id, self.name, _ENTRY_ATTEMPTS, problem,
            )  # fmt: skip
        return done


_MISSING_CODES = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.QueueDoesNotExist",
}
