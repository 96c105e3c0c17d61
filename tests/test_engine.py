"""The engine's delivery semantics: ack after flush, nack after the error is recorded, sink
trouble is not record failure, bounded prefetch, the flush policy, exit codes."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import (
    EchoPredictor,
    Journal,
    ListSource,
    RecordingSink,
    ShapePredictor,
    core_registry,
    data_envelopes,
    igata,
    make_pipeline,
    write_images,
)

from igata_core import Decoder, Envelope, Item, Loaded, Loader, PredictorBase, hookimpl
from igata_core.testing import run_pipeline


def run(source: ListSource, sink: RecordingSink, predictor: Any = EchoPredictor, **settings):
    return run_pipeline(source, sink, predictor, registry=core_registry(), environ={}, **settings)


def run_until(pipeline, condition, *, timeout: float = 5.0) -> tuple[Any, float | None]:
    """Run ``pipeline`` on this thread; another thread calls ``stop()`` once ``condition()``
    holds (or after ``timeout``). Returns the summary and when the condition held."""
    held: list[float] = []

    def watch() -> None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if condition():
                    held.append(time.monotonic())
                    break
                time.sleep(0.01)
        finally:
            pipeline.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    summary = pipeline.run()
    watcher.join()
    return summary, (held[0] if held else None)


# -- end to end through the command ------------------------------------------------------------


def test_a_corrupt_image_among_100_good_ones(tmp_path):
    write_images(tmp_path / "images", 100)
    (tmp_path / "images" / "0050-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    done = igata(
        "run",
        "--source",
        "files",
        "--sink",
        "jsonl",
        "--sink-opt",
        "path=out.jsonl",
        "--errors",
        "errors.jsonl",
        "--predictor",
        "helpers_core:ShapePredictor",
        "images",
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(results) == 100
    assert {r["shape"] == [3, 4, 3] for r in results} == {True}
    assert len({r["igata_id"] for r in results}) == 100
    [error] = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert error["input"] == "images/0050-corrupt.png"
    assert error["stage"] == "decode" and error["error_type"] == "RecordError"
    assert "read 101, succeeded 100, failed 1, written 100" in done.stderr


# -- ack and nack ------------------------------------------------------------------------------


def test_every_ack_comes_after_the_flush_of_all_its_records():
    journal = Journal()
    source = ListSource(data_envelopes(range(40)), journal=journal)
    sink = RecordingSink(journal=journal)
    result = run(source, sink, chunk_size=4, batch_size=3, flush_interval=5)
    assert result.exit_code == 0
    assert sorted(source.acked) == sorted(f"env-{i}" for i in range(40))
    for i in range(40):
        assert journal.index("flushed", f"id-{i}") < journal.index("ack", f"env-{i}")
    assert source.nacked == []
    assert result.summary["acked"] == 40 and result.summary["written"] == 40


def test_a_failed_envelope_is_nacked_after_its_error_was_put_and_flushed():
    journal = Journal()
    source = ListSource(data_envelopes(["a", "bad", "b", "bad", "c"]), journal=journal)
    sink = RecordingSink(journal=journal)
    result = run(source, sink, chunk_size=2)
    assert result.exit_code == 1
    assert sorted(source.nacked) == ["env-1", "env-3"]
    assert sorted(source.acked) == ["env-0", "env-2", "env-4"]
    for i in (1, 3):
        assert journal.index("error-flushed", f"id-{i}") < journal.index("nack", f"env-{i}")
    assert sorted(o.identity for o in sink.durable_errors) == ["id-1", "id-3"]
    assert {o.stage for o in result.outcomes} == {"predict"}


def test_an_envelope_of_several_records_is_settled_once_all_are_resolved():
    journal = Journal()
    envelopes = [
        Envelope("A", [Item(f"a{i}", data=f"a{i}") for i in range(3)]),
        Envelope("B", [Item("b0", data="b0"), Item("b1", data="bad"), Item("b2", data="b2")]),
        Envelope("C", [], error="message body is not JSON"),
        Envelope("D", [Item("d0", data="d0"), Item("d1", error="request lacks 's3_uri'")]),
        Envelope("E", []),
    ]
    source = ListSource(envelopes, journal=journal)
    sink = RecordingSink(journal=journal)
    result = run(source, sink, chunk_size=1, batch_size=1)
    assert sorted(source.acked) == ["A", "E"]
    assert sorted(source.nacked) == ["B", "C", "D"]
    ack_a = journal.index("ack", "A")
    assert all(journal.index("flushed", f"a{i}") < ack_a for i in range(3))
    nack_b = journal.index("nack", "B")
    assert journal.index("error-flushed", "b1") < nack_b
    assert journal.index("flushed", "b0") < nack_b and journal.index("flushed", "b2") < nack_b
    assert {(o.identity, o.stage) for o in result.outcomes} == {
        ("b1", "predict"),
        ("C", "parse"),
        ("d1", "parse"),
    }
    assert sorted(sink.ids()) == ["a0", "a1", "a2", "b0", "b2", "d0"]
    assert result.exit_code == 1
    assert result.summary["failed"] == 3


def test_a_sink_rejection_fails_that_record_at_stage_sink_only():
    source = ListSource(data_envelopes(["a", "b", "c", "d"]))
    sink = RecordingSink(reject={"id-2"})
    result = run(source, sink, chunk_size=4)
    assert result.exit_code == 1
    [outcome] = result.outcomes
    assert (outcome.identity, outcome.stage) == ("id-2", "sink")
    assert "test sink refuses id-2" in outcome.message
    assert sorted(sink.ids()) == ["id-0", "id-1", "id-3"]
    assert source.nacked == ["env-2"]
    assert sorted(source.acked) == ["env-0", "env-1", "env-3"]
    assert result.summary["written"] == 3 and result.summary["failed"] == 1


# -- sink and source trouble -------------------------------------------------------------------


def test_a_sink_that_fails_twice_then_recovers_loses_nothing():
    source = ListSource(data_envelopes(range(10)))
    sink = RecordingSink(fail_flushes=2)
    result = run(source, sink, chunk_size=20, sink_retry_budget=10)
    assert result.exit_code == 0
    assert sink.failed_flushes == 2
    assert sorted(sink.ids()) == sorted(f"id-{i}" for i in range(10))
    assert sorted(source.acked) == sorted(f"env-{i}" for i in range(10))
    assert source.nacked == []


def test_a_sink_that_stays_down_stops_the_run_with_exit_3_and_settles_nothing():
    source = ListSource(data_envelopes(["a", "bad", "b"] * 10))
    sink = RecordingSink(fail_flushes=None)
    started = time.monotonic()
    result = run(source, sink, sink_retry_budget=1, chunk_size=2)
    assert time.monotonic() - started < 5
    assert result.exit_code == 3
    assert "stayed unavailable for 1 s" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []
    assert sink.durable == [] and sink.failed_flushes >= 2
    # The sink is not closed: closing could publish records that were never acknowledged.
    assert source.closed == 1 and sink.closed == 0


def test_the_engine_stops_pulling_input_while_the_sink_is_failing():
    source = ListSource(data_envelopes(range(300)))
    sink = RecordingSink(fail_for=1.0)
    samples: list[tuple[int, int]] = []  # (flush call, envelopes pulled so far)
    sink.on_flush = lambda: samples.append((sink.flush_calls, len(source.yielded)))
    result = run(
        source,
        sink,
        concurrency=1,
        batch_size=1,
        prefetch=2,
        chunk_size=1,
        flush_interval=0.05,
        sink_retry_budget=10,
    )
    assert result.exit_code == 0
    failing = samples[: sink.failed_flushes]
    assert len(failing) >= 3
    # Without the pause the producer fills the engine's queues (dozens of envelopes).
    assert failing[-1][1] - failing[0][1] <= 4, samples[:6]
    assert len(source.acked) == 300 and source.nacked == []


def test_a_source_that_becomes_unavailable_exits_3_after_settling_what_it_gave():
    source = ListSource(data_envelopes(range(10)), fail_after=4)
    sink = RecordingSink()
    result = run(source, sink)
    assert result.exit_code == 3
    assert "unavailable" in result.summary["reason"]
    assert "test queue gone after 4 envelopes" in result.summary["reason"]
    assert sorted(source.acked) == ["env-0", "env-1", "env-2", "env-3"]
    assert sorted(sink.ids()) == ["id-0", "id-1", "id-2", "id-3"]


# -- prefetch window ---------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded = 0
        self.predicted = 0
        self.most_ahead = 0


class CountingLoader(Loader):
    name = "counting"
    schemes = ("count",)
    description = "Test loader counting loads"
    counter: ClassVar[Counter] = Counter()

    def load(self, uri: str) -> Loaded:
        counter = CountingLoader.counter
        with counter.lock:
            counter.loaded += 1
            counter.most_ahead = max(counter.most_ahead, counter.loaded - counter.predicted)
        return Loaded(b"x")


class CountingPredictor(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        time.sleep(0.0005)
        with CountingLoader.counter.lock:
            CountingLoader.counter.predicted += 1
        return {"ok": True}


@hookimpl
def register_loaders(register):
    register(CountingLoader)


@pytest.mark.parametrize(
    ("settings", "window"),
    [
        ({"concurrency": 2, "batch_size": 4}, 8),  # default: twice max(concurrency, batch size)
        ({"concurrency": 4, "batch_size": 2, "prefetch": 3}, 3),
    ],
)
def test_the_prefetch_window_bounds_items_loaded_but_not_predicted(settings, window):
    CountingLoader.counter = Counter()
    envelopes = [
        Envelope(f"e{i}", [Item(f"i{i}", uri=f"count://{i}", decoder="raw")]) for i in range(1000)
    ]
    source = ListSource(envelopes)
    sink = RecordingSink()
    counting = types.SimpleNamespace(register_loaders=register_loaders)
    result = run_pipeline(
        source,
        sink,
        CountingPredictor,
        environ={},
        registry=core_registry([("counting", counting)]),
        **settings,
    )
    assert result.exit_code == 0, result.outcomes[:3]
    assert len(sink.durable) == 1000
    assert CountingLoader.counter.most_ahead <= window
    # The loaders do run ahead: the bound is what holds them back.
    assert CountingLoader.counter.most_ahead >= min(window, 3)


# -- the flush policy and unbounded sources ----------------------------------------------------


def test_an_unbounded_source_is_acked_within_the_flush_interval():
    source = ListSource(data_envelopes(range(3)), unbounded=True)
    pipeline = make_pipeline(
        source, RecordingSink(), EchoPredictor, chunk_size=100, flush_interval=0.3
    )
    summary, acked_at = run_until(pipeline, lambda: len(source.acked) == 3)
    assert acked_at is not None, "not acked before stop()"
    delay = acked_at - source.yield_times[-1]
    assert 0.2 <= delay <= 1.5, delay
    assert summary.exit_code == 0


def test_a_full_chunk_is_flushed_at_once_and_the_rest_at_shutdown():
    source = ListSource(data_envelopes(range(5)), unbounded=True)
    pipeline = make_pipeline(
        source, RecordingSink(), EchoPredictor, chunk_size=2, flush_interval=30, batch_size=1
    )
    started = time.monotonic()
    after_pause: list[int] = []

    def four_acked_then_a_pause() -> bool:
        if len(source.acked) < 4:
            return False
        time.sleep(0.3)
        after_pause.append(len(source.acked))
        return True

    summary, held = run_until(pipeline, four_acked_then_a_pause)
    assert held is not None and held - started < 2.5
    assert after_pause == [4]  # the fifth waits for its chunk to fill, or for the end
    assert summary.exit_code == 0
    assert sorted(source.acked) == [f"env-{i}" for i in range(5)]
    assert time.monotonic() - started < 5


def test_stopping_an_unbounded_source_exits_0_even_with_failed_messages():
    source = ListSource(data_envelopes(["a", "bad", "b"]), unbounded=True)
    pipeline = make_pipeline(source, RecordingSink(), EchoPredictor, flush_interval=0.05)
    summary, held = run_until(pipeline, lambda: len(source.acked) + len(source.nacked) == 3)
    assert held is not None
    assert summary.exit_code == 0
    assert summary.interrupted and summary.failed == 1 and summary.succeeded == 2
    assert source.nacked == ["env-1"]
    assert source.closed == 1


# -- the input store down ---------------------------------------------------------------------


def _uri_envelopes(paths: list[Path]) -> list[Envelope]:
    return [Envelope(str(p), [Item(str(p), uri=str(p))]) for p in paths]


def test_a_short_input_outage_pauses_and_retries_loads_without_failing_records(tmp_path):
    from igata_core import ServiceUnavailable
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FaultyLoader, registry_with

    paths = write_images(tmp_path, 12)
    faulty = FaultyLoader(FileLoader(), fail_times=4, exc=ServiceUnavailable("S3 unreachable"))
    source = ListSource(_uri_envelopes(paths))
    result = run_pipeline(
        source, RecordingSink(), ShapePredictor, registry=registry_with(faulty.as_class()),
        load_retry_budget=10, concurrency=2,
    )  # fmt: skip
    assert result.exit_code == 0, result.summary
    assert len(faulty.failures) == 4
    assert sorted(source.acked) == sorted(str(p) for p in paths) and source.nacked == []


@pytest.mark.timeout(30)
def test_an_input_outage_that_ends_in_a_record_error_resumes_intake(tmp_path):
    # The store comes back and answers that this object is missing: that is the record's
    # error, and the store is up again; intake must not stay paused waiting for it.
    from igata_core import ServiceUnavailable
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FaultyLoader, registry_with

    paths = [tmp_path / "missing.png", *write_images(tmp_path, 4)]
    faulty = FaultyLoader(FileLoader(), fail_times=2, exc=ServiceUnavailable("S3 unreachable"))
    source = ListSource(_uri_envelopes(paths))
    result = run_pipeline(
        source, RecordingSink(), ShapePredictor, registry=registry_with(faulty.as_class()),
        load_retry_budget=10, concurrency=1, prefetch=1,
    )  # fmt: skip
    assert result.exit_code == 1, result.summary
    assert result.summary["failed"] == 1 and result.summary["written"] == 4
    assert source.nacked == [str(paths[0])]


def test_an_input_outage_is_retried_on_its_first_item_before_the_rest_of_the_run(tmp_path):
    # A run loads its items before decoding them; when the store is down, the first
    # failure's retries come first, not one failed attempt (a timeout) per item of the run.
    from igata_core import ServiceUnavailable
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FaultyLoader, registry_with

    paths = write_images(tmp_path, 8)
    faulty = FaultyLoader(FileLoader(), fail_times=3, exc=ServiceUnavailable("S3 unreachable"))
    items = [Item(str(p), uri=str(p)) for p in paths]
    source = ListSource([Envelope("all", items)])
    result = run_pipeline(
        source, RecordingSink(), ShapePredictor, registry=registry_with(faulty.as_class()),
        load_retry_budget=10, concurrency=1,
    )  # fmt: skip
    assert result.exit_code == 0 and result.summary["written"] == 8, result.summary
    assert faulty.calls[:4] == [str(paths[0])] * 4, faulty.calls
    assert sorted(faulty.calls[4:]) == sorted(str(p) for p in paths[1:])


def test_a_long_input_outage_stops_with_exit_3_and_settles_nothing(tmp_path):
    from igata_core import ServiceUnavailable
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FOREVER, FaultyLoader, registry_with

    paths = write_images(tmp_path, 5)
    faulty = FaultyLoader(FileLoader(), fail_times=FOREVER, exc=ServiceUnavailable("S3 down"))
    source = ListSource(_uri_envelopes(paths))
    started = time.monotonic()
    result = run_pipeline(
        source, RecordingSink(), ShapePredictor, registry=registry_with(faulty.as_class()),
        load_retry_budget=1,
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert result.exit_code == 3
    assert "input unavailable for 1 s" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []


def test_a_sink_configuration_error_stops_at_once_with_exit_2_and_settles_nothing():
    from igata_core import ConfigurationError

    class MisconfiguredSink(RecordingSink):
        def flush(self) -> None:
            self.flush_calls += 1
            raise ConfigurationError("the table is keyed by 'id', not 'request_id'")

    source = ListSource(data_envelopes(range(5)))
    sink = MisconfiguredSink()
    started = time.monotonic()
    result = run_pipeline(source, sink, EchoPredictor, sink_retry_budget=30)
    assert time.monotonic() - started < 5  # not retried for the budget
    assert result.exit_code == 2
    assert "is misconfigured: the table is keyed by 'id'" in result.summary["reason"]
    assert sink.flush_calls == 1
    assert source.acked == [] and source.nacked == []


def test_a_source_configuration_error_stops_with_exit_2_after_settling_what_it_gave():
    from igata_core import ConfigurationError

    class MisconfiguredSource(ListSource):
        def envelopes(self) -> Any:
            yield from super().envelopes()
            raise ConfigurationError("queue is FIFO but message_group_field is not set")

    source = MisconfiguredSource(data_envelopes(range(3)))
    result = run_pipeline(source, RecordingSink(), EchoPredictor)
    assert result.exit_code == 2
    assert "source 'list-source' is misconfigured: queue is FIFO" in result.summary["reason"]
    assert sorted(source.acked) == ["env-0", "env-1", "env-2"]


def test_a_nacked_envelope_carries_this_attempts_error_outcomes():
    class RecordingNacks(ListSource):
        def nack(self, envelopes):
            self.outcomes_at_nack = {e.ref: [o.stage for o in e.outcomes] for e in envelopes}
            super().nack(envelopes)

    source = RecordingNacks(data_envelopes(["a", "bad", "b"]))
    run_pipeline(source, RecordingSink(), EchoPredictor)  # EchoPredictor fails on "bad"
    assert source.nacked == ["env-1"]
    assert source.outcomes_at_nack == {"env-1": ["predict"]}


def test_a_loader_configuration_error_stops_at_once_with_exit_2(tmp_path):
    from igata_core import ConfigurationError
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FOREVER, FaultyLoader, registry_with

    paths = write_images(tmp_path, 3)
    faulty = FaultyLoader(
        FileLoader(), fail_times=FOREVER, exc=ConfigurationError("bucket policy refuses us")
    )
    source = ListSource(_uri_envelopes(paths))
    result = run_pipeline(
        source, RecordingSink(), ShapePredictor, registry=registry_with(faulty.as_class()),
        load_retry_budget=30,
    )  # fmt: skip
    assert result.exit_code == 2
    assert "input misconfigured: bucket policy refuses us" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []


# -- load threads ------------------------------------------------------------------------------


class _ThreadNoting:
    """Wraps a loader's ``load`` to note the threads that ran it."""

    def __init__(self, faulty: Any) -> None:
        self.threads: set[str] = set()
        inner = faulty.load

        def load(uri: str) -> Loaded:
            self.threads.add(threading.current_thread().name)
            return inner(uri)

        faulty.load = load


