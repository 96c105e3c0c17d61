"""The predictor contract (the original igata's ``PredictorBase``) and how one is found."""

from __future__ import annotations

import importlib
import inspect
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar


class PredictorBase:
    """Subclass this and implement ``predict``; the rest is optional.

    Per record, igata calls ``preprocess_input(input_record, meta)``, then
    ``predict(input_record, meta)`` (or, if the class defines it, ``predict_batch`` once for
    a whole batch), then ``postprocess_output(prediction_result, meta)``. ``predict``
    returns a dict: one result record per input. A prediction with many findings puts them
    in a list under ``result`` (the DynamoDB sink turns each element into a RESULTS item).

    ``input_record`` is what the decoder made: an RGB ``numpy.ndarray`` (H×W×3, uint8) for
    an image, a list of row dicts for a CSV file, an object for JSON. ``meta`` holds the
    request's fields (for SQS, every field of the request) and the object's metadata
    (bucket, key, size…).
    """

    #: Name under which a packaged predictor is registered (``register_predictors`` hook).
    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.predict_timeout: float | None = None

    def setup(self) -> None:
        """Load the model; called once, before the first record."""

    def set_predict_timeout(self, seconds: float | None) -> None:
        """Bound each ``predict``/``predict_batch`` call (SIGALRM, main thread only)."""
        self.predict_timeout = seconds if seconds else None

    def preprocess_input(self, input_record: Any, meta: dict[str, Any]) -> Any:
        return input_record

    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement predict(input_record, meta)"
        )

    # predict_batch(self, input_records: list, metas: list[dict]) -> list is optional and
    # deliberately not defined here: the engine uses it only when a subclass defines it.

    def postprocess_output(self, prediction_result: Any, meta: dict[str, Any] | None = None) -> Any:
        return prediction_result


class PredictorError(Exception):
    """The predictor could not be found or is not a PredictorBase (exit code 2)."""


class PredictTimeout(Exception):
    """A predict call took longer than the predictor's timeout."""


def has_batch(predictor: PredictorBase) -> bool:
    return callable(getattr(predictor, "predict_batch", None))


def postprocess_caller(predictor: PredictorBase) -> Callable[[Any, dict[str, Any]], Any]:
    """Call ``postprocess_output`` with or without ``meta``, as the subclass declares it."""
    method = predictor.postprocess_output
    try:
        params = [
            p
            for p in inspect.signature(method).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        varargs = any(
            p.kind == p.VAR_POSITIONAL for p in inspect.signature(method).parameters.values()
        )
    except (TypeError, ValueError):
        return lambda result, meta: method(result, meta)
    if len(params) >= 2 or varargs:
        return lambda result, meta: method(result, meta)
    return lambda result, meta: method(result)  # type: ignore[call-arg,unused-ignore]


@contextmanager
def time_limit(seconds: float | None, what: str = "predict") -> Iterator[None]:
    """Raise :class:`PredictTimeout` if the block runs longer than ``seconds``.

    Uses SIGALRM like the original, so it only works on the main thread; elsewhere (or
    without a limit) the block runs unbounded.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise PredictTimeout(f"{what} took longer than {seconds:g} s (predict timeout)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    # Someone else's alarm (a watchdog, pytest-timeout) is put back afterwards, not lost.
    outer, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = max(outer - (time.monotonic() - started), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


def load_predictor(
    ref: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    registered: Mapping[str, type[PredictorBase]] | None = None,
) -> type[PredictorBase]:
    """Find the predictor class.

    ``ref`` is ``module:Class``, ``module`` (class ``PREDICTOR_CLASS_NAME``, default
    ``Predictor``) or the name of a registered predictor. Without ``ref``, the original's
    ``PREDICTOR_MODULE`` and ``PREDICTOR_CLASS_NAME`` environment variables are used.
    """
    environ = environ if environ is not None else {}
    registered = registered or {}
    if not ref:
        module_name = environ.get("PREDICTOR_MODULE", "").strip()
        if not module_name:
            raise PredictorError(
                "no predictor given: use --predictor module:Class, or set PREDICTOR_MODULE "
                "(and PREDICTOR_CLASS_NAME, default 'Predictor')"
            )
        class_name = environ.get("PREDICTOR_CLASS_NAME", "").strip() or "Predictor"
    elif ref in registered:
        return registered[ref]
    elif ":" in ref:
        module_name, _, class_name = ref.partition(":")
    else:
        module_name = ref
        class_name = environ.get("PREDICTOR_CLASS_NAME", "").strip() or "Predictor"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module itself (or a package of its dotted path) missing means "not found";
        # a missing dependency it imports ("import torch") is an import failure.
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise PredictorError(
                f"predictor module {module_name!r} not found (is it installed, or on PYTHONPATH?)"
            ) from exc
        raise PredictorError(f"predictor module {module_name!r} failed to import: {exc}") from exc
    except Exception as exc:
        raise PredictorError(
            f"predictor module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise PredictorError(
            f"predictor class {class_name!r} not found in module {module_name!r} "
            "(set PREDICTOR_CLASS_NAME or use --predictor module:Class)"
        )
    if not (isinstance(cls, type) and issubclass(cls, PredictorBase)):
        raise PredictorError(
            f"{module_name}:{class_name} is not a subclass of igata_core.PredictorBase"
        )
    return cls


def call_batch(predictor: PredictorBase, inputs: Sequence[Any], metas: Sequence[dict]) -> list:
    results = predictor.predict_batch(list(inputs), list(metas))  # type: ignore[attr-defined]
    results = list(results)
    if len(results) != len(inputs):
        raise ValueError(f"predict_batch returned {len(results)} results for {len(inputs)} inputs")
    return results
