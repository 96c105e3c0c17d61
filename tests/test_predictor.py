"""The predictor: how it is found, and how the engine calls it (setup, batches, timeouts,
postprocess, what a result record holds)."""

from __future__ import annotations

import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers_core
from helpers_core import (
    EchoPredictor,
    ListSource,
    RecordingSink,
    clean_env,
    core_registry,
    data_envelopes,
    igata,
    write_images,
)

from igata_core import Envelope, Item, PredictorBase
from igata_core.options import OptionsError
from igata_core.predictor import PredictorError, load_predictor
from igata_core.testing import run_pipeline


def run(source: ListSource, predictor: Any, sink: RecordingSink | None = None, **settings: Any):
    sink = sink or RecordingSink()
    result = run_pipeline(source, sink, predictor, registry=core_registry(), environ={}, **settings)
    return result, sink


def by_id(sink: RecordingSink) -> dict[str, dict[str, Any]]:
    return {record["igata_id"]: record for record in sink.durable}


# -- finding the predictor ---------------------------------------------------------------------


def test_predictor_by_module_and_class():
    assert load_predictor("helpers_core:EchoPredictor") is EchoPredictor


def test_predictor_module_alone_uses_predictor_class_name_default_predictor():
    assert load_predictor("helpers_core") is helpers_core.Predictor
    assert (
        load_predictor("helpers_core", environ={"PREDICTOR_CLASS_NAME": "EchoPredictor"})
        is EchoPredictor
    )


def test_predictor_from_the_originals_environment_variables():
    assert (
        load_predictor(None, environ={"PREDICTOR_MODULE": "helpers_core"}) is helpers_core.Predictor
    )
    environ = {"PREDICTOR_MODULE": "helpers_core", "PREDICTOR_CLASS_NAME": "EchoPredictor"}
    assert load_predictor(None, environ=environ) is EchoPredictor


def test_a_registered_predictor_by_name():
    class Named(EchoPredictor):
        name = "named"

    assert load_predictor("named", registered={"named": Named}) is Named


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Writes uniquely named modules into a directory on sys.path; returns their names."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(code: str, stem: str = "predmod") -> str:
        name = f"{stem}_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(code)
        return name

    return write


def test_clear_errors_for_missing_module_class_and_wrong_type(modules):
    with pytest.raises(PredictorError, match=r"predictor module 'no_such_mod' not found"):
        load_predictor("no_such_mod:Predictor")
    with pytest.raises(PredictorError, match=r"module 'helpers_core'.*PREDICTOR_CLASS_NAME"):
        load_predictor("helpers_core:Nope")
    with pytest.raises(PredictorError, match=r"is not a subclass of igata_core\.PredictorBase"):
        load_predictor("helpers_core:NotAPredictor")
    with pytest.raises(PredictorError, match=r"no predictor given.*PREDICTOR_MODULE"):
        load_predictor(None, environ={})
    broken = modules("raise RuntimeError('weights path unset')\n")
    with pytest.raises(PredictorError, match="failed to import: RuntimeError: weights path unset"):
        load_predictor(f"{broken}:Predictor")


def test_a_missing_dependency_of_the_module_is_not_reported_as_the_module_missing(modules):
    # The module exists; what is missing is a package it imports, whose name happens to be
    # a prefix of the module's own name.
    name = modules("import predmod\n")
    with pytest.raises(PredictorError) as caught:
        load_predictor(f"{name}:Predictor")
    message = str(caught.value)
    assert "failed to import" in message and "No module named 'predmod'" in message
    assert "not found" not in message.split("failed to import")[0]