def test_a_single_input_is_loaded_without_starting_every_load_thread(tmp_path, monkeypatch):
    # Load threads start as items wait for them: a run over one file starts one.
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FaultyLoader, registry_with

    paths = write_images(tmp_path, 1)
    faulty = FaultyLoader(FileLoader())
    noted = _ThreadNoting(faulty)
    started = _load_thread_starts(monkeypatch)
    result = run_pipeline(
        ListSource(_uri_envelopes(paths)), RecordingSink(), ShapePredictor,
        registry=registry_with(faulty.as_class()), concurrency=8,
    )  # fmt: skip
    assert result.exit_code == 0, result.summary
    assert started == ["igata-load_0"] and noted.threads == {"igata-load_0"}


def test_slow_loads_are_spread_over_concurrency_threads(tmp_path):
    # Items pile up behind slow loads (a remote store): a thread is started for each
    # waiting item, up to --concurrency, and all of them load.
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FaultyLoader, registry_with

    paths = write_images(tmp_path, 24)
    faulty = FaultyLoader(FileLoader(), slow=0.1)
    noted = _ThreadNoting(faulty)
    result = run_pipeline(
        ListSource(_uri_envelopes(paths)), RecordingSink(), ShapePredictor,
        registry=registry_with(faulty.as_class()), concurrency=4,
    )  # fmt: skip
    assert result.exit_code == 0 and result.summary["written"] == 24, result.summary
    assert noted.threads == {f"igata-load_{i}" for i in range(4)}


