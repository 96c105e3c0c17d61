"""The ``dynamodb`` sink (the original's ``DynamodbOutputCtxManager``), idempotent.

``put_records`` checks each record and buffers its writes (one per request id: a later
record or error for the same request replaces or joins the buffered one); ``flush`` writes
the RESULTS items first, in ``BatchWriteItem`` calls run in a small thread pool, then the
REQUESTS updates, also concurrently, and returns only when all of it is durable. A request
whose writes failed stays buffered for the next flush.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from igata_core.components import ErrorOutcome, Rejection, RunContext, Sink
from igata_core.options import Option
from igata_dynamodb.batch import Backoff, batch_write, chunks
from igata_dynamodb.layout import COMPLETED, ERROR, OPTIONS, Layout
from igata_dynamodb.records import InvalidRecord, RecordMapper, RequestWrite
from igata_dynamodb.updates import RequestUpdater, error_code

log = logging.getLogger("igata.dynamodb")

#: DynamoDB's code for a request that is wrong in itself (an item it refuses).
VALIDATION = "ValidationException"
#: Threads writing to DynamoDB at once (more buys nothing against one table's partitions).
MAX_WRITERS = 16


class DynamoDbWriteError(Exception):
    """Some writes failed; they stay buffered and the next ``flush`` retries them."""


class DynamoDbSink(Sink):
    """REQUESTS state updates and flattened RESULTS items in DynamoDB."""

    name = "dynamodb"
    aliases = ("DynamodbOutputCtxManager",)
    description = "DynamoDB REQUESTS (state, JSON results) and RESULTS (one item per result)"
    options: ClassVar[tuple[Option, ...]] = (
        *OPTIONS,
        # A DynamoDB call answers in milliseconds: short timeouts and few attempts let a
        # network outage reach the engine's retry budget (and a SIGTERM) in seconds.
        Option("connect_timeout", "float", default=3.0, minimum=0.1,
               help="Seconds to wait for a connection to DynamoDB."),
        Option("read_timeout", "float", default=10.0, minimum=0.1,
               help="Seconds to wait for a DynamoDB answer."),
        Option("max_attempts", "int", default=3, minimum=1,
               help="Attempts per DynamoDB call (botocore's standard retry mode; the engine "
               "retries failed flushes within --sink-retry-budget on top)."),
    )  # fmt: skip

    def __init__(self, options: Any = None, context: RunContext | None = None):
        super().__init__(options, context)
        self.layout = Layout.from_options(self.opts)
        self._mapper = RecordMapper(self.layout)
        self._pending: dict[str, RequestWrite] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._updater: RequestUpdater | None = None
        self.backoff = Backoff()

    # -- life cycle -------------------------------------------------------------------

    def open(self) -> None:
        from igata_dynamodb.tables import check_tables

        workers = max(1, min(self.context.concurrency, MAX_WRITERS))
        self._client = self.make_client(max_pool_connections=workers + 2)
        check_tables(self._client, self.layout)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="igata-dynamodb")
        self._updater = RequestUpdater(self._client, self.layout, self.backoff)

    def make_client(self, max_pool_connections: int) -> Any:
        """The boto3 DynamoDB client: endpoint and region from the environment, explicit
        timeouts, botocore's ``standard`` retry mode (it retries throttled calls)."""
        import boto3
        from botocore.config import Config

        from igata_core.awsconfig import client_kwargs, config_kwargs

        config = config_kwargs(
            "dynamodb",
            max_pool_connections=max_pool_connections,
            connect_timeout=self.opts["connect_timeout"],
            read_timeout=self.opts["read_timeout"],
            max_attempts=self.opts["max_attempts"],
        )
        return boto3.client("dynamodb", **client_kwargs("dynamodb"), config=Config(**config))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            left = len(self._pending)
        if left:
            log.warning(
                "dynamodb: %d requests were never written; their input was not acknowledged "
                "and will be delivered again",
                left,
            )

    # -- buffering --------------------------------------------------------------------

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        rejections: list[Rejection] = []
        writes: list[RequestWrite] = []
        for index, record in enumerate(records):
            try:
                writes.append(self._mapper.from_record(record))
            except InvalidRecord as exc:
                rejections.append(Rejection(index, str(exc), "InvalidRecord"))
        with self._lock:
            for write in writes:
                # The newest success replaces whatever is buffered for the request.
                self._pending.pop(write.request_id, None)
                self._pending[write.request_id] = write
        return rejections

    def put_errors(self, outcomes: Sequence[ErrorOutcome]) -> None:
        for outcome in outcomes:
            write = self._mapper.from_error(outcome)
            if write is None:
                log.warning(
                    "dynamodb: error of %s (%s) names no %r, so no REQUESTS item records it",
                    outcome.input, outcome.message, self.layout.request_key,
                )  # fmt: skip
                continue
            with self._lock:
                buffered = self._pending.get(write.request_id)
                if buffered is None:
                    self._pending[write.request_id] = write
                elif buffered.state == ERROR:
                    # A new object, not a mutation: a flush may be writing the buffered one.
                    write.errors = [*buffered.errors, *write.errors]
                    self._pending[write.request_id] = write
                # A buffered success wins: completed is terminal.

    def pending(self) -> int:
        """Requests buffered and not yet durably written."""
        with self._lock:
            return len(self._pending)

    # -- writing ----------------------------------------------------------------------

    def flush(self) -> None:
        if self._pool is None or self._updater is None:
            raise RuntimeError("dynamodb: flush() before open() or after close()")
        with self._flush_lock:
            with self._lock:
                writes = list(self._pending.values())
            if not writes:
                return
            failures = self._write_results(writes)
            done, update_failures = self._write_requests(writes)
            failures += update_failures
            with self._lock:
                for write in done:
                    if self._pending.get(write.request_id) is write:
                        del self._pending[write.request_id]
                left = len(self._pending)
        if failures:
            first = failures[0]
            raise DynamoDbWriteError(
                f"dynamodb: {len(failures)} write(s) failed, first: {type(first).__name__}: "
                f"{first}; {left} request(s) stay buffered for the next flush"
            ) from first

    def _write_results(self, writes: list[RequestWrite]) -> list[Exception]:
        """Write the RESULTS items not yet written; returns the failures."""
        from boto3.dynamodb.types import TypeSerializer

        assert self._pool is not None
        serializer = TypeSerializer()
        owner: dict[Any, RequestWrite] = {}
        requests = []
        for write in writes:
            if write.state != COMPLETED:
                continue
            for key, item in write.items.items():
                owner[key] = write
                wire = {name: serializer.serialize(value) for name, value in item.items()}
                requests.append((key, {"PutRequest": {"Item": wire}}))
        if not requests:
            return []
        batches = chunks(requests)
        futures = [self._pool.submit(self._put_batch, batch) for batch in batches]
        failures: list[Exception] = []
        for batch, future in zip(batches, futures, strict=True):
            try:
                refused = future.result()
            except Exception as exc:
                failures.append(exc)
                continue
            with self._lock:
                for item_key, _ in batch:
                    write = owner[item_key]
                    if item_key in refused:
                        log.error(
                            "dynamodb: RESULTS table %r refused an item of request %r: %s",
                            self.layout.results_table, write.request_id, refused[item_key],
                        )  # fmt: skip
                        write.fail(
                            f"dynamodb: RESULTS table {self.layout.results_table!r} refused "
                            f"an item: {refused[item_key]}"
                        )
                    else:
                        write.items.pop(item_key, None)
        return failures

    def _put_batch(self, batch: list[tuple[Any, dict[str, Any]]]) -> dict[Any, str]:
        """Write one batch; returns the keys DynamoDB refused for good, with its message."""
        table = self.layout.results_table
        try:
            batch_write(self._client, table, [request for _, request in batch], self.backoff)
            return {}
        except Exception as exc:
            if error_code(exc) != VALIDATION:
                raise
        # One refused item fails the whole call: find it by writing them one at a time.
        refused: dict[Any, str] = {}
        for key, request in batch:
            try:
                self._client.put_item(TableName=table, Item=request["PutRequest"]["Item"])
            except Exception as exc:
                if error_code(exc) != VALIDATION:
                    raise
                refused[key] = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return refused

    def _write_requests(
        self, writes: list[RequestWrite]
    ) -> tuple[list[RequestWrite], list[Exception]]:
        """Update REQUESTS for every write whose RESULTS are all written."""
        assert self._pool is not None
        ready = [write for write in writes if not write.items]
        futures = [self._pool.submit(self._update, write) for write in ready]
        done: list[RequestWrite] = []
        failures: list[Exception] = []
        for write, future in zip(ready, futures, strict=True):
            try:
                future.result()
            except Exception as exc:
                failures.append(exc)
                continue
            done.append(write)
        return done, failures

    def _update(self, write: RequestWrite) -> None:
        assert self._updater is not None
        try:
            self._updater.write(write)
            return
        except Exception as exc:
            if error_code(exc) != VALIDATION or write.state != COMPLETED:
                raise
            message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        log.error(
            "dynamodb: REQUESTS table %r refused the update of request %r: %s; recording it "
            "as an error",
            self.layout.requests_table, write.request_id, message,
        )  # fmt: skip
        with self._lock:
            write.fail(
                f"dynamodb: REQUESTS table {self.layout.requests_table!r} refused the update: "
                f"{message}"
            )
        self._updater.write(write)
