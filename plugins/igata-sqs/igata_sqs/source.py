"""The ``sqs`` and ``sqs-csv`` sources: an igata worker fed by an SQS queue.

Each message holds a JSON array of requests (see :mod:`igata_sqs.messages`); each request
becomes one Item whose ``s3_uri`` the loader registry fetches. Delivery follows DESIGN.md:

* a message is deleted only after :meth:`SqsSource.ack`, i.e. after the sink flushed
  every result of it (in background batches: :mod:`igata_sqs.deleter`); a failed message
  is made visible again after a backoff that grows with its receive count, so the queue's
  redrive policy finally moves it to its dead-letter queue;
* while the worker holds a message, a heartbeat keeps it invisible (see
  :mod:`igata_sqs.heartbeat`), so slow models are not delivered twice, and a killed
  worker's messages come back within one visibility timeout;
* messages are received in batches of up to 10 with long polling, one batch at a time and
  only when the engine asks for more (its prefetch window bounds what the worker holds);
* SQS's errors are read with :mod:`igata_sqs.errors`: a queue that does not exist, access
  denied or unknown credentials (on open, receive, delete or a visibility change) stop the
  run with :class:`~igata_core.ConfigurationError` (exit 2) at once; an outage is retried
  for ``unavailable_after`` seconds, then :class:`~igata_core.ServiceUnavailable` (exit 3).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

from igata_core import ConfigurationError, Envelope, Option, RunContext, ServiceUnavailable, Source
from igata_sqs import errors
from igata_sqs.clients import check_queue_url, describe, make_client, queue_name
from igata_sqs.deleter import Deleter
from igata_sqs.heartbeat import Heartbeat
from igata_sqs.leases import Lease, LeaseTable
from igata_sqs.messages import BodyError, RequestFormat, parse_body, request_items
from igata_sqs.notices import CompletionNotifier, NoticeSettings
from igata_sqs.queue import BATCH_SIZE, MAX_VISIBILITY, QueueInfo, SqsQueue, refused

log = logging.getLogger("igata.sqs")

#: Longest long poll SQS allows.
MAX_WAIT_SECONDS = 20


def source_options(default_format: str) -> tuple[Option, ...]:
    """The options of the SQS sources (the two differ only in their default format)."""
    return (
        Option("queue_url", required=True,
               help="URL of the queue to read requests from.",
               env=("INPUT_CTXMANAGER_SQS_QUEUE_URL", "INPUT_CTXMGR_SQS_QUEUE_URL")),
        Option("format", default=default_format, choices=("image", "csv"),
               help="Request format: 'image' (collection_id, image_id, s3_uri) or 'csv' "
               "(collection_id, file_id or image_id, s3_uri); chooses the required fields and "
               "the decoder."),
        Option("uri_fields", "list", default=["s3_uri"],
               help="Comma-separated request fields holding the URIs to load; with several, "
               "the predictor receives a dict of field -> decoded data.",
               env=("REQUEST_S3URI_KEYS",)),
        Option("id_field", default="request_id",
               help="Request field holding the request's id (its identity and the id in SNS "
               "notices); without it image_id (image) or file_id/image_id (csv) is used, "
               "else a digest of the request.",
               env=("REQUEST_UNIQUE_ID_FIELDNAME",)),
        Option("required_fields", "list", default=[],
               help="Comma-separated required request fields, 'a|b' meaning either "
               "(default: the format's schema; the URI fields are always required)."),
        Option("allowed_schemes", "list", default=["s3"],
               help="URI schemes a request may point at; anything else (file://, http://) "
               "is refused as that request's error."),
        Option("decoder", default="",
               help="Decoder for the loaded objects (default: 'image' or 'csv' by format; "
               "'auto' chooses by file extension)."),
        Option("wait_time_seconds", "int", default=MAX_WAIT_SECONDS, minimum=0,
               help="Long-poll wait of each receive, 0-20 seconds."),
        Option("visibility_timeout", "int", default=0, minimum=0,
               help="Seconds a received message stays invisible, renewed by the heartbeat "
               "while it is processed (0: the queue's VisibilityTimeout)."),
        Option("max_processing_seconds", "float", default=60.0, minimum=0,
               help="Processing budget per request, counted from the receive: the heartbeat "
               "keeps a message of N requests invisible for at most N times this, then lets "
               "it reappear (0: no budget).",
               env=("MAX_PER_REQUEST_PROCESSING_SECONDS",)),
        Option("retry_delay", "int", default=5, minimum=0,
               help="Seconds before a failed message is visible again, doubled with each "
               "receive of the message (5, 10, 20, … up to max_retry_delay).",
               env=("SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION",)),
        Option("max_retry_delay", "int", default=900, minimum=0,
               help="Upper bound of the retry delay in seconds (at most 43200)."),
        Option("idle_timeout", "float", default=0.0, minimum=0,
               help="Stop cleanly once nothing was received for this many seconds, this "
               "worker holds no unsettled message and the queue reports no visible, delayed "
               "or in-flight ones (0: run until stopped)."),
        Option("max_messages", "int", default=0, minimum=0,
               help="Stop cleanly after taking this many messages (0: no limit)."),
        Option("receive_batch_size", "int", default=0, minimum=0,
               help="Messages asked for per receive, 1-10 (0: enough to fill the engine's "
               "prefetch window, judged by the requests per message seen so far, so that "
               "workers sharing a short queue split it evenly)."),
        Option("sns_topic_field", default="sns_topic_arn",
               help="Request field naming the SNS topic for its completion notice.",
               env=("REQUEST_SNS_TOPIC_ARN_FIELDNAME",)),
        Option("sns_topic_arn", default=None,
               help="Topic for completion notices of requests that name none.",
               env=("REQUESTS_COMPLETE_SNS_TOPIC_ARN",)),
        Option("notice_format", default="ids", choices=("ids", "detailed"),
               help="'ids': a JSON array of request ids (the original's notice); "
               "'detailed': objects with request id, collection_id, status and errors."),
        Option("endpoint_url", default=None,
               help="SQS endpoint (default: AWS_ENDPOINT_URL_SQS, SQS_ENDPOINT, "
               "AWS_ENDPOINT_URL, else AWS)."),
        Option("unavailable_after", "float", default=60.0, minimum=0,
               help="Seconds of failing receives (after botocore's retries) before the "
               "worker stops with exit code 3."),
    )  # fmt: skip


class SqsSource(Source):
    """Image request messages from an SQS queue (an unbounded worker source)."""

    name = "sqs"
    aliases = ("SQSMessageS3InputImageCtxManager",)
    description = "SQS worker: messages of image requests (collection_id, image_id, s3_uri)"
    finite = False
    options: ClassVar[tuple[Option, ...]] = source_options("image")

    def __init__(self, options: Mapping[str, Any] | None = None, context: RunContext | None = None):
        super().__init__(options, context)
        opts = self.opts
        check_queue_url(opts["queue_url"], "sqs source: queue_url")
        self._messages_seen = 0
        self._requests_seen = 0
        if not 0 <= opts["wait_time_seconds"] <= MAX_WAIT_SECONDS:
            raise ValueError(
                f"wait_time_seconds must be 0-{MAX_WAIT_SECONDS} (SQS's long-poll limit), "
                f"got {opts['wait_time_seconds']}"
            )
        if opts["receive_batch_size"] > BATCH_SIZE:
            raise ValueError(f"receive_batch_size must be 0-{BATCH_SIZE} (SQS's limit)")
        for key in ("visibility_timeout", "max_retry_delay"):
            if opts[key] > MAX_VISIBILITY:
                raise ValueError(f"{key} must be at most {MAX_VISIBILITY} s (12 hours)")
        self.format = RequestFormat.build(
            opts["format"],
            uri_fields=opts["uri_fields"],
            id_field=opts["id_field"],
            required_fields=opts["required_fields"],
            allowed_schemes=opts["allowed_schemes"],
            decoder=opts["decoder"],
        )
        self.queue_name = queue_name(opts["queue_url"])
        self.notices = CompletionNotifier(
            NoticeSettings(
                id_field=opts["id_field"],
                topic_field=opts["sns_topic_field"],
                default_topic=opts["sns_topic_arn"],
                detailed=opts["notice_format"] == "detailed",
            ),
            lambda: make_client("sns", read_timeout=10.0, max_attempts=3),
        )
        self.leases = LeaseTable()
        self.queue: SqsQueue | None = None
        self.info: QueueInfo | None = None
        self.visibility = 0
        self._heartbeat: Heartbeat | None = None
        self._deleter: Deleter | None = None
        self._stop = threading.Event()
        self._hand_backs: list[threading.Thread] = []
        self._closed = False
        #: A configuration error met off the receive thread (a delete or visibility change
        #: refused): envelopes() raises it, which stops the run with exit code 2.
        self._problem: ConfigurationError | None = None

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        opts = self.opts
        # The read timeout must outlast the long poll, or every idle receive would fail; two
        # attempts, as the receive loop retries by itself (unavailable_after), so that a
        # network outage is noticed in about a minute, not after five long timeouts.
        client = make_client(
            "sqs",
            endpoint_url=opts["endpoint_url"],
            read_timeout=opts["wait_time_seconds"] + 5.0,
            max_attempts=2,
            # receive, heartbeat, deletes, nacks and hand-backs may all call at once
            pool_size=8,
        )
        self.queue = SqsQueue(client, opts["queue_url"], self.queue_name)
        try:
            self.info = self.queue.info()
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ServiceUnavailable(
                f"sqs: cannot read the attributes of queue {opts['queue_url']}: {describe(exc)}"
            ) from exc
        self.visibility = opts["visibility_timeout"] or self.info.visibility_timeout or 30
        self._heartbeat = Heartbeat(
            self.queue, self.leases, self.visibility, on_refused=self._refused
        )
        self._heartbeat.start()
        self._deleter = Deleter(self.queue, self.leases, self.notices, on_refused=self._refused)
        log.info(
            "sqs: reading queue %s (visibility %d s, %s)",
            self.queue_name, self.visibility,
            f"dead-letter after {self.info.max_receive_count} receives"
            if self.info.max_receive_count else "no redrive policy: failed messages retry forever",
        )  # fmt: skip

    def stop(self) -> None:
        """Receive nothing more and hand back the messages not yet given to the engine."""
        self._stop.set()
        pending = self.leases.take_pending()
        if pending:
            # stop() may run in a signal handler: the SQS call goes to a thread.
            thread = threading.Thread(
                target=self._hand_back,
                args=(pending, "stop"),
                name="igata-sqs-hand-back",
                daemon=True,
            )
            thread.start()
            self._hand_backs.append(thread)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._deleter is not None:
            self._deleter.close()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        for thread in self._hand_backs:
            thread.join(timeout=10)
        self._hand_back(self.leases.take_pending(), "close")
        left = len(self.leases)
        if left:
            log.info(
                "sqs: %d message(s) of queue %s were not settled; they reappear after their "
                "visibility timeout", left, self.queue_name,
            )  # fmt: skip

    # -- receiving -------------------------------------------------------------------------

    def envelopes(self) -> Iterator[Envelope]:
        if self.queue is None:
            raise RuntimeError("sqs source: envelopes() before open()")
        limit = self.opts["max_messages"]
        handed = 0
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                self._raise_problem()
                want = self._receive_size()
                want = want if not limit else min(want, limit - handed)
                if want <= 0:
                    log.info("sqs: max_messages (%d) taken; stopping", limit)
                    return
                received = self._receive(want, self._wait_seconds(idle_since))
                if received is None:
                    return
                messages, received_at = received
                if not messages:
                    if self._idle_done(idle_since):
                        return
                    if self.opts["wait_time_seconds"] == 0:
                        self._stop.wait(1.0)  # short polling: do not spin on an empty queue
                    continue
                idle_since = time.monotonic()
                for envelope in self._admit(messages, received_at):
                    if self._stop.is_set():
                        break
                    if not self.leases.start(envelope.handle):
                        continue
                    yield envelope
                    handed += 1
                    if limit and handed >= limit:
                        break
        finally:
            self._hand_back(self.leases.take_pending(), "stop")

    def _receive_size(self) -> int:
        """Messages to ask for: a worker holding more than it can start soon would keep
        them from idle workers on a short queue (and hold them when told to stop)."""
        fixed = self.opts["receive_batch_size"]
        if fixed:
            return min(BATCH_SIZE, fixed)
        per_message = self._requests_seen / self._messages_seen if self._messages_seen else 1.0
        return max(1, min(BATCH_SIZE, int(self.context.prefetch / max(per_message, 1.0))))

    def _wait_seconds(self, idle_since: float) -> int:
        wait = self.opts["wait_time_seconds"]
        idle = self.opts["idle_timeout"]
        if idle and wait:
            remaining = idle - (time.monotonic() - idle_since)
            wait = max(1, min(wait, math.ceil(remaining)))
        return int(wait)

    def _receive(self, want: int, wait: int) -> tuple[list[dict[str, Any]], float] | None:
        """One receive, abandoned (its messages handed back) if stop() comes first."""
        if self._stop.is_set():
            return None
        future: Future[tuple[list[dict[str, Any]], float]] = Future()

        def receive() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self._receive_with_retries(want, wait))
            except BaseException as exc:
                future.set_exception(exc)

        # A daemon thread, not an executor: at exit, Python joins executor threads, and a
        # pending long poll would hold a stopped worker for up to 20 s.
        threading.Thread(target=receive, name="igata-sqs-receive", daemon=True).start()
        while True:
            try:
                return future.result(timeout=0.1)
            except TimeoutError:
                if self._stop.is_set() or self._problem is not None:
                    future.add_done_callback(self._hand_back_late)
                    self._raise_problem()
                    return None

    def _refused(self, exc: ConfigurationError) -> None:
        """A configuration error met on another thread: the receive loop raises it."""
        if self._problem is None:
            log.error("%s", exc)
            self._problem = exc

    def _raise_problem(self) -> None:
        if self._problem is not None:
            raise self._problem

    def _receive_with_retries(self, want: int, wait: int) -> tuple[list[dict[str, Any]], float]:
        assert self.queue is not None
        failing_since: float | None = None
        delay = 1.0
        while True:
            started = time.monotonic()
            try:
                messages = self.queue.receive(want, wait, self.visibility)
            except Exception as exc:
                if errors.classify(exc) != errors.OUTAGE:
                    # No such queue, access denied, unknown credentials, parameters refused:
                    # retrying cannot help.
                    raise refused(self.opts["queue_url"], "ReceiveMessage", exc) from None
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since >= self.opts["unavailable_after"] or self._stop.is_set():
                    raise ServiceUnavailable(
                        f"sqs: cannot receive from queue {self.queue_name} "
                        f"({now - failing_since:.0f} s of failures): {describe(exc)}"
                    ) from exc
                log.warning(
                    "sqs: receive from queue %s failed (%s); retrying in %.0f s",
                    self.queue_name, describe(exc), delay,
                )  # fmt: skip
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            # A long poll may wait before a message arrives; SQS starts the visibility
            # clock when it hands the message out, so count from shortly before the reply.
            return messages, max(started, time.monotonic() - 1.0)

    def _idle_done(self, idle_since: float) -> bool:
        idle = self.opts["idle_timeout"]
        if not idle or time.monotonic() - idle_since < idle:
            return False
        assert self.queue is not None
        try:
            visible, in_flight, delayed = self.queue.counts()
        except Exception as exc:
            log.warning("sqs: cannot read the message counts of queue %s: %s",
                        self.queue_name, describe(exc))  # fmt: skip
            return False
        held = len(self.leases)
        # Messages this worker holds may still fail and come back: wait for their outcome.
        others = in_flight - held
        if held or visible or delayed or others > 0:
            log.debug(
                "sqs: idle, but this worker holds %d message(s) and queue %s reports %d "
                "visible, %d delayed and %d other in-flight message(s)",
                held, self.queue_name, visible, delayed, max(others, 0),
            )  # fmt: skip
            return False
        log.info("sqs: queue %s idle for %g s and empty; stopping", self.queue_name, idle)
        return True

    def _admit(self, messages: list[dict[str, Any]], received_at: float) -> list[Envelope]:
        """Lease received messages; returns envelopes for the ones not already held."""
        assert self.info is not None
        envelopes = []
        budget = self.opts["max_processing_seconds"]
        for message in messages:
            attributes = message.get("Attributes", {})
            count = int(attributes.get("ApproximateReceiveCount", 1))
            envelope = self._envelope(message, count)
            self._messages_seen += 1
            self._requests_seen += max(1, len(envelope.items))
            lease = Lease(
                message_id=message["MessageId"],
                receipt_handle=message["ReceiptHandle"],
                receive_count=count,
                visible_until=received_at + self.visibility,
                deadline=received_at + budget * max(1, len(envelope.items)) if budget else None,
                limit=received_at + MAX_VISIBILITY - 60,
                group_id=attributes.get("MessageGroupId") if self.info.fifo else None,
                envelope=envelope,
            )
            if self.leases.admit(lease) is not None:
                log.info(
                    "sqs: message %s delivered again (receive %d) while this worker still "
                    "processes it; keeping one copy, with the newer receipt handle",
                    lease.message_id, count,
                )  # fmt: skip
                continue
            envelopes.append(envelope)
        return envelopes

    def _envelope(self, message: dict[str, Any], count: int) -> Envelope:
        assert self.info is not None
        message_id = message["MessageId"]
        where = f"sqs: message {message_id} (queue {self.queue_name})"
        envelope = Envelope(
            ref=f"sqs:{message_id}",
            items=[],
            handle=message_id,
            attempt=count,
            final=self._is_final(count),
        )
        try:
            requests = parse_body(message.get("Body", ""))
        except BodyError as exc:
            envelope.error = f"{where}: {exc}"
            return envelope
        envelope.items = request_items(requests, self.format, where=where)
        return envelope

    def _is_final(self, count: int) -> bool:
        assert self.info is not None
        limit = self.info.max_receive_count
        return limit is not None and count >= limit

    # -- settling --------------------------------------------------------------------------

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        """Delete the messages (FIFO: in group order), then publish their notices.

        The deletes are batched on a background thread (see :mod:`igata_sqs.deleter`).
        """
        assert self.queue is not None
        ids = [e.handle for e in envelopes if isinstance(e.handle, str)]
        delete, hand_back, missing = self.leases.settle_acks(ids)
        for message_id in missing:
            log.warning(
                "sqs: message %s was written but is no longer held by this worker (handed "
                "back or its lease lapsed); it may be processed again", message_id,
            )  # fmt: skip
        assert self._deleter is not None
        self._deleter.submit(delete)
        self._hand_back(hand_back, "FIFO order: an earlier message of its group failed")

    def wait_for_deletes(self, timeout: float | None = None) -> bool:
        """Wait until every acked message was deleted (acks delete in the background)."""
        return self._deleter.wait(timeout) if self._deleter is not None else True

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        """Make failed messages visible again after a backoff (at once on the final attempt)."""
        assert self.queue is not None
        ids = [e.handle for e in envelopes if isinstance(e.handle, str)]
        nacked, hand_back, _ = self.leases.settle_nacks(ids)
        changes = [(lease, self.retry_delay(lease.receive_count)) for lease in nacked]
        if changes:
            try:
                self.queue.change_visibility(changes, what="retry")
            except ConfigurationError as exc:
                self._refused(exc)
                raise
        for lease, delay in changes:
            if self._is_final(lease.receive_count):
                log.warning(
                    "sqs: message %s failed on its final attempt (%d); the queue's redrive "
                    "policy moves it to %s on its next receive",
                    lease.message_id, lease.receive_count,
                    self.info.dead_letter_arn if self.info else "the dead-letter queue",
                )  # fmt: skip
            else:
                log.info(
                    "sqs: message %s failed on attempt %d; visible again in %d s",
                    lease.message_id, lease.receive_count, delay,
                )  # fmt: skip
        self._hand_back(hand_back, "FIFO order: an earlier message of its group failed")
        finals = [
            lease.envelope
            for lease in nacked
            if lease.envelope is not None and self._is_final(lease.receive_count)
        ]
        if finals:
            self.notices.failed(finals)

    def retry_delay(self, receive_count: int) -> int:
        """Visibility of a failed message: 0 on its final attempt, else a growing backoff."""
        if self._is_final(receive_count):
            return 0
        base = self.opts["retry_delay"]
        cap = self.opts["max_retry_delay"]
        exponent = min(max(receive_count, 1) - 1, 30)
        return int(min(base * 2**exponent, cap, MAX_VISIBILITY))

    def release(self, envelopes: Sequence[Envelope]) -> None:
        """Hand back messages the engine gives up unsettled (a fatal error): visible again
        at once, with their newest receipt handles; not a failure (no retry delay, no
        notice). A later message of the same FIFO group that this worker holds goes back
        with them, so the group is delivered again in order."""
        if self.queue is None:
            return
        ids = [e.handle for e in envelopes if isinstance(e.handle, str)]
        released, blocked = self.leases.take_for_release(ids)
        self._hand_back(released + blocked, "released unsettled")

    def _hand_back(self, leases: list[Lease], why: str) -> None:
        if not leases or self.queue is None:
            return
        try:
            changed = self.queue.change_visibility(
                [(lease, 0) for lease in leases], what="hand-back"
            )
        except Exception as exc:
            if isinstance(exc, ConfigurationError):
                self._refused(exc)
            log.warning(
                "sqs: handing back %d message(s) (%s) failed: %s; they reappear after their "
                "visibility timeout", len(leases), why, exc,
            )  # fmt: skip
            return
        log.info("sqs: handed back %d message(s) (%s)", len(changed), why)

    def _hand_back_late(self, future: Future[Any]) -> None:
        """Messages of a receive that returned after stop(): visible again at once."""
        if future.cancelled() or future.exception() is not None:
            return
        messages, received_at = future.result()
        leases = [
            Lease(m["MessageId"], m["ReceiptHandle"], 0, received_at, None, received_at)
            for m in messages
        ]
        self._hand_back(leases, "received after stop")


class SqsCsvSource(SqsSource):
    """CSV file request messages from an SQS queue (each request names one CSV object)."""

    name = "sqs-csv"
    aliases = ("SQSMessageS3InputCSVCtxManager",)
    description = "SQS worker: messages of CSV file requests (collection_id, file_id, s3_uri)"
    options: ClassVar[tuple[Option, ...]] = source_options("csv")
