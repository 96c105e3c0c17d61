"""The built-in sinks: jsonl and csv files (atomic), stdout and null."""

from __future__ import annotations

import csv
import datetime as dt
import errno
import io
import json
import logging
import math
import os
import re
import stat
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from igata_core.builtins.sinks import CsvSink, JsonlSink, NullSink, StdoutSink
from igata_core.components import Rejection
from igata_core.plugins import build_registry
from igata_core.predictor import PredictorBase
from igata_core.testing import run_pipeline


class Opaque:
    """A value with no JSON form."""


def records(n: int, start: int = 0) -> list[dict]:
    return [
        {"igata_id": f"id-{i}", "label": i % 3, "score": i / 10} for i in range(start, start + n)
    ]


def jsonl_sink(path: Path) -> JsonlSink:
    sink = JsonlSink({"path": str(path)})
    sink.open()
    return sink


def csv_sink(path: Path, **options) -> CsvSink:
    sink = CsvSink({"path": str(path), **options})
    sink.open()
    return sink


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def partial_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.partial"))


FILE_SINKS = [
    pytest.param(jsonl_sink, read_jsonl, "out.jsonl", id="jsonl"),
    pytest.param(csv_sink, read_csv, "out.csv", id="csv"),
]


# -- atomic files (both file sinks) --------------------------------------------------------------


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_the_file_appears_only_at_close(tmp_path, make, read, name):
    target = tmp_path / name
    sink = make(target)
    sink.put_records(records(3))
    sink.flush()
    assert not target.exists()
    sink.close()
    assert [r["igata_id"] for r in read(target)] == ["id-0", "id-1", "id-2"]
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_flush_makes_the_lines_durable_in_the_temporary_file(
    tmp_path, make, read, name, monkeypatch
):
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    sink = make(tmp_path / name)
    sink.put_records(records(2))
    (temp,) = partial_files(tmp_path)
    assert temp.read_bytes() == b""  # put_records only buffers
    sink.flush()
    assert temp.stat().st_ino in synced
    assert [r["igata_id"] for r in read(temp)] == ["id-0", "id-1"]
    sink.close()


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_a_crash_after_flush_leaves_no_file_under_the_target_name(tmp_path, make, read, name):
    target = tmp_path / name
    sink = make(target)
    sink.put_records(records(2))
    sink.flush()
    del sink  # the process dies here: close is never called
    assert not target.exists()
    (temp,) = partial_files(tmp_path)
    assert temp.name.startswith(f".{name}.")


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_close_twice_is_safe_and_keeps_the_records(tmp_path, make, read, name):
    target = tmp_path / name
    sink = make(target)
    sink.put_records(records(2))
    sink.close()
    sink.close()
    assert len(read(target)) == 2


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_a_redelivered_record_is_written_once(tmp_path, make, read, name):
    target = tmp_path / name
    sink = make(target)
    sink.put_records(records(3))
    sink.flush()
    again = records(1, start=1) + records(1, start=5)
    assert sink.put_records(again + again) == []
    sink.close()
    assert [r["igata_id"] for r in read(target)] == ["id-0", "id-1", "id-2", "id-5"]


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_the_parent_directory_is_created(tmp_path, make, read, name):
    target = tmp_path / "a" / "b" / name
    sink = make(target)
    sink.put_records(records(1))
    sink.close()
    assert len(read(target)) == 1


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_an_existing_file_is_replaced_at_close(tmp_path, make, read, name):
    target = tmp_path / name
    target.write_text("old contents\n")
    sink = make(target)
    sink.put_records(records(1))
    assert target.read_text() == "old contents\n"
    sink.close()
    assert [r["igata_id"] for r in read(target)] == ["id-0"]


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_the_output_file_gets_the_usual_permissions(tmp_path, make, read, name):
    old = os.umask(0o022)
    try:
        sink = make(tmp_path / name)
    finally:
        os.umask(old)
    sink.put_records(records(1))
    sink.close()
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_an_output_path_that_is_a_directory_is_refused_at_open(tmp_path, make, read, name):
    from igata_core import ConfigurationError

    (tmp_path / name).mkdir()
    with pytest.raises(ConfigurationError, match="is a directory; name a file"):
        make(tmp_path / name)


