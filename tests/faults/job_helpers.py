"""Helpers of the batch-job fault test: a predictor for submitted image requests, worker and
submit processes.

Submitted requests carry only ``collection_id``, ``image_id``, ``s3_uri`` and
``request_id``, so the predictor here returns one result per image and fails for an object
whose key holds ``poison``; ``FAULT_SLEEP`` seconds per record keep work in flight when a
worker is killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fault_workers import FAULTS_DIR, Worker

from igata_core import PredictorBase


class OneLabel(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(os.environ.get("FAULT_SLEEP", "0")))
        if "poison" in meta["s3_uri"]:
            raise ValueError(f"poisoned image {meta['s3_uri']}: this model cannot read it")
        return {"result": [{"label": "shade", "score": round(float(input_record.mean()) / 255, 4)}]}


def environment(
    aws: Any, requests_table: str, results_table: str, queue_url: str
) -> dict[str, str]:
    """One environment for the whole job: submit, workers, status and export."""
    return {
        **os.environ,
        **aws.env(),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(FAULTS_DIR), os.environ.get("PYTHONPATH")])
        ),
        "INPUT_CTXMGR_SQS_QUEUE_URL": queue_url,
        "OUTPUT_CTXMGR_REQUESTS_TABLENAME": requests_table,
        "OUTPUT_CTXMGR_RESULTS_TABLENAME": results_table,
        "SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION": "0",
    }


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Worker:
    """``python -m igata_core ARGS`` as a process whose output goes to ``log_dir/NAME.log``."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "igata_core", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    return Worker(name, process, log_path)


def worker_args(idle_timeout: float = 3) -> list[str]:
    return [
        "run", "--source", "sqs", "--sink", "dynamodb",
        "--predictor", "job_helpers:OneLabel",
        "--source-opt", "wait_time_seconds=1",
        "--source-opt", f"idle_timeout={idle_timeout:g}",
        "--flush-interval", "0.2", "--batch-size", "4", "--concurrency", "4",
    ]  # fmt: skip
