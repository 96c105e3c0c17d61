"""Fault injection for sinks, loaders and sources, to test outage handling without a network.

Each wrapper delegates to a real component and, by plan, raises instead, rejects records,
or sleeps. They also record what happened (calls, identities made durable, acks and
nacks), so a test can check that nothing was lost or acknowledged too early::

    from igata_core.builtins.files import FilesSource, FileLoader
    from igata_core.builtins.sinks import JsonlSink
    from igata_core.testing import run_pipeline
    from igata_core.testing.faults import FaultySink, FaultySource

    source = FaultySource(FilesSource({"inputs": [str(images)]}))
    sink = FaultySink(JsonlSink({"path": str(out)}), fail_flush_times=2)
    result = run_pipeline(source, sink, MyPredictor)
    assert result.exit_code == 0 and sink.flush_calls == 3
    assert len(source.acked) == n and not source.nacked

Loaders are created by the engine from a class, so a :class:`FaultyLoader` is handed over
as a class with :meth:`FaultyLoader.as_class` and :func:`registry_with`.

Call numbers are 1-based and count every call of that method on this wrapper.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from igata_core.components import (
    RECORD_ID_KEY,
    Component,
    Envelope,
    ErrorOutcome,
    Loaded,
    Loader,
    Rejection,
    ServiceUnavailable,
    Sink,
    Source,
)

#: ``fail_*_times`` value: fail every call.
FOREVER = math.inf

#: ``exc`` may be an exception instance, an exception class (called with a message), or a
#: callable ``(operation, call_number) -> exception``.
ExceptionSpec = BaseException | type[BaseException] | Callable[[str, int], BaseException]


class InjectedFault(ConnectionError):
    """What a wrapper raises by default: looks like a transient outage of the store."""


def _calls(spec: int | Iterable[int] | None) -> frozenset[int]:
    if spec is None:
        return frozenset()
    if isinstance(spec, int):
        return frozenset({spec})
    return frozenset(spec)


def make_exception(
    exc: ExceptionSpec | None,
    operation: str,
    what: str,
    call: int,
    default: type[BaseException],
    message: str = "",
) -> BaseException:
    """The exception ``exc`` describes for call number ``call`` of ``what.operation``."""
    message = message or f"injected fault: {what}.{operation} call {call} fails"
    if exc is None:
        return default(message)
    if isinstance(exc, BaseException):
        return exc
    if isinstance(exc, type):
        return exc(message)
    return exc(operation, call)


class _Plan:
    """When one operation fails: on listed call numbers, or on the first ``times`` calls."""

    def __init__(
        self,
        operation: str,
        owner: str,
        on: int | Iterable[int] | None,
        times: float,
        exc: ExceptionSpec | None,
    ):
        if times < 0:
            raise ValueError(f"fail_{operation}_times must be >= 0 (or FOREVER), got {times}")
        self.operation = operation
        self.owner = owner
        self.on = _calls(on)
        self.times = times
        self.exc = exc
        self.calls = 0

    def check(self) -> None:
        """Count a call; raise the planned exception if this call is to fail."""
        self.calls += 1
        if self.calls in self.on or self.calls <= self.times:
            raise make_exception(self.exc, self.operation, self.owner, self.calls, InjectedFault)


class FaultySink(Sink):
    """A sink that fails, rejects or slows down by plan, delegating to ``inner``.

    * ``fail_put_on`` / ``fail_put_times``: these ``put_records`` calls (call numbers), or
      the first N calls, raise before the records reach ``inner`` (the store refused them).
    * ``fail_flush_on`` / ``fail_flush_times``: these ``flush`` calls, or the first N
      (:data:`FOREVER` for every one), raise before ``inner.flush()``: what was put stays
      buffered in ``inner``, as the sink contract requires.
    * ``fail_close_times``: the first N ``close`` calls raise before ``inner.close()``.
    * ``reject``: identities (``igata_id``) that ``put_records`` returns as
      :class:`Rejection` instead of writing (a record the store cannot hold).
    * ``exc``: what to raise (default :class:`InjectedFault`).
    * ``slow``: seconds every ``put_records`` and ``flush`` sleeps first (a slow store).

    Recorded: ``put_calls``, ``flush_calls``, ``close_calls``, ``failures`` (operation and
    call number of each injected fault), ``pending`` (identities put since the last
    successful flush) and ``durable`` (identities, in order, of the records put before a
    successful flush, i.e. made durable; a redelivered identity appears once per flush
    that covered it).
    """

    name = "faulty"
    description = "Fault-injecting wrapper of another sink (tests)"

    def __init__(
        self,
        inner: Sink,
        *,
        fail_put_on: int | Iterable[int] | None = None,
        fail_put_times: float = 0,
        fail_flush_on: int | Iterable[int] | None = None,
        fail_flush_times: float = 0,
        fail_close_times: float = 0,
        reject: Iterable[str] = (),
        exc: ExceptionSpec | None = None,
        slow: float = 0.0,
    ):
        super().__init__(dict(inner.opts), inner.context)
        self.inner = inner
        self.name = f"faulty({inner.name})"  # type: ignore[misc]
        self._put = _Plan("put_records", self.name, fail_put_on, fail_put_times, exc)
        self._flush = _Plan("flush", self.name, fail_flush_on, fail_flush_times, exc)
        self._close = _Plan("close", self.name, None, fail_close_times, exc)
        self._reject = frozenset(reject)
        self._slow = slow
        self._lock = threading.Lock()
        self.failures: list[tuple[str, int]] = []
        self.pending: list[str] = []
        self.durable: list[str] = []

    @property
    def put_calls(self) -> int:
        return self._put.calls

    @property
    def flush_calls(self) -> int:
        return self._flush.calls

    @property
    def close_calls(self) -> int:
        return self._close.calls

    def _run(self, plan: _Plan) -> None:
        try:
            plan.check()
        except BaseException:
            self.failures.append((plan.operation, plan.calls))
            raise

    def open(self) -> None:
        self.inner.open()

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        if self._slow:
            time.sleep(self._slow)
        with self._lock:
            self._run(self._put)
        rejections = []
        passed: list[dict[str, Any]] = []
        positions: list[int] = []
        for index, record in enumerate(records):
            if record.get(RECORD_ID_KEY) in self._reject:
                rejections.append(
                    Rejection(index, f"injected rejection of {record.get(RECORD_ID_KEY)}")
                )
            else:
                passed.append(record)
                positions.append(index)
        # The inner sink's rejections index into ``passed``; map them back to ``records``.
        for rejection in self.inner.put_records(passed) or ():
            rejections.append(
                Rejection(positions[rejection.index], rejection.message, rejection.error_type)
            )
        refused = {r.index for r in rejections}
        with self._lock:
            self.pending.extend(
                str(records[i].get(RECORD_ID_KEY)) for i in positions if i not in refused
            )
        return sorted(rejections, key=lambda r: r.index)

    def put_errors(self, outcomes: Sequence[ErrorOutcome]) -> None:
        self.inner.put_errors(outcomes)

    def flush(self) -> None:
        if self._slow:
            time.sleep(self._slow)
        with self._lock:
            self._run(self._flush)
        self.inner.flush()
        with self._lock:
            self.durable.extend(self.pending)
            self.pending = []

    def close(self) -> None:
        with self._lock:
            self._run(self._close)
        self.inner.close()


class FaultyLoader(Loader):
    """A loader that fails or slows down by plan, delegating to ``inner``.

    * ``fail_on`` / ``fail_times``: these ``load`` calls (call numbers across all URIs), or
      the first N, raise ``exc`` (default :class:`InjectedFault`; pass
      :class:`~igata_core.components.RecordError` for a record-level failure).
    * ``fail_uris``: URIs (or, with ``fail_uri_times``, the first N loads of each of them)
      that raise ``exc``: a transient failure that a retry would get past.
    * ``slow``: seconds every ``load`` sleeps first (a slow store).

    Recorded: ``calls`` (URIs, in call order) and ``failures`` (URIs whose load raised).
    The engine builds loaders from classes: hand it :meth:`as_class`, e.g. with
    ``run_pipeline(..., registry=registry_with(faulty.as_class()))``.
    """

    name = "faulty"
    description = "Fault-injecting wrapper of another loader (tests)"

    def __init__(
        self,
        inner: Loader,
        *,
        fail_on: int | Iterable[int] | None = None,
        fail_times: float = 0,
        fail_uris: Iterable[str] = (),
        fail_uri_times: float = FOREVER,
        exc: ExceptionSpec | None = None,
        slow: float = 0.0,
    ):
        super().__init__(dict(inner.opts), inner.context)
        self.inner = inner
        self.name = f"faulty({inner.name})"  # type: ignore[misc]
        self.schemes = inner.schemes  # type: ignore[misc]
        self._plan = _Plan("load", self.name, fail_on, fail_times, exc)
        self._fail_uris = frozenset(fail_uris)
        self._fail_uri_times = fail_uri_times
        self._per_uri: dict[str, int] = {}
        self._exc = exc
        self._slow = slow
        self._lock = threading.Lock()
        self.calls: list[str] = []
        self.failures: list[str] = []

    def load(self, uri: str) -> Loaded:
        if self._slow:
            time.sleep(self._slow)
        with self._lock:
            self.calls.append(uri)
            try:
                self._plan.check()
                if uri in self._fail_uris:
                    count = self._per_uri[uri] = self._per_uri.get(uri, 0) + 1
                    if count <= self._fail_uri_times:
                        raise make_exception(
                            self._exc, "load", f"{self.name}({uri})", count, InjectedFault
                        )
            except BaseException:
                self.failures.append(uri)
                raise
        return self.inner.load(uri)

    def close(self) -> None:
        self.inner.close()

    def as_class(self) -> type[Loader]:
        """A loader class for the engine's registry whose instances all use this wrapper."""
        wrapper = self

        class _Delegate(Loader):
            name = wrapper.inner.name
            schemes = wrapper.inner.schemes
            description = f"{wrapper.name} (tests)"

            def load(self, uri: str) -> Loaded:
                return wrapper.load(uri)

            def close(self) -> None:
                wrapper.close()

        return _Delegate


