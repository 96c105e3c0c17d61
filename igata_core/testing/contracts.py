"""Contract tests that any source or sink runs against itself to prove DESIGN.md's delivery
semantics: subclass a contract in a test module, give it the hooks, and pytest collects the
inherited tests.

A sink::

    from igata_core.testing.contracts import SinkContract

    class TestMySinkContract(SinkContract):
        def make_sink(self, tmp_path):
            sink = MySink({"table": "results"})
            sink.open()
            return sink

        def read_back(self, sink):
            return [item for item in scan_the_table()]

A source::

    from igata_core.testing.contracts import SourceContract

    class TestMySourceContract(SourceContract):
        redelivery_wait = 1.2  # the queue's visibility timeout in the test

        def make_inputs(self, tmp_path, n):
            return fill_a_queue_with(n)

        def make_source(self, inputs):
            source = MySource({"queue_url": inputs, "visibility_timeout": 1})
            source.open()
            return source

A hook that needs a pytest fixture (the ``aws`` endpoint, ``capsys``) gets it through an
autouse fixture of the subclass that stores it on ``self``::

        @pytest.fixture(autouse=True)
        def _endpoint(self, aws):
            self.aws = aws

Every component a hook creates is closed after each test (``close`` is idempotent by
contract). The test methods take ``tmp_path`` only, so they can also be called directly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from igata_core.components import (
    RECORD_ID_KEY,
    RECORD_INPUT_KEY,
    Envelope,
    ErrorOutcome,
    Rejection,
    Sink,
    Source,
)


class _Tracking:
    """Closes what the hooks created, after each test."""

    def _track(self, component: Any) -> Any:
        if not hasattr(self, "_created"):
            self._created: list[Any] = []
        self._created.append(component)
        return component

    def _broke(self, component: Any) -> None:
        """``component``'s store was made to fail: its close may fail too."""
        if not hasattr(self, "_broken"):
            self._broken: list[Any] = []
        self._broken.append(component)

    @pytest.fixture(autouse=True)
    def _close_created(self) -> Iterator[None]:
        self._created = []
        self._broken = []
        yield
        for component in reversed(self._created):
            try:
                component.close()
            except Exception:
                if not any(component is broken for broken in self._broken):
                    raise


def _ids(records: Sequence[dict[str, Any]]) -> list[str]:
    return [str(record.get(RECORD_ID_KEY)) for record in records]


# -- sinks ---------------------------------------------------------------------------------