def test_predictor_errors_are_usage_errors_of_igata_run(tmp_path):
    write_images(tmp_path / "images", 1)
    cases = {
        "no_such_mod:Predictor": "predictor module 'no_such_mod' not found",
        "helpers_core:Nope": "predictor class 'Nope' not found in module 'helpers_core'",
        "helpers_core:NotAPredictor": "helpers_core:NotAPredictor is not a subclass",
    }
    for ref, message in cases.items():
        done = igata(
            "run",
            "--source",
            "files",
            "--sink",
            "jsonl",
            "--sink-opt",
            "path=o.jsonl",
            "--predictor",
            ref,
            "images",
            cwd=tmp_path,
        )
        assert done.returncode == 2, (ref, done.stderr)
        assert f"error: {message}" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_a_failing_setup_is_a_usage_error_before_any_output(tmp_path):
    write_images(tmp_path / "images", 1)
    done = igata(
        "run",
        "--source",
        "files",
        "--sink",
        "jsonl",
        "--sink-opt",
        "path=o.jsonl",
        "--predictor",
        "helpers_core:FailingSetupPredictor",
        "images",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert (
        "error: predictor FailingSetupPredictor.setup() failed: OSError: model file "
        "weights.bin is missing"
    ) in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_predictor_module_from_the_environment_in_igata_run(tmp_path):
    write_images(tmp_path / "images", 2)
    env = clean_env(
        IGATA_LOAD_PLUGINS="",
        PREDICTOR_MODULE="helpers_core",
        PREDICTOR_CLASS_NAME="ShapePredictor",
    )
    done = igata(
        "run", "--sink", "jsonl", "--sink-opt", "path=o.jsonl", "images", cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stderr
    assert '"shape": [3, 4, 3]' in (tmp_path / "o.jsonl").read_text()


# -- how the engine calls it -------------------------------------------------------------------


class SetupTracking(PredictorBase):
    def __init__(self) -> None:
        super().__init__()
        self.setup_calls = 0
        self.predicted_before_setup = 0

    def setup(self) -> None:
        self.setup_calls += 1

    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        if not self.setup_calls:
            self.predicted_before_setup += 1
        return {"value": input_record}


def test_setup_is_called_once_before_the_first_record():
    predictor = SetupTracking()
    result, sink = run(ListSource(data_envelopes(range(10))), predictor, batch_size=3)
    assert result.exit_code == 0
    assert predictor.setup_calls == 1
    assert predictor.predicted_before_setup == 0
    assert len(sink.durable) == 10


class PostprocessWithMeta(EchoPredictor):
    def postprocess_output(self, prediction_result: Any, meta: dict[str, Any] | None = None):
        return {**prediction_result, "post_n": meta["n"]}


class PostprocessWithoutMeta(EchoPredictor):
    def postprocess_output(self, prediction_result):  # the original's one-argument form
        return {**prediction_result, "post": True}


class PreprocessAndPostprocess(EchoPredictor):
    def preprocess_input(self, input_record: Any, meta: dict[str, Any]) -> Any:
        if input_record == "bad-pre":
            raise ValueError("cannot preprocess")
        return f"pre({input_record})"

    def postprocess_output(self, prediction_result, meta=None):
        if prediction_result["value"] == "pre(bad-post)":
            raise ValueError("cannot postprocess")
        return prediction_result


def test_postprocess_output_with_and_without_meta():
    result, sink = run(ListSource(data_envelopes(["a", "b"])), PostprocessWithMeta)
    assert result.exit_code == 0
    assert by_id(sink)["id-1"]["post_n"] == 1
    result, sink = run(ListSource(data_envelopes(["a", "b"])), PostprocessWithoutMeta)
    assert result.exit_code == 0
    assert all(record["post"] is True for record in sink.durable)


def test_failures_in_each_predictor_stage_fail_only_that_record():
    values = ["ok", "bad-pre", "bad", "bad-post"]
    # EchoPredictor.predict refuses "bad"; preprocess turns it into "pre(bad)" first.
    source = ListSource(data_envelopes(values))
    result, sink = run(source, PreprocessAndPostprocess)
    assert result.exit_code == 1
    assert {o.identity: o.stage for o in result.outcomes} == {
        "id-1": "preprocess",
        "id-3": "postprocess",
    }
    assert sorted(sink.ids()) == ["id-0", "id-2"]
    assert by_id(sink)["id-0"]["value"] == "pre(ok)"


class BatchRecording(PredictorBase):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Any]] = []
        self.single_calls = 0

    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        self.single_calls += 1
        return {"value": input_record}

    def predict_batch(self, input_records: list[Any], metas: list[dict[str, Any]]) -> list[Any]:
        self.batches.append(list(input_records))
        if "bad" in input_records:
            raise ValueError("the batch holds a bad record")
        return [
            {"value": v, "n_meta": m["n"], "batch": len(input_records)}
            for v, m in zip(input_records, metas, strict=True)
        ]


def test_predict_batch_is_called_once_per_batch_within_the_batch_size():
    predictor = BatchRecording()
    source = ListSource(data_envelopes(range(23)))
    result, sink = run(source, predictor, batch_size=4, max_batch_wait=0.5)
    assert result.exit_code == 0
    assert predictor.single_calls == 0
    sizes = [len(batch) for batch in predictor.batches]
    assert sum(sizes) == 23 and max(sizes) <= 4
    # With every record ready at once and half a second to fill, batches are full.
    assert len(sizes) <= 8
    assert sorted(v for batch in predictor.batches for v in batch) == list(range(23))
    record = by_id(sink)["id-7"]
    assert record["value"] == 7 and record["n_meta"] == 7


