"""Predictors for the igata-sqs tests (imported by worker subprocesses via PYTHONPATH)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from igata.predictors import PredictorBase


def _describe(input_record: Any) -> dict[str, Any]:
    if isinstance(input_record, dict):
        return {"fields": {k: _describe(v) for k, v in sorted(input_record.items())}}
    if isinstance(input_record, list):
        return {"rows": len(input_record)}
    return {"shape": list(input_record.shape)}


class Shape(PredictorBase):
    """The shape of an image (rows of a CSV file, fields of a multi-URI request)."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return _describe(input_record)


class Noop(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}


class Slow(PredictorBase):
    """Sleeps SQS_TEST_SLEEP seconds per record; counts its calls per image_id."""

    calls: dict[str, int] = {}
    lock = threading.Lock()

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(os.environ.get("SQS_TEST_SLEEP", "0.2")))
        with self.lock:
            key = str(meta.get("image_id"))
            Slow.calls[key] = Slow.calls.get(key, 0) + 1
        return _describe(input_record)


class FailPoison(PredictorBase):
    """Fails every request marked ``"poison": true``."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if meta.get("poison"):
            raise ValueError(f"poisoned request {meta.get('image_id')}")
        return _describe(input_record)


class BigPoison(PredictorBase):
    """Returns a result too large for a small queue for requests marked ``"poison": true``."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        result = _describe(input_record)
        if meta.get("poison"):
            result["blob"] = "z" * 4000
        return result


class FatalPoison(PredictorBase):
    """Raises SystemExit (a fatal error: the run stops) for requests marked ``"poison"``."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if meta.get("poison"):
            raise SystemExit("poisoned model state")
        time.sleep(float(os.environ.get("SQS_TEST_SLEEP", "0")))
        return _describe(input_record)
