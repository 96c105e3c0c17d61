"""The component contracts: sources, sinks, loaders, decoders, and what flows between them.

A run moves data like this::

    Source --Envelope(items)--> Loader (uri -> bytes) --> Decoder (bytes -> input)
        --> Predictor --> result record (dict) --> Sink.put_records / flush --> Source.ack

An :class:`Envelope` is one unit of delivery (a file, an S3 object, an SQS message). It
holds one or more :class:`Item` objects, each of which becomes one result record or one
:class:`ErrorOutcome`. The envelope is acked only when every record derived from it has a
result and the sink has flushed it; otherwise it is nacked after its error outcomes are
flushed (see ``DESIGN.md``, delivery semantics).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from igata_core.options import Option

#: Keys that igata adds to every result record (see ``docs/records.md``).
RECORD_ID_KEY = "igata_id"
RECORD_INPUT_KEY = "igata_input"


class RecordError(Exception):
    """A problem with one record (bad request, undecodable data, unwritable value).

    Raised by loaders, decoders and sources for a single record; the engine turns it into an
    error outcome and the run goes on. ``stage`` is filled in by the engine if empty.
    """

    def __init__(self, message: str, *, stage: str = ""):
        super().__init__(message)
        self.stage = stage


class ServiceUnavailable(Exception):
    """A service (the sink's store, the source's queue) stayed unavailable.

    Raised by a source when it cannot reach its service after its own retries; the engine
    stops the run with exit code 3 and acks nothing that was not written.
    """


class ConfigurationError(Exception):
    """A service refuses what the options ask for (a key too long, a table keyed otherwise).

    Permanent: retrying cannot help until the configuration changes. Raised by a sink's
    ``open``/``put_records``/``flush`` or a loader, it stops the run at once with exit code 2
    and nothing unwritten acknowledged.
    """


@dataclass
class Item:
    """One record to predict, as a source describes it.

    ``uri`` is what to load through the loader registry: a string (``s3://b/k``, a path) or
    a mapping of field -> URI when a request names several objects (the predictor then
    receives a dict of field -> decoded data). Instead of a URI a source may give ``data``
    directly. ``meta`` is handed to the predictor and merged into the result record.
    ``identity`` is deterministic across redeliveries (a request id, or URI + version).
    ``error`` marks a record the source could already tell is bad (a malformed request);
    it becomes an error outcome of stage ``parse`` without being loaded.
    """

    identity: str
    uri: str | Mapping[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    decoder: str | None = None
    error: str | None = None


@dataclass(eq=False)
class Envelope:
    """One unit of delivery, acked or nacked as a whole.

    ``ref`` names it in logs and error outcomes (a path, an S3 URI, ``sqs:<message id>``).
    ``handle`` is private to the source that made it. ``attempt`` counts deliveries
    (SQS: ApproximateReceiveCount) and ``final`` says this is the last attempt before the
    source gives up on it (dead-letter queue), so error outcomes can be marked final.
    ``error`` marks an envelope that could not be parsed at all (it has no items).
    ``enqueued_at`` (epoch seconds), when the source knows it, gives the receive-lag metric.
    ``outcomes`` is filled by the engine before ``nack``: this attempt's error outcomes.
    """

    ref: str
    items: list[Item]
    handle: Any = None
    attempt: int = 1
    final: bool = True
    error: str | None = None
    enqueued_at: float | None = None
    outcomes: list[ErrorOutcome] = field(default_factory=list)


@dataclass
class Loaded:
    """What a loader returns: the bytes and metadata about the object (size, etag…)."""

    data: bytes
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ErrorOutcome:
    """A record that failed on this attempt.

    ``stage`` is one of ``parse``, ``load``, ``decode``, ``preprocess``, ``predict``,
    ``postprocess``, ``sink``. Goes to the log, to ``--errors PATH`` and to the sink's
    ``put_errors``. Never sent to ``put_records``.
    """

    identity: str
    input: str
    stage: str
    error_type: str
    message: str
    attempt: int = 1
    final: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "input": self.input,
            "stage": self.stage,
            "error_type": self.error_type,
            "message": self.message,
            "attempt": self.attempt,
            "final": self.final,
        }


@dataclass
class Rejection:
    """A sink's refusal of one record: the service refused its content, not the sink.

    Used for problems of that record alone (a value that cannot be serialised, an item
    over the store's size limit, characters the service does not carry); the record
    becomes an error outcome of stage ``sink`` and its envelope goes on through retry and
    the dead-letter queue like any failed record. Returned by ``put_records`` (``index``:
    the record's position in that call) or by ``flush`` (``index``: the record's position
    among all records passed to ``put_records`` since the previous ``flush`` that
    returned, counting every chunk).
    """

    index: int
    message: str
    error_type: str = "RecordError"


@dataclass
class RunContext:
    """Settings of the run that components may size themselves by."""

    concurrency: int = 8
    chunk_size: int = 15
    run_id: str = ""
    #: Records the engine loads ahead of the predictor: a queue source should not take
    #: (and hold) much more than this from a queue other workers share.
    prefetch: int = 32


class Component:
    """Base of sources, sinks, loaders and decoders.

    Subclasses set ``name`` (the registry key), optional ``aliases``, a one-line
    ``description`` and their ``options``. The constructor receives the resolved option
    values and the run context and must not do any I/O: options are checked for every
    component before anything is read.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None, context: RunContext | None = None):
        self.opts: dict[str, Any] = {opt.name: opt.default for opt in self.options}
        self.opts.update(options or {})
        self.context = context or RunContext()


class Source(Component):
    """Yields envelopes and learns which of them were written.

    * ``envelopes()`` is a blocking iterator. A finite source (files, an S3 prefix) ends
      when exhausted; an unbounded one (SQS) ends when ``stop()`` is called or its own stop
      condition (idle timeout, message count) is met. The engine pulls from it on its own
      thread and only as fast as the prefetch window allows.
    * ``ack(envelopes)``: every record of these envelopes is durably written: forget them
      for good (delete the message, mark the object done).
    * ``nack(envelopes)``: some record failed: make them come back (visibility reset,
      retry later). igata never re-enqueues by itself.
    * An envelope neither acked nor nacked (the run aborted) must come back by itself;
      ``release(envelopes)`` asks for that to happen at once.
    * ``stop()`` may be called from another thread; ``close()`` is called once at the end
      (it must be safe to call twice).
    """

    #: True when the source ends by itself (files, S3 prefix): exit code 1 on failures.
    finite: ClassVar[bool] = True

    def open(self) -> None:
        """Connect (I/O is allowed from here on)."""

    def envelopes(self) -> Iterator[Envelope]:
        raise NotImplementedError

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        """Every record of these envelopes was written and flushed."""

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        """Some record of these envelopes failed on this attempt."""

    def stop(self) -> None:
        """Stop producing envelopes soon (thread-safe)."""

    def release(self, envelopes: Sequence[Envelope]) -> None:
        """The engine gives these envelopes up unsettled (a fatal error stopped the run):
        make them available again at once if the source can (SQS: visibility 0), without
        counting a failure. Default: nothing; they come back when their lease lapses."""

    def total(self) -> int | None:
        """The number of envelopes, if the source can tell (for progress and ETA)."""
        return None

    def close(self) -> None:
        """Release resources (idempotent)."""


class Sink(Component):
    """Receives result records and makes them durable.

    * ``put_records(records)`` takes a chunk of result dicts (at most the chunk size).
      It may buffer. It returns :class:`Rejection` objects for records it cannot write at
      all (those become error outcomes); any exception means the sink is in trouble.
    * ``put_errors(outcomes)`` (optional) records error outcomes (the DynamoDB sink marks
      the request ``state=error``). File sinks keep results only.
    * ``flush()`` returns only when everything put so far is durable or refused; only then
      does igata ack the source. It returns :class:`Rejection` objects for records the
      service refused when they were written (content refused: that record's error, the
      others are written). If it raises, what was not yet written stays buffered and a later
      ``flush()`` retries it (records already written are not sent again; rejections found
      before the failure are returned by the flush that finally succeeds): the engine
      retries with backoff and never nacks because the sink is down.
    * Three kinds of service error (DESIGN.md): content refused -> a :class:`Rejection`;
      configuration refused (no such queue/table, a key schema that does not match, access
      denied) -> :class:`ConfigurationError`, best found in ``open()``; an outage
      (throttling, 5xx, network) -> any other exception, retried by the engine.
    * Writes are keyed by the record identity (``record["igata_id"]``) so a redelivered
      record overwrites instead of duplicating.
    * ``close()`` finishes (an output file is renamed into place) and is safe to call twice.
      It is not called after the engine gave up on a failing sink (exit code 3), so that
      records never flushed are not published.
    """

    def open(self) -> None:
        """Connect or create temporary files (I/O is allowed from here on)."""

    def put_records(self, records: Sequence[dict[str, Any]]) -> Sequence[Rejection] | None:
        raise NotImplementedError

    def put_errors(self, outcomes: Sequence[ErrorOutcome]) -> None:
        """Record error outcomes (default: nothing; they are logged by the engine)."""

    def flush(self) -> Sequence[Rejection] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish and release resources (idempotent)."""


class Loader(Component):
    """Resolves URIs of its ``schemes`` to bytes; must be thread-safe.

    ``load`` raises :class:`RecordError` (or any exception) for a record that cannot be
    loaded: a missing object, a refused bucket, an object too large. Transient failures
    are retried inside the loader (botocore's retry modes, for instance).
    """

    schemes: ClassVar[tuple[str, ...]] = ()

    def load(self, uri: str) -> Loaded:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (idempotent)."""


class Decoder(Component):
    """Turns bytes into the predictor's input; must be thread-safe.

    Chosen by the lower-case file ``extensions`` it lists (``".png"``), or by ``name``. A
    trailing ``.gz`` is removed (and the data decompressed) before the choice.
    """

    extensions: ClassVar[tuple[str, ...]] = ()

    def decode(self, data: bytes, ref: str) -> Any:
        raise NotImplementedError


def digest_identity(value: Any) -> str:
    """A deterministic identity for a request without an id field."""
    import hashlib  # here: its OpenSSL binding costs every start-up ~5 ms

    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]
