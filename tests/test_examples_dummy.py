"""The no-op example predictors used by plugin tests and benchmarks."""

from __future__ import annotations

import numpy as np

from examples.dummy import DummyPredictor, DummyPredictorNoInputNoOutput
from igata_core.predictor import has_batch, load_predictor


def test_dummy_predictor_reports_the_shape_of_an_image():
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    assert DummyPredictor().predict(image, {}) == {"result": [{"shape": [32, 48, 3]}]}


def test_dummy_predictor_reports_type_and_length_of_other_inputs():
    rows = [{"a": "1"}, {"a": "2"}]
    assert DummyPredictor().predict(rows, {}) == {"result": [{"type": "list", "length": 2}]}
    assert DummyPredictor().predict(3, {}) == {"result": [{"type": "int"}]}


def test_no_input_no_output_predictor_returns_the_original_constant():
    prediction = DummyPredictorNoInputNoOutput().predict(None, {"s3_uri": "s3://b/k.png"})
    assert prediction == {"result": 0.222, "class": "car", "is_valid": True}


def test_dummies_load_by_name_as_per_record_predictors():
    for name, cls in (
        ("examples.dummy:DummyPredictor", DummyPredictor),
        ("examples.dummy:DummyPredictorNoInputNoOutput", DummyPredictorNoInputNoOutput),
    ):
        assert load_predictor(name) is cls
        assert not has_batch(cls())
    assert (
        load_predictor(
            None,
            environ={
                "PREDICTOR_MODULE": "examples.dummy",
                "PREDICTOR_CLASS_NAME": "DummyPredictorNoInputNoOutput",
            },
        )
        is DummyPredictorNoInputNoOutput
    )
