"""Predictors used by the benchmarks (``benchmarks.predictors:NAME`` for ``igata run``)."""

from __future__ import annotations

from typing import Any

from igata_core.predictor import PredictorBase


class NoopPredictor(PredictorBase):
    """Does nothing with its input: what is left to measure is igata's own work."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}


class NoopBatchedPredictor(PredictorBase):
    """Does nothing with a batch: one call per batch, as a model on a GPU is called."""

    def predict_batch(self, inputs: list[Any], metas: list[dict[str, Any]]) -> list[Any]:
        return [{"ok": True}] * len(inputs)


class MlpPredictor(PredictorBase):
    """A small two-layer perceptron over the flattened RGB image, one record per call.

    The weights are seeded, so every instance (and :class:`BatchedMlpPredictor`) computes
    the same function. Inputs must all have ``INPUT_SIZE`` values (32×32×3).
    """

    INPUT_SIZE = 32 * 32 * 3
    HIDDEN = 256
    CLASSES = 10

    def setup(self) -> None:
        import numpy as np

        rng = np.random.default_rng(1234)
        self.w1 = rng.standard_normal((self.INPUT_SIZE, self.HIDDEN), dtype=np.float32) * 0.02
        self.w2 = rng.standard_normal((self.HIDDEN, self.CLASSES), dtype=np.float32) * 0.1

    def _logits(self, x: Any) -> Any:
        import numpy as np

        return np.maximum(x @ self.w1, 0.0) @ self.w2

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        x = np.asarray(input_record, dtype=np.float32).reshape(1, -1) / 255.0
        return {"class": int(self._logits(x)[0].argmax())}


class BatchedMlpPredictor(MlpPredictor):
    """The same model, called once per batch (``predict_batch``)."""

    def predict_batch(self, input_records: list[Any], metas: list[dict[str, Any]]) -> list[Any]:
        import numpy as np

        x = np.stack([np.asarray(r, dtype=np.float32).reshape(-1) for r in input_records])
        classes = self._logits(x / 255.0).argmax(axis=1)
        return [{"class": int(c)} for c in classes]


class MeanColourPredictor(PredictorBase):
    """A model that costs next to nothing per batch: the mean colour of each image.

    For figures about everything but the model (decoding above all)."""

    def predict_batch(self, input_records: list[Any], metas: list[dict[str, Any]]) -> list[Any]:
        return [{"mean": float(r.mean())} for r in input_records]
