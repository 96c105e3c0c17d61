"""``--decode-processes N``: loading and decoding in worker processes, arrays back through
shared memory, the same records and the same per-record errors as the load threads."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from igata_core import Decoder, PredictorBase, hookimpl
from igata_core.decode_processes import _shared_directory
from igata_core.testing import run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import EchoPredictor, clean_env, igata, write_images

pytestmark = pytest.mark.timeout(120)


class DigestPredictor(PredictorBase):
    """What the predictor got, exactly: shape, dtype and a digest of the bytes."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "shape": list(input_record.shape),
            "dtype": str(input_record.dtype),
            "sha256": hashlib.sha256(input_record.tobytes()).hexdigest(),
            "size": meta.get("size"),
        }


class CrashingDecoder(Decoder):
    """``.crash`` files: the bytes as a uint8 array; the content ``die`` kills the process,
    ``exit`` raises SystemExit (a fatal error, as from a careless library)."""

    name = "crashing"
    extensions: ClassVar[tuple[str, ...]] = (".crash",)

    def decode(self, data: bytes, ref: str) -> Any:
        import numpy as np

        if data == b"die":
            os._exit(3)  # as a segfaulting codec would: no exception, no cleanup
        if data == b"exit":
            raise SystemExit("decoder gave up")
        return np.frombuffer(data, dtype=np.uint8).copy()


class CrashingPlugin:
    @hookimpl
    def register_decoders(self, register: Any) -> None:
        register(CrashingDecoder)


def _leftovers() -> set[str]:
    return {n for n in os.listdir(_shared_directory()) if n.startswith("igata-decode-")}


def _records(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["igata_id"]: row for row in rows}


def test_arrays_come_back_intact_and_the_records_are_those_of_the_threads(tmp_path):
    images = tmp_path / "images"
    write_images(images, 20)
    write_images(images / "big", 3, size=(300, 200))
    before = _leftovers()
    outputs = {}
    for processes in (0, 2):
        out = tmp_path / f"out-{processes}.jsonl"
        result = run_pipeline(
            "files", "jsonl", DigestPredictor, inputs=[str(images)],
            sink_options={"path": str(out)}, decode_processes=processes, batch_size=4,
        )  # fmt: skip
        assert result.exit_code == 0, result.summary
        assert result.summary["written"] == 23
        outputs[processes] = _records(out)
    assert outputs[2] == outputs[0]
    assert {tuple(r["shape"]) for r in outputs[2].values()} == {(3, 4, 3), (200, 300, 3)}
    assert _leftovers() <= before  # every shared-memory file was removed


def test_values_that_are_not_arrays_come_back_too(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.json").write_text(json.dumps({"n": i, "text": "é" * i}))
    outputs = {}
    for processes in (0, 2):
        out = tmp_path / f"out-{processes}.jsonl"
        result = run_pipeline(
            "files", "jsonl", EchoPredictor, inputs=[str(tmp_path / "*.json")],
            sink_options={"path": str(out)}, decode_processes=processes,
        )  # fmt: skip
        assert result.exit_code == 0, result.summary
        outputs[processes] = _records(out)
    assert outputs[2] == outputs[0]
    assert outputs[2][(tmp_path / "3.json").as_uri()]["value"] == {"n": 3, "text": "ééé"}


def test_a_corrupt_image_is_that_records_error(tmp_path):
    write_images(tmp_path, 6)
    (tmp_path / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    result = run_pipeline(
        "files", "null", DigestPredictor, inputs=[str(tmp_path)], decode_processes=2
    )
    assert result.exit_code == 1
    assert result.summary["succeeded"] == 5
    (outcome,) = result.outcomes
    assert outcome.stage == "decode" and outcome.input.endswith("0003.png")
    assert "0003.png" in outcome.message and "image" in outcome.message


def test_a_process_that_dies_fails_only_the_input_that_kills_it(tmp_path):
    for i in range(8):
        (tmp_path / f"{i}.crash").write_bytes(b"die" if i == 5 else bytes([i]) * (i + 1))
    result = run_pipeline(
        "files", "null", DigestPredictor, inputs=[str(tmp_path)], decode_processes=2,
        extra_plugins=[("crashing", CrashingPlugin())], source_options={"extensions": ["*"]},
    )  # fmt: skip
    assert result.exit_code == 1, result.summary
    assert result.summary["succeeded"] == 7
    (outcome,) = result.outcomes
    assert outcome.input.endswith("5.crash")
    assert outcome.stage == "decode" and "decode process reading it died" in outcome.message
    # The killed worker's half-written shared file, if any, is removed at the end.
    assert not [n for n in _leftovers() if n.startswith(f"igata-decode-{os.getpid()}-")]


def test_system_exit_in_a_decode_process_is_fatal_as_in_a_thread(tmp_path):
    for i in range(4):
        (tmp_path / f"{i}.crash").write_bytes(b"exit" if i == 2 else b"ok")
    result = run_pipeline(
        "files", "null", DigestPredictor, inputs=[str(tmp_path)], decode_processes=1,
        extra_plugins=[("crashing", CrashingPlugin())], source_options={"extensions": ["*"]},
    )  # fmt: skip
    assert result.exit_code == 4, result.summary
    assert "SystemExit" in result.summary["reason"]


def test_decode_processes_giving_fewer_results_than_items_stop_the_run(tmp_path, monkeypatch):
    # Never a silent loss: an item without its outcome would leave the run waiting for it.
    from igata_core.decode_processes import ProcessReader

    original = ProcessReader.read_many

    def short(self: ProcessReader, items: Any) -> Any:
        return original(self, items)[1:]

    monkeypatch.setattr(ProcessReader, "read_many", short)
    write_images(tmp_path, 3)
    result = run_pipeline(
        "files", "null", DigestPredictor, inputs=[str(tmp_path)], decode_processes=1
    )
    assert result.exit_code == 4, result.summary
    assert "decode processes gave" in result.summary["reason"]


def test_the_cli_option_and_its_environment_variable(tmp_path):
    write_images(tmp_path / "in", 12)
    out = tmp_path / "out.jsonl"
    done = igata(
        "run", "--source", "files", "--sink", "jsonl", "--sink-opt", f"path={out}",
        "--predictor", "helpers_core:ShapePredictor", "--decode-processes", "2",
        str(tmp_path / "in"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 12

    bad = igata(
        "run", "--source", "files", "--sink", "null", "--predictor",
        "helpers_core:ShapePredictor", str(tmp_path / "in"),
        env=clean_env(IGATA_LOAD_PLUGINS="", IGATA_DECODE_PROCESSES="-1"),
    )  # fmt: skip
    assert bad.returncode == 2
    assert "decode_processes" in bad.stderr or "decode-processes" in bad.stderr

    helped = igata("run", "--help")
    assert "--decode-processes" in helped.stdout and "IGATA_DECODE_PROCESSES" in helped.stdout