class SinkLifecycleContract(_Tracking):
    """What every sink honours, including those whose output cannot be read back (a null
    sink, a stream): empty calls, rejections, errors after results, ``close`` twice.

    Hooks to provide: :meth:`make_sink`. Optional: :meth:`make_records`,
    :meth:`unwritable_record`.
    """

    #: Records per ``put_records`` call in these tests (the engine's chunk size default).
    chunk_size: int = 15

    def make_sink(self, tmp_path: Path) -> Sink:
        """A sink, constructed and opened, writing to a fresh store (under ``tmp_path`` for
        files; a fresh table or queue otherwise). Called once or twice per test; two calls
        in one test must write to the same store (a second run of the worker)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_sink(tmp_path)")

    def make_records(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        """``n`` result records as the engine makes them: identity, input reference and
        prediction values. Override when the sink needs particular fields (e.g. the
        request fields the DynamoDB sink keys by); identities must stay distinct per index.
        """
        return [
            {
                RECORD_ID_KEY: f"contract-{i}",
                RECORD_INPUT_KEY: f"contract://inputs/{i}.png",
                "label": f"label-{i}",
                "score": i / 4,
                "index": i,
            }
            for i in range(start, start + n)
        ]

    def unwritable_record(self, index: int) -> dict[str, Any] | None:
        """A record this sink must refuse with a :class:`Rejection` (default: a prediction
        value with no serialised form, in a field every record has). Return None if the
        sink accepts anything; the rejection tests are then skipped."""
        record = self.make_records(1, start=index)[0]
        record["label"] = object()
        return record

    def put(self, sink: Sink, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        """Put ``records`` in chunks of :attr:`chunk_size`, as the engine does; the
        rejections' indexes are translated to indexes into ``records``."""
        rejections: list[Rejection] = []
        for start in range(0, len(records), self.chunk_size):
            chunk = list(records[start : start + self.chunk_size])
            for rejection in sink.put_records(chunk) or ():
                assert isinstance(rejection, Rejection), (
                    f"put_records must return Rejection objects, got {rejection!r}"
                )
                assert 0 <= rejection.index < len(chunk), (
                    f"rejection index {rejection.index} is outside the chunk of {len(chunk)}"
                )
                rejections.append(
                    Rejection(start + rejection.index, rejection.message, rejection.error_type)
                )
        return rejections

    def _sink(self, tmp_path: Path) -> Sink:
        return self._track(self.make_sink(tmp_path))

    def test_put_nothing_then_flush_and_close(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        assert not sink.put_records([]), "an empty chunk cannot be rejected"
        sink.flush()
        sink.close()

    def test_good_records_are_not_rejected(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        assert self.put(sink, self.make_records(5)) == []
        sink.flush()

    def test_rejections_refer_to_valid_indexes(self, tmp_path: Path) -> None:
        bad = self.unwritable_record(1)
        if bad is None:
            pytest.skip(f"{type(self).__name__}.unwritable_record: this sink accepts any record")
        good = self.make_records(3)
        records = [good[0], bad, good[2]]
        sink = self._sink(tmp_path)
        rejections = self.put(sink, records)
        assert [r.index for r in rejections] == [1], (
            f"expected exactly record 1 rejected, got {rejections!r}"
        )
        assert rejections[0].message, "a rejection must say why"
        sink.flush()

    def test_error_outcomes_are_accepted(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        records = self.make_records(2)
        self.put(sink, records[:1])
        sink.put_errors([self.error_outcome(records[1])])
        sink.flush()

    def test_close_without_records_is_safe_twice(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        sink.close()
        sink.close()

    def test_close_twice_is_safe(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        self.put(sink, self.make_records(3))
        sink.flush()
        sink.close()
        sink.close()

    @staticmethod
    def error_outcome(record: dict[str, Any], attempt: int = 1) -> ErrorOutcome:
        """An error outcome for the request that ``record`` answers."""
        return ErrorOutcome(
            identity=str(record[RECORD_ID_KEY]),
            input=str(record[RECORD_INPUT_KEY]),
            stage="predict",
            error_type="ValueError",
            message="contract test: prediction failed",
            attempt=attempt,
            final=False,
            meta={k: v for k, v in record.items() if k not in (RECORD_ID_KEY, RECORD_INPUT_KEY)},
        )


class SinkContract(SinkLifecycleContract):
    """Durability, idempotency and error surfacing of a sink whose output can be read back.

    Hooks to provide: :meth:`make_sink`, :meth:`read_back`. Optional: :meth:`break_store`
    and :meth:`repair_store` (outage tests skip without them), :meth:`make_records`,
    :meth:`unwritable_record`, :meth:`same_record`, and the flags below.
    """

    #: False for sinks that publish at ``close`` (a file renamed into place):
    #: :meth:`read_back` is then called after ``close`` instead of right after ``flush``.
    durable_before_close: bool = True

    #: False for sinks that cannot de-duplicate (a queue): a redelivered record may then
    #: appear twice, but every copy must carry the same identity so consumers can.
    deduplicates: bool = True

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        """Every record durably stored by ``sink`` (read the file, scan the table, receive
        the queue's messages), as dicts with at least the written fields. Called after
        ``flush`` (after ``close`` when :attr:`durable_before_close` is False), possibly
        several times per test for sinks durable before close."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_back(sink)")

    def break_store(self, sink: Sink) -> None:
        """Make the store fail (a full disk, a deleted table, a refused connection) so
        that the next ``put_records`` or ``flush`` must raise."""
        raise NotImplementedError

    def repair_store(self, sink: Sink) -> None:
        """Undo :meth:`break_store`; records put before or during the outage must then be
        made durable by the next successful ``flush``."""
        raise NotImplementedError

    def same_record(self, written: dict[str, Any], stored: dict[str, Any]) -> bool:
        """Whether ``stored`` holds ``written``. Default: each written field is present
        with the same text (CSV cells are strings, DynamoDB numbers are Decimals)."""
        return all(key in stored and str(stored[key]) == str(v) for key, v in written.items())

    # helpers

    def _durable(self, sink: Sink) -> list[dict[str, Any]]:
        """Flush and read back (closing first when the sink publishes at close)."""
        sink.flush()
        if not self.durable_before_close:
            sink.close()
        return self.read_back(sink)

    def _assert_holds(
        self, stored: list[dict[str, Any]], records: list[dict[str, Any]], why: str
    ) -> None:
        stored_ids = Counter(_ids(stored))
        missing = [i for i in _ids(records) if i not in stored_ids]
        assert not missing, f"{why}: records {missing} are not in the store"
        if self.deduplicates:
            duplicated = sorted(i for i, count in stored_ids.items() if count > 1)
            assert not duplicated, f"{why}: records {duplicated} are stored more than once"
        extra = sorted(set(stored_ids) - set(_ids(records)))
        assert not extra, f"{why}: the store holds records that were never put: {extra}"
        by_id = {str(r.get(RECORD_ID_KEY)): r for r in stored}
        for record in records:
            stored_record = by_id[str(record[RECORD_ID_KEY])]
            assert self.same_record(record, stored_record), (
                f"{why}: stored {stored_record!r} does not hold written {record!r}"
            )

    def _breakable(self, sink: Sink, *, repair: bool) -> None:
        cls = type(self)
        if cls.break_store is SinkContract.break_store:
            pytest.skip(f"{cls.__name__} does not implement break_store(sink)")
        if repair and cls.repair_store is SinkContract.repair_store:
            pytest.skip(f"{cls.__name__} does not implement repair_store(sink)")

    # tests

    def test_flush_makes_records_durable(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        records = self.make_records(2 * self.chunk_size + 3)
        self.put(sink, records)
        self._assert_holds(self._durable(sink), records, "after flush")

    def test_each_flush_makes_the_records_since_durable(self, tmp_path: Path) -> None:
        if not self.durable_before_close:
            pytest.skip("this sink publishes at close; one flush per store")
        sink = self._sink(tmp_path)
        records = self.make_records(6)
        self.put(sink, records[:3])
        sink.flush()
        self._assert_holds(self.read_back(sink), records[:3], "after the first flush")
        self.put(sink, records[3:])
        sink.flush()
        self._assert_holds(self.read_back(sink), records, "after the second flush")

    def test_second_flush_does_not_duplicate(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        records = self.make_records(4)
        self.put(sink, records)
        sink.flush()
        stored = self._durable(sink)
        assert len(stored) == len(records), (
            f"a second flush with nothing new put changed the store: {len(records)} records "
            f"put, {len(stored)} stored"
        )
        self._assert_holds(stored, records, "after two flushes")

    def test_redelivered_record_does_not_duplicate(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        records = self.make_records(5)
        self.put(sink, records[:3])
        sink.flush()
        # Records 1 and 2 are delivered again (their envelope came back), 3 and 4 are new.
        self.put(sink, records[1:])
        stored = self._durable(sink)
        self._assert_holds(stored, records, "after a redelivery")
        if self.deduplicates:
            assert len(stored) == len(records), f"{len(stored)} stored for {len(records)} put"

    def test_redelivery_to_a_new_sink_overwrites(self, tmp_path: Path) -> None:
        first = self._sink(tmp_path)
        self.put(first, self.make_records(3))
        first.flush()
        first.close()
        # A second worker run gets records 1 and 2 again, with new prediction values.
        again = [dict(r, label=f"again-{r['index']}") for r in self.make_records(2, start=1)]
        second = self._sink(tmp_path)
        self.put(second, again)
        stored = self._durable(second)
        by_id = {str(r.get(RECORD_ID_KEY)): r for r in stored}
        for record in again:
            ident = record[RECORD_ID_KEY]
            copies = [r for r in stored if str(r.get(RECORD_ID_KEY)) == ident]
            assert copies, f"redelivered record {ident} is not in the store"
            if self.deduplicates:
                assert len(copies) == 1, f"redelivered record {ident} is stored {len(copies)} times"
                assert self.same_record(record, by_id[ident]), (
                    f"record {ident} was redelivered with new values but the store kept "
                    f"{by_id[ident]!r}"
                )

    def test_close_twice_keeps_records(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        records = self.make_records(3)
        self.put(sink, records)
        sink.flush()
        sink.close()
        sink.close()
        self._assert_holds(self.read_back(sink), records, "after close twice")

    def test_rejected_record_is_not_stored(self, tmp_path: Path) -> None:
        bad = self.unwritable_record(1)
        if bad is None:
            pytest.skip(f"{type(self).__name__}.unwritable_record: this sink accepts any record")
        good = self.make_records(3)
        sink = self._sink(tmp_path)
        rejections = self.put(sink, [good[0], bad, good[2]])
        assert [r.index for r in rejections] == [1], f"rejections: {rejections!r}"
        self._assert_holds(self._durable(sink), [good[0], good[2]], "after a rejection")

    def test_error_after_result_does_not_undo_it(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        records = self.make_records(2)
        self.put(sink, records)
        sink.flush()
        # A later attempt of record 0 fails: its completed result must stay.
        sink.put_errors([self.error_outcome(records[0], attempt=2)])
        stored = self._durable(sink)
        results = [r for r in stored if r.get(RECORD_ID_KEY) is not None]
        self._assert_holds(results, records, "after an error outcome for a completed record")

    def test_put_records_error_surfaces(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        self._breakable(sink, repair=False)
        self._broke(sink)
        self.break_store(sink)
        with pytest.raises(Exception) as raised:
            self.put(sink, self.make_records(3))
            sink.flush()
        assert not isinstance(raised.value, AssertionError), raised.value

    def test_failed_flush_keeps_records_for_retry(self, tmp_path: Path) -> None:
        sink = self._sink(tmp_path)
        self._breakable(sink, repair=True)
        records = self.make_records(4)
        self.put(sink, records[:2])
        self._broke(sink)
        self.break_store(sink)
        with pytest.raises(Exception) as raised:
            sink.flush()
        assert not isinstance(raised.value, AssertionError), raised.value
        self.repair_store(sink)
        # The engine retries the flush without putting the records again, then goes on.
        sink.flush()
        self.put(sink, records[2:])
        self._assert_holds(self._durable(sink), records, "after an outage and a retried flush")


# -- sources -------------------------------------------------------------------------------


class SourceContract(_Tracking):
    """Delivery semantics of a source: every input once, ack only what is acked, nacked and
    unacknowledged envelopes come back, ``stop`` ends iteration, ``close`` twice.

    Hooks to provide: :meth:`make_inputs`, :meth:`make_source`. Optional:
    :meth:`redelivered`, :meth:`envelope_key`, and the settings below.

    Envelopes are pulled on a separate thread and acked or nacked from the test's thread,
    as the engine does; an unbounded source is stopped once the expected envelopes have
    arrived, and acks and nacks come after that (the engine's drain).
    """

    #: Seconds until an envelope neither acked nor nacked comes back (a queue's
    #: visibility timeout; 0 for sources that redeliver on the next run, like files).
    redelivery_wait: float = 0.0

    #: Longest wait for the expected envelopes to arrive.
    collect_timeout: float = 10.0

    #: After the expected envelopes arrived, how long to wait for unexpected extra ones.
    settle: float = 0.3

    #: Longest time ``stop()`` may take to end ``envelopes()`` (a long poll's wait).
    stop_timeout: float = 5.0

    #: False when an ack has no lasting effect (files: every run reads every file again);
    #: the ack test then checks only that what was not acked comes back.
    remembers_acks: bool = True

    #: Inputs per test.
    n: int = 4

    def make_inputs(self, tmp_path: Path, n: int) -> Any:
        """Create ``n`` distinct inputs (files, objects, messages) and return what
        :meth:`make_source` needs to read them (a directory, a queue URL)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_inputs(tmp_path, n)")

    def make_source(self, inputs: Any) -> Source:
        """A source over ``inputs``, constructed and opened; each call is a new source
        (a new worker) over the same inputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_source(inputs)")

    def envelope_key(self, envelope: Envelope) -> str:
        """What identifies an envelope across deliveries (default: its items' identities)."""
        return "|".join(item.identity for item in envelope.items) or envelope.ref

    def redelivered(self, inputs: Any, expected: int) -> list[Envelope]:
        """The envelopes that come back: by default, waits :attr:`redelivery_wait` and
        collects from a new source (up to ``expected`` envelopes, plus :attr:`settle`)."""
        if self.redelivery_wait:
            time.sleep(self.redelivery_wait)
        source = self._track(self.make_source(inputs))
        try:
            return self.collect(source, expected)
        finally:
            source.close()

    def collect(self, source: Source, expected: int | None) -> list[Envelope]:
        """Pull envelopes on another thread until the source ends or ``expected`` arrived
        (then wait :attr:`settle` for extras); an unbounded source is then stopped."""
        envelopes: list[Envelope] = []
        errors: list[BaseException] = []
        arrived = threading.Event()

        def pull() -> None:
            try:
                for envelope in source.envelopes():
                    envelopes.append(envelope)
                    if expected is not None and len(envelopes) >= expected:
                        arrived.set()
            except BaseException as exc:
                errors.append(exc)
            finally:
                arrived.set()

        thread = threading.Thread(target=pull, name="contract-source", daemon=True)
        thread.start()
        arrived.wait(self.collect_timeout)
        if thread.is_alive():
            thread.join(self.settle)
        if thread.is_alive():
            source.stop()
            thread.join(self.stop_timeout)
            assert not thread.is_alive(), (
                f"envelopes() did not end within {self.stop_timeout} s of stop()"
            )
        if errors:
            raise errors[0]
        return list(envelopes)

    def _fresh(self, tmp_path: Path, n: int | None = None) -> tuple[Any, Source]:
        inputs = self.make_inputs(tmp_path, n or self.n)
        return inputs, self._track(self.make_source(inputs))

    def _keys(self, envelopes: Sequence[Envelope]) -> list[str]:
        return [self.envelope_key(e) for e in envelopes]

    # tests

    def test_yields_every_input_once(self, tmp_path: Path) -> None:
        _, source = self._fresh(tmp_path)
        envelopes = self.collect(source, self.n)
        keys = self._keys(envelopes)
        assert len(keys) == self.n, f"{self.n} inputs, {len(keys)} envelopes: {keys}"
        assert len(set(keys)) == self.n, f"an input was delivered twice: {keys}"
        for envelope in envelopes:
            assert envelope.items or envelope.error, f"{envelope.ref}: no items and no error"
            assert all(item.identity for item in envelope.items), f"{envelope.ref}: no identity"
        total = source.total()
        if source.finite and total is not None:
            assert total == self.n, f"total() says {total} for {self.n} inputs"

    def test_identities_are_stable_across_deliveries(self, tmp_path: Path) -> None:
        inputs, source = self._fresh(tmp_path)
        first = self.collect(source, self.n)
        source.nack(first)
        source.close()
        again = self.redelivered(inputs, self.n)
        assert sorted(self._keys(again)) == sorted(self._keys(first)), (
            "a redelivered input must keep its identity (sinks key their writes by it)"
        )

    def test_ack_only_what_is_acked(self, tmp_path: Path) -> None:
        inputs, source = self._fresh(tmp_path)
        envelopes = self.collect(source, self.n)
        acked, left = envelopes[: self.n // 2], envelopes[self.n // 2 :]
        source.ack(acked)
        source.nack(left[:1])  # one nacked, the rest never settled
        source.close()
        expected_back = self.n if not self.remembers_acks else len(left)
        back = self._keys(self.redelivered(inputs, expected_back))
        missing = [k for k in self._keys(left) if k not in back]
        assert not missing, f"envelopes not acked did not come back: {missing}"
        if self.remembers_acks:
            wrongly = [k for k in self._keys(acked) if k in back]
            assert not wrongly, f"acked envelopes came back: {wrongly}"

    def test_nacked_is_redelivered(self, tmp_path: Path) -> None:
        inputs, source = self._fresh(tmp_path)
        envelopes = self.collect(source, self.n)
        source.ack(envelopes[1:])
        source.nack(envelopes[:1])
        source.close()
        back = self.redelivered(inputs, 1 if self.remembers_acks else self.n)
        key = self.envelope_key(envelopes[0])
        again = [e for e in back if self.envelope_key(e) == key]
        assert again, f"nacked envelope {envelopes[0].ref} was not redelivered"
        assert again[0].attempt >= envelopes[0].attempt, "attempt counts must not go backwards"

    def test_unacked_is_redelivered(self, tmp_path: Path) -> None:
        inputs, source = self._fresh(tmp_path)
        envelopes = self.collect(source, self.n)
        source.close()  # the worker died: neither ack nor nack
        back = self._keys(self.redelivered(inputs, self.n))
        missing = [k for k in self._keys(envelopes) if k not in back]
        assert not missing, f"envelopes never settled did not come back: {missing}"

    def test_settling_nothing_is_safe(self, tmp_path: Path) -> None:
        _, source = self._fresh(tmp_path)
        source.ack([])
        source.nack([])

    def test_stop_ends_iteration(self, tmp_path: Path) -> None:
        _, source = self._fresh(tmp_path)
        delivered: list[Envelope] = []
        errors: list[BaseException] = []
        first, stopped = threading.Event(), threading.Event()

        def pull() -> None:
            try:
                for envelope in source.envelopes():
                    delivered.append(envelope)
                    if len(delivered) == 1:
                        # Like the engine's full prefetch window: hold until stop() came.
                        first.set()
                        stopped.wait(self.stop_timeout)
            except BaseException as exc:
                errors.append(exc)
            finally:
                first.set()

        thread = threading.Thread(target=pull, name="contract-source", daemon=True)
        thread.start()
        assert first.wait(self.collect_timeout), "no envelope within collect_timeout"
        source.stop()
        stopped.set()
        thread.join(self.stop_timeout)
        assert not thread.is_alive(), f"envelopes() did not end within {self.stop_timeout} s"
        if errors:
            raise errors[0]
        if source.finite:
            assert len(delivered) < self.n, (
                f"a finite source must check stop() between envelopes: all {self.n} came"
            )

    def test_stop_twice_after_the_end_is_safe(self, tmp_path: Path) -> None:
        _, source = self._fresh(tmp_path, 2)
        assert len(self.collect(source, 2)) == 2
        source.stop()
        source.stop()

    def test_close_twice_is_safe(self, tmp_path: Path) -> None:
        _, source = self._fresh(tmp_path)
        envelopes = self.collect(source, self.n)
        source.ack(envelopes)
        source.close()
        source.close()
