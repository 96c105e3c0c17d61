"""``DigitsPredictor``: classifies an image of one handwritten digit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from examples.digits.model import N_FEATURES, default_model_path, ensure_model
from igata_core import PredictorBase, RecordError

_SIDE = 8  # the data set's images are 8×8
_INK_MAX = 16.0  # and count ink from 0 to 16 per pixel


def image_to_features(image: Any) -> Any:
    """The 64 features the model expects, from an image as the engine decodes it.

    ``image`` is an RGB ``uint8`` array (H×W×3) or a grayscale one (H×W). The result is a
    float vector of 8×8 ink values in 0..16, like ``load_digits``. Dark ink on light paper
    (a scan) and light ink on a dark ground both work: the border tells which is the ground.
    A non-square image is padded with ground to a square first, so the digit keeps its shape.
    """
    import numpy as np
    from PIL import Image

    if not isinstance(image, np.ndarray):
        raise RecordError(
            f"digits: expected an image array from the image decoder, got "
            f"{type(image).__name__}; give the predictor .png/.jpg inputs"
        )
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise RecordError(
            f"digits: expected a uint8 image of shape H×W×3 or H×W, got {image.dtype} {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise RecordError(f"digits: the image is empty ({image.shape[1]}×{image.shape[0]})")

    gray = image.astype(np.float32)
    if gray.ndim == 3:
        gray = gray @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 255.0 - gray if border.mean() > 127.5 else gray

    height, width = ink.shape
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    ink = np.pad(ink, ((top, side - height - top), (left, side - width - left)))

    # BOX averages every source pixel into its cell, as the data set's 4×4 block counts did.
    small = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32)).resize(
        (_SIDE, _SIDE), Image.Resampling.BOX
    )
    features = np.asarray(small, dtype=np.float64).reshape(N_FEATURES)
    return np.clip(features * (_INK_MAX / 255.0), 0.0, _INK_MAX)


class DigitsPredictor(PredictorBase):
    """A digit classifier trained on scikit-learn's bundled digits.

    ``setup`` loads the model from ``model_path``, else ``$DIGITS_MODEL_PATH``, else the
    user's cache directory, training and saving it there first if it is missing. Each
    prediction is::

        {"result": [{"label": "7", "confidence": 0.98, "valid_number": "7"}],
         "label": 7, "confidence": 0.98}

    ``result`` holds one finding (the DynamoDB sink makes one RESULTS item of it; its
    ``valid_number`` is the table's GSI range key, a string).
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.model_path = Path(model_path) if model_path is not None else None
        self.model: Any = None

    def setup(self) -> None:
        self.model = ensure_model(self.model_path or default_model_path())

    def preprocess_input(self, input_record: Any, meta: dict[str, Any]) -> Any:
        return image_to_features(input_record)

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        probabilities = self._model().predict_proba(input_record.reshape(1, N_FEATURES))
        return self._prediction(probabilities[0])

    def predict_batch(
        self, input_records: list[Any], metas: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Classify the whole batch with one ``predict_proba`` call."""
        import numpy as np

        if not input_records:
            return []
        features = np.stack([record.reshape(N_FEATURES) for record in input_records])
        return [self._prediction(row) for row in self._model().predict_proba(features)]

    def _model(self) -> Any:
        if self.model is None:
            raise RuntimeError("DigitsPredictor: call setup() before predicting")
        return self.model

    def _prediction(self, probabilities: Any) -> dict[str, Any]:
        best = int(probabilities.argmax())
        label = int(self.model.classes_[best])
        confidence = float(probabilities[best])
        finding = {"label": str(label), "confidence": confidence, "valid_number": str(label)}
        return {"result": [finding], "label": label, "confidence": confidence}
