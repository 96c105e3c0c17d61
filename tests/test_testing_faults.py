"""The fault injectors, alone and driving the engine's outage handling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from igata_core.builtins.files import FileLoader, FilesSource
from igata_core.builtins.sinks import JsonlSink, NullSink
from igata_core.components import RECORD_ID_KEY, RecordError, ServiceUnavailable
from igata_core.predictor import PredictorBase
from igata_core.testing import run_pipeline
from igata_core.testing.faults import (
    FOREVER,
    FaultyLoader,
    FaultySink,
    FaultySource,
    InjectedFault,
    registry_with,
)


def records(*ids: str) -> list[dict[str, Any]]:
    return [{RECORD_ID_KEY: i, "igata_input": f"in/{i}", "value": 1} for i in ids]


# -- FaultySink ------------------------------------------------------------------------------


def test_sink_fails_the_listed_put_calls_before_the_inner_sink_sees_them() -> None:
    sink = FaultySink(NullSink(), fail_put_on={2})
    sink.open()
    sink.put_records(records("a"))
    with pytest.raises(InjectedFault, match=r"faulty\(null\)\.put_records call 2"):
        sink.put_records(records("b"))
    sink.put_records(records("c"))
    assert isinstance(sink.inner, NullSink) and sink.inner.count == 2
    assert sink.failures == [("put_records", 2)]


def test_sink_flush_fails_k_times_then_makes_everything_put_durable(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    sink = FaultySink(JsonlSink({"path": str(out)}), fail_flush_times=2)
    sink.open()
    sink.put_records(records("a", "b"))
    for _ in range(2):
        with pytest.raises(InjectedFault):
            sink.flush()
    assert sink.durable == [] and sink.pending == ["a", "b"]
    sink.flush()
    sink.close()
    assert sink.durable == ["a", "b"] and sink.flush_calls == 3
    assert [json.loads(line)[RECORD_ID_KEY] for line in out.read_text().splitlines()] == ["a", "b"]


def test_sink_flush_can_fail_forever_with_a_chosen_exception() -> None:
    sink = FaultySink(NullSink(), fail_flush_times=FOREVER, exc=ServiceUnavailable)
    for _ in range(5):
        with pytest.raises(ServiceUnavailable, match="flush call"):
            sink.flush()
    assert sink.flush_calls == 5


def test_sink_exc_may_be_an_instance_or_a_factory() -> None:
    boom = OSError("disk full")
    with pytest.raises(OSError) as raised:
        FaultySink(NullSink(), fail_flush_on=1, exc=boom).flush()
    assert raised.value is boom
    sink = FaultySink(NullSink(), fail_put_times=1, exc=lambda op, n: TimeoutError(f"{op} #{n}"))
    with pytest.raises(TimeoutError, match="put_records #1"):
        sink.put_records(records("a"))


def test_sink_rejects_listed_identities_with_their_indexes_in_the_chunk(tmp_path: Path) -> None:
    inner = JsonlSink({"path": str(tmp_path / "out.jsonl")})
    sink = FaultySink(inner, reject={"b"})
    sink.open()
    bad = {RECORD_ID_KEY: "d", "value": object()}  # the inner sink rejects this one itself
    rejections = sink.put_records([*records("a", "b", "c"), bad])
    assert [(r.index, "injected" in r.message) for r in rejections] == [(1, True), (3, False)]
    sink.flush()
    assert sink.durable == ["a", "c"]


def test_sink_close_failure_and_slowness() -> None:
    sink = FaultySink(NullSink(), fail_close_times=1, slow=0.01)
    with pytest.raises(InjectedFault):
        sink.close()
    sink.close()
    assert sink.close_calls == 2
    with pytest.raises(ValueError, match="fail_flush_times must be >= 0"):
        FaultySink(NullSink(), fail_flush_times=-1)


# -- FaultyLoader ----------------------------------------------------------------------------


def test_loader_fails_listed_uris_a_given_number_of_times(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.json").write_text("[]")
    a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    loader = FaultyLoader(FileLoader(), fail_uris={a}, fail_uri_times=1, exc=RecordError)
    with pytest.raises(RecordError, match=r"a\.json"):
        loader.load(a)
    assert loader.load(a).data == b"{}"
    assert loader.load(b).data == b"[]"
    assert loader.calls == [a, a, b] and loader.failures == [a]


def test_loader_fails_by_call_number(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    loader = FaultyLoader(FileLoader(), fail_on=[1, 3])
    uri = str(tmp_path / "a.json")
    outcomes = []
    for _ in range(4):
        try:
            loader.load(uri)
            outcomes.append("ok")
        except InjectedFault:
            outcomes.append("fault")
    assert outcomes == ["fault", "ok", "fault", "ok"]


def test_registry_with_replaces_the_file_loader() -> None:
    faulty = FaultyLoader(FileLoader())
    registry = registry_with(faulty.as_class())
    registration = registry.get("loader", "file")
    assert registration.obj.schemes == ("file",)
    assert registration.obj({}, None).load.__self__ is not faulty  # a class, not the wrapper
    with pytest.raises(TypeError, match="not a source, sink or loader"):
        registry_with(PredictorBase)  # type: ignore[arg-type]


# -- FaultySource ----------------------------------------------------------------------------


def _inputs(directory: Path, n: int) -> Path:
    directory.mkdir()
    for i in range(n):
        (directory / f"req-{i}.json").write_text(json.dumps({"i": i}))
    return directory


def test_source_records_acks_and_fails_after_n(tmp_path: Path) -> None:
    source = FaultySource(FilesSource({"inputs": [str(_inputs(tmp_path / "in", 3))]}), fail_after=2)
    source.open()
    delivered = []
    with pytest.raises(ServiceUnavailable, match="fails after 2"):
        for envelope in source.envelopes():
            delivered.append(envelope)
    source.ack(delivered[:1])
    source.nack(delivered[1:])
    assert source.acked == [delivered[0].ref] and source.nacked == [delivered[1].ref]
    assert len(source.yielded) == 2


def test_source_ack_failure() -> None:
    source = FaultySource(FilesSource({"inputs": []}), fail_ack_times=1)
    with pytest.raises(InjectedFault):
        source.ack([])
    source.ack([])
    assert source.acked == []


# -- the engine under faults -----------------------------------------------------------------


class Echo(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"i": input_record["i"]}


FAST = {"flush_interval": 0.05, "chunk_size": 2, "max_batch_wait": 0.01}


def _written(path: Path) -> list[int]:
    return sorted(json.loads(line)["i"] for line in path.read_text().splitlines())


def test_a_sink_that_stays_down_stops_the_run_with_exit_3_and_acks_nothing(
    tmp_path: Path,
) -> None:
    source = FaultySource(FilesSource({"inputs": [str(_inputs(tmp_path / "in", 5))]}))
    sink = FaultySink(NullSink(), fail_flush_times=FOREVER)
    result = run_pipeline(source, sink, Echo, sink_retry_budget=0.5, **FAST)
    assert result.exit_code == 3, result.summary
    assert "stayed unavailable" in result.summary["reason"]
    assert source.acked == [] and source.nacked == []
    assert sink.flush_calls >= 2 and sink.durable == []


def test_a_sink_that_fails_twice_then_recovers_loses_nothing(tmp_path: Path) -> None:
    source = FaultySource(FilesSource({"inputs": [str(_inputs(tmp_path / "in", 6))]}))
    out = tmp_path / "out.jsonl"
    sink = FaultySink(JsonlSink({"path": str(out)}), fail_flush_times=2)
    result = run_pipeline(source, sink, Echo, sink_retry_budget=10, **FAST)
    assert result.exit_code == 0, result.summary
    assert sink.failures == [("flush", 1), ("flush", 2)]
    assert sorted(source.acked) == sorted(source.yielded) and source.nacked == []
    assert _written(out) == list(range(6))


def test_a_failed_put_is_put_again(tmp_path: Path) -> None:
    source = FaultySource(FilesSource({"inputs": [str(_inputs(tmp_path / "in", 4))]}))
    out = tmp_path / "out.jsonl"
    sink = FaultySink(JsonlSink({"path": str(out)}), fail_put_on=1)
    result = run_pipeline(source, sink, Echo, **FAST)
    assert result.exit_code == 0, result.summary
    assert sink.failures == [("put_records", 1)]
    assert _written(out) == [0, 1, 2, 3] and len(source.acked) == 4


def test_a_rejected_record_is_a_sink_failure_and_its_envelope_is_nacked(tmp_path: Path) -> None:
    directory = _inputs(tmp_path / "in", 3)
    rejected = (directory / "req-1.json").resolve().as_uri()
    source = FaultySource(FilesSource({"inputs": [str(directory)]}))
    out = tmp_path / "out.jsonl"
    sink = FaultySink(JsonlSink({"path": str(out)}), reject={rejected})
    result = run_pipeline(source, sink, Echo, **FAST)
    assert result.exit_code == 1
    assert [(o.stage, o.identity) for o in result.outcomes] == [("sink", rejected)]
    assert source.nacked == [str(directory / "req-1.json")]
    assert _written(out) == [0, 2]


def test_a_failing_loader_fails_only_its_record(tmp_path: Path) -> None:
    directory = _inputs(tmp_path / "in", 3)
    broken = str(directory / "req-2.json")
    loader = FaultyLoader(FileLoader(), fail_uris={broken}, exc=RecordError)
    source = FaultySource(FilesSource({"inputs": [str(directory)]}))
    out = tmp_path / "out.jsonl"
    result = run_pipeline(
        source, JsonlSink({"path": str(out)}), Echo, registry=registry_with(loader.as_class()),
        **FAST,
    )  # fmt: skip
    assert result.exit_code == 1
    assert [(o.stage, o.error_type) for o in result.outcomes] == [("load", "RecordError")]
    assert source.nacked == [broken] and len(source.acked) == 2
    assert _written(out) == [0, 1] and loader.failures == [broken]


def test_a_source_that_goes_away_stops_with_exit_3_after_settling_what_it_gave(
    tmp_path: Path,
) -> None:
    source = FaultySource(FilesSource({"inputs": [str(_inputs(tmp_path / "in", 5))]}), fail_after=3)
    out = tmp_path / "out.jsonl"
    result = run_pipeline(source, JsonlSink({"path": str(out)}), Echo, **FAST)
    assert result.exit_code == 3 and "unavailable" in result.summary["reason"]
    assert len(source.acked) == 3 and _written(out) == [0, 1, 2]
