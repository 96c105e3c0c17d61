"""Fatal errors in user code and components stop the run (exit 4) and never hang it; a
configuration error stops it with exit 2; both hand the envelopes still held back to the
source. A sink's refusal of one record at flush time is that record's error alone."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import (
    EchoPredictor,
    ListSource,
    RecordingSink,
    clean_env,
    core_registry,
    data_envelopes,
    igata,
    make_pipeline,
    write_images,
)

from igata_core import Envelope, Item, Loaded, Loader, PredictorBase, Rejection, hookimpl
from igata_core.metrics import Health
from igata_core.pipeline import EXIT_FATAL, Pipeline
from igata_core.testing import run_pipeline


class ReleasingSource(ListSource):
    """A queue-like source that records what the engine releases after a fatal error."""

    def __init__(self, envelopes: Sequence[Envelope], **kwargs: Any):
        super().__init__(envelopes, unbounded=True, **kwargs)
        self.released: list[str] = []

    def release(self, envelopes: Sequence[Envelope]) -> None:
        self.released += [envelope.ref for envelope in envelopes]


class ExitingPredictor(PredictorBase):
    """Calls ``sys.exit()`` on the input ``"exit"`` (user code giving up mid-run)."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if input_record == "exit":
            sys.exit(3)
        return {"value": input_record}


class InterruptingPredictor(PredictorBase):
    def predict_batch(self, inputs: list[Any], metas: list[dict[str, Any]]) -> list[Any]:
        if "stop" in inputs:
            raise KeyboardInterrupt
        return [{"value": value} for value in inputs]


def run(source: Any, sink: Any, predictor: Any, **settings: Any) -> Any:
    return run_pipeline(source, sink, predictor, registry=core_registry(), environ={}, **settings)


def timed(function: Any) -> tuple[Any, float]:
    started = time.monotonic()
    return function(), time.monotonic() - started


def test_sys_exit_in_predict_stops_a_worker_and_releases_what_it_held() -> None:
    values = ["a", "b", "c", "d", "exit", "f", "g", "h"]
    source = ReleasingSource(data_envelopes(values))
    sink = RecordingSink()
    result, seconds = timed(
        lambda: run(
            source,
            sink,
            ExitingPredictor,
            batch_size=1,
            concurrency=1,
            chunk_size=1,
            flush_interval=0.05,
        )
    )
    assert seconds < 10, "a fatal error must not leave the worker waiting for more input"
    assert result.exit_code == EXIT_FATAL == 4
    assert "fatal error in predictor ExitingPredictor: SystemExit: 3" in result.summary["reason"]
    # Nothing unwritten is acked; what was written before stays acked; the rest is released.
    exit_ref = "env-4"
    assert exit_ref not in source.acked and exit_ref not in source.nacked
    assert set(source.acked) <= {f"env-{i}" for i in range(4)}
    assert {ref.replace("env", "id") for ref in source.acked} <= set(sink.ids())
    assert exit_ref in source.released
    assert not set(source.released) & set(source.acked)
    assert set(source.yielded) == set(source.acked) | set(source.released)


def test_keyboard_interrupt_from_predict_batch_ends_a_finite_run() -> None:
    source = ListSource(data_envelopes(["a", "stop", "c"]))
    result, seconds = timed(lambda: run(source, RecordingSink(), InterruptingPredictor))
    assert seconds < 10
    assert result.exit_code == EXIT_FATAL
    assert "KeyboardInterrupt" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []


def test_a_bug_in_a_load_thread_stops_the_run_instead_of_hanging(monkeypatch) -> None:
    # A load thread that died would leave the items it took unloaded, and the run waiting.
    def broken(self: Pipeline, run: Any) -> bool:
        raise AttributeError("an engine bug")

    monkeypatch.setattr(Pipeline, "_load_run", broken)
    source = ReleasingSource(data_envelopes(["a", "b", "c"]))
    result, seconds = timed(lambda: run(source, RecordingSink(), EchoPredictor))
    assert seconds < 10
    assert result.exit_code == EXIT_FATAL
    assert (
        "fatal error in the engine's load thread: AttributeError: an engine bug"
        in (result.summary["reason"])
    )
    # What was taken goes back (what the producer had not taken yet was never held).
    assert source.acked == [] and source.released
    assert set(source.released) <= set(source.yielded)


