"""The ``dynamodb`` sink (the original's ``DynamodbOutputCtxManager``), idempotent.

``put_records`` checks each record and buffers its writes (one per request id: a later
record or error for the same request replaces or joins the buffered one); ``flush`` writes
the RESULTS items first, in ``BatchWriteItem`` calls run in a small thread pool, then the
REQUESTS updates, also concurrently, and returns only when all of it is durable or refused.

DynamoDB's errors are of three kinds (:mod:`igata_dynamodb.errors`). Content refused: a
``BatchWriteItem`` call fails whole when one item is bad, so the call is split in halves
until the refused items are found; the others are written, and ``flush`` returns a
:class:`Rejection` for each record whose item (or REQUESTS update) was refused.
Configuration refused (no such table, keyed otherwise, access denied): a
:class:`ConfigurationError`. Anything else is an outage: ``flush`` raises and keeps only the
unwritten rest buffered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from igata_core.components import ConfigurationError, ErrorOutcome, Rejection, RunContext, Sink
from igata_core.options import Option
from igata_dynamodb.batch import Backoff, UnprocessedItemsError, batch_write, chunks
from igata_dynamodb.errors import (
    NOT_FOUND,
    Kind,
    ServiceError,
    classify,
    configuration_error,
)
from igata_dynamodb.layout import COMPLETED, ERROR, OPTIONS, RESULTS_HASH_KEY, Layout
from igata_dynamodb.records import (
    MAX_ERRORS_KEPT,
    InvalidRecord,
    RecordMapper,
    RequestWrite,
    clean_error,
)
from igata_dynamodb.updates import RequestUpdater

log = logging.getLogger("igata.dynamodb")

#: Threads writing to DynamoDB at once (more buys nothing against one table's partitions).
MAX_WRITERS = 16

Batch = list[tuple[Any, dict[str, Any]]]


class DynamoDbWriteError(Exception):
    """Some writes failed (an outage); they stay buffered and the next ``flush`` retries them."""


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
        from igata_dynamodb.tables import TableProblem, layout_problem

        super().__init__(options, context)
        self.layout = Layout.from_options(self.opts)
        problem = layout_problem(self.layout)  # reported with the other options, before I/O
        if problem:
            raise TableProblem(problem)
        self._mapper = RecordMapper(self.layout)
        self._pending: dict[str, RequestWrite] = {}
        self._lock = threading.Lock()
        # Serialises put_records, put_errors and flush: record indexes count from the last
        # flush that returned, so none may slip in between.
        self._flush_lock = threading.Lock()
        self._put = 0  # records passed to put_records since the last flush that returned
        self._refusals: list[Rejection] = []  # found, returned by the next flush that returns
        self._rechecked: dict[str, bool] = {}
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._updater: RequestUpdater | None = None
        self.backoff = Backoff()

    # -- life cycle -------------------------------------------------------------------

    def open(self) -> None:
        from igata_dynamodb.tables import check_tables, request_index_fields

        workers = max(1, min(self.context.concurrency, MAX_WRITERS))
        self._client = self.make_client(max_pool_connections=workers + 2)
        shapes = check_tables(self._client, self.layout)
        self._mapper = RecordMapper(
            self.layout,
            shapes.get("RESULTS"),
            request_index_fields(shapes.get("REQUESTS"), self.layout),
        )
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
        with self._flush_lock:
            base = self._put
            self._put += len(records)
            for index, record in enumerate(records):
                try:
                    write = self._mapper.from_record(record)
                except InvalidRecord as exc:
                    rejections.append(Rejection(index, str(exc), "InvalidRecord"))
                    continue
                write.indexes.append(base + index)
                writes.append(write)
            with self._lock:
                for write in writes:
                    # The newest success replaces whatever is buffered for the request; it
                    # stands for the records it replaces too (refused, they all are).
                    buffered = self._pending.pop(write.request_id, None)
                    if buffered is not None:
                        write.indexes[:0] = buffered.indexes
                    self._pending[write.request_id] = write
        return rejections

    def put_errors(self, outcomes: Sequence[ErrorOutcome]) -> None:
        with self._flush_lock:
            for outcome in outcomes:
                write = self._mapper.from_error(outcome)
                if write is None:
                    log.warning(
                        "dynamodb: error of %s (%s) names no usable %r, so no REQUESTS item "
                        "records it",
                        outcome.input, outcome.message[:200], self.layout.request_key,
                    )  # fmt: skip
                    continue
                with self._lock:
                    buffered = self._pending.get(write.request_id)
                    if buffered is None:
                        self._pending[write.request_id] = write
                    elif buffered.state == ERROR:
                        # A new object, not a mutation: a flush may be writing the buffered one.
                        write.errors = [*buffered.errors, *write.errors][-MAX_ERRORS_KEPT:]
                        self._pending[write.request_id] = write
                    # A buffered success wins: completed is terminal.

    def pending(self) -> int:
        """Requests buffered and not yet durably written."""
        with self._lock:
            return len(self._pending)

    # -- writing ----------------------------------------------------------------------

    def flush(self) -> list[Rejection]:
        if self._pool is None or self._updater is None:
            raise RuntimeError("dynamodb: flush() before open() or after close()")
        with self._flush_lock:
            with self._lock:
                writes = list(self._pending.values())
            self._rechecked = {}
            problems: list[Exception] = []
            if writes:
                problems += self._write_results(writes)
                if not any(isinstance(p, ConfigurationError) for p in problems):
                    problems += self._write_requests(writes)
                with self._lock:
                    for write in writes:
                        settled = write.refused is not None or write.done
                        if write.refused is not None:
                            self._refusals += [
                                Rejection(index, write.refused, write.refused_code)
                                for index in write.indexes
                            ]
                        if settled and self._pending.get(write.request_id) is write:
                            del self._pending[write.request_id]
                    left = len(self._pending)
            for problem in problems:
                if isinstance(problem, ConfigurationError):
                    raise problem
            if problems:
                first = problems[0]
                raise DynamoDbWriteError(
                    f"dynamodb: {len(problems)} write(s) failed, first: "
                    f"{type(first).__name__}: {first}; {left} request(s) stay buffered for "
                    "the next flush"
                ) from first
            rejections, self._refusals = self._refusals, []
            self._put = 0
            return rejections

    def _write_results(self, writes: list[RequestWrite]) -> list[Exception]:
        """Write the RESULTS items not yet written; returns the failures."""
        from boto3.dynamodb.types import TypeSerializer

        assert self._pool is not None
        serializer = TypeSerializer()
        owner: dict[Any, RequestWrite] = {}
        requests: Batch = []
        for write in writes:
            if write.state != COMPLETED or write.refused is not None:
                continue
            for key, item in list(write.items.items()):
                owner[key] = write
                try:
                    wire = {name: serializer.serialize(value) for name, value in item.items()}
                except (TypeError, ValueError, ArithmeticError) as exc:
                    # Not expected after the checks of records.py: refuse the record alone.
                    self._refuse(write, ServiceError(Kind.CONTENT, type(exc).__name__, str(exc)))
                    break
                requests.append((key, {"PutRequest": {"Item": wire}}))
        requests = [(key, request) for key, request in requests if owner[key].refused is None]
        if not requests:
            return []
        batches = chunks(requests)
        futures = [self._pool.submit(self._put_part, batch, owner) for batch in batches]
        failures: list[Exception] = []
        for future in futures:
            try:
                future.result()
            except Exception as exc:
                failures.append(exc)
        return failures

    def _put_part(self, part: Batch, owner: dict[Any, RequestWrite]) -> None:
        """Write ``part``; when DynamoDB refuses the call for an item's content, split it in
        halves until the refused items are found (each refuses its record)."""
        with self._lock:
            part = [(key, request) for key, request in part if owner[key].refused is None]
        if not part:
            return
        table = self.layout.results_table
        try:
            batch_write(self._client, table, [request for _, request in part], self.backoff)
        except UnprocessedItemsError as exc:
            left = {_hashkey(request) for request in exc.unprocessed}
            self._written([key for key, request in part if _hashkey(request) not in left], owner)
            raise
        except Exception as exc:
            error = classify(exc)
            if error.kind is Kind.CONFIGURATION:
                if not error.key_schema or self._table_changed("RESULTS"):
                    raise self._configuration_error(error, "RESULTS", "BatchWriteItem") from exc
                # The table is keyed as configured: the item's own keys are at fault.
            elif error.kind is not Kind.CONTENT:
                raise
            if len(part) == 1:
                self._refuse(owner[part[0][0]], error)
                return
            middle = len(part) // 2
            self._put_part(part[:middle], owner)
            self._put_part(part[middle:], owner)
            return
        self._written([key for key, _ in part], owner)

    def _written(self, keys: list[Any], owner: dict[Any, RequestWrite]) -> None:
        with self._lock:
            for key in keys:
                owner[key].items.pop(key, None)

    def _refuse(self, write: RequestWrite, error: ServiceError, table: str = "") -> None:
        table = table or self.layout.results_table
        what = "an item of" if table == self.layout.results_table else "the update of"
        message = (
            f"dynamodb: table {table!r} refused {what} request {write.request_id!r}: "
            f"{error.describe()}"
        )
        log.error("%s", message)
        with self._lock:
            write.refuse(message, error.code)

    def _table_changed(self, role: str) -> bool:
        """Describe the table again (once per flush): True if it is gone or keyed otherwise
        than at ``open()``; False if it is as configured or cannot be described."""
        from igata_dynamodb.tables import describe, key_problem

        with self._lock:
            known = self._rechecked.get(role)
        if known is not None:
            return known
        table = self.layout.requests_table if role == "REQUESTS" else self.layout.results_table
        try:
            changed = key_problem(describe(self._client, table), role, self.layout) is not None
        except Exception as exc:
            error = classify(exc)
            if error.kind is Kind.OUTAGE:
                raise
            changed = error.code == NOT_FOUND
        with self._lock:
            self._rechecked[role] = changed
        return changed

    def _configuration_error(self, error: ServiceError, role: str, action: str) -> Exception:
        table = self.layout.requests_table if role == "REQUESTS" else self.layout.results_table
        return configuration_error(
            error, role=role, table=table, action=action, client=self._client, layout=self.layout
        )

    def _write_requests(self, writes: list[RequestWrite]) -> list[Exception]:
        """Update REQUESTS for every write whose RESULTS are all written; returns failures."""
        assert self._pool is not None
        ready = [write for write in writes if write.refused is None and not write.items]
        futures = [self._pool.submit(self._update, write) for write in ready]
        failures: list[Exception] = []
        for future in futures:
            try:
                future.result()
            except Exception as exc:
                failures.append(exc)
        return failures

    def _update(self, write: RequestWrite) -> None:
        assert self._updater is not None
        try:
            self._updater.write(write)
        except Exception as exc:
            error = self._update_error(exc)
            if write.state == COMPLETED:
                self._refuse(write, error, self.layout.requests_table)
                return
            # Recording an error must not be refused: retry with the least that says it.
            log.error(
                "dynamodb: REQUESTS table %r refused recording the error of request %r (%s); "
                "recording a shorter one",
                self.layout.requests_table, write.request_id, error.describe(),
            )  # fmt: skip
            last = write.errors[-1] if write.errors else {}
            short = {key: last[key] for key in ("stage", "error_type", "message") if key in last}
            write.errors = [clean_error(short, 200)]
            try:
                self._updater.write(write)
            except Exception as again:
                error = self._update_error(again)
                log.error(
                    "dynamodb: REQUESTS table %r refused recording the error of request %r "
                    "(%s); it is not recorded there (its input is retried all the same)",
                    self.layout.requests_table, write.request_id, error.describe(),
                )  # fmt: skip
        with self._lock:
            write.done = True

    def _update_error(self, exc: Exception) -> ServiceError:
        """The content refusal ``exc`` is, or raise what it is instead."""
        error = classify(exc)
        if error.kind is Kind.CONFIGURATION:
            raise self._configuration_error(error, "REQUESTS", "UpdateItem") from exc
        if error.kind is not Kind.CONTENT:
            raise exc
        return error


def _hashkey(request: dict[str, Any]) -> str | None:
    """The RESULTS hash key of a wire-format Put/DeleteRequest (unique per flush)."""
    item = request.get("PutRequest", {}).get("Item") or request.get("DeleteRequest", {}).get("Key")
    return (item or {}).get(RESULTS_HASH_KEY, {}).get("S")