class _NotedLoader(Loader):
    name = "noted"
    schemes = ("noted",)
    events: ClassVar[list[tuple[str, str]]] = []

    def load(self, uri: str) -> Loaded:
        _NotedLoader.events.append(("load", uri))
        return Loaded(b"four")


class _NotedDecoder(Decoder):
    name = "noted"

    def decode(self, data: bytes, ref: str) -> Any:
        _NotedLoader.events.append(("decode", ref))
        return data


@hookimpl
def _register_noted_loader(register: Any) -> None:
    register(_NotedLoader)


@hookimpl
def _register_noted_decoder(register: Any) -> None:
    register(_NotedDecoder)


def _noted_runs(count: int) -> list[list[str]]:
    """Run ``count`` items through one load thread; the runs of loads it made, checking
    that each run of loads is followed by the same items' decodes, in the same order."""
    _NotedLoader.events = []
    uris = [f"noted://{i}" for i in range(count)]
    items = [Item(uri, uri=uri, decoder="noted") for uri in uris]
    plugin = types.SimpleNamespace(
        register_loaders=_register_noted_loader, register_decoders=_register_noted_decoder
    )
    result = run_pipeline(
        ListSource([Envelope("e", items)]), RecordingSink(), EchoPredictor,
        registry=core_registry([("noted", plugin)]), environ={}, concurrency=1, batch_size=8,
    )  # fmt: skip
    assert result.exit_code == 0 and result.summary["written"] == count, result.summary
    events, runs, at = _NotedLoader.events, [], 0
    while at < len(events):
        loads = []
        while at < len(events) and events[at][0] == "load":
            loads.append(events[at][1])
            at += 1
        decodes = events[at : at + len(loads)]
        assert loads and decodes == [("decode", uri) for uri in loads], events
        at += len(loads)
        runs.append(loads)
    assert sorted(uri for run in runs for uri in run) == sorted(uris)
    return runs