class ShortThenFull(io.RawIOBase):
    """A disk that takes part of a write, then is full, then recovers."""

    def __init__(self, inner, accept: int):
        self.inner = inner
        self.accept = accept
        self.full = False

    def write(self, data) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self.full = True
        return self.inner.write(bytes(data[: self.accept]))

    def fileno(self) -> int:
        return self.inner.fileno()


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_a_flush_failing_mid_write_is_retried_without_loss_or_repeat(tmp_path, make, read, name):
    target = tmp_path / name
    sink = make(target)
    sink.put_records(records(4))
    inner = sink._file.handle
    sink._file.handle = broken = ShortThenFull(inner, accept=25)
    with pytest.raises(OSError, match="No space left"):
        sink.flush()
    broken.full = False
    broken.accept = 10**6
    sink.flush()
    sink._file.handle = inner
    sink.put_records(records(2, start=4))
    sink.close()
    assert [r["igata_id"] for r in read(target)] == [f"id-{i}" for i in range(6)]


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
def test_an_error_in_put_records_before_open_is_clear(tmp_path, make, read, name):
    sink = (JsonlSink if name.endswith("jsonl") else CsvSink)({"path": str(tmp_path / name)})
    with pytest.raises(RuntimeError, match="put_records before open"):
        sink.put_records(records(1))


# -- JSON values -----------------------------------------------------------------------------------


def test_jsonl_writes_numpy_decimal_datetime_bytes_sets_and_paths(tmp_path):
    target = tmp_path / "out.jsonl"
    sink = jsonl_sink(target)
    record = {
        "igata_id": "r1",
        "score": np.float32(0.5),
        "count": np.int64(3),
        "mask": np.array([[True, False]]),
        "price": Decimal("2.50"),
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "day": dt.date(2024, 1, 2),
        "raw": b"\x00\x01",
        "tags": {"b", "a"},
        "source": Path("/in/x.png"),
        "text": "日本語\nline",
    }
    assert sink.put_records([record]) == []
    sink.close()
    (line,) = target.read_text(encoding="utf-8").splitlines()
    assert "日本語" in line  # UTF-8 text, not \\u escapes
    assert json.loads(line) == {
        "igata_id": "r1",
        "score": 0.5,
        "count": 3,
        "mask": [[True, False]],
        "price": 2.5,
        "at": "2024-01-02T03:04:05+00:00",
        "day": "2024-01-02",
        "raw": "AAE=",
        "tags": ["a", "b"],
        "source": "/in/x.png",
        "text": "日本語\nline",
    }


@pytest.mark.parametrize(("make", "read", "name"), FILE_SINKS)
@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (Opaque(), "field 'value': value of type Opaque is not JSON-serialisable"),
        (math.nan, "field 'value': .*NaN"),
        (np.float64("inf"), "field 'value': .*NaN and infinity"),
        ([1, Opaque()], "field 'value': value of type Opaque"),
        ("bad \udcff name", "not valid Unicode"),
    ],
    ids=["object", "nan", "inf", "nested-object", "surrogate"],
)
def test_an_unwritable_record_is_rejected_and_the_others_written(
    tmp_path, make, read, name, bad, why
):
    target = tmp_path / name
    sink = make(target)
    chunk = records(3)
    chunk[1] = {**chunk[1], "value": bad}
    chunk[0]["value"] = 1
    chunk[2]["value"] = 2
    rejections = sink.put_records(chunk)
    assert [r.index for r in rejections] == [1]
    assert isinstance(rejections[0], Rejection)
    assert rejections[0].error_type == "NotSerializable"
    assert "id-1" in rejections[0].message
    assert re.search(why, rejections[0].message), rejections[0].message
    sink.close()
    assert [r["igata_id"] for r in read(target)] == ["id-0", "id-2"]


def test_a_rejected_record_may_be_written_when_it_comes_back_fixed(tmp_path):
    target = tmp_path / "out.jsonl"
    sink = jsonl_sink(target)
    assert len(sink.put_records([{"igata_id": "x", "v": math.nan}])) == 1
    assert sink.put_records([{"igata_id": "x", "v": 1.0}]) == []
    sink.close()
    assert read_jsonl(target) == [{"igata_id": "x", "v": 1.0}]


# -- CSV specifics ---------------------------------------------------------------------------------


def test_csv_header_from_the_first_record_and_cells(tmp_path):
    target = tmp_path / "out.csv"
    sink = csv_sink(target)
    sink.put_records(
        [
            {
                "igata_id": "a",
                "result": [{"label": "cat", "score": np.float32(0.5)}],
                "at": dt.datetime(2024, 1, 2, 3, 4, 5),
                "price": Decimal("1.50"),
                "n": np.int64(7),
                "ok": True,
                "none": None,
                "name": 'say "hi", twice',
            }
        ]
    )
    sink.close()
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["igata_id", "result", "at", "price", "n", "ok", "none", "name"],
        ["a", '[{"label": "cat", "score": 0.5}]', "2024-01-02T03:04:05", "1.5", "7", "True", "",
         'say "hi", twice'],
    ]  # fmt: skip


