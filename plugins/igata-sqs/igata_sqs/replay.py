"""``igata replay``: move dead-lettered messages back to a queue, selectively.

SQS's own redrive moves a whole dead-letter queue; after a fix, an operator usually wants
only the messages that failed for the fixed reason, or only the recent ones. The command
scans the dead-letter queue once, selects messages by filters, and moves each selected one
to the target queue without ever losing it:

* the message is sent first (``SendMessageBatch``: same body, message attributes and
  trace header; FIFO: same message group), and deleted from the dead-letter queue only
  when the send succeeded, with the receipt handle of this scan;
* every message the scan does not move (not selected, refused by the target, dry run)
  stays hidden until the scan ends (``--scan-visibility``, extended while the scan lasts),
  so the scan sees each message once; then all of them are made visible again at once,
  also on Ctrl-C and on errors.

Error text is not part of a dead-lettered message: the worker records it in the
``--errors`` file of ``igata run`` and, with the ``dynamodb`` sink, in the REQUESTS table's
``errors`` attribute. ``--filter-error`` reads those (see :class:`ErrorsFile` and
:class:`RequestsTable`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from igata_core import digest_identity
from igata_sqs.batching import MAX_PAYLOAD_BYTES, batches
from igata_sqs.clients import check_queue_url, describe, error_code, queue_name
from igata_sqs.leases import Lease
from igata_sqs.messages import BodyError, parse_body
from igata_sqs.queue import BATCH_SIZE, MAX_VISIBILITY, SqsQueue

log = logging.getLogger("igata.sqs")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

#: Receives wait this long for messages; an empty receive ends the scan.
RECEIVE_WAIT_SECONDS = 1
#: Request fields shown as a message's request ids (after ``--id-field``).
DISPLAY_ID_FIELDS = ("image_id", "file_id")
#: Attribute of the REQUESTS table holding a request's last errors (the dynamodb sink's).
ERRORS_ATTRIBUTE = "errors"
#: Error codes that mean "this message cannot be sent as it is", not "SQS is unavailable".
CONTENT_ERRORS = frozenset(
    {
        "InvalidParameterValue",
        "InvalidMessageContents",
        "MissingParameter",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "BatchRequestTooLong",
        "MessageTooLong",
    }
)
_SEND_ATTEMPTS = 3
_IN_FLIGHT_LIMIT = {"OverLimit", "AWS.SimpleQueueService.OverLimit"}
_MISSING_QUEUE = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.QueueDoesNotExist",
}
_SHOWN_IDS = 3
_REASON_CHARS = 160


class ReplayError(click.ClickException):
    """The replay cannot start: a usage error (exit 2) by default."""

    exit_code = EXIT_USAGE


class ReplayUnavailable(ReplayError):
    """The replay cannot start because SQS or DynamoDB does not answer (exit 3)."""

    exit_code = EXIT_UNAVAILABLE


class Unavailable(Exception):
    """An SQS or DynamoDB call failed after botocore's retries."""


