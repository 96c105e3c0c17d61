"""The pipeline engine: source -> load/decode pool -> predictor (batches) -> sink -> ack.

Threads:

* the *producer* pulls envelopes from the source and submits their items to load threads
  that load and decode them; it blocks when the prefetch window is full, so memory is
  bounded by the window and not by the size of the input. When the source is finite and
  its loads are fast (small local files: the load gate has measured that one thread is
  enough), the producer loads its items itself, a batch at a time, instead of handing
  them over: one thread fewer wanting the interpreter lock;
* the *main* thread (the one calling :meth:`Pipeline.run`) runs the predictor in batches,
  so SIGALRM-based predict timeouts work;
* the *writer* buffers results and error outcomes, calls ``put_records``/``put_errors``
  and ``flush`` by the flush policy, and then acks or nacks each envelope whose records
  are all resolved.

Delivery semantics are those of DESIGN.md: ack only after flush; nack after the error
outcomes are flushed; a failing flush is retried with backoff within a budget while no
new input is pulled, and exhausting it stops the run (exit code 3) with nothing acked or
nacked, so the source redelivers. A fatal error (a ``BaseException`` that is not an
``Exception``, such as ``SystemExit`` from user code) on any thread stops intake at once:
what was already flushed stays settled, nothing unwritten is acked, the envelopes still
held are released to the source (SQS: visible again at once) and the run ends with exit
code 4.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from igata_core.components import (
    RECORD_ID_KEY,
    RECORD_INPUT_KEY,
    ConfigurationError,
    Envelope,
    ErrorOutcome,
    Item,
    Rejection,
    ServiceUnavailable,
    Sink,
    Source,
)
from igata_core.inputs import FETCH_RUN_BYTES, InputReader, StageError
from igata_core.metrics import Health, Metrics
from igata_core.predictor import (
    PredictorBase,
    call_batch,
    has_batch,
    postprocess_caller,
    time_limit,
)
from igata_core.serialize import dumps

if TYPE_CHECKING:
    from igata_core.decode_processes import ProcessReader

log = logging.getLogger("igata.pipeline")

EXIT_OK = 0
EXIT_FAILED_RECORDS = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_FATAL = 4


@dataclass
class Settings:
    """Engine settings (``igata run`` options of the same names)."""

    concurrency: int = 8
    batch_size: int = 16
    max_batch_wait: float = 0.05
    chunk_size: int = 15
    flush_interval: float = 1.0
    sink_retry_budget: float = 60.0
    load_retry_budget: float = 60.0
    predict_timeout: float | None = None
    prefetch: int = 0  # 0: twice the larger of concurrency and batch size
    errors_path: str | None = None
    decode_processes: int = 0  # 0: load and decode in the load threads

    def window(self) -> int:
        return self.prefetch or 2 * max(self.concurrency, self.batch_size)


@dataclass
class RunSummary:
    """What a run did; ``exit_code`` follows DESIGN.md."""

    envelopes: int = 0
    read: int = 0
    succeeded: int = 0
    failed: int = 0
    written: int = 0
    acked: int = 0
    nacked: int = 0
    seconds: float = 0.0
    exit_code: int = EXIT_OK
    reason: str = ""
    interrupted: bool = False
    failed_by_stage: dict[str, int] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "envelopes": self.envelopes,
            "read": self.read,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "written": self.written,
            "acked": self.acked,
            "nacked": self.nacked,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 2),
            "exit_code": self.exit_code,
            "reason": self.reason,
            "interrupted": self.interrupted,
            "failed_by_stage": dict(self.failed_by_stage),
        }


# The engine's own records of an item on its way: plain classes with slots, not dataclasses
# (each dataclass costs about 0.4 ms at import, paid by every start-up, and slots make
# the per-record objects cheaper to build and read).


class _Ticket:
    """Ack bookkeeping of one envelope: records not yet resolved, and whether any failed."""

    __slots__ = ("envelope", "failed", "pending")

    def __init__(self, envelope: Envelope, pending: int) -> None:
        self.envelope = envelope
        self.pending = pending
        self.failed = False


class _Work:
    """An item on its way through the engine."""

    __slots__ = ("input", "item", "meta", "ticket")

    def __init__(self, ticket: _Ticket, item: Item) -> None:
        self.ticket = ticket
        self.item = item
        self.input: Any = None
        self.meta: dict[str, Any] = {}


class _Result:
    __slots__ = ("record", "ticket")

    def __init__(self, ticket: _Ticket, record: dict[str, Any]) -> None:
        self.ticket = ticket
        self.record = record


class _Failure:
    __slots__ = ("outcome", "ticket")

    def __init__(self, ticket: _Ticket, outcome: ErrorOutcome) -> None:
        self.ticket = ticket
        self.outcome = outcome


_DONE = object()
_RECORD_KEYS = (RECORD_ID_KEY, RECORD_INPUT_KEY)


class _Aborted(Exception):
    """Internal: the run is being aborted (exit code 3)."""


class _Handoff:
    """Entries passed between threads; a consumer sleeps until there are enough for it.

    ``queue.Queue`` wakes a sleeping consumer on every put. A thread wake-up costs tens of
    microseconds on a small machine, more than the engine's own work on a record, so here a
    consumer says how many entries it waits for and is woken only when that many are there
    (or by :meth:`wake`): a stage wakes about once per run of records, not once per record.
    Every consumer of one hand-off waits for the same count.
    """

    def __init__(self) -> None:
        self._entries: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._sleepers = 0
        self._wanted = 1  # entries the sleeping consumers wait for
        self._woken = False  # a wake() not yet seen by a take(): the next take does not wait

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entries: Iterable[Any]) -> None:
        with self._cond:
            self._entries.extend(entries)
            if self._sleepers and len(self._entries) >= self._wanted:
                self._cond.notify(self._sleepers)

    def wake(self) -> None:
        """Wake every consumer now, whatever it waits for (the input ended, a stop).

        Sticky: a consumer that was not yet asleep does not wait in its next take either,
        so the wake-up cannot fall between its last look and its wait."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._entries.clear()

    def take(self, most: int, least: int = 1, timeout: float = 0.0, share: int = 1) -> list[Any]:
        """Up to ``most`` entries, after waiting up to ``timeout`` s for ``least`` of them.

        Returns fewer (maybe none) after the timeout or a :meth:`wake`. ``share``: the
        consumers that split the entries; one takes at most its share, so that a run of
        slow loads (network) is still spread over every thread.
        """
        with self._cond:
            if len(self._entries) < least and timeout > 0 and not self._woken:
                self._wanted = least
                self._sleepers += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._sleepers -= 1
            self._woken = False
            count = min(most, max(1, len(self._entries) // share), len(self._entries))
            return [self._entries.popleft() for _ in range(count)]


class _LoadGate:
    """How many load threads may load at once, tuned by the load rate it measures.

    Threads that all want the GIL hand it over at every call that releases it (open, read,
    close, a decode, an array copy), and each hand-over is a thread switch: with fast loads
    (small local files) one thread loading alone is several times faster than eight taking
    turns. With slow loads (S3, large images decoded outside the GIL) more threads are
    faster. So the gate measures records loaded per second over windows of ``WINDOW``
    records and tries halving or doubling its limit, keeping a change only when loading did
    not get slower (going down) or got clearly faster (going up).
    """

    WINDOW = 64
    #: Windows to wait after a trial that failed before trying again; each further failure
    #: doubles the wait, up to ``MAX_PAUSE``, so a worker that runs for days on the same
    #: kind of input does not keep paying for trials that fail. A kept trial starts over.
    PAUSE = 16
    MAX_PAUSE = 256
    #: Loads that cost less processor time than this (seconds each, median of the first
    #: window; thread time, which waiting for the lock or the network does not count)
    #: gain nothing from other threads: the first trial goes straight to one thread.
    FAST_LOAD = 300e-6
    #: Loads after which the first window ends early when they were fast: until then every
    #: thread loads, and with small files each of their calls is a thread switch.
    FIRST_LOADS = 16

    def __init__(self, most: int, least: int = 1, judge_loads: bool = True) -> None:
        """``least``: the fewest threads to keep loading (decode processes want one run in
        flight each); ``judge_loads``: whether a load's thread time tells its cost (not
        when the work happens in decode processes)."""
        self.most = max(1, most)
        self.least = min(self.most, max(1, least))
        self.limit = self.most  # start as fast as possible for slow loads
        self._judge_loads = judge_loads
        self._active = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self._count = 0
        # The first window starts with the first load, not with the run's set-up.
        self._since: float | None = None
        self._trial: tuple[int, float] | None = None  # the limit before a trial, its rate
        self._down = True  # direction of the next trial
        self._pause = 0
        self._next_pause = self.PAUSE
        self._first: list[float] | None = []  # seconds per load in the first window
        self._fast = False  # the first window's loads gained nothing from other threads

    def enter(self, timeout: float) -> bool:
        """Take a place among the loading threads; False after ``timeout`` without one, or
        once the gate is closed."""
        with self._cond:
            free = self._cond.wait_for(lambda: self._active < self.limit or self._closed, timeout)
            if not free or self._closed:
                return False
            self._active += 1
            if self._since is None:
                self._since = time.monotonic()
            return True

    def close(self) -> None:
        """The run is over: threads waiting for a place give up at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active < self.limit:
                self._cond.notify()

    def inline(self) -> bool:
        """Loads are fast and one thread at a time loads: the thread that takes the input
        may as well load it."""
        return self._fast and self.limit == 1

    def over(self) -> bool:
        """The limit went down: this thread should give its place up."""
        return self._active > self.limit

    def loaded(self, count: int, seconds: float = 0.0) -> None:
        """``count`` records were loaded in ``seconds`` of the thread's processor time; at
        the end of a window, tune the limit."""
        with self._cond:
            if self._first is not None and count:
                self._first.append(seconds / count)
            self._count += count
            if self._count < self.WINDOW and not self._fast_so_far():
                return
            now = time.monotonic()
            rate = self._count / max(now - (self._since or now), 1e-6)
            self._count, self._since = 0, now
            limit = self.limit
            self._tune(rate)
            if self.limit > limit:  # waiting threads may now load (none otherwise)
                self._cond.notify(self.limit - limit)

    def _fast_so_far(self) -> bool:
        """In the first window, after ``FIRST_LOADS`` loads: they were fast."""
        return self._count >= self.FIRST_LOADS and self._fast_loads(self._first)

    def _fast_loads(self, first: list[float] | None) -> bool:
        """The first window's loads (``first``) gain nothing from other threads."""
        if not first or not self._judge_loads:
            return False
        import statistics  # here: once a run, and its import costs every start-up ~5 ms

        return statistics.median(first) < self.FAST_LOAD

    def _tune(self, rate: float) -> None:
        if self._trial is not None:
            before, before_rate = self._trial
            self._trial = None
            kept = rate >= before_rate * (0.9 if self.limit < before else 1.1)
            if not kept:
                self.limit = before
                self._down = not self._down
                self._pause = self._next_pause
                self._next_pause = min(2 * self._next_pause, self.MAX_PAUSE)
                return
            # Kept: the next step the same way starts now, measured against this window,
            # so the gate settles in half the windows.
            self._next_pause = self.PAUSE
        elif self._pause:
            self._pause -= 1
            return
        first, self._first = self._first, None
        if first is not None:
            self._fast = self._fast_loads(first)
        if self._down and self._fast_loads(first):
            new = self.least  # small local files: one thread alone, at once
        elif self._down:
            new = max(self.least, self.limit // 2)
        else:
            new = min(self.most, self.limit * 2)
        if new == self.limit:  # at a bound: try the other way after a pause
            self._down = not self._down
            self._pause = self._next_pause
            return
        self._trial = (self.limit, rate)
        self.limit = new


class Pipeline:
    def __init__(
        self,
        source: Source,
        sink: Sink,
        predictor: PredictorBase,
        reader: InputReader,
        settings: Settings | None = None,
        *,
        on_progress: Callable[[RunSummary], None] | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ):
        self.source = source
        self.sink = sink
        self.predictor = predictor
        self.reader = reader
        self.settings = settings or Settings()
        self.summary = RunSummary()
        self.outcomes: list[ErrorOutcome] = []
        self._on_progress = on_progress
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        # Envelopes taken and not yet acked or nacked, by id: released after a fatal error.
        self._held: dict[int, Envelope] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._sink_ok = threading.Event()
        self._sink_ok.set()
        # Cleared while loads fail because the input store is down: intake pauses.
        self._input_ok = threading.Event()
        self._input_ok.set()
        self._signal: int | None = None
        self._slots = threading.Semaphore(self.settings.window())
        # Items to load (producer -> load threads) and loaded items or their failures
        # (load threads -> predictor), each handed over in runs.
        self._work = _Handoff()
        self._ready = _Handoff()
        self._loads_closed = False
        self._loaders: list[threading.Thread] = []  # started by the producer as work waits
        self._most_loaders = self.settings.concurrency  # lowered when the system refuses one
        self._pending: list[_Work] = []  # taken, to be loaded by the producer itself
        self._finite_inline = source.finite and not self.settings.decode_processes
        processes = self.settings.decode_processes
        self._gate = _LoadGate(
            self.settings.concurrency, least=processes or 1, judge_loads=not processes
        )
        # Bounded, so a stuck sink holds the predictor, which holds the prefetch window.
        # Messages are batches (or single parse failures).
        self._out: queue.Queue[Any] = queue.Queue(maxsize=64)
        self._in_flight = 0  # items submitted to the pool and not yet handed to the writer
        self._producer_done = threading.Event()
        self._errors_file: IO[str] | None = None
        self._postprocess = postprocess_caller(predictor)
        self._batched = has_batch(predictor)
        self._processes: ProcessReader | None = None  # with --decode-processes

    # -- control -----------------------------------------------------------------------

    def stop(self, signum: int | None = None) -> None:
        """Graceful stop: read no more input, finish what is in flight, flush, ack.

        ``signum``: the signal that asked for it; a finite run stopped before its input was
        exhausted then exits with ``128 + signum``, as interrupted programs do.
        """
        if not self._stopping.is_set():
            self._stopping.set()
            self._signal = signum
            self.summary.interrupted = True
            self.health.set_ready(False, "stopping")
            try:
                self.source.stop()
            except Exception:
                log.exception("source %r: stop failed", self.source.name)

    def _fatal(self, exc: BaseException, where: str) -> None:
        """A fatal error (``SystemExit``, ``KeyboardInterrupt`` raised by code, not by a
        signal) in ``where``: stop intake and abort at once; :meth:`run` releases what is
        still held and exits with code 4."""
        reason = f"fatal error in {where}: {type(exc).__name__}: {exc}".rstrip(": ")
        with self._lock:
            if self.summary.exit_code != EXIT_FATAL:
                self.summary.exit_code = EXIT_FATAL
                self.summary.reason = reason
        self.health.set_alive(False, reason)
        self._fail_run(reason, abort=True, exit_code=EXIT_FATAL)

    def _fail_run(self, reason: str, *, abort: bool, exit_code: int = EXIT_UNAVAILABLE) -> None:
        """Stop with exit code 3 (a service unavailable) or 2 (a configuration error).

        ``abort`` (the sink is down): drop in-flight work unacknowledged at once. Otherwise
        (the source is down) finish in-flight work, flush and ack as in a graceful stop.
        """
        with self._lock:
            first = self.summary.exit_code not in (EXIT_UNAVAILABLE, EXIT_USAGE, EXIT_FATAL)
            if first:
                self.summary.exit_code = exit_code
                self.summary.reason = reason
            if abort:
                self._abort.set()
        log.error("%s", reason)
        self._stopping.set()
        self._sink_ok.set()  # wake a paused producer so it can see the stop
        self._input_ok.set()
        try:
            self.source.stop()
        except Exception:
            log.exception("source %r: stop failed", self.source.name)

    def _guarded(self, body: Callable[[], Any], what: str, fatal_in: str | None = None) -> bool:
        """Run ``body`` (the engine's own code) and return whether it returned true (or
        None). What it raises is fatal: an ``Exception`` is a bug in ``what`` (logged with
        its traceback), anything else a fatal error in ``fatal_in`` (default: ``what``).
        A thread that died quietly would leave the items it held, and the run, waiting."""
        try:
            return body() is not False
        except Exception as exc:
            log.error("%s failed", what, exc_info=True)
            self._fatal(exc, what)
        except BaseException as exc:  # fatal: stops the run
            self._fatal(exc, fatal_in or what)
        return False

    # -- the run -----------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Run to the end; the caller has called the predictor's ``setup()``."""
        started = time.monotonic()
        if self.settings.errors_path:
            try:
                # backslashreplace: a lone surrogate (from a JSON request) is written as its
                # JSON escape, so the line stays valid JSON with the same string in it.
                self._errors_file = open(  # noqa: SIM115
                    self.settings.errors_path, "w", encoding="utf-8", errors="backslashreplace"
                )
            except OSError as exc:
                # Before any input is read: a usage error, not a crash.
                self.summary.exit_code = EXIT_USAGE
                self.summary.reason = (
                    f"cannot write the errors file {self.settings.errors_path}: "
                    f"{exc.strerror or exc}"
                )
                log.error("%s", self.summary.reason)
                return self.summary
        if not self._start_processes() or not self._open_sink():
            # Before any input was taken: nothing to settle, and no line that reads as if
            # the run went on.
            self._close()
            self.summary.seconds = time.monotonic() - started
            return self.summary
        producer = threading.Thread(target=self._produce, name="igata-producer", daemon=True)
        writer = threading.Thread(target=self._write, name="igata-writer", daemon=True)
        writer.start()
        producer.start()
        self.health.watch_threads(
            lambda: writer.is_alive() and (producer.is_alive() or self._producer_done.is_set())
        )
        self.health.set_ready(True, "taking input")
        try:
            self._predict_loop()
        except BaseException as exc:  # SystemExit/KeyboardInterrupt from user code
            self._fatal(exc, f"predictor {type(self.predictor).__name__}")
        finally:
            self._stop_loaders(wait=not self._abort.is_set())
            self._put_out(_DONE, force=True)
            writer.join()
            producer.join(timeout=0 if self._abort.is_set() else None)
            if self._errors_file is not None:
                self._errors_file.close()
            # A fatal or a configuration error: every worker stops the same way, so what
            # this one held goes back at once rather than after its lease lapses.
            if self.summary.exit_code in (EXIT_FATAL, EXIT_USAGE):
                self._release_held()
            self._close()
        self.summary.seconds = time.monotonic() - started
        if self.summary.exit_code == EXIT_OK and self.summary.failed and self.source.finite:
            self.summary.exit_code = EXIT_FAILED_RECORDS
            self.summary.reason = f"{self.summary.failed} record(s) failed"
        if self._signal and self.source.finite and self.summary.exit_code <= EXIT_FAILED_RECORDS:
            self.summary.exit_code = 128 + self._signal
            self.summary.reason = "interrupted before the input was exhausted"
        return self.summary

    def _start_processes(self) -> bool:
        """Start the decode processes (``--decode-processes``); False when they cannot be."""
        if not self.settings.decode_processes:
            return True
        from igata_core.decode_processes import ProcessReader

        try:
            self._processes = ProcessReader(self.reader, self.settings.decode_processes)
        except Exception as exc:
            self._fail_run(f"--decode-processes: {exc}", abort=True, exit_code=EXIT_USAGE)
            return False
        return True

    def _open_sink(self) -> bool:
        """Open the sink before the source takes any input; False when it failed."""
        try:
            self.sink.open()
            return True
        except ConfigurationError as exc:
            self._fail_run(f"sink {self.sink.name!r} is misconfigured: {exc}", abort=True,
                           exit_code=EXIT_USAGE)  # fmt: skip
        except Exception as exc:
            self._fail_run(
                f"sink {self.sink.name!r} could not be opened: {type(exc).__name__}: {exc}; "
                "check that its service is reachable and run again",
                abort=True,
            )
        except BaseException as exc:  # fatal: stops the run
            self._fatal(exc, f"sink {self.sink.name!r}")
        return False

    def _release_held(self) -> None:
        """After a fatal error: hand every unsettled envelope back to the source at once, so
        that other workers take it now instead of after its lease lapses."""
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        if not held:
            return
        try:
            self.source.release(held)
        except Exception as exc:
            log.error(
                "source %r: releasing %d unsettled envelope(s) failed: %s: %s; they come back "
                "when their lease lapses", self.source.name, len(held), type(exc).__name__, exc,
            )  # fmt: skip
        else:
            log.warning("released %d unsettled envelope(s) to the source", len(held))

    def _close(self) -> None:
        if self._processes is not None:
            self._processes.close(wait=not self._abort.is_set())
        try:
            self.reader.close()
        except Exception as exc:
            log.error("closing the loaders failed: %s: %s", type(exc).__name__, exc)
        components: list[tuple[str, Source | Sink]] = [("source", self.source)]
        # After an abort the sink holds unflushed records: closing it could publish them
        # (a file renamed into place) although they were never acknowledged.
        if not self._abort.is_set():
            components.append(("sink", self.sink))
        for what, component in components:
            try:
                component.close()
            except Exception as exc:
                if what == "sink" and not self._abort.is_set():
                    self._fail_run(
                        f"sink {component.name!r} failed to close: {type(exc).__name__}: {exc}",
                        abort=False,
                    )
                else:
                    log.error(
                        "%s %r: close failed: %s: %s",
                        what, component.name, type(exc).__name__, exc,
                    )  # fmt: skip

    # -- producer thread -----------------------------------------------------------------

    def _produce(self) -> None:
        try:
            self.source.open()
            for envelope in self.source.envelopes():
                self._accept(envelope)
                if self._stopping.is_set():
                    break
                # A failing sink pauses intake; in-flight messages stay leased. (is_set()
                # first: Event.wait takes a lock even when the event is set.)
                while not (self._sink_ok.is_set() and self._input_ok.is_set()):
                    if self._abort.is_set():
                        return
                    if not self._sink_ok.is_set():
                        self._sink_ok.wait(0.5)
                    else:  # the input store is down: the load threads' retries see it back
                        self._abort.wait(0.05)
        except _Aborted:
            pass
        except ConfigurationError as exc:
            self._fail_run(f"source {self.source.name!r} is misconfigured: {exc}", abort=False,
                           exit_code=EXIT_USAGE)  # fmt: skip
        except ServiceUnavailable as exc:
            self._fail_run(f"source {self.source.name!r} unavailable: {exc}", abort=False)
        except Exception as exc:
            log.debug("source failure", exc_info=True)
            self._fail_run(
                f"source {self.source.name!r} failed: {type(exc).__name__}: {exc}", abort=False
            )
        except BaseException as exc:  # fatal: stops the run
            self._fatal(exc, f"source {self.source.name!r}")
        finally:
            if self._pending and not self._abort.is_set():
                with contextlib.suppress(_Aborted):
                    self._load_pending()
            self._producer_done.set()
            self._ready.wake()  # the predictor loop need not wait for a full batch any more

    def _accept(self, envelope: Envelope) -> None:
        items = envelope.items
        # An unparsable or empty envelope is settled by the one entry sent for it below.
        ticket = _Ticket(envelope, pending=len(items) if items and not envelope.error else 1)
        with self._lock:
            self.summary.envelopes += 1
            self.summary.read += 1 if envelope.error else len(items)
            self._held[id(envelope)] = envelope
            self.metrics.in_flight(len(self._held))
        self.metrics.records_read(1 if envelope.error else len(items))
        if envelope.enqueued_at is not None:
            self.metrics.receive_lag(time.time() - envelope.enqueued_at)
        if envelope.error:
            self._put_out(self._outcome(ticket, None, "parse", envelope.error))
            return
        if not items:
            log.warning("%s: holds no requests; acknowledged", envelope.ref)
            self._put_out(_Result(ticket, {}))
            return
        works: list[_Work] = []
        for item in items:
            if item.error:
                self._put_out(self._outcome(ticket, item, "parse", item.error))
                continue
            if not self._slots.acquire(blocking=False):
                # The window is full: hand over what this envelope has so far, then wait.
                self._submit(works)
                self._load_pending()
                works = []
                while not self._slots.acquire(timeout=0.5):
                    if self._abort.is_set():
                        raise _Aborted
            works.append(_Work(ticket, item))
        self._submit(works)

    def _submit(self, works: list[_Work]) -> None:
        """Hand items to the load threads in one go (one wake-up at most), or keep them to
        load here in runs (see _inline)."""
        if not works:
            return
        with self._lock:
            self._in_flight += len(works)
        if self._inline():
            self._pending += works
            if len(self._pending) >= self.settings.batch_size:
                self._load_pending()
            return
        self._load_pending()
        self._work.put(works)
        self._add_loaders()

    def _inline(self) -> bool:
        """Whether the producer loads what it takes itself: a finite source whose loads are
        fast, with one thread loading at a time (the gate's measure), in this thread."""
        return self._finite_inline and self._gate.inline()

    def _load_pending(self) -> None:
        """Load the items kept by _submit, here; raises _Aborted when the run is aborted."""
        if self._pending:
            run, self._pending = self._pending, []
            started = time.thread_time()
            # Not the source's failure if it raises (which would leave the run waiting for
            # these items): the engine's.
            if not self._guarded(lambda: self._load_run(run), "the engine's producer (loading)"):
                raise _Aborted
            self._gate.loaded(len(run), time.thread_time() - started)

    def _add_loaders(self) -> None:
        """Start another load thread while more items wait than threads were started, up to
        ``concurrency``: starting one costs a thread switch or two, and fast loads (small
        local files) never need more than one or two of them."""
        while len(self._loaders) < self._most_loaders and len(self._work) > len(self._loaders):
            # Daemon threads: a load stuck in a loader must not keep an aborted run alive.
            loader = threading.Thread(
                target=self._load_worker, name=f"igata-load_{len(self._loaders)}", daemon=True
            )
            try:
                loader.start()
            except RuntimeError as exc:  # "can't start new thread": a process or memory limit
                if not self._loaders:
                    # Nothing would ever load what waits: stop now, unsettled (redelivered).
                    self._fail_run(f"cannot start a load thread: {exc}", abort=True)
                    raise _Aborted from exc
                self._most_loaders = len(self._loaders)
                log.warning(
                    "cannot start more load threads (%s); going on with %d", exc, len(self._loaders)
                )
                return
            self._loaders.append(loader)

    # -- load threads ----------------------------------------------------------------------

    def _load_worker(self) -> None:
        # A loader's errors are the record's; what escapes is a bug or a fatal error.
        self._guarded(self._load_loop, "the engine's load thread")

    def _load_loop(self) -> None:
        """Load runs of items and hand each run's results to the predictor in one go.

        A run is at most this thread's share of the items waiting (so slow loads are still
        spread over every thread); a run of fast loads (local files) costs one wake-up of
        the predictor instead of one per record.
        """
        most = max(1, self.settings.batch_size)
        gate = self._gate
        while not self._loads_closed:
            if not gate.enter(timeout=0.5):
                continue
            try:
                # Keep the place while there is work, so loading alone costs no switches.
                while not self._loads_closed and not gate.over():
                    run = self._work.take(most, timeout=0.5, share=gate.limit)
                    if not run:
                        break
                    started = time.thread_time()
                    if not self._load_run(run):
                        return
                    gate.loaded(len(run), time.thread_time() - started)
            finally:
                gate.leave()

    def _load_run(self, run: list[_Work]) -> bool:
        """Load ``run`` and hand the results over; False when the run was aborted."""
        loaded: list[_Work | _Failure] = []
        if self._processes is not None:
            # The whole run in one round trip to a decode process.
            try:
                firsts = self._processes.read_many([work.item for work in run])
            except Exception as exc:  # not the items' fault, but never lose them
                firsts = [_raises(StageError("load", exc))] * len(run)
            except BaseException as exc:  # fatal in a decode process (SystemExit...)
                self._fatal(exc, f"decoding {_input_ref(run[0].ticket.envelope, run[0].item)}")
                return False
            if len(firsts) != len(run):  # never lose an item: a hang, not a failure
                raise RuntimeError(f"decode processes gave {len(firsts)} of {len(run)} items")
            if not self._decode_run(run, firsts, loaded):
                return False
        else:
            # Load items, then decode them (see InputReader.fetch for why), in runs that
            # stop loading once FETCH_RUN_BYTES of loaded data wait to be decoded.
            start = 0
            while start < len(run):
                fetched = self._fetch_run(run, start)
                if fetched is None or not self._decode_run(run[start:], fetched, loaded):
                    return False
                start += len(fetched)
        if loaded:
            self._ready.put(loaded)
        return True

    def _fetch_run(self, run: list[_Work], start: int) -> list[Callable[[], Any]] | None:
        """Load items of ``run`` from ``start`` on, while less than FETCH_RUN_BYTES wait to
        be decoded; for each, what decodes it or raises its failure. None when the run is
        stopped instead."""
        fetched: list[Callable[[], Any]] = []
        held = 0
        for work in run[start:]:
            if self._abort.is_set():
                return None
            try:
                one = self.reader.fetch(work.item)
            except StageError as exc:
                fetched.append(_raises(exc))
                if isinstance(exc.cause, ServiceUnavailable | ConfigurationError):
                    # The store is down (or refuses us): this item's retries come first,
                    # before every other item of the run waits out its own failure.
                    break
            except Exception as exc:
                fetched.append(_raises(StageError("load", exc)))
            except BaseException as exc:  # fatal: stops the run
                self._fatal(exc, f"loading {_input_ref(work.ticket.envelope, work.item)}")
                return None
            else:
                fetched.append(one)
                held += one.size
                if held >= FETCH_RUN_BYTES:
                    break
        return fetched

    def _decode_run(
        self, run: list[_Work], firsts: list[Callable[[], Any]], loaded: list[_Work | _Failure]
    ) -> bool:
        """Decode (or, for decode processes, unpack) ``firsts``, the outcomes of reading
        the first items of ``run``, onto ``loaded``; False when the run was aborted."""
        for work, first in zip(run, firsts, strict=False):
            if self._abort.is_set():
                return False
            entry = self._load(work, first)
            if entry is not None:
                loaded.append(entry)
        return True

    def _stop_loaders(self, wait: bool) -> None:
        """End the load threads; items not yet loaded are dropped (the run is over)."""
        self._loads_closed = True
        self._gate.close()
        self._work.clear()
        self._work.wake()
        if wait:
            for loader in list(self._loaders):
                loader.join()

    def _load(
        self, work: _Work, first: Callable[[], tuple[Any, dict[str, Any]]] | None = None
    ) -> _Work | _Failure | None:
        """The loaded item, or its failure; None when the run stops instead.

        ``first``: the outcome of a read already done (in a decode process), used for the
        first attempt; retries read again.
        """
        delay = 0.2
        deadline: float | None = None
        read = self._processes.read if self._processes is not None else self.reader.read
        while True:
            entry: _Work | _Failure
            try:
                if first is not None:
                    outcome, first = first, None
                    work.input, work.meta = outcome()
                else:
                    work.input, work.meta = read(work.item)
                entry = work
            except StageError as exc:
                if isinstance(exc.cause, ConfigurationError):
                    self._fail_run(f"input misconfigured: {exc.cause}", abort=True,
                                   exit_code=EXIT_USAGE)  # fmt: skip
                    return None
                if not isinstance(exc.cause, ServiceUnavailable):
                    entry = self._outcome(work.ticket, work.item, exc.stage, exc.cause, work)
                else:
                    # The input store is down, not this record: failing it would burn its
                    # receive count. Pause intake and retry; past the budget, stop unsettled.
                    now = time.monotonic()
                    deadline = deadline or now + self.settings.load_retry_budget
                    if now >= deadline or self._abort.is_set():
                        self._fail_run(
                            f"input unavailable for {self.settings.load_retry_budget:g} s: "
                            f"{exc.cause}; stopping without settling in-flight input "
                            "(it will be redelivered)",
                            abort=True,
                        )
                        return None
                    if self._input_ok.is_set():
                        log.warning(
                            "input unavailable (%s); pausing intake and retrying", exc.cause
                        )
                    self._input_ok.clear()
                    if self._abort.wait(min(delay, max(0.0, deadline - now))):
                        return None
                    # Short cap: the store coming back should be noticed within seconds.
                    delay = min(delay * 2, 2.0)
                    continue
            except Exception as exc:
                entry = self._outcome(work.ticket, work.item, "load", exc, work)
            except BaseException as exc:  # fatal: stops the run
                self._fatal(exc, f"loading {_input_ref(work.ticket.envelope, work.item)}")
                return None
            # The store answered, with the item or with this record's error: if intake was
            # paused for an outage it resumes (else it would wait for a load that never comes).
            if not self._input_ok.is_set():
                self._input_ok.set()
            return entry

    # -- main thread: the predictor --------------------------------------------------------

    def _predict_loop(self) -> None:
        self.predictor.set_predict_timeout(
            self.settings.predict_timeout or getattr(self.predictor, "predict_timeout", None)
        )
        while True:
            self.health.beat()
            if self._abort.is_set():
                return
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run_batch(batch)

    def _next_batch(self) -> list[_Work] | None:
        """Up to ``batch_size`` loaded items; ``[]`` on a timeout; None when all is done.

        Waits up to 0.2 s for a first item (then the caller beats and checks for a stop),
        then up to ``max_batch_wait`` for the batch to fill, sleeping until it can fill
        rather than waking for each item.
        """
        size = self.settings.batch_size
        if self._finished():
            return None
        # No lost wake-up: the producer's end is a sticky wake(), and every item in flight
        # still comes through the hand-off.
        batch = self._take_loaded(size, 1, 0.2)
        if not batch:
            return None if self._finished() else []
        deadline = time.monotonic() + self.settings.max_batch_wait
        while len(batch) < size and not self._abort.is_set():
            wanted = size - len(batch)
            if self._producer_done.is_set():
                # No new input: wait only for what is still loaded or loading.
                wanted = min(wanted, self._in_flight - len(batch))
                if wanted <= 0:
                    break
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            batch += self._take_loaded(size - len(batch), wanted, timeout)
        return batch

    def _take_loaded(self, most: int, least: int, timeout: float) -> list[_Work]:
        """Loaded items from the load threads; their failures go straight to the writer."""
        works: list[_Work] = []
        failures: list[_Result | _Failure] = []
        for entry in self._ready.take(most, least, timeout):
            (failures if isinstance(entry, _Failure) else works).append(entry)
        self._handed_over(failures)
        return works

    def _finished(self) -> bool:
        with self._lock:
            return self._producer_done.is_set() and self._in_flight == 0 and not self._ready

    def _handed_over(self, entries: list[_Result | _Failure]) -> None:
        """Items leave the predictor stage: free their prefetch slots, pass them on.

        A whole batch goes to the writer in one hand-over: each thread hand-over costs
        more than the engine's own work on a record.
        """
        if not entries:
            return
        self._slots.release(len(entries))
        with self._lock:
            self._in_flight -= len(entries)
        self._put_out(entries)

    def _run_batch(self, batch: list[_Work]) -> None:
        out: list[_Result | _Failure] = []
        prepared: list[_Work] = []
        for work in batch:
            try:
                work.input = self.predictor.preprocess_input(work.input, work.meta)
                prepared.append(work)
            except Exception as exc:
                out.append(self._outcome(work.ticket, work.item, "preprocess", exc, work))
        if prepared:
            started = time.monotonic()
            predictions = self._predict(prepared)
            self.metrics.batch(len(prepared), time.monotonic() - started)
            for work, (ok, value) in zip(prepared, predictions, strict=True):
                if not ok:
                    out.append(self._outcome(work.ticket, work.item, "predict", value, work))
                    continue
                try:
                    result = self._postprocess(value, work.meta)
                except Exception as exc:
                    out.append(self._outcome(work.ticket, work.item, "postprocess", exc, work))
                    continue
                out.append(_Result(work.ticket, self._record(work, result)))
        self._handed_over(out)

    def _predict(self, batch: list[_Work]) -> list[tuple[bool, Any]]:
        """(ok, prediction or exception) per work item, isolating failures per record."""
        inputs = [work.input for work in batch]
        metas = [work.meta for work in batch]
        timeout = getattr(self.predictor, "predict_timeout", None)
        if self._batched:
            try:
                with time_limit(timeout, "predict_batch"):
                    return [(True, r) for r in call_batch(self.predictor, inputs, metas)]
            except Exception as exc:
                if len(batch) == 1:
                    return [(False, exc)]
                log.warning(
                    "predict_batch failed for a batch of %d (%s: %s); retrying record by record",
                    len(batch), type(exc).__name__, exc,
                )  # fmt: skip
            results: list[tuple[bool, Any]] = []
            for one_input, meta in zip(inputs, metas, strict=True):
                try:
                    with time_limit(timeout, "predict_batch"):
                        results.append((True, call_batch(self.predictor, [one_input], [meta])[0]))
                except Exception as exc:
                    results.append((False, exc))
            return results
        results = []
        for one_input, meta in zip(inputs, metas, strict=True):
            try:
                with time_limit(timeout, "predict"):
                    results.append((True, self.predictor.predict(one_input, meta)))
            except Exception as exc:
                results.append((False, exc))
        return results

    def _record(self, work: _Work, prediction: Any) -> dict[str, Any]:
        if prediction is None:
            prediction = {}
        elif not isinstance(prediction, dict):
            prediction = {"result": prediction}
        return {
            **prediction,
            **work.item.meta,
            **{k: v for k, v in work.meta.items() if k not in prediction},
            RECORD_ID_KEY: work.item.identity,
            RECORD_INPUT_KEY: _input_ref(work.ticket.envelope, work.item),
        }

    def _outcome(
        self,
        ticket: _Ticket,
        item: Item | None,
        stage: str,
        error: BaseException | str,
        work: _Work | None = None,
    ) -> _Failure:
        envelope = ticket.envelope
        if isinstance(error, BaseException):
            error_type, message = type(error).__name__, str(error) or repr(error)
            stage = getattr(error, "stage", "") or stage
        else:
            error_type, message = "RecordError", error
        meta = dict(work.meta) if work and work.meta else dict(item.meta) if item else {}
        return _Failure(
            ticket,
            ErrorOutcome(
                identity=item.identity if item else envelope.ref,
                input=_input_ref(envelope, item),
                stage=stage,
                error_type=error_type,
                message=message,
                attempt=envelope.attempt,
                final=envelope.final,
                meta=meta,
            ),
        )

    def _put_out(self, entry: Any, force: bool = False) -> None:
        while True:
            try:
                self._out.put(entry, timeout=0.5)
                return
            except queue.Full:
                if self._abort.is_set() and not force:
                    raise _Aborted from None
                if self._abort.is_set():
                    # The writer is gone; make room so the final marker gets through.
                    with contextlib.suppress(queue.Empty):
                        self._out.get_nowait()

    # -- writer thread -----------------------------------------------------------------------

    def _write(self) -> None:
        # The sink's errors are handled inside; what escapes is a bug or a fatal error.
        self._guarded(self._write_loop, "the engine's writer", f"sink {self.sink.name!r}")

    def _write_loop(self) -> None:
        results: list[_Result] = []
        failures: list[_Failure] = []
        oldest = 0.0
        done = False
        while not done and not self._abort.is_set():
            timeout = self.settings.flush_interval
            if results or failures:
                timeout = max(0.0, oldest + self.settings.flush_interval - time.monotonic())
            try:
                message = self._out.get(timeout=timeout)
            except queue.Empty:
                message = None
            if message is _DONE:
                done = True
            elif message is not None:
                if not results and not failures:
                    oldest = time.monotonic()
                for entry in message if isinstance(message, list) else [message]:
                    (results if isinstance(entry, _Result) else failures).append(entry)
            due = (
                done
                or len(results) >= self.settings.chunk_size
                or (
                    (results or failures)
                    and time.monotonic() - oldest >= self.settings.flush_interval
                )
            )
            if due and (results or failures):
                if not self._flush(results, failures):
                    return
                results, failures = [], []
                self._progress()

    def _flush(self, results: list[_Result], failures: list[_Failure]) -> bool:
        """Write, flush (with retries), then ack/nack; False when the run was aborted."""
        real = [r for r in results if r.record]  # empty envelopes carry an empty marker
        chunk_size = self.settings.chunk_size
        chunks = [real[i : i + chunk_size] for i in range(0, len(real), chunk_size)]
        state: dict[str, Any] = {"chunks_put": 0, "errors_put": False, "rejected": set()}
        refused: list[_Failure] = []  # records the service refused at flush time

        def attempt() -> None:
            while state["chunks_put"] < len(chunks):
                chunk = chunks[state["chunks_put"]]
                rejections = self.sink.put_records([r.record for r in chunk]) or ()
                state["chunks_put"] += 1
                state["rejected"].update(self._reject(chunk, rejections, failures))
            if failures and not state["errors_put"]:
                self.sink.put_errors([f.outcome for f in failures])
                state["errors_put"] = True
            rejections = [
                rejection
                for rejection in self.sink.flush() or ()
                # Indexes count every record put since the last flush: ``real``, in order.
                if not 0 <= rejection.index < len(real)
                or id(real[rejection.index]) not in state["rejected"]
            ]
            state["rejected"].update(self._reject(real, rejections, refused))

        def record_refused() -> None:
            self.sink.put_errors([f.outcome for f in refused])
            late = self.sink.flush() or ()
            if late:
                log.error(
                    "sink %r refused %d record(s) while recording their errors; their input "
                    "is retried all the same", self.sink.name, len(late),
                )  # fmt: skip

        if not self._retry_sink(attempt):
            return False
        if refused:
            # Content refused at write time: that record's error, recorded like any other.
            if not self._retry_sink(record_refused):
                return False
            failures = [*failures, *refused]
        written = [r for r in real if id(r) not in state["rejected"]]
        self._report_failures(failures)
        with self._lock:
            self.summary.written += len(written)
            self.summary.succeeded += len(written)
            self.summary.failed += len(failures)
            self.metrics.records_written(len(written))
            for failure in failures:
                stage = failure.outcome.stage
                self.metrics.record_failed(stage)
                self.summary.failed_by_stage[stage] = self.summary.failed_by_stage.get(stage, 0) + 1
        self._settle([*results, *failures])
        return True

    def _reject(
        self, chunk: list[_Result], rejections: Sequence[Rejection], failures: list[_Failure]
    ) -> set[int]:
        """Turn the sink's rejections into failures; returns the ids of the rejected results."""
        rejected: set[int] = set()
        for rejection in rejections:
            if not 0 <= rejection.index < len(chunk) or id(chunk[rejection.index]) in rejected:
                log.error(
                    "sink %r rejected an unknown record index %r", self.sink.name, rejection.index
                )
                continue
            result = chunk[rejection.index]
            envelope = result.ticket.envelope
            record = result.record
            outcome = ErrorOutcome(
                identity=str(record.get(RECORD_ID_KEY, envelope.ref)),
                input=str(record.get(RECORD_INPUT_KEY, envelope.ref)),
                stage="sink",
                error_type=rejection.error_type,
                message=rejection.message,
                attempt=envelope.attempt,
                final=envelope.final,
                meta={k: v for k, v in record.items() if k not in _RECORD_KEYS},
            )
            failures.append(_Failure(result.ticket, outcome))
            rejected.add(id(result))
            # The result entry and its failure both settle this ticket: count both.
            result.ticket.pending += 1
        return rejected

    def _retry_sink(self, attempt: Callable[[], None]) -> bool:
        """Run ``attempt`` until it succeeds; False when the run was stopped instead."""
        delay = 0.2
        deadline: float | None = None
        while True:
            try:
                attempt()
            except ConfigurationError as exc:
                # Retrying cannot help: stop at once, with nothing unwritten acknowledged.
                self._fail_run(
                    f"sink {self.sink.name!r} is misconfigured: {exc}; stopping without "
                    "acknowledging unwritten input",
                    abort=True,
                    exit_code=EXIT_USAGE,
                )
                return False
            except Exception as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.settings.sink_retry_budget
                elif self._stopping.is_set():
                    # A stop was asked for during an outage: do not outlast the grace period.
                    deadline = now
                if now >= deadline:
                    self._fail_run(
                        f"sink {self.sink.name!r} stayed unavailable for "
                        f"{self.settings.sink_retry_budget:g} s ({type(exc).__name__}: {exc}); "
                        "stopping without acknowledging unwritten input (it will be redelivered)",
                        abort=True,
                    )
                    return False
                self._sink_ok.clear()
                self.metrics.sink_healthy(False)
                self.health.set_ready(False, f"sink {self.sink.name!r} unavailable")
                log.warning(
                    "sink %r: write failed (%s: %s); retrying in %.1f s (pausing intake)",
                    self.sink.name, type(exc).__name__, exc, delay,
                )  # fmt: skip
                time.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(delay * 2, 10.0)
                continue
            if not self._sink_ok.is_set():
                log.info("sink %r: writing again; resuming intake", self.sink.name)
                self.metrics.sink_healthy(True)
                if not self._stopping.is_set():
                    self.health.set_ready(True, "taking input")
            self._sink_ok.set()
            return True

    def _report_failures(self, failures: list[_Failure]) -> None:
        for failure in failures:
            outcome = failure.outcome
            log.error(
                "%s: failed at %s: %s: %s (attempt %d%s)",
                outcome.input, outcome.stage, outcome.error_type, outcome.message,
                outcome.attempt, ", final" if outcome.final else ", will be retried",
            )  # fmt: skip
            self.outcomes.append(outcome)
        if self._errors_file is not None and failures:
            for failure in failures:
                self._errors_file.write(dumps(failure.outcome.to_dict(), ensure_ascii=False) + "\n")
            self._errors_file.flush()

    def _settle(self, entries: Sequence[_Result | _Failure]) -> None:
        acks: list[Envelope] = []
        nacks: list[Envelope] = []
        for entry in entries:
            ticket = entry.ticket
            if isinstance(entry, _Failure):
                ticket.failed = True
                ticket.envelope.outcomes.append(entry.outcome)
            ticket.pending -= 1
            if ticket.pending == 0:
                (nacks if ticket.failed else acks).append(ticket.envelope)
        calls = ((self.source.ack, acks, "ack"), (self.source.nack, nacks, "nack"))
        for method, envelopes, what in calls:
            if not envelopes:
                continue
            try:
                method(envelopes)
            except Exception as exc:
                # The input comes back by itself; the sink's idempotent writes absorb it.
                log.error(
                    "source %r: %s of %d envelope(s) failed: %s: %s",
                    self.source.name, what, len(envelopes), type(exc).__name__, exc,
                )  # fmt: skip
                continue
            with self._lock:
                if what == "ack":
                    self.summary.acked += len(envelopes)
                else:
                    self.summary.nacked += len(envelopes)
        with self._lock:
            for envelope in (*acks, *nacks):
                self._held.pop(id(envelope), None)
            self.metrics.in_flight(len(self._held))
        self.metrics.settled(len(acks), len(nacks))

    def _progress(self) -> None:
        if self._on_progress is not None:
            try:
                self._on_progress(self.summary)
            except Exception:
                log.debug("progress callback failed", exc_info=True)


def _raises(error: BaseException) -> Callable[[], Any]:
    def read() -> Any:
        raise error

    return read


def _input_ref(envelope: Envelope, item: Item | None) -> str:
    if item is not None and isinstance(item.uri, str):
        return item.uri
    return envelope.ref
