"""One scan of a dead-letter queue: receive, select, send, delete, and release the rest.

Each selected message is sent first (``SendMessageBatch``: same body, message attributes and
trace header; FIFO: same message group), and deleted from the dead-letter queue only when
the send succeeded, with the receipt handle of this scan. Every message the scan does not
move (not selected, refused by the target, dry run) stays hidden until the scan ends
(``--scan-visibility``, extended while the scan lasts), so the scan sees each message once;
then all of them are made visible again at once, also on Ctrl-C and on errors.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from igata_core import ConfigurationError
from igata_sqs import errors
from igata_sqs.batching import MAX_PAYLOAD_BYTES, batches
from igata_sqs.clients import describe, queue_name
from igata_sqs.leases import Lease
from igata_sqs.limits import fifo_id
from igata_sqs.queue import BATCH_SIZE, MAX_VISIBILITY, SqsQueue, refused
from igata_sqs.replay.exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Unavailable,
)
from igata_sqs.replay.filters import Selector
from igata_sqs.replay.letters import DeadLetter
from igata_sqs.replay.pacing import TokenBucket

log = logging.getLogger("igata.sqs")

#: Receives wait this long for messages; an empty receive ends the scan.
RECEIVE_WAIT_SECONDS = 1
#: Error codes that mean "this message cannot be sent as it is", not "SQS is unavailable"
#: (normalised, see :mod:`igata_sqs.errors`, which decides).
CONTENT_ERRORS = errors.CONTENT_CODES
_SEND_ATTEMPTS = 3
_IN_FLIGHT_LIMIT = errors._set("OverLimit")


@dataclass
class Settings:
    dry_run: bool = False
    rate: float | None = None
    max_messages: int = 0
    scan_visibility: int = 30
    id_field: str = "request_id"


@dataclass
class Summary:
    source: str
    target: str
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    moved: int = 0
    failed: int = 0
    #: Sent to the target, but the delete from the dead-letter queue failed (now in both).
    not_deleted: int = 0
    #: Messages SQS still showed as visible in the dead-letter queue when the scan ended.
    unscanned: int | None = None
    stopped: str | None = None
    signal: int | None = None
    exit_code: int = EXIT_OK

    @property
    def left(self) -> int:
        return self.scanned - self.moved + self.not_deleted

    def line(self) -> str:
        head = "replay (dry run)" if self.dry_run else "replay"
        matched = f"matched {self.matched}" + (" (would move)" if self.dry_run else "")
        both = f", in both queues {self.not_deleted}" if self.not_deleted else ""
        return (
            f"{head}: scanned {self.scanned}, {matched}, moved {self.moved}, failed "
            f"{self.failed}, left in the DLQ {self.left}{both} ({self.source} -> {self.target})"
        )


class Replayer:
    """One scan of a dead-letter queue, moving the selected messages to ``target``.

    ``say(text, err)`` prints a line for the operator; ``stop_event`` ends the scan
    between steps (a send and the delete of what it sent are never separated by it).
    """

    def __init__(
        self,
        client: Any,
        dlq_url: str,
        target_url: str,
        selector: Selector,
        settings: Settings,
        *,
        target_fifo: bool,
        say: Callable[[str, bool], None],
        stop_event: threading.Event | None = None,
    ):
        self.client = client
        self.dlq = SqsQueue(client, dlq_url, queue_name(dlq_url))
        self.target_url = target_url
        self.target_fifo = target_fifo
        self.selector = selector
        self.settings = settings
        self.say = say
        self.stop_event = stop_event or threading.Event()
        capacity = BATCH_SIZE
        if settings.rate is not None:
            # A batch is at most one second's worth of messages, so sends are spread out.
            capacity = max(1, min(BATCH_SIZE, math.floor(settings.rate)))
        self.bucket = TokenBucket(settings.rate, capacity) if settings.rate else None
        self.batch_size = capacity
        #: Messages hidden by this scan and not moved, oldest extension first.
        self.held: OrderedDict[str, Lease] = OrderedDict()
        self.seen: set[str] = set()
        self.summary = Summary(
            source=self.dlq.name, target=queue_name(target_url), dry_run=settings.dry_run
        )

    # -- the scan --------------------------------------------------------------------------

    def run(self) -> Summary:
        summary = self.summary
        try:
            self._scan()
        except Unavailable as exc:
            summary.stopped = str(exc)
            summary.exit_code = EXIT_UNAVAILABLE
        except ConfigurationError as exc:
            # No such queue, access denied, unknown credentials: retrying cannot help.
            summary.stopped = str(exc)
            summary.exit_code = EXIT_USAGE
        finally:
            self._finish()
        return summary

    def _scan(self) -> None:
        summary = self.summary
        limit = self.settings.max_messages
        while not self.stop_event.is_set():
            want = BATCH_SIZE if not limit else min(BATCH_SIZE, limit - summary.matched)
            if want <= 0:
                summary.stopped = f"--max {limit} reached"
                return
            messages = self._receive(want)
            if not messages:
                return
            letters = self._admit(messages)
            if not letters:
                summary.stopped = (
                    "the dead-letter queue delivered only messages this scan had already seen "
                    "(their scan visibility lapsed); raise --scan-visibility"
                )
                return
            summary.scanned += len(letters)
            reasons = self.selector.reasons(letters)
            chosen = [letter for letter in letters if reasons[letter.message_id] is not None]
            summary.matched += len(chosen)
            for letter in letters:
                self._hold(letter)
            if self.settings.dry_run:
                for letter in chosen:
                    why = "; ".join(reasons[letter.message_id] or [])
                    self.say(f"would move  {letter.describe()}  [{why}]", False)
            else:
                self._move(chosen)
            self._keep_alive()

    def _receive(self, want: int) -> list[dict[str, Any]] | None:
        try:
            response = self.client.receive_message(
                QueueUrl=self.dlq.url,
                MaxNumberOfMessages=want,
                WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                VisibilityTimeout=self.settings.scan_visibility,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
        except Exception as exc:
            if errors.classify(exc) == errors.CONFIGURATION:
                raise refused(self.dlq.url, "ReceiveMessage", exc) from None
            if errors.has_code(exc, _IN_FLIGHT_LIMIT):
                self.summary.stopped = (
                    f"SQS's limit of in-flight messages reached with {len(self.held)} message(s) "
                    "held by this scan; run the replay again to scan the rest"
                )
                return None
            raise Unavailable(
                f"sqs: cannot receive from the dead-letter queue {self.dlq.name}: {describe(exc)}"
            ) from exc
        return list(response.get("Messages", []))

    def _admit(self, messages: list[dict[str, Any]]) -> list[DeadLetter]:
        """New messages of this scan; a message seen before only refreshes its handle."""
        fresh = []
        for message in messages:
            message_id = message["MessageId"]
            if message_id in self.seen:
                lease = self.held.pop(message_id, None)
                if lease is not None:
                    lease.receipt_handle = message["ReceiptHandle"]
                    lease.visible_until = time.monotonic() + self.settings.scan_visibility
                    self.held[message_id] = lease
                continue
            self.seen.add(message_id)
            fresh.append(DeadLetter(message, self.settings.id_field))
        return fresh

    def _hold(self, letter: DeadLetter) -> None:
        received = time.monotonic()
        self.held[letter.message_id] = Lease(
            message_id=letter.message_id,
            receipt_handle=letter.receipt_handle,
            receive_count=0,
            visible_until=received + self.settings.scan_visibility,
            deadline=None,
            limit=received + MAX_VISIBILITY - 60,
        )

    def _keep_alive(self) -> None:
        """Extend the hidden messages whose scan visibility is about to run out."""
        visibility = self.settings.scan_visibility
        margin = max(2.0, visibility / 3)
        now = time.monotonic()
        due = []
        for lease in self.held.values():
            if lease.visible_until - now >= margin:
                break  # ordered by expiry: the rest are later
            due.append(lease)
        if not due:
            return
        changed = self.dlq.change_visibility(
            [(lease, visibility) for lease in due], what="scan visibility extension"
        )
        for lease in due:
            if lease.message_id in changed:
                lease.visible_until = now + visibility
                self.held.move_to_end(lease.message_id)

    def _pause(self, seconds: float) -> bool:
        """Wait (for the rate limit) while keeping the held messages hidden."""
        deadline = time.monotonic() + seconds
        while True:
            self._keep_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if self.stop_event.wait(min(left, 1.0)):
                return False

    # -- moving ----------------------------------------------------------------------------

    def _move(self, letters: list[DeadLetter]) -> None:
        """Send, then delete what was sent; FIFO groups move in order and stop at a failure."""
        blocked: set[str] = set()
        for round_letters in self._rounds(letters):
            todo = []
            for letter in round_letters:
                if letter.group_id is not None and letter.group_id in blocked:
                    self._failed(letter, "an earlier message of its group was not moved")
                else:
                    todo.append(letter)
            for chunk in batches(
                todo, max_count=self.batch_size, max_bytes=MAX_PAYLOAD_BYTES, size=_size
            ):
                if self.stop_event.is_set():
                    return
                if self.bucket is not None and not self.bucket.take(len(chunk), self._pause):
                    return
                problems = self._send(chunk)
                sent = [letter for letter in chunk if letter.message_id not in problems]
                self._delete(sent)
                for letter in chunk:
                    if letter.message_id in problems:
                        self._failed(letter, problems[letter.message_id])
                        if letter.group_id is not None and self.target_fifo:
                            blocked.add(letter.group_id)

    def _rounds(self, letters: list[DeadLetter]) -> Iterator[list[DeadLetter]]:
        """Standard target: one round. FIFO: the n-th message of every group in round n,
        so a message is sent only after the earlier ones of its group were."""
        if not self.target_fifo:
            yield letters
            return
        by_group: dict[str | None, list[DeadLetter]] = {}
        for letter in letters:
            by_group.setdefault(letter.group_id, []).append(letter)
        depth = max((len(group) for group in by_group.values()), default=0)
        for index in range(depth):
            yield [group[index] for group in by_group.values() if index < len(group)]

    def _entry(self, key: str, letter: DeadLetter) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": key, "MessageBody": letter.body}
        attributes = {
            name: {
                k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")
            }
            for name, value in letter.message_attributes.items()
        }
        if attributes:
            entry["MessageAttributes"] = attributes
        trace = letter.attributes.get("AWSTraceHeader")
        if trace:
            entry["MessageSystemAttributes"] = {
                "AWSTraceHeader": {"DataType": "String", "StringValue": trace}
            }
        if self.target_fifo:
            entry["MessageGroupId"] = letter.group_id
            # Not the original deduplication id: SQS would silently drop the copy if the
            # original was sent less than 5 minutes ago, and the DLQ copy would then be
            # deleted. A per-DLQ-message id still makes a repeated replay of it a duplicate.
            # Hashed if SQS would refuse it (over 128 characters, or other characters).
            entry["MessageDeduplicationId"] = fifo_id(f"igata-replay-{letter.message_id}")
        return entry

    def _send(self, chunk: list[DeadLetter]) -> dict[str, str]:
        """Send a batch; returns the problems of the messages not sent, by message id.

        Entries SQS failed on its side are sent again; entries refused for their content
        are not.
        """
        todo = {str(index): letter for index, letter in enumerate(chunk)}
        problems: dict[str, str] = {}
        last: dict[str, str] = {}
        for attempt in range(_SEND_ATTEMPTS):
            if attempt:
                time.sleep(0.2 * 2**attempt)
            try:
                response = self.client.send_message_batch(
                    QueueUrl=self.target_url,
                    Entries=[self._entry(key, letter) for key, letter in todo.items()],
                )
            except Exception as exc:
                kind = self._kind(exc)
                if kind != errors.CONTENT and not errors.has_code(exc, errors.SPLIT_CODES):
                    raise Unavailable(
                        f"sqs: cannot send to queue {self.summary.target}: {describe(exc)}"
                    ) from exc
                # SQS refused the whole batch for one entry: find it by sending one by one.
                problems.update(self._send_singly(list(todo.values())))
                return problems
            for success in response.get("Successful", []):
                todo.pop(success["Id"], None)
            for failure in response.get("Failed", []):
                key = failure.get("Id", "")
                if key not in todo:
                    continue
                problem = errors.entry_text(failure)
                kind = errors.classify_entry(failure)
                if kind == errors.CONFIGURATION:
                    raise refused(self.target_url, "SendMessageBatch", failure)
                if kind == errors.CONTENT:
                    problems[todo.pop(key).message_id] = problem
                else:
                    last[todo[key].message_id] = problem
            if not todo:
                break
        for letter in todo.values():
            problems[letter.message_id] = (
                f"{last.get(letter.message_id, 'failed')} (after {_SEND_ATTEMPTS} attempts)"
            )
        return problems

    def _send_singly(self, letters: list[DeadLetter]) -> dict[str, str]:
        problems: dict[str, str] = {}
        for letter in letters:
            entry = self._entry("0", letter)
            del entry["Id"]
            try:
                self.client.send_message(QueueUrl=self.target_url, **entry)
            except Exception as exc:
                if self._kind(exc) != errors.CONTENT:
                    raise Unavailable(
                        f"sqs: cannot send to queue {self.summary.target}: {describe(exc)}"
                    ) from exc
                problems[letter.message_id] = describe(exc)
        return problems

    def _kind(self, exc: BaseException) -> str:
        """The kind of a send's error; a configuration error of the target raises."""
        kind = errors.classify(exc)
        if kind == errors.CONFIGURATION:
            raise refused(self.target_url, "SendMessage", exc) from None
        return kind

    def _delete(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        leases = [self.held.pop(letter.message_id) for letter in letters]
        deleted = self.dlq.delete(leases)
        for letter in letters:
            self.summary.moved += 1
            if letter.message_id in deleted:
                self.say(f"moved  {letter.describe()}", False)
            else:
                self.summary.not_deleted += 1
                self.say(
                    f"replay: message {letter.message_id} was sent to {self.summary.target} but "
                    f"could not be deleted from {self.dlq.name}: it is now in both queues and "
                    "a later replay would send it again; delete it from the dead-letter queue "
                    "by hand (its results are keyed by request identity, so processing it "
                    "twice is harmless)",
                    True,
                )

    def _failed(self, letter: DeadLetter, problem: str) -> None:
        self.summary.failed += 1
        self.say(
            f"replay: message {letter.message_id} not moved to {self.summary.target} "
            f"({problem}); it stays in {self.dlq.name}",
            True,
        )

    # -- the end ---------------------------------------------------------------------------

    def _finish(self) -> None:
        """Note what the scan did not see, then make every held message visible again."""
        summary = self.summary
        if summary.exit_code != EXIT_UNAVAILABLE:
            try:
                summary.unscanned = self.dlq.counts()[0]
            except Exception as exc:
                log.warning(
                    "sqs: cannot read the message counts of %s: %s", self.dlq.name, describe(exc)
                )
        held = list(self.held.values())
        if held:
            try:
                released = self.dlq.change_visibility(
                    [(lease, 0) for lease in held], what="release after the scan"
                )
            except ConfigurationError as exc:
                log.warning("sqs: %s", exc)
                released = set()
            if len(released) < len(held):
                self.say(
                    f"replay: {len(held) - len(released)} message(s) could not be made visible "
                    f"again at once; they reappear in {self.dlq.name} within "
                    f"{self.settings.scan_visibility} s",
                    True,
                )
            self.held.clear()
        if summary.exit_code == EXIT_OK and (summary.failed or summary.not_deleted):
            summary.exit_code = EXIT_FAILED


def _size(letter: DeadLetter) -> int:
    """The bytes SQS counts for a message: body plus attribute names, types and values."""
    total = len(letter.body.encode())
    for name, value in letter.message_attributes.items():
        total += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        if "StringValue" in value:
            total += len(str(value["StringValue"]).encode())
        if "BinaryValue" in value:
            total += len(value["BinaryValue"])
    return total