class FaultySource(Source):
    """A source that records acks and nacks and can fail by plan, delegating to ``inner``.

    * ``fail_after``: after yielding this many envelopes, ``envelopes()`` raises ``exc``
      (default :class:`~igata_core.components.ServiceUnavailable`: the queue went away).
    * ``fail_ack_times``: the first N ``ack`` calls raise ``exc`` (default
      :class:`InjectedFault`) before reaching ``inner``.

    Recorded: ``yielded``, ``acked`` and ``nacked`` (envelope refs, in order).
    """

    name = "faulty"
    description = "Fault-injecting, ack-recording wrapper of another source (tests)"

    def __init__(
        self,
        inner: Source,
        *,
        fail_after: int | None = None,
        fail_ack_times: float = 0,
        exc: ExceptionSpec | None = None,
    ):
        super().__init__(dict(inner.opts), inner.context)
        self.inner = inner
        self.name = f"faulty({inner.name})"  # type: ignore[misc]
        self.finite = inner.finite  # type: ignore[misc]
        self._fail_after = fail_after
        self._exc = exc
        self._ack = _Plan("ack", self.name, None, fail_ack_times, exc)
        self._lock = threading.Lock()
        self.yielded: list[str] = []
        self.acked: list[str] = []
        self.nacked: list[str] = []

    def open(self) -> None:
        self.inner.open()

    def envelopes(self) -> Iterator[Envelope]:
        for envelope in self.inner.envelopes():
            if self._fail_after is not None and len(self.yielded) >= self._fail_after:
                raise self._source_failure()
            with self._lock:
                self.yielded.append(envelope.ref)
            yield envelope
        if self._fail_after is not None and len(self.yielded) >= self._fail_after:
            raise self._source_failure()

    def _source_failure(self) -> BaseException:
        count = len(self.yielded)
        message = f"injected fault: {self.name} fails after {count} envelope(s)"
        return make_exception(
            self._exc, "envelopes", self.name, count + 1, ServiceUnavailable, message
        )

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        with self._lock:
            self._ack.check()
        self.inner.ack(envelopes)
        with self._lock:
            self.acked.extend(e.ref for e in envelopes)

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        self.inner.nack(envelopes)
        with self._lock:
            self.nacked.extend(e.ref for e in envelopes)

    def stop(self) -> None:
        self.inner.stop()

    def total(self) -> int | None:
        return self.inner.total()

    def close(self) -> None:
        self.inner.close()


def registry_with(*components: type[Component], entry_points: bool = False) -> Any:
    """A registry (built-ins, plus entry points if asked) where ``components`` replace
    those of the same name (or, for loaders, the same schemes).

    For ``run_pipeline(..., registry=...)``: e.g. a :meth:`FaultyLoader.as_class` that
    takes over the ``file`` scheme from the built-in file loader.
    """
    from igata_core.plugins import Registration, build_registry

    registry = build_registry(entry_points=entry_points)
    for component in components:
        keys: tuple[str, ...]
        if issubclass(component, Loader):
            kind, keys = "loader", component.schemes
        elif issubclass(component, (Source, Sink)):
            kind = "source" if issubclass(component, Source) else "sink"
            keys = (component.name, *component.aliases)
        else:
            raise TypeError(f"registry_with: {component!r} is not a source, sink or loader")
        # The registry keeps clashes as errors; a test replaces a component on purpose.
        table: Any = registry.table(kind)
        for key in keys:
            table[key] = Registration(kind, component.name, component, "tests")
    return registry
