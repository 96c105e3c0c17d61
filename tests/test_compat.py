"""Compatibility with the original igata: ``igata.predictors`` and ``python -m igata.cli``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import (
    ListSource,
    RecordingSink,
    clean_env,
    core_registry,
    data_envelopes,
    igata,
    write_images,
)

from igata_core.testing import run_pipeline

# A predictor module written for the original igata, unchanged.
ORIGINAL_PREDICTOR = """\
from igata.predictors import PredictorBase


class Predictor(PredictorBase):
    def preprocess_input(self, input_record, meta):
        return input_record.shape

    def predict(self, input_record, meta):
        return {"height": input_record[0], "width": input_record[1]}

    def postprocess_output(self, prediction_result):
        area = prediction_result["height"] * prediction_result["width"]
        return {**prediction_result, "area": area}
"""


def test_the_original_import_path_is_the_core_class():
    from igata.predictors import PredictorBase as Original
    from igata_core import PredictorBase

    assert Original is PredictorBase

    class Doubler(Original):
        def predict(self, input_record, meta):
            return {"double": input_record * 2}

    sink = RecordingSink()
    result = run_pipeline(
        ListSource(data_envelopes([1, 2])), sink, Doubler, registry=core_registry(), environ={}
    )
    assert result.exit_code == 0
    assert sorted(r["double"] for r in sink.durable) == [2, 4]


def python_m_igata_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "igata.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_python_m_igata_cli_runs_like_igata_run(tmp_path):
    write_images(tmp_path / "images", 4, size=(5, 2))
    (tmp_path / "original_model.py").write_text(ORIGINAL_PREDICTOR)
    env = clean_env(
        PYTHONPATH=str(tmp_path),
        IGATA_LOAD_PLUGINS="",
        OUTPUT_CONTEXT_MANAGER="jsonl",
        OUTPUT_CTXMGR_PATH=str(tmp_path / "compat.jsonl"),
        PREDICTOR_MODULE="original_model",
    )
    done = python_m_igata_cli("images", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    compat = [json.loads(line) for line in (tmp_path / "compat.jsonl").read_text().splitlines()]
    assert len(compat) == 4
    assert {(r["height"], r["width"], r["area"]) for r in compat} == {(2, 5, 10)}

    done = igata(
        "run",
        "--sink",
        "jsonl",
        "--sink-opt",
        "path=run.jsonl",
        "--predictor",
        "original_model:Predictor",
        "images",
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(tmp_path), IGATA_LOAD_PLUGINS=""),
    )
    assert done.returncode == 0, done.stderr
    native = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    key = "igata_id"
    assert sorted(compat, key=lambda r: r[key]) == sorted(native, key=lambda r: r[key])


def test_python_m_igata_cli_exit_codes(tmp_path):
    write_images(tmp_path / "images", 2)
    (tmp_path / "images" / "bad.png").write_bytes(b"garbage")
    (tmp_path / "original_model.py").write_text(ORIGINAL_PREDICTOR)
    env = clean_env(
        PYTHONPATH=str(tmp_path),
        IGATA_LOAD_PLUGINS="",
        OUTPUT_CONTEXT_MANAGER="jsonl",
        OUTPUT_CTXMGR_PATH="out.jsonl",
        PREDICTOR_MODULE="original_model",
    )
    done = python_m_igata_cli("images", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    env["PREDICTOR_MODULE"] = "no_such_model"
    done = python_m_igata_cli("images", cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert "predictor module 'no_such_model' not found" in done.stderr
