"""``igata submit``: SOURCE -> ``queued`` REQUESTS items -> request messages, resumable.

Per batch of up to 10 messages (one ``SendMessageBatch``, under 256 KiB): first the
``queued`` REQUESTS items of its requests (``BatchWriteItem``, 25 at a time), then the
send, then the cursor. A request is thus never in the queue without its REQUESTS item,
and a crash at any point leaves at most one batch to be sent again on resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import click

from igata_jobs.aws import (
    JobError,
    JobUnavailable,
    dynamodb_failure,
    s3_failure,
    sqs_failure,
)
from igata_jobs.cursor import Cursor, CursorState, default_directory, job_key
from igata_jobs.requests import BATCH_ENTRIES, MAX_MESSAGE_BYTES, Message, Packer, build_request
from igata_jobs.targets import Filters, SourceReader, Target

log = logging.getLogger("igata.jobs")

QUEUED = "queued"
SUBMITTED_AT_ATTRIBUTE = "submitted_at_timestamp"
_ENTRY_ATTEMPTS = 5
#: SendMessageBatch calls (with their BatchWriteItem calls) in flight at once.
SEND_THREADS = 4
MAX_INFLIGHT = 8
#: Refused requests kept in the report to be listed one by one.
MAX_LISTED = 100


@dataclass
class SubmitSettings:
    sources: list[str]
    queue_url: str | None
    collection_id: str | None = None
    requests_table: str | None = None
    request_key: str = "request_id"
    state_key: str = "state"
    per_message: int = 10
    max_message_bytes: int = MAX_MESSAGE_BYTES
    extensions: list[str] | None = None
    pattern: str = ""
    rate: float | None = None
    dry_run: bool = False
    fifo_groups: int = 16
    cursor: str | None = None
    restart: bool = False
    progress: bool = False


@dataclass
class SubmitReport:
    collection_id: str
    requests: int = 0
    messages: int = 0
    invalid: int = 0
    #: Requests SQS refused for their content (their messages were not sent).
    refused: int = 0
    #: Requests sent by an earlier run of the same job (from the cursor).
    earlier_requests: int = 0
    #: Requests refused in an earlier run of the same job (from the cursor).
    earlier_refused: int = 0
    seconds: float = 0.0
    resumed: bool = False
    already_done: bool = False
    sample: str | None = None
    problems: list[str] = field(default_factory=list)
    #: The refused requests (up to :data:`MAX_LISTED`): ``(request, why)``.
    refusals: list[tuple[dict[str, Any], str]] = field(default_factory=list)


class ProgressLine:
    """``submitted N requests (M messages), R/s`` on standard error, redrawn in place on a
    terminal (at most 5 times a second), a line every 10 s otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, requests: int, messages: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        interval = 0.2 if self.tty else 10.0
        if not final and now - self._last < interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        text = (
            f"submit: {requests} requests in {messages} messages, "
            f"{requests / elapsed:.0f} requests/s"
        )
        if self.tty:
            click.echo("\r" + text + ("\n" if final else ""), err=True, nl=False)
        else:
            click.echo(text, err=True)


