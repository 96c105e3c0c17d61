"""Predictors that do (almost) nothing: for plugin tests and benchmarks that measure igata,
not a model."""

from __future__ import annotations

from typing import Any

from igata_core import PredictorBase


class DummyPredictor(PredictorBase):
    """Reports what it was given: an array's shape, else the type and length of the input.

    ``{"result": [{"shape": [32, 32, 3]}]}`` for an image; ``{"result": [{"type": "list",
    "length": 12}]}`` for a CSV file of 12 rows.
    """

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        shape = getattr(input_record, "shape", None)
        if shape is not None:
            return {"result": [{"shape": [int(n) for n in shape]}]}
        finding: dict[str, Any] = {"type": type(input_record).__name__}
        if hasattr(input_record, "__len__"):
            finding["length"] = len(input_record)
        return {"result": [finding]}


class DummyPredictorNoInputNoOutput(PredictorBase):
    """The original igata README's example predictor: ignores its input, returns a constant."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"result": 0.222, "class": "car", "is_valid": True}
