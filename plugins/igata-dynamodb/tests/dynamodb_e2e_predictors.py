"""Predictors for the end-to-end tests (imported by worker subprocesses via PYTHONPATH)."""

from __future__ import annotations

import os
import time
from typing import Any

from igata_core import PredictorBase


class SlowDetector(PredictorBase):
    """``image_id``'s number modulo 3 detections per image, after DDB_TEST_SLEEP seconds."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(os.environ.get("DDB_TEST_SLEEP", "0.1")))
        count = int(meta["image_id"].rsplit("-", 1)[1]) % 3
        mean = float(input_record.mean()) / 255
        return {
            "result": [
                {"label": f"object-{j}", "score": mean, "position": {"x1": j, "y1": j * 0.5}}
                for j in range(count)
            ]
        }


class OneFinding(PredictorBase):
    """One finding per image, with whole numbers of every kind (int, float, numpy)."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        height, width = input_record.shape[:2]
        return {
            "result": [
                {
                    "label": "photo",
                    "height": height,
                    "width": width * 1.0,
                    "pixels": input_record[:, :, 0].size,
                    "mean": input_record.astype("float32").mean() * 0 + 30,
                }
            ]
        }