def test_a_bug_while_the_producer_loads_stops_the_run_instead_of_hanging(tmp_path, monkeypatch):
    # Fast local files: the producer loads them itself; an engine bug there is fatal,
    # not the source's failure (which would leave the items it took waiting for ever).
    original = Pipeline._load_run

    def broken(self: Pipeline, run: Any) -> bool:
        if threading.current_thread().name == "igata-producer":
            raise AttributeError("an engine bug")
        return original(self, run)

    monkeypatch.setattr(Pipeline, "_load_run", broken)
    paths = write_images(tmp_path, 300)
    envelopes = [Envelope(str(p), [Item(str(p), uri=str(p))]) for p in paths]
    source = ListSource(envelopes)
    result, seconds = timed(lambda: run(source, RecordingSink(), EchoPredictor, batch_size=16))
    assert seconds < 10
    assert result.exit_code == EXIT_FATAL, result.summary
    assert (
        "fatal error in the engine's producer (loading): AttributeError"
        in (result.summary["reason"])
    )


class ExitingLoader(Loader):
    name = "exiting"
    schemes = ("exiting",)

    def load(self, uri: str) -> Loaded:
        raise SystemExit("loader gave up")


@hookimpl
def register_loaders(register: Any) -> None:
    register(ExitingLoader)


def test_system_exit_in_a_loader_is_fatal_not_a_record_error() -> None:
    from igata_core import Item

    envelopes = [Envelope(ref="e0", items=[Item(identity="x", uri="exiting://x")])]
    source = ReleasingSource(envelopes)
    plugin = types.SimpleNamespace(register_loaders=register_loaders)
    registry = core_registry([("exiting-loader", plugin)])
    result = run_pipeline(source, RecordingSink(), EchoPredictor, registry=registry, environ={})
    assert result.exit_code == EXIT_FATAL
    assert "loader gave up" in result.summary["reason"]
    assert result.summary["failed"] == 0, "a fatal error is not one record's failure"
    assert source.released == ["e0"]


class ExitingSink(RecordingSink):
    def flush(self) -> None:
        raise SystemExit("sink gave up")


def test_system_exit_in_a_sink_stops_the_run_without_acking() -> None:
    source = ReleasingSource(data_envelopes(["a", "b"]))
    result, seconds = timed(lambda: run(source, ExitingSink(), EchoPredictor, flush_interval=0.05))
    assert seconds < 10
    assert result.exit_code == EXIT_FATAL
    assert "sink 'recording'" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []
    assert sorted(source.released) == ["env-0", "env-1"]