def test_a_load_thread_loads_its_run_of_items_then_decodes_them():
    # With other threads wanting the interpreter lock, a run of loads then a run of
    # decodes hands the lock over less often than loading and decoding in turn.
    runs = _noted_runs(40)
    assert max(len(run) for run in runs) > 1, "each item loaded and decoded in turn"


def test_a_run_of_loads_holds_a_bounded_number_of_bytes_before_decoding(monkeypatch):
    # Large files are not all held at once: a run stops loading at FETCH_RUN_BYTES (each
    # item here is 4 bytes: runs of 3 for a bound of 10).
    from igata_core import pipeline

    monkeypatch.setattr(pipeline, "FETCH_RUN_BYTES", 10)
    runs = _noted_runs(40)
    assert max(len(run) for run in runs) == 3, runs


def _loading_threads(monkeypatch: Any) -> set[str]:
    """The names of the threads that load runs of items, noted as the run goes."""
    from igata_core.pipeline import Pipeline

    threads: set[str] = set()
    original = Pipeline._load_run

    def noting(self: Pipeline, run: Any) -> bool:
        threads.add(threading.current_thread().name)
        return original(self, run)

    monkeypatch.setattr(Pipeline, "_load_run", noting)
    return threads


def test_fast_loads_of_a_finite_source_are_loaded_by_the_producer_itself(tmp_path, monkeypatch):
    # Small local files: once the gate finds one thread enough, the thread that takes the
    # input loads it too, in runs, without handing it to a load thread.
    threads = _loading_threads(monkeypatch)
    paths = write_images(tmp_path, 300)
    source = ListSource(_uri_envelopes(paths))
    result = run_pipeline(
        source, RecordingSink(), ShapePredictor, registry=core_registry(), environ={},
        batch_size=16,
    )  # fmt: skip
    assert result.exit_code == 0 and result.summary["written"] == 300, result.summary
    assert sorted(source.acked) == sorted(str(p) for p in paths)
    assert "igata-producer" in threads and "igata-load_0" in threads  # the first loads