class Sender:
    """Writes ``queued`` items and sends batches of messages; all or raise."""

    def __init__(
        self,
        settings: SubmitSettings,
        collection_id: str,
        sqs: Any,
        fifo: bool,
        ddb: Any = None,
        layout: Any = None,
        pace: Callable[[int], None] | None = None,
    ):
        self.settings = settings
        self.collection_id = collection_id
        self.sqs = sqs
        self.fifo = fifo
        self.ddb = ddb
        self.layout = layout
        self.pace = pace

    def send(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """Send one batch; returns the messages SQS refused for their content, with SQS's
        reason (with a REQUESTS table, their requests' items are then in state error
        with that reason). Everything else was accepted, or this raises."""
        requests = [r for m in messages for r in m.requests]
        if self.ddb is not None:
            self._write_items(requests, QUEUED)
        refused = self._send_batch(messages)
        if refused and self.ddb is not None:
            failed = [r for m, _ in refused for r in m.requests]
            why = {r["request_id"]: reason for m, reason in refused for r in m.requests}
            self._write_items(failed, "error", why)
        return refused

    # -- DynamoDB --------------------------------------------------------------------------

    def _write_items(
        self, requests: list[dict[str, Any]], state: str, why: dict[str, str] | None = None
    ) -> None:
        from boto3.dynamodb.types import TypeSerializer

        from igata_dynamodb.batch import MAX_BATCH, batch_write, chunks

        serializer = TypeSerializer()
        now = int(time.time())
        layout = self.layout
        entries = []
        for request in requests:
            item: dict[str, Any] = {
                layout.request_key: request["request_id"],
                "collection_id": self.collection_id,
                layout.state_key: state,
                "s3_uri": request["s3_uri"],
                "image_id": request["image_id"],
                SUBMITTED_AT_ATTRIBUTE: now,
            }
            if state != QUEUED:
                message = (why or {}).get(request["request_id"], "refused by SQS")
                item["errors"] = json.dumps(
                    [
                        {
                            "stage": "submit",
                            "error_type": "SendRefused",
                            "message": message,
                            "final": True,
                        }
                    ]
                )
                item["updated_at_timestamp"] = now
            wire = {k: serializer.serialize(v) for k, v in item.items()}
            entries.append((request["request_id"], {"PutRequest": {"Item": wire}}))
        for chunk in chunks(entries, MAX_BATCH):
            try:
                batch_write(self.ddb, layout.requests_table, [r for _, r in chunk])
            except Exception as exc:
                raise dynamodb_failure(
                    exc,
                    role="REQUESTS",
                    table=layout.requests_table,
                    action="BatchWriteItem",
                    client=self.ddb,
                    layout=layout,
                ) from exc

    # -- SQS -------------------------------------------------------------------------------

    def _entry(self, number: int, message: Message) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": str(number), "MessageBody": message.body}
        if self.fifo:
            ids = "\n".join(r["request_id"] for r in message.requests)
            digest = hashlib.sha256(ids.encode()).hexdigest()
            group = int(digest[:8], 16) % max(1, self.settings.fifo_groups)
            from igata_sqs.limits import fifo_id

            entry["MessageGroupId"] = fifo_id(f"{self.collection_id}-{group}")
            entry["MessageDeduplicationId"] = digest
        return entry

    def _send_batch(self, messages: Sequence[Message]) -> list[tuple[Message, str]]:
        """Send ``messages``; returns those refused for their content, with the reason.

        Entries SQS failed on its side are sent again (a few times, with backoff); entries
        it accepted are never sent again.
        """
        url = self.settings.queue_url or ""
        todo = {str(n): m for n, m in enumerate(messages)}
        refused: list[tuple[Message, str]] = []
        problem = ""
        for attempt in range(_ENTRY_ATTEMPTS):
            if attempt:
                time.sleep(min(2.0, 0.1 * 2**attempt))
            todo, problem = self._send_entries(todo, refused, problem)
            if not todo:
                return refused
        raise JobUnavailable(
            f"sqs: {len(todo)} message(s) to {url} were not accepted after "
            f"{_ENTRY_ATTEMPTS} attempts ({problem}); run the same command again to resume"
        )

    def _send_entries(
        self, todo: dict[str, Message], refused: list[tuple[Message, str]], problem: str
    ) -> tuple[dict[str, Message], str]:
        """One ``SendMessageBatch`` of ``todo``; returns the entries to send again (failed
        on SQS's side) and the last problem. Refused entries are appended to ``refused``.

        SQS refuses one entry's content either in ``Failed`` (AWS, LocalStack) or by
        refusing the whole call (moto, for a message over the queue's
        MaximumMessageSize): a call refused that way is split in halves until the refused
        entry is alone, so the others are still sent, once.
        """
        from igata_sqs import errors
        from igata_sqs.clients import describe

        url = self.settings.queue_url or ""
        try:
            response = self.sqs.send_message_batch(
                QueueUrl=url, Entries=[self._entry(int(k), m) for k, m in todo.items()]
            )
        except Exception as exc:
            kind = errors.classify(exc)
            if kind != errors.CONTENT and not errors.has_code(exc, errors.SPLIT_CODES):
                raise sqs_failure(exc, url=url, action="SendMessageBatch") from exc
            keys = list(todo)
            if len(keys) == 1:
                refused.append((todo[keys[0]], describe(exc)))
                return {}, problem
            half = len(keys) // 2
            again: dict[str, Message] = {}
            for part in (keys[:half], keys[half:]):
                left, problem = self._send_entries({k: todo[k] for k in part}, refused, problem)
                again.update(left)
            return again, problem
        todo = dict(todo)
        for success in response.get("Successful", []):
            todo.pop(str(success.get("Id")), None)
        for failure in response.get("Failed", []):
            key = str(failure.get("Id", ""))
            if key not in todo:
                continue
            kind = errors.classify_entry(failure)
            problem = errors.entry_text(failure)
            if kind == errors.CONFIGURATION:
                from igata_sqs.queue import refused as queue_refused

                raise JobError(str(queue_refused(url, "SendMessageBatch", failure)))
            if kind in (errors.CONTENT, errors.REQUEST):
                refused.append((todo.pop(key), problem))
        return todo, problem


def _pace(rate: float, stop: Callable[[], bool] = lambda: False) -> Callable[[int], None]:
    from igata_sqs.replay.pacing import TokenBucket

    bucket = TokenBucket(rate, capacity=BATCH_ENTRIES * 1000)

    def pause(seconds: float) -> bool:
        time.sleep(seconds)
        return not stop()

    def take(count: int) -> None:
        while count > 0:
            step = min(count, bucket.capacity)
            bucket.take(step, pause)
            count -= step

    return take


def _queue(settings: SubmitSettings) -> tuple[Any, bool, int]:
    """(client, is FIFO, the queue's MaximumMessageSize) after checking the queue."""
    from igata_jobs.aws import sqs_client
    from igata_sqs.clients import check_queue_url

    url = settings.queue_url or ""
    try:
        check_queue_url(url, "--queue")
    except ValueError as exc:
        raise JobError(str(exc)) from None
    client = sqs_client()
    try:
        attributes = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["FifoQueue", "MaximumMessageSize"]
        )["Attributes"]
    except Exception as exc:
        raise sqs_failure(exc, url=url, action="GetQueueAttributes") from exc
    fifo = str(attributes.get("FifoQueue", "false")).lower() == "true" or url.endswith(".fifo")
    return client, fifo, int(attributes.get("MaximumMessageSize", MAX_MESSAGE_BYTES))