# -- parsing the options ---------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (no zone: UTC) or an age (``30m``, ``2h``, ``1d12h``)."""
    value = text.strip()
    now = now or datetime.now(UTC)
    if value and _DURATION_PART.sub("", value.lower()) == "":
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit]
            for number, unit in _DURATION_PART.findall(value.lower())
        )
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2024-05-01T09:30:00Z) nor an age "
            "(90s, 30m, 2h, 1d, 1h30m)",
            param_hint="--since",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_rate(text: str) -> float:
    """``--rate``: messages per second as ``N``, ``N/s``, ``N/m`` or ``N/h``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*", text)
    rate = float(match.group(1)) / _UNIT_SECONDS[match.group(2) or "s"] if match else 0.0
    if not match or rate <= 0:
        raise click.BadParameter(
            f"{text!r} is not a positive rate; write it as 5/s, 120/m or 5 (per second)",
            param_hint="--rate",
        )
    return rate


def parse_attribute_filter(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    if not name.strip():
        raise click.BadParameter(
            f"{text!r} names no attribute; write NAME=TEXT (or NAME: the attribute is present)",
            param_hint="--filter-attribute",
        )
    return name.strip(), value if sep else None


# -- pacing ----------------------------------------------------------------------------------------


class TokenBucket:
    """At most ``rate`` tokens a second, in bursts of at most ``capacity``.

    The bucket starts with one token, so moving n messages takes at least
    ``(n - 1) / rate`` seconds, from the first message on.
    """

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.capacity = max(1, capacity)
        self._clock = clock
        self._tokens = 1.0
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def take(self, count: int, pause: Callable[[float], bool]) -> bool:
        """Take ``count`` tokens, waiting through ``pause(seconds)`` (False: give up)."""
        count = min(count, self.capacity)
        while True:
            self._refill()
            if self._tokens >= count:
                self._tokens -= count
                return True
            if not pause((count - self._tokens) / self.rate):
                return False


# -- what a dead-lettered message says -------------------------------------------------------------


@dataclass
class DeadLetter:
    """One message received from the dead-letter queue in this scan."""

    message: dict[str, Any]
    id_field: str
    requests: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        try:
            parsed = parse_body(self.body)
        except BodyError:
            parsed = []
        self.requests = [request for request in parsed if isinstance(request, dict)]

    @property
    def message_id(self) -> str:
        return str(self.message["MessageId"])

    @property
    def receipt_handle(self) -> str:
        return str(self.message["ReceiptHandle"])

    @property
    def body(self) -> str:
        return str(self.message.get("Body", ""))

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.message.get("Attributes", {}))

    @property
    def message_attributes(self) -> dict[str, Any]:
        return dict(self.message.get("MessageAttributes", {}))

    @property
    def sent_at(self) -> datetime | None:
        stamp = self.attributes.get("SentTimestamp")
        return datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None

    @property
    def group_id(self) -> str | None:
        return self.attributes.get("MessageGroupId")

    def request_ids(self) -> list[str]:
        """Each request's id as the worker shows it: ``--id-field``, else image_id/file_id."""
        ids = []
        for request in self.requests:
            for name in (self.id_field, *DISPLAY_ID_FIELDS):
                value = _id_value(request.get(name))
                if value is not None:
                    ids.append(value)
                    break
            else:
                ids.append(digest_identity(request))
        return ids

    def identities(self) -> set[str]:
        """Every identity under which the worker may have recorded an error of this message.

        The worker's identity of a request is ``--id-field``, then ``image_id`` (CSV:
        ``file_id`` first), else a digest of the request; an error of the body as a whole
        is recorded under ``sqs:<message id>``. All candidates are taken: ids of different
        fields do not collide in practice, and this needs no ``--format``.
        """
        keys = {f"sqs:{self.message_id}"}
        for request in self.requests:
            keys.add(digest_identity(request))
            for name in (self.id_field, *DISPLAY_ID_FIELDS):
                value = _id_value(request.get(name))
                if value is not None:
                    keys.add(value)
        return keys

    def describe(self) -> str:
        sent = self.sent_at.strftime("%Y-%m-%dT%H:%M:%SZ") if self.sent_at else "?"
        ids = self.request_ids()
        shown = ", ".join(ids[:_SHOWN_IDS]) if ids else "none (body is not a request list)"
        more = f" (+{len(ids) - _SHOWN_IDS} more)" if len(ids) > _SHOWN_IDS else ""
        return f"{self.message_id}  sent {sent}  requests {shown}{more}"