def test_liveness_fails_once_the_engine_stopped_for_a_fatal_error() -> None:
    health = Health()
    assert health.liveness()[0]
    source = ReleasingSource(data_envelopes(["exit"]))
    assembly_result: dict[str, Any] = {}
    pipeline = make_pipeline(source, RecordingSink(), ExitingPredictor)
    pipeline = Pipeline(
        pipeline.source, pipeline.sink, pipeline.predictor, pipeline.reader, pipeline.settings,
        health=health,
    )  # fmt: skip
    thread = threading.Thread(target=lambda: assembly_result.update(s=pipeline.run()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    alive, reason = health.liveness()
    assert not alive and "SystemExit" in reason
    assert health.readiness()[0] is False


def test_the_cli_exits_non_zero_with_the_cause(tmp_path: Path) -> None:
    (tmp_path / "exiting_model.py").write_text(
        "import sys\n"
        "from igata_core import PredictorBase\n"
        "class Predictor(PredictorBase):\n"
        "    def predict(self, input_record, meta):\n"
        "        sys.exit()\n"
    )
    write_images(tmp_path / "images", 3)
    out = tmp_path / "out.jsonl"
    done = igata(
        "run", "--predictor", "exiting_model:Predictor", "--sink", "jsonl",
        "--sink-opt", f"path={out}", str(tmp_path / "images"),
        env=clean_env(IGATA_LOAD_PLUGINS="", PYTHONPATH=str(tmp_path)), timeout=60,
    )  # fmt: skip
    assert done.returncode == EXIT_FATAL, done.stderr
    assert "fatal error in predictor Predictor: SystemExit" in done.stderr
    assert not out.exists(), "nothing was written: no output file is published"


# -- content refused at flush time ------------------------------------------------------------


class RefusingAtFlushSink(RecordingSink):
    """Refuses the records whose value is ``"refused"`` when it writes them (flush time),
    as a store does that validates items only on write (DynamoDB, SQS batches)."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.since_flush: list[dict[str, Any]] = []

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        self.since_flush += [dict(record) for record in records]
        return super().put_records(records)

    def flush(self) -> list[Rejection]:  # type: ignore[override]
        refused = [i for i, r in enumerate(self.since_flush) if r.get("value") == "refused"]
        refused_ids = {self.since_flush[i]["igata_id"] for i in refused}
        self.pending = [r for r in self.pending if r["igata_id"] not in refused_ids]
        super().flush()
        self.since_flush = []
        return [
            Rejection(i, "test store refuses this value", "ValidationException") for i in refused
        ]


def test_a_record_refused_at_flush_fails_alone_and_is_recorded() -> None:
    source = ListSource(data_envelopes(["a", "refused", "c", "d"]))
    sink = RefusingAtFlushSink()
    result = run(source, sink, EchoPredictor, chunk_size=2, batch_size=4)
    assert result.exit_code == 1
    assert sorted(sink.ids()) == ["id-0", "id-2", "id-3"]
    assert sorted(source.acked) == ["env-0", "env-2", "env-3"]
    assert source.nacked == ["env-1"]
    [outcome] = result.outcomes
    assert (outcome.identity, outcome.stage, outcome.error_type) == (
        "id-1", "sink", "ValidationException",
    )  # fmt: skip
    assert [o.identity for o in sink.durable_errors] == ["id-1"], "put_errors + flush for it"
    assert result.summary["failed_by_stage"] == {"sink": 1}


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_flush_rejection_indexes_count_across_chunks(chunk_size: int) -> None:
    values = ["a", "b", "c", "refused", "e", "refused"]
    source = ListSource(data_envelopes(values))
    sink = RefusingAtFlushSink()
    result = run(source, sink, EchoPredictor, chunk_size=chunk_size, batch_size=6)
    assert sorted(o.identity for o in result.outcomes) == ["id-3", "id-5"]
    assert sorted(source.nacked) == ["env-3", "env-5"]
    assert sorted(sink.ids()) == ["id-0", "id-1", "id-2", "id-4"]


# -- configuration refused: exit 2, held envelopes released --------------------------------------


class CallRecordingSource(ReleasingSource):
    """A :class:`ReleasingSource` that also keeps every ack/nack/release call, in order, as
    ``(method, refs)``: what was handed back, and that nothing else was settled."""

    def __init__(self, envelopes: Sequence[Envelope], **kwargs: Any):
        super().__init__(envelopes, **kwargs)
        self.calls: list[tuple[str, list[str]]] = []

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        self.calls.append(("ack", [envelope.ref for envelope in envelopes]))
        super().ack(envelopes)

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        self.calls.append(("nack", [envelope.ref for envelope in envelopes]))
        super().nack(envelopes)

    def release(self, envelopes: Sequence[Envelope]) -> None:
        self.calls.append(("release", [envelope.ref for envelope in envelopes]))
        super().release(envelopes)


class MisconfiguredMidRunSink(RecordingSink):
    """Writes normally, then refuses with a ``ConfigurationError`` from ``method``
    (``"flush"`` or ``"put_records"``) from its ``fail_from``-th call on (a table whose key
    schema was changed under a running worker, a queue deleted)."""

    def __init__(self, method: str, fail_from: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.method = method
        self.fail_from = fail_from
        self.calls = {"flush": 0, "put_records": 0}

    def _maybe_refuse(self, method: str) -> None:
        self.calls[method] += 1
        if method == self.method and self.calls[method] >= self.fail_from:
            from igata_core import ConfigurationError

            raise ConfigurationError("table 'results' is keyed by 'id', not 'igata_id'")

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        self._maybe_refuse("put_records")
        return super().put_records(records)

    def flush(self) -> None:
        self._maybe_refuse("flush")
        super().flush()


def assert_released_the_rest(source: CallRecordingSource, sink: RecordingSink) -> None:
    """Nothing nacked; only what the sink made durable acked; every other envelope taken
    handed back in one ``release`` call, after the last ack."""
    assert source.nacked == [], "a configuration error is no record's failure"
    assert {ref.replace("env", "id") for ref in source.acked} == set(sink.ids())
    releases = [refs for method, refs in source.calls if method == "release"]
    assert len(releases) == 1, source.calls
    assert source.calls[-1][0] == "release", "released last, once nothing else settles"
    assert not set(source.released) & set(source.acked)
    assert set(source.yielded) == set(source.acked) | set(source.released)


@pytest.mark.parametrize("method", ["flush", "put_records"])
def test_a_sink_configuration_error_mid_run_releases_what_was_held_and_exits_2(
    method: str,
) -> None:
    from igata_core.pipeline import EXIT_USAGE

    source = CallRecordingSource(data_envelopes(["a", "b", "c", "d", "e", "f"]))
    sink = MisconfiguredMidRunSink(method)
    settings = dict(batch_size=1, concurrency=1, chunk_size=1, flush_interval=0.05)
    result, seconds = timed(
        lambda: run(source, sink, EchoPredictor, sink_retry_budget=30, **settings)
    )
    assert seconds < 10, "a configuration error is not retried for the budget"
    assert result.exit_code == EXIT_USAGE == 2
    reason = result.summary["reason"]
    assert "sink 'recording' is misconfigured: table 'results' is keyed by 'id'" in reason
    assert sink.calls[method] == 2, "not retried"
    assert source.acked, "what the first write made durable stays acked"
    assert source.released, "the envelope whose write was refused is handed back"
    assert_released_the_rest(source, sink)


def test_a_sink_configuration_error_on_the_first_write_releases_everything_taken() -> None:
    source = CallRecordingSource(data_envelopes(["a", "b", "c"]))
    sink = MisconfiguredMidRunSink("flush", fail_from=1)
    result = run(source, sink, EchoPredictor, flush_interval=0.05, sink_retry_budget=30)
    assert result.exit_code == 2
    assert source.acked == [] and source.nacked == []
    assert sorted(source.released) == ["env-0", "env-1", "env-2"]
    assert_released_the_rest(source, sink)


class MisconfiguredLoader(Loader):
    name = "misconfigured"
    schemes = ("misconfigured",)

    def load(self, uri: str) -> Loaded:
        from igata_core import ConfigurationError

        raise ConfigurationError("bucket policy refuses this worker's role")


@hookimpl(specname="register_loaders")
def register_misconfigured_loader(register: Any) -> None:
    register(MisconfiguredLoader)


def test_a_loader_configuration_error_releases_what_was_held_and_exits_2() -> None:
    from igata_core import Item

    envelopes = [
        Envelope(ref=f"e{i}", items=[Item(identity=f"x{i}", uri=f"misconfigured://x{i}")])
        for i in range(3)
    ]
    source = CallRecordingSource(envelopes)
    plugin = types.SimpleNamespace(register_loaders=register_misconfigured_loader)
    registry = core_registry([("misconfigured-loader", plugin)])
    result, seconds = timed(
        lambda: run_pipeline(
            source,
            RecordingSink(),
            EchoPredictor,
            registry=registry,
            environ={},
            load_retry_budget=30,
        )
    )
    assert seconds < 10
    assert result.exit_code == 2
    assert "input misconfigured: bucket policy refuses" in result.summary["reason"]
    assert result.summary["failed"] == 0, "a configuration error is not one record's failure"
    assert source.acked == [] and source.nacked == []
    assert "e0" in source.released
    assert [method for method, _ in source.calls] == ["release"]
    assert set(source.yielded) == set(source.released)


def test_a_source_configuration_error_settles_what_it_gave_and_releases_nothing_settled() -> None:
    from igata_core import ConfigurationError

    class MisconfiguredSource(CallRecordingSource):
        def envelopes(self) -> Any:
            for count, envelope in enumerate(super().envelopes()):
                yield envelope
                if count == 2:
                    raise ConfigurationError("queue is FIFO but message_group_field is not set")

    source = MisconfiguredSource(data_envelopes(["a", "b", "c", "d"]))
    sink = RecordingSink()
    result = run(source, sink, EchoPredictor, flush_interval=0.05)
    assert result.exit_code == 2
    assert "source 'list-source' is misconfigured: queue is FIFO" in result.summary["reason"]
    # The source stopped, not the sink: what it gave is finished, written and acked.
    assert sorted(source.acked) == ["env-0", "env-1", "env-2"]
    assert source.nacked == [] and source.released == []
    assert all(refs for _, refs in source.calls), "no empty ack/nack/release calls"
