"""Train, save and load the digits classifier.

The data is scikit-learn's bundled copy of the UCI handwritten digits (1797 images of 8×8
pixels, ink 0..16), so nothing is downloaded. A standardised logistic regression trains in
well under a second and scores about 0.97 on the fixed test split.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Environment variable naming the model file the predictor loads (or creates).
MODEL_PATH_ENV = "DIGITS_MODEL_PATH"

_FORMAT = "igata-examples-digits/1"
_TEST_FRACTION = 0.25
_SEED = 0
N_FEATURES = 64


class ModelFileError(Exception):
    """The model file exists but cannot be used."""


@dataclass(frozen=True)
class DigitsSplit:
    """The fixed train/test split of the bundled digits; images are 8×8 floats, ink 0..16."""

    train_images: Any
    train_labels: Any
    test_images: Any
    test_labels: Any


def load_split() -> DigitsSplit:
    """The bundled digits, split 75/25, stratified, with a fixed seed (same split every run)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_images, test_images, train_labels, test_labels = train_test_split(
        digits.images,
        digits.target,
        test_size=_TEST_FRACTION,
        random_state=_SEED,
        stratify=digits.target,
    )
    return DigitsSplit(train_images, train_labels, test_images, test_labels)


def train_model(split: DigitsSplit | None = None) -> Any:
    """Fit the classifier on the training part of ``split`` (default: :func:`load_split`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    split = split or load_split()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(split.train_images.reshape(len(split.train_images), -1), split.train_labels)
    return model


def save_model(model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` atomically, so a concurrent reader never sees half a file."""
    import joblib
    import sklearn

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = {"format": _FORMAT, "sklearn_version": sklearn.__version__, "model": model}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            joblib.dump(bundle, out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_model(path: str | os.PathLike[str]) -> Any:
    """Load the model at ``path``; train and save it there first if it is missing or was
    saved by another scikit-learn version (pickles do not travel between versions)."""
    import sklearn

    path = Path(path)
    try:
        bundle = _read_bundle(path)
    except FileNotFoundError:
        reason = "missing"
    else:
        if bundle["sklearn_version"] == sklearn.__version__:
            return bundle["model"]
        reason = f"saved by scikit-learn {bundle['sklearn_version']}, this is {sklearn.__version__}"
    log.info("digits: model %s is %s; training a new one (a few seconds)", path, reason)
    model = train_model()
    save_model(model, path)
    return model


def default_model_path(environ: dict[str, str] | None = None) -> Path:
    """``$DIGITS_MODEL_PATH``, else ``digits.joblib`` in the user's cache directory."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(MODEL_PATH_ENV, "").strip():
        return Path(environ[MODEL_PATH_ENV].strip()).expanduser()
    cache = environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "igata-examples" / "digits.joblib"


def _read_bundle(path: Path) -> dict[str, Any]:
    import joblib

    try:
        with warnings.catch_warnings():
            # A version mismatch is handled by the caller, with a clearer message.
            warnings.filterwarnings("ignore", message=".*Trying to unpickle estimator.*")
            bundle = joblib.load(path)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ModelFileError(
            f"digits: cannot read model file {path} ({type(exc).__name__}: {exc}); delete it "
            f"to have it retrained, or set {MODEL_PATH_ENV} to another path"
        ) from exc
    if not isinstance(bundle, dict) or bundle.get("format") != _FORMAT:
        raise ModelFileError(
            f"digits: {path} is not a digits model saved by examples.digits.save_model; "
            f"delete it to have it retrained, or set {MODEL_PATH_ENV} to another path"
        )
    model = bundle["model"]
    if getattr(model, "n_features_in_", None) != N_FEATURES:
        raise ModelFileError(
            f"digits: model in {path} expects {getattr(model, 'n_features_in_', '?')} "
            f"features, not {N_FEATURES} (8×8 pixels); delete it to have it retrained"
        )
    return bundle
