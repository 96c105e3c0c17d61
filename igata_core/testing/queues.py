"""SQS queues for tests: create them (with a dead-letter queue), send requests, count and drain
what is left. Works on any SQS endpoint a boto3 client points at (moto, LocalStack's SQS).

It takes the client from the caller (``aws.client("sqs")`` of the kit's ``aws`` fixture) and
never imports boto3 itself, so importing the testing kit stays light.
"""

from __future__ import annotations

import json
import time
from typing import Any

__all__ = ["Queues"]


class Queues:
    """Creates queues (with dead-letter queues), sends requests, reads results.

    ``sqs``: a boto3 SQS client. ``dead_letter`` maps a queue URL made by :meth:`create`
    with ``max_receive`` to the URL of its dead-letter queue.
    """

    def __init__(self, sqs: Any):
        self.sqs = sqs
        self.dead_letter: dict[str, str] = {}

    def create(
        self,
        name: str = "requests",
        *,
        visibility: int = 2,
        max_receive: int | None = None,
        fifo: bool = False,
    ) -> str:
        """A queue (``.fifo`` added to the name when ``fifo``); with ``max_receive``, a
        dead-letter queue ``NAME-dlq`` taking what was received that many times."""
        attributes = {"VisibilityTimeout": str(visibility)}
        if fifo:
            name += ".fifo"
            attributes["FifoQueue"] = "true"
        dlq = ""
        if max_receive is not None:
            dlq_name = name.replace(".fifo", "") + "-dlq" + (".fifo" if fifo else "")
            dlq = self.sqs.create_queue(
                QueueName=dlq_name, Attributes={"FifoQueue": "true"} if fifo else {}
            )["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": max_receive}
            )
        url: str = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        if dlq:
            self.dead_letter[url] = dlq
        return url

    def send(self, url: str, body: Any, **kwargs: Any) -> str:
        """Send one message (``body`` as is if a string, else as JSON); its message id."""
        text = body if isinstance(body, str) else json.dumps(body)
        message_id: str = self.sqs.send_message(QueueUrl=url, MessageBody=text, **kwargs)[
            "MessageId"
        ]
        return message_id

    def drain(self, url: str) -> list[dict[str, Any]]:
        """Receive and delete every visible message; returns the messages (with their
        message attributes and system attributes, such as ``ApproximateReceiveCount``)."""
        messages: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return messages
            messages += batch
            self.sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
                ],
            )

    def results(self, url: str) -> list[dict[str, Any]]:
        """The JSON bodies of the messages :meth:`drain` takes."""
        return [json.loads(m["Body"]) for m in self.drain(url)]

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight) messages of a queue."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def wait_for(self, url: str, visible: int, timeout: float = 5.0) -> tuple[int, int]:
        """Poll :meth:`counts` until ``visible`` messages are visible or ``timeout`` passed;
        the last counts."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts(url)
            if counts[0] >= visible or time.monotonic() > deadline:
                return counts
            time.sleep(0.1)