def _id_value(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def outcome_text(entry: Any) -> str:
    """One recorded error as ``stage: ErrorType: message`` (what ``--filter-error`` searches)."""
    if isinstance(entry, dict):
        parts = [entry.get("stage"), entry.get("error_type"), entry.get("message")]
        return ": ".join(str(part) for part in parts if part not in (None, ""))
    return str(entry)


# -- where the errors are --------------------------------------------------------------------------

#: (where the error was found, its text)
ErrorText = tuple[str, str]


class ErrorsFile:
    """Errors recorded by ``igata run --errors PATH`` (JSON lines of error outcomes).

    Outcomes are indexed by identity (and ``sqs:<message id>`` for whole-body errors);
    for each, only the last recorded attempt counts: a new attempt number replaces what
    earlier lines recorded, so a message that failed first for one reason and finally for
    another matches the final reason only.
    """

    def __init__(self, paths: Sequence[Path]):
        self._latest: dict[str, tuple[int, list[str]]] = {}
        for path in paths:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ReplayError(
                f"replay: cannot read the errors file {path}: {exc.strerror}"
            ) from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                outcome = json.loads(line)
                keys = {str(outcome["identity"])}
                attempt = int(outcome.get("attempt", 1))
            except (ValueError, KeyError, TypeError):
                raise ReplayError(
                    f"replay: line {number} of the errors file {path} is not an error outcome "
                    "(a JSON object with 'identity', 'stage', 'error_type', 'message'); pass "
                    "the file written by igata run --errors PATH"
                ) from None
            if str(outcome.get("input", "")).startswith("sqs:"):
                keys.add(str(outcome["input"]))
            text = outcome_text(outcome)
            for key in keys:
                recorded = self._latest.get(key)
                if recorded is None or recorded[0] != attempt:
                    self._latest[key] = (attempt, [text])
                else:
                    recorded[1].append(text)

    def errors_of(self, letters: Sequence[DeadLetter]) -> dict[str, list[ErrorText]]:
        found: dict[str, list[ErrorText]] = {}
        for letter in letters:
            texts: list[ErrorText] = []
            for key in sorted(letter.identities()):
                for text in self._latest.get(key, (0, []))[1]:
                    texts.append((f"{key} (errors file)", text))
            found[letter.message_id] = texts
        return found


class RequestsTable:
    """The REQUESTS table of the ``dynamodb`` sink: each request's last ``errors``.

    The sink keys the table by the request field ``hashkey`` (``request_id``) and sets
    ``errors`` (a JSON list of error outcomes) on every failed attempt, ``[]`` on success:
    a request completed meanwhile (by a duplicate message) matches no error.
    """

    def __init__(self, client: Any, table: str, hashkey: str):
        self.client = client
        self.table = table
        self.hashkey = hashkey

    def check(self) -> None:
        try:
            self.client.describe_table(TableName=self.table)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise ReplayError(
                    f"replay: REQUESTS table {self.table!r} does not exist (check "
                    "--requests-table and the DynamoDB endpoint/region)"
                ) from None
            raise Unavailable(
                f"dynamodb: cannot describe table {self.table!r}: {describe(exc)}"
            ) from exc

    def errors_of(self, letters: Sequence[DeadLetter]) -> dict[str, list[ErrorText]]:
        ids_of = {
            letter.message_id: [
                rid for r in letter.requests if (rid := _id_value(r.get(self.hashkey)))
            ]
            for letter in letters
        }
        wanted = sorted({rid for ids in ids_of.values() for rid in ids})
        items: dict[str, list[str]] = {}
        for start in range(0, len(wanted), 100):  # BatchGetItem's limit
            items.update(self._get(wanted[start : start + 100]))
        return {
            message_id: [(f"request {rid}", text) for rid in ids for text in items.get(rid, [])]
            for message_id, ids in ids_of.items()
        }

    def _get(self, ids: list[str]) -> dict[str, list[str]]:
        request: dict[str, Any] = {
            self.table: {
                "Keys": [{self.hashkey: {"S": rid}} for rid in ids],
                "ProjectionExpression": "#k, #e",
                "ExpressionAttributeNames": {"#k": self.hashkey, "#e": ERRORS_ATTRIBUTE},
            }
        }
        found: dict[str, list[str]] = {}
        for attempt in range(6):
            if attempt:
                time.sleep(min(0.1 * 2**attempt, 2.0))
            try:
                response = self.client.batch_get_item(RequestItems=request)
            except Exception as exc:
                raise Unavailable(
                    f"dynamodb: cannot read REQUESTS table {self.table!r}: {describe(exc)}"
                ) from exc
            for item in response.get("Responses", {}).get(self.table, []):
                rid = item.get(self.hashkey, {}).get("S")
                if rid is not None:
                    found[rid] = _errors_attribute(item.get(ERRORS_ATTRIBUTE, {}))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
        raise Unavailable(
            f"dynamodb: REQUESTS table {self.table!r} left keys unprocessed (throttled) after "
            "6 attempts; retry later or lower --rate"
        )


def _errors_attribute(value: dict[str, Any]) -> list[str]:
    text = value.get("S")
    if not text:
        return []
    try:
        entries = json.loads(text)
    except ValueError:
        return [text]
    if not isinstance(entries, list):
        entries = [entries]
    return [outcome_text(entry) for entry in entries]


ErrorSource = ErrorsFile | RequestsTable


# -- selecting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What selects a message. Values of one filter are alternatives (any may match);
    different filters must all match. Text comparisons ignore case."""

    body: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()
    errors: tuple[str, ...] = ()
    since: datetime | None = None


class Selector:
    """Applies :class:`Filters`; says why a message matches (the dry run prints it)."""

    def __init__(self, filters: Filters, error_sources: Sequence[ErrorSource] = ()):
        if filters.errors and not error_sources:
            raise ReplayError(
                "replay: --filter-error needs the recorded errors: pass --errors-file PATH (the "
                "file of igata run --errors PATH) and/or --requests-table NAME (the dynamodb "
                "sink's REQUESTS table); a dead-lettered message does not carry its error"
            )
        self.filters = filters
        self.error_sources = list(error_sources)

    def reasons(self, letters: Sequence[DeadLetter]) -> dict[str, list[str] | None]:
        """For each message id: why it matches, or None when it does not."""
        filters = self.filters
        errors: dict[str, list[ErrorText]] = {}
        if filters.errors:
            # Only messages that pass the cheap filters cost a look-up.
            candidates = [letter for letter in letters if self._cheap(letter) is not None]
            for source in self.error_sources:
                for message_id, texts in source.errors_of(candidates).items():
                    errors.setdefault(message_id, []).extend(texts)
        return {letter.message_id: self._why(letter, errors) for letter in letters}

    def _cheap(self, letter: DeadLetter) -> list[str] | None:
        filters = self.filters
        why: list[str] = []
        if filters.since is not None and (letter.sent_at is None or letter.sent_at < filters.since):
            return None
        if filters.body:
            body = letter.body.casefold()
            hit = next((t for t in filters.body if t.casefold() in body), None)
            if hit is None:
                return None
            why.append(f"body contains {hit!r}")
        if filters.attributes:
            hit_attr = self._attribute_hit(letter)
            if hit_attr is None:
                return None
            why.append(hit_attr)
        return why

    def _attribute_hit(self, letter: DeadLetter) -> str | None:
        attributes = letter.message_attributes
        for name, wanted in self.filters.attributes:
            if name not in attributes:
                continue
            if wanted is None:
                return f"attribute {name} present"
            value = attributes[name].get("StringValue")
            if value is not None and wanted.casefold() in value.casefold():
                return f"attribute {name}={_clip(value)!r}"
        return None

    def _why(self, letter: DeadLetter, errors: dict[str, list[ErrorText]]) -> list[str] | None:
        why = self._cheap(letter)
        if why is None:
            return None
        if self.filters.errors:
            for where, text in errors.get(letter.message_id, []):
                if any(wanted.casefold() in text.casefold() for wanted in self.filters.errors):
                    return [*why, f"error of {where}: {_clip(text)}"]
            return None
        if self.filters.since is not None:
            why.append(f"sent at or after {self.filters.since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}")
        return why or ["no filter"]


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


# -- moving ----------------------------------------------------------------------------------------


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
            if error_code(exc) in _IN_FLIGHT_LIMIT:
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
            entry["MessageDeduplicationId"] = f"igata-replay-{letter.message_id}"
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
                if error_code(exc) not in CONTENT_ERRORS:
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
                problem = f"{failure.get('Code', '?')}: {failure.get('Message', '')}".strip()
                if failure.get("SenderFault"):
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
                if error_code(exc) not in CONTENT_ERRORS:
                    raise Unavailable(
                        f"sqs: cannot send to queue {self.summary.target}: {describe(exc)}"
                    ) from exc
                problems[letter.message_id] = describe(exc)
        return problems

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
            released = self.dlq.change_visibility(
                [(lease, 0) for lease in held], what="release after the scan"
            )
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


# -- resolving the queues --------------------------------------------------------------------------


def queue_attributes(client: Any, url: str, what: str) -> dict[str, str]:
    try:
        return dict(
            client.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue", "QueueArn"])[
                "Attributes"
            ]
        )
    except Exception as exc:
        if error_code(exc) in _MISSING_QUEUE:
            raise ReplayError(
                f"replay: {what} {url} does not exist or is not visible to these credentials; "
                "check the URL (aws sqs get-queue-url prints it), the endpoint and the region"
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


def _is_fifo(attributes: dict[str, str], url: str) -> bool:
    return str(attributes.get("FifoQueue", "false")).lower() == "true" or url.endswith(".fifo")


# -- stopping on signals ---------------------------------------------------------------------------


class StopOnSignal:
    """SIGINT/SIGTERM end the scan between steps; a second one interrupts at once."""

    def __init__(self, event: threading.Event, say: Callable[[str, bool], None]):
        self.event = event
        self.say = say
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.signum = signum
        self.event.set()
        self.say(
            "replay: stopping after the current step; held messages are made visible again "
            "(signal again to interrupt at once)",
            True,
        )

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


# -- the command -----------------------------------------------------------------------------------


def _say(text: str, err: bool) -> None:
    click.echo(text, err=err)


@click.command(name="replay")
@click.option(
    "--from-dlq",
    "dlq_url",
    required=True,
    metavar="QUEUE_URL",
    help="Dead-letter queue to take messages from.",
)
@click.option(
    "--to",
    "target_url",
    metavar="QUEUE_URL",
    help="Queue to move them to. Default: the DLQ's source queue, when exactly one "
    "queue names it in its redrive policy (ListDeadLetterSourceQueues).",
)
@click.option(
    "--filter-error",
    "filter_error",
    multiple=True,
    metavar="TEXT",
    help="Only messages with a recorded error of one of their requests containing "
    "TEXT (case-insensitive; matched against 'stage: ErrorType: message' of the last "
    "failed attempt). Needs --errors-file and/or --requests-table. Repeatable: any.",
)
@click.option(
    "--errors-file",
    "errors_files",
    multiple=True,
    metavar="PATH",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Errors written by 'igata run --errors PATH' (JSON lines), for "
    "--filter-error. Repeatable (one per worker).",
)
@click.option(
    "--requests-table",
    envvar="OUTPUT_CTXMGR_REQUESTS_TABLENAME",
    metavar="NAME",
    help="REQUESTS table of the dynamodb sink, whose 'errors' attribute "
    "--filter-error searches [env OUTPUT_CTXMGR_REQUESTS_TABLENAME].",
)
@click.option(
    "--requests-hashkey",
    envvar="REQUESTS_TABLE_HASHKEY_KEYNAME",
    default="request_id",
    show_default=True,
    metavar="FIELD",
    help="Request field that keys the REQUESTS table [env REQUESTS_TABLE_HASHKEY_KEYNAME].",
)
@click.option(
    "--filter-body",
    "filter_body",
    multiple=True,
    metavar="TEXT",
    help="Only messages whose body contains TEXT (case-insensitive). Repeatable: any.",
)
@click.option(
    "--filter-attribute",
    "filter_attribute",
    multiple=True,
    metavar="NAME[=TEXT]",
    help="Only messages whose message attribute NAME contains TEXT (case-insensitive; "
    "NAME alone: has the attribute). Repeatable: any.",
)
@click.option(
    "--since",
    metavar="TIME",
    help="Only messages sent at or after TIME: ISO 8601 (2024-05-01T09:30:00Z; no "
    "zone = UTC) or an age (30m, 2h, 1d). Compared with the message's SentTimestamp.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the messages that would move (id, sent time, request ids, why) and move nothing.",
)
@click.option(
    "--rate",
    metavar="N/s",
    help="Move at most N messages a second (5/s, 120/m, 5). Default: as fast as SQS takes them.",
)
@click.option(
    "--max",
    "max_messages",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N matching messages.",
)
@click.option(
    "--scan-visibility",
    type=click.IntRange(min=5, max=MAX_VISIBILITY),
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="How long each scanned message stays hidden (renewed while the scan lasts) so "
    "the scan sees it once; after a crash, messages reappear within this time.",
)
@click.option(
    "--id-field",
    envvar="REQUEST_UNIQUE_ID_FIELDNAME",
    default="request_id",
    show_default=True,
    metavar="FIELD",
    help="Request field shown as its id and used to find its errors "
    "[env REQUEST_UNIQUE_ID_FIELDNAME].",
)
@click.option(
    "--endpoint-url",
    metavar="URL",
    help="SQS endpoint (default: AWS_ENDPOINT_URL_SQS, SQS_ENDPOINT, AWS_ENDPOINT_URL, else AWS).",
)
@click.pass_context
def replay(
    ctx: click.Context,
    dlq_url: str,
    target_url: str | None,
    filter_error: tuple[str, ...],
    errors_files: tuple[Path, ...],
    requests_table: str | None,
    requests_hashkey: str,
    filter_body: tuple[str, ...],
    filter_attribute: tuple[str, ...],
    since: str | None,
    dry_run: bool,
    rate: str | None,
    max_messages: int | None,
    scan_visibility: int,
    id_field: str,
    endpoint_url: str | None,
) -> None:
    """Move dead-lettered messages back to a queue, selectively.

    Scans the dead-letter queue once. Each selected message is sent to the target first
    (same body and message attributes; FIFO: same message group) and deleted from the
    dead-letter queue only if the send succeeded. Messages not moved are made visible
    again when the scan ends. Filters of different kinds must all match.

    Exit status: 0 every selected message moved (or dry run), 1 some could not be moved
    (they stay in the dead-letter queue), 2 usage error, 3 SQS/DynamoDB unavailable,
    128+N stopped by signal N.
    """
    for url, flag in ((dlq_url, "--from-dlq"), (target_url, "--to")):
        if url is not None:
            try:
                check_queue_url(url, flag)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=flag) from None
    filters = Filters(
        body=tuple(filter_body),
        attributes=tuple(parse_attribute_filter(text) for text in filter_attribute),
        errors=tuple(filter_error),
        since=parse_since(since) if since else None,
    )
    settings = Settings(
        dry_run=dry_run,
        rate=parse_rate(rate) if rate else None,
        max_messages=max_messages or 0,
        scan_visibility=scan_visibility,
        id_field=id_field,
    )
    from igata_sqs.clients import make_client

    client = make_client("sqs", endpoint_url=endpoint_url, read_timeout=RECEIVE_WAIT_SECONDS + 15)
    if errors_files and not filter_error:
        raise click.UsageError(
            "--errors-file is only read for --filter-error; add --filter-error TEXT, or use "
            "--filter-body/--filter-attribute to select by the message itself"
        )
    sources: list[ErrorSource] = []
    if filter_error:
        if errors_files:
            sources.append(ErrorsFile(errors_files))
        if requests_table:
            sources.append(_requests_table(requests_table, requests_hashkey))
    selector = Selector(filters, sources)

    dlq_fifo = _is_fifo(queue_attributes(client, dlq_url, "dead-letter queue"), dlq_url)
    if target_url is None:
        target_url = default_target(client, dlq_url)
        click.echo(f"replay: target {target_url} (the only queue dead-lettering into the DLQ)")
    if target_url.rstrip("/") == dlq_url.rstrip("/"):
        raise click.BadParameter("the target is the dead-letter queue itself", param_hint="--to")
    target_fifo = _is_fifo(queue_attributes(client, target_url, "target queue"), target_url)
    if target_fifo and not dlq_fifo:
        raise ReplayError(
            f"replay: {queue_name(target_url)} is a FIFO queue but {queue_name(dlq_url)} is not, "
            "so its messages have no message group; replay into a standard queue"
        )

    stop = threading.Event()
    replayer = Replayer(
        client, dlq_url, target_url, selector, settings,
        target_fifo=target_fifo, say=_say, stop_event=stop,
    )  # fmt: skip
    with StopOnSignal(stop, _say) as signals:
        try:
            summary = replayer.run()
        except KeyboardInterrupt:
            summary = replayer.summary
            summary.signal = signal.SIGINT
    summary.signal = summary.signal or signals.signum
    click.echo(summary.line())
    if summary.stopped:
        click.echo(f"replay: stopped early: {summary.stopped}", err=True)
    if summary.unscanned and summary.exit_code != EXIT_UNAVAILABLE:
        click.echo(
            f"replay: about {summary.unscanned} message(s) in {summary.source} were not scanned "
            "(FIFO groups behind a message that was not moved, messages dead-lettered during "
            "the scan, or an early stop); run the replay again to reach them",
            err=True,
        )
    code = 128 + int(summary.signal) if summary.signal else summary.exit_code
    ctx.exit(code)


def _requests_table(table: str, hashkey: str) -> RequestsTable:
    import boto3
    from botocore.config import Config

    from igata_core.awsconfig import client_kwargs, config_kwargs

    client = boto3.session.Session().client(
        "dynamodb", **client_kwargs("dynamodb"), config=Config(**config_kwargs("dynamodb"))
    )
    requests = RequestsTable(client, table, hashkey)
    try:
        requests.check()
    except Unavailable as exc:
        raise ReplayUnavailable(f"replay: {exc}") from exc
    return requests
