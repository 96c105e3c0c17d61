"""A handwritten-digit classifier as an igata predictor, trained in seconds on scikit-learn's
bundled digits data set (no download).

Run it with ``igata run --predictor examples.digits:DigitsPredictor ...``; the model file is
``$DIGITS_MODEL_PATH`` (trained and saved there on first use if missing).
"""

from examples.digits.images import label_from_name, write_bad_inputs, write_test_pngs
from examples.digits.model import (
    MODEL_PATH_ENV,
    DigitsSplit,
    ModelFileError,
    default_model_path,
    ensure_model,
    load_split,
    save_model,
    train_model,
)
from examples.digits.predictor import DigitsPredictor, image_to_features

__all__ = [
    "MODEL_PATH_ENV",
    "DigitsPredictor",
    "DigitsSplit",
    "ModelFileError",
    "default_model_path",
    "ensure_model",
    "image_to_features",
    "label_from_name",
    "load_split",
    "save_model",
    "train_model",
    "write_bad_inputs",
    "write_test_pngs",
]