def test_an_unbounded_source_never_waits_on_its_producer_loading(tmp_path, monkeypatch):
    # A queue's producer waits for the next message: items it kept to load itself would
    # wait with it. Its items always go to the load threads.
    threads = _loading_threads(monkeypatch)
    paths = write_images(tmp_path, 300)
    source = ListSource(_uri_envelopes(paths), unbounded=True)
    pipeline = make_pipeline(source, RecordingSink(), ShapePredictor, batch_size=16)
    summary, acked_at = run_until(pipeline, lambda: len(source.acked) == 300, timeout=20)
    assert acked_at is not None, summary
    assert "igata-producer" not in threads and "igata-load_0" in threads


def _load_thread_starts(monkeypatch: Any, refuse_after: float = float("inf")) -> list[str]:
    """Note the load threads started; refuse those after ``refuse_after`` of them, as a
    process limit does ("can't start new thread")."""
    original = threading.Thread.start
    started: list[str] = []

    def start(self: threading.Thread) -> None:
        if self.name.startswith("igata-load"):
            if len(started) >= refuse_after:
                raise RuntimeError("can't start new thread")
            started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return started


def test_no_load_thread_can_start_stops_the_run_at_once_unsettled(tmp_path, monkeypatch):
    paths = write_images(tmp_path, 3)
    source = ListSource(_uri_envelopes(paths))
    _load_thread_starts(monkeypatch, refuse_after=0)
    started = time.monotonic()
    result = run(source, RecordingSink(), ShapePredictor)
    assert time.monotonic() - started < 5  # not a worker that hangs with nothing loading
    assert result.exit_code == 3, result.summary
    assert "cannot start a load thread" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []  # redelivered, not failed


def test_a_refused_second_load_thread_leaves_the_run_to_the_first(tmp_path, monkeypatch):
    from igata_core.builtins.files import FileLoader
    from igata_core.testing.faults import FaultyLoader, registry_with

    paths = write_images(tmp_path, 12)
    faulty = FaultyLoader(FileLoader(), slow=0.02)  # items wait: more threads are wanted
    noted = _ThreadNoting(faulty)
    source = ListSource(_uri_envelopes(paths))
    _load_thread_starts(monkeypatch, refuse_after=1)
    result = run_pipeline(
        source, RecordingSink(), ShapePredictor, registry=registry_with(faulty.as_class()),
        concurrency=4,
    )  # fmt: skip
    assert result.exit_code == 0 and result.summary["written"] == 12, result.summary
    assert noted.threads == {"igata-load_0"}
    assert sorted(source.acked) == sorted(str(p) for p in paths)