def _cursor_location(settings: SubmitSettings) -> str:
    if settings.cursor:
        return settings.cursor
    key = job_key(
        settings.queue_url or "",
        settings.sources,
        {
            "extensions": settings.extensions,
            "pattern": settings.pattern,
            "per_message": settings.per_message,
        },
    )
    return str(default_directory() / f"{key}.json")


def submit(settings: SubmitSettings, say: Callable[[str], None] = click.echo) -> SubmitReport:
    """Run a submit (see the module docstring); raises JobError / JobUnavailable."""
    filters = Filters(settings.extensions, settings.pattern)
    readers = [SourceReader(source, filters) for source in settings.sources]
    cursor = None if settings.dry_run else Cursor(_cursor_location(settings))
    state = None
    if cursor is not None and not settings.restart:
        state = cursor.load()
        if (
            state is not None
            and settings.collection_id
            and (state.collection_id != settings.collection_id)
        ):
            say(
                f"submit: the cursor {cursor.location} is for collection "
                f"{state.collection_id}; starting collection {settings.collection_id} anew"
            )
            state = None
    collection_id = settings.collection_id or (state.collection_id if state else str(uuid.uuid4()))
    report = SubmitReport(collection_id)
    if state is not None and state.done:
        report.already_done = True
        report.earlier_requests = state.requests
        report.earlier_refused = state.refused
        return report
    if state is None:
        state = CursorState(
            collection_id, settings.queue_url or "", list(settings.sources), [None] * len(readers)
        )
    else:
        report.resumed = True
        report.earlier_requests = state.requests
        report.earlier_refused = state.refused
    if cursor is not None:
        cursor.state = state

    sender = None
    max_bytes = settings.max_message_bytes
    if not settings.dry_run:
        client, fifo, queue_max = _queue(settings)
        max_bytes = min(max_bytes, queue_max)
        ddb = layout = None
        if settings.requests_table:
            from igata_jobs.aws import check_table, dynamodb_client
            from igata_jobs.aws import layout as make_layout

            layout = make_layout(
                settings.requests_table,
                request_key=settings.request_key,
                state_key=settings.state_key,
            )
            ddb = dynamodb_client()
            check_table(ddb, layout, "REQUESTS")
        pace = _pace(settings.rate) if settings.rate else None
        sender = Sender(settings, collection_id, client, fifo, ddb, layout, pace)
    for reader in readers:
        try:
            reader.open()
        except Exception as exc:
            raise s3_failure(exc, f"reading {reader.source}") from exc

    progress = ProgressLine(settings.progress)
    started = time.monotonic()
    packer = Packer(settings.per_message, max_bytes)
    pending: list[Message] = []
    pending_invalid = 0
    last_position: Any = None

    # Batches are sent by a few threads at once; the cursor advances in submission order,
    # only past batches that were sent and all batches before them.
    pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="igata-submit")
    inflight: deque[tuple[Future[list[tuple[Message, str]]], int, Any, int, int, int]] = deque()

    def settle(keep: int) -> None:
        while inflight and (len(inflight) > keep or inflight[0][0].done()):
            future, index, position, requests, messages, invalid = inflight.popleft()
            refused = future.result()
            refused_requests = sum(len(m.requests) for m, _ in refused)
            for message, why in refused:
                for request in message.requests:
                    if len(report.refusals) < MAX_LISTED:
                        report.refusals.append((request, why))
            requests -= refused_requests
            messages -= len(refused)
            report.refused += refused_requests
            report.requests += requests
            report.messages += messages
            report.invalid += invalid
            if cursor is not None and position is not None:
                state.positions[index] = position
                state.source_index = index
                state.requests += requests
                state.messages += messages
                state.invalid += invalid
                state.refused += refused_requests
                cursor.save()
            progress.update(report.requests, report.messages)

    def flush(index: int, position: Any = None) -> None:
        """Send the pending batch, then record ``position`` (default: its last request's)."""
        nonlocal pending, pending_invalid
        batch_requests = sum(len(m.requests) for m in pending)
        if report.sample is None and pending:
            report.sample = pending[0].body
        if position is None and pending:
            position = pending[-1].position
        future: Future[list[tuple[Message, str]]] = Future()
        if sender is not None and pending:
            if sender.pace is not None:
                sender.pace(batch_requests)
            future = pool.submit(sender.send, pending)
        else:
            future.set_result([])
        inflight.append((future, index, position, batch_requests, len(pending), pending_invalid))
        pending = []
        pending_invalid = 0
        settle(MAX_INFLIGHT)

    try:
        batch_bytes = 0
        for index in range(state.source_index, len(readers)):
            reader = readers[index]
            after = state.positions[index] if index < len(state.positions) else None
            last_position = after
            entries = reader.entries(after)
            while True:
                try:
                    target: Target | None = next(entries, None)
                except click.ClickException:
                    raise
                except Exception as exc:
                    raise s3_failure(exc, f"reading {reader.source}") from exc
                if target is None:
                    break
                if target.error:
                    pending_invalid += 1
                    if len(report.problems) < 10:
                        report.problems.append(target.error)
                    last_position = target.position
                    continue
                request = build_request(
                    collection_id,
                    target.bucket,
                    target.key,
                    target.version_id,
                    target.image_id,
                    id_field=settings.request_key,
                )
                for message in packer.add(request, target.position):
                    if pending and (
                        len(pending) >= BATCH_ENTRIES or batch_bytes + message.size > max_bytes
                    ):
                        flush(index)
                        batch_bytes = 0
                    pending.append(message)
                    batch_bytes += message.size
                last_position = target.position
            for message in packer.finish():
                if pending and (
                    len(pending) >= BATCH_ENTRIES or batch_bytes + message.size > max_bytes
                ):
                    flush(index)
                    batch_bytes = 0
                pending.append(message)
                batch_bytes += message.size
            flush(index, last_position)
            settle(0)
            batch_bytes = 0
            if cursor is not None and index + 1 < len(readers):
                state.source_index = index + 1
                cursor.save()
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM) or failed: the batches settled since the cursor's
        # last write go into it now, so that a resume does not send them again.
        if cursor is not None and cursor.unsaved:
            with contextlib.suppress(Exception):
                cursor.save(now=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if cursor is not None:
        state.done = True
        cursor.save(durable=True)
    progress.update(report.requests, report.messages, final=True)
    report.seconds = time.monotonic() - started
    return report