def test_a_failing_batch_is_retried_record_by_record_and_only_the_bad_record_fails():
    predictor = BatchRecording()
    values = ["a", "b", "bad", "c", "d", "e"]
    result, sink = run(
        ListSource(data_envelopes(values)), predictor, batch_size=6, max_batch_wait=0.5
    )
    assert result.exit_code == 1
    assert [(o.identity, o.stage, o.error_type) for o in result.outcomes] == [
        ("id-2", "predict", "ValueError")
    ]
    assert sorted(sink.ids()) == ["id-0", "id-1", "id-3", "id-4", "id-5"]
    assert all(record["batch"] == 1 for record in sink.durable)
    assert [len(b) for b in predictor.batches].count(1) == 6


class SlowOnRequest(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        if input_record == "slow":
            time.sleep(5)
        return {"value": input_record}


class SlowOnRequestBatch(SlowOnRequest):
    def predict_batch(self, input_records, metas):
        return [self.predict(v, m) for v, m in zip(input_records, metas, strict=True)]


@pytest.mark.parametrize("predictor", [SlowOnRequest, SlowOnRequestBatch])
def test_predict_timeout_fails_the_slow_record_and_the_run_goes_on(predictor):
    values = ["a", "slow", "b", "c"]
    started = time.monotonic()
    result, sink = run(
        ListSource(data_envelopes(values)),
        predictor,
        predict_timeout=0.3,
        batch_size=4,
        max_batch_wait=0.3,
    )
    assert time.monotonic() - started < 3
    assert result.exit_code == 1
    [outcome] = result.outcomes
    assert (outcome.identity, outcome.stage, outcome.error_type) == (
        "id-1",
        "predict",
        "PredictTimeout",
    )
    assert "0.3 s" in outcome.message
    assert sorted(sink.ids()) == ["id-0", "id-2", "id-3"]


class Constant(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        return input_record


def test_a_non_dict_prediction_becomes_result():
    values = [0.25, "cat", [1, 2], {"already": "a dict"}]
    result, sink = run(ListSource(data_envelopes(values)), Constant)
    assert result.exit_code == 0
    records = by_id(sink)
    assert records["id-0"]["result"] == 0.25
    assert records["id-1"]["result"] == "cat"
    assert records["id-2"]["result"] == [1, 2]
    assert records["id-3"]["already"] == "a dict" and "result" not in records["id-3"]


class Clashing(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        return {"label": "from-model", "score": 0.5, "igata_id": "forged", "igata_input": "forged"}


def test_a_result_record_holds_the_prediction_the_meta_and_igatas_keys(tmp_path):
    [png] = write_images(tmp_path, 1)
    envelope = Envelope(
        ref="message-1",
        items=[Item(identity="request-1", uri=str(png), meta={"label": "from-meta", "k": 1})],
    )
    result, sink = run(ListSource([envelope]), Clashing)
    assert result.exit_code == 0
    [record] = sink.durable
    assert record == {
        "label": "from-meta",  # the request's meta wins a clash with the prediction
        "score": 0.5,
        "k": 1,
        "size": png.stat().st_size,  # the loader's meta about the object
        "igata_id": "request-1",
        "igata_input": str(png),
    }


def test_the_input_of_a_data_item_is_its_envelope():
    result, sink = run(ListSource(data_envelopes(["x"], prefix="sqs:abc")), EchoPredictor)
    assert result.exit_code == 0
    assert sink.durable == [{"value": "x", "n": 0, "igata_id": "id-0", "igata_input": "sqs:abc-0"}]


def test_an_instance_class_or_reference_may_be_given():
    for predictor in (EchoPredictor, EchoPredictor(), "helpers_core:EchoPredictor"):
        result, sink = run(ListSource(data_envelopes(["v"])), predictor)
        assert result.exit_code == 0 and sink.durable[0]["value"] == "v"
    with pytest.raises(OptionsError, match=r"not a subclass of igata_core\.PredictorBase"):
        run(ListSource(data_envelopes(["v"])), helpers_core.NotAPredictor)


def test_predict_timeout_keeps_an_outer_alarm_running():
    fired: list[int] = []
    previous_handler = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    previous_timer = signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        result, _ = run(
            ListSource(data_envelopes(["a", "slow"])), SlowOnRequest, predict_timeout=0.2
        )
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert result.exit_code == 1
        assert 50 < left <= 60  # still armed, and not restarted from scratch
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous_handler)