def test_csv_fieldnames_option_orders_and_selects_columns(tmp_path, caplog):
    target = tmp_path / "out.csv"
    sink = csv_sink(target, fieldnames=["score", "igata_id", "missing"])
    with caplog.at_level(logging.WARNING, logger="igata.sinks"):
        sink.put_records(records(2))
    sink.close()
    assert target.read_text().splitlines() == [
        "score,igata_id,missing",
        "0.0,id-0,",
        "0.1,id-1,",
    ]
    left_out = [r.getMessage() for r in caplog.records]
    assert left_out == ["csv sink: field 'label' is not in the header; left out"]


def test_csv_header_is_written_even_without_records(tmp_path):
    target = tmp_path / "out.csv"
    sink = csv_sink(target, fieldnames=["igata_id", "label"])
    sink.close()
    assert target.read_bytes() == b"igata_id,label\r\n"


def test_csv_delimiter_option(tmp_path):
    target = tmp_path / "out.tsv"
    sink = csv_sink(target, delimiter="tab")
    sink.put_records([{"igata_id": "a", "v": "x,y"}])
    sink.close()
    assert target.read_text().splitlines() == ["igata_id\tv", "a\tx,y"]


def test_csv_bad_delimiter_is_refused_before_the_run():
    with pytest.raises(ValueError, match="delimiter must be one character"):
        CsvSink({"path": "out.csv", "delimiter": "||"})


# -- stdout and null -------------------------------------------------------------------------------


def test_stdout_writes_json_lines(capsys):
    sink = StdoutSink({})
    sink.open()
    chunk = [*records(2), {"igata_id": "bad", "v": Opaque()}]
    rejections = sink.put_records(chunk)
    sink.flush()
    sink.close()
    assert [r.index for r in rejections] == [2]
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == records(2)


def test_stdout_escapes_text_a_non_utf8_stream_cannot_carry(monkeypatch):
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stream)
    sink = StdoutSink({})
    assert sink.put_records([{"igata_id": "a", "name": "日本"}]) == []
    sink.flush()
    stream.buffer.seek(0)
    text = stream.buffer.read().decode("ascii")
    assert json.loads(text) == {"igata_id": "a", "name": "日本"}


def test_null_counts_and_discards():
    sink = NullSink({})
    sink.open()
    sink.put_records(records(3))
    sink.put_records(records(2))
    sink.flush()
    sink.close()
    assert sink.count == 5


def test_the_sinks_are_registered():
    registry = build_registry(entry_points=False)
    for name, cls in (("jsonl", JsonlSink), ("csv", CsvSink), ("stdout", StdoutSink),
                      ("null", NullSink)):  # fmt: skip
        assert registry.get("sink", name).obj is cls


# -- through the engine ----------------------------------------------------------------------------


class ValuePredictor(PredictorBase):
    """Predicts a value that cannot be written for inputs whose name starts with 'bad'."""

    def predict(self, input_record, meta):
        name = Path(meta["path"]).name
        value = Opaque() if name.startswith("bad") else np.float32(len(input_record))
        return {"value": value, "when": dt.date(2024, 1, 1)}


@pytest.mark.parametrize("sink_name", ["jsonl", "csv"])
def test_an_unwritable_result_fails_that_record_only(tmp_path, sink_name):
    inputs = tmp_path / "in"
    for name in ["a.json", "bad.json", "c.json"]:
        touch = inputs / name
        touch.parent.mkdir(exist_ok=True)
        touch.write_text(json.dumps([1, 2, 3]))
    out = tmp_path / f"out.{sink_name}"
    result = run_pipeline(
        "files",
        sink_name,
        ValuePredictor,
        inputs=[str(inputs)],
        sink_options={"path": str(out)},
        registry=build_registry(entry_points=False),
        flush_interval=0.05,
    )
    assert result.exit_code == 1
    (outcome,) = result.outcomes
    assert outcome.stage == "sink"
    assert outcome.input.endswith("bad.json")
    assert "field 'value': value of type Opaque is not JSON-serialisable" in outcome.message
    written = read_jsonl(out) if sink_name == "jsonl" else read_csv(out)
    assert sorted(Path(r["path"]).name for r in written) == ["a.json", "c.json"]
    assert {str(r["value"]) for r in written} == {"3.0"}
    assert {r["when"] for r in written} == {"2024-01-01"}
