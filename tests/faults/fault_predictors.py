"""Predictors of the fault tests, imported by worker subprocesses (PYTHONPATH=tests/faults).

Each request carries ``n_results`` (how many detections to return) and may carry
``"poison": true`` (predict raises for it on every attempt). Settings come from the
environment, since the workers are separate processes:

* ``FAULT_SLEEP``: seconds each record takes (default 0);
* ``FAULT_CALLS``: a file that gets one line per predict call, ``<pid> <event> <request_id>``
  (events ``predict``, ``batch-start``, ``batch-end``), so a test can tell how often, and by
  which process, each request was predicted. Lines are short single ``write`` calls on a
  file opened for appending, so lines of concurrent workers do not interleave.

Keep it free of heavy imports: it is imported by every worker.
"""

from __future__ import annotations

import os
import time
from typing import Any

from igata_core import PredictorBase


def note(event: str, request_ids: list[str]) -> None:
    """Append one line per request id to ``FAULT_CALLS`` (if set)."""
    path = os.environ.get("FAULT_CALLS")
    if not path:
        return
    pid = os.getpid()
    text = "".join(f"{pid} {event} {request_id}\n" for request_id in request_ids)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def detections(input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """``n_results`` detections scored by the image's mean brightness; raises for poison."""
    if meta.get("poison"):
        raise ValueError(f"poisoned request {meta['request_id']}: this model cannot read it")
    score = round(float(input_record.mean()) / 255, 4)
    return {
        "result": [
            {"label": f"object-{j}", "score": score, "position": {"x1": j, "y1": j * 0.5}}
            for j in range(int(meta["n_results"]))
        ]
    }


class Detector(PredictorBase):
    """One record at a time: FAULT_SLEEP seconds each, every call noted."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        note("predict", [meta["request_id"]])
        time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
        return detections(input_record, meta)


class BatchDetector(PredictorBase):
    """Whole batches: notes ``batch-start`` for every request of a batch, sleeps FAULT_SLEEP
    seconds per record, then notes ``batch-end``. A batch with a poisoned request fails
    whole; the engine then predicts its records one by one (noted as batches of one)."""

    def predict_batch(self, input_records: list[Any], metas: list[dict[str, Any]]) -> list[Any]:
        ids = [meta["request_id"] for meta in metas]
        note("batch-start", ids)
        time.sleep(float(os.environ.get("FAULT_SLEEP", "0")) * len(ids))
        results = [
            detections(record, meta) for record, meta in zip(input_records, metas, strict=True)
        ]
        note("batch-end", ids)
        return results

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return self.predict_batch([input_record], [meta])[0]
