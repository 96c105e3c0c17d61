"""Predictors of the acceptance tests (imported by worker subprocesses through PYTHONPATH)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from igata_core import PredictorBase


class Size(PredictorBase):
    """One finding per image: its size."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        height, width = (int(n) for n in input_record.shape[:2])
        return {"result": [{"label": "image", "height": height, "width": width}]}


class ExitMidRun(Size):
    """Calls ``sys.exit()`` at its CONFORMANCE_EXIT_AFTER-th record (user code giving up);
    each record it finished is noted in CONFORMANCE_SEEN so the test knows what ran."""

    done = 0

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if ExitMidRun.done >= int(os.environ["CONFORMANCE_EXIT_AFTER"]):
            sys.exit("the model gave up")
        ExitMidRun.done += 1
        with Path(os.environ["CONFORMANCE_SEEN"]).open("a") as seen:
            seen.write(f"{meta.get('request_id')}\n")
        return super().predict(input_record, meta)


class Echo(PredictorBase):
    """One finding per image, echoing the request's ``value`` field when it has one (the
    corpus's numbers reach the sinks this way)."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        finding: dict[str, Any] = {"label": "corpus", "height": int(input_record.shape[0])}
        if "value" in meta:
            finding["value"] = meta["value"]
        return {"result": [finding]}
