"""The contract tests, run against the built-in sources and sinks, and against broken ones
to prove the contracts catch what they claim to."""

from __future__ import annotations

import csv
import errno
import io
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from igata_core.builtins.files import FilesSource
from igata_core.builtins.sinks import CsvSink, JsonlSink, NullSink, StdoutSink
from igata_core.components import RECORD_ID_KEY, Envelope, Item, Rejection, Sink, Source
from igata_core.testing.contracts import SinkContract, SinkLifecycleContract, SourceContract


class _BrokenStream(io.TextIOBase):
    """A file handle whose disk is full: writes and flushes fail, nothing is lost inside."""

    def __init__(self, inner: Any):
        self.inner = inner

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def fileno(self) -> int:
        return self.inner.fileno()


class _FileSinkContract(SinkContract):
    # The file is renamed into place at close; before that it is only a .partial file.
    durable_before_close = False

    def break_store(self, sink: Sink) -> None:
        handle_owner = sink._file  # type: ignore[attr-defined]
        handle_owner.handle = _BrokenStream(handle_owner.handle)

    def repair_store(self, sink: Sink) -> None:
        handle_owner = sink._file  # type: ignore[attr-defined]
        handle_owner.handle = handle_owner.handle.inner


class TestJsonlSinkContract(_FileSinkContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        sink = JsonlSink({"path": str(tmp_path / "out" / "results.jsonl")})
        sink.open()
        return sink

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        text = Path(sink.opts["path"]).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]


class TestCsvSinkContract(_FileSinkContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        sink = CsvSink({"path": str(tmp_path / "out" / "results.csv")})
        sink.open()
        return sink

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        with open(sink.opts["path"], newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


class TestStdoutSinkContract(SinkContract):
    # A stream cannot take a line back: consumers de-duplicate by igata_id.
    deduplicates = False

    @pytest.fixture(autouse=True)
    def _capture(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.lines: list[str] = []

    def make_sink(self, tmp_path: Path) -> Sink:
        sink = StdoutSink({})
        sink.open()
        return sink

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        self.lines.extend(self.capsys.readouterr().out.splitlines())
        return [json.loads(line) for line in self.lines]

    def break_store(self, sink: Sink) -> None:
        self._stdout = sys.stdout
        sys.stdout = _BrokenStream(self._stdout)  # type: ignore[assignment]

    def repair_store(self, sink: Sink) -> None:
        sys.stdout = self._stdout


class TestNullSinkContract(SinkLifecycleContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        sink = NullSink({})
        sink.open()
        return sink

    def unwritable_record(self, index: int) -> None:
        return None  # it discards everything, so nothing is unwritable

    def test_counts_what_it_discards(self, tmp_path: Path) -> None:
        sink = self.make_sink(tmp_path)
        self.put(sink, self.make_records(20))
        assert isinstance(sink, NullSink) and sink.count == 20


class TestFilesSourceContract(SourceContract):
    remembers_acks = False  # every run reads every file again

    def make_inputs(self, tmp_path: Path, n: int) -> Path:
        directory = tmp_path / "inputs"
        directory.mkdir()
        for i in range(n):
            (directory / f"request-{i:03d}.json").write_text(json.dumps({"i": i}))
        return directory

    def make_source(self, inputs: Path) -> Source:
        source = FilesSource({"inputs": [str(inputs)]})
        source.open()
        return source


# -- the contracts catch broken components ---------------------------------------------------


class ForgetfulSink(Sink):
    """Duplicates redelivered records, loses records whose flush failed, and swallows errors."""

    name = "forgetful"

    def __init__(self, path: Path):
        super().__init__({})
        self.path = path
        self.buffer: list[dict[str, Any]] = []
        self.broken = False

    def put_records(self, records: Sequence[dict[str, Any]]) -> None:
        self.buffer.extend(records)

    def flush(self) -> None:
        batch, self.buffer = self.buffer, []
        if self.broken:
            return  # swallowed: the records are gone and nobody is told
        with self.path.open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in batch)


class _ForgetfulContract(SinkContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        return ForgetfulSink(tmp_path / "out.jsonl")

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        path: Path = sink.path  # type: ignore[attr-defined]
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def break_store(self, sink: Sink) -> None:
        sink.broken = True  # type: ignore[attr-defined]

    def repair_store(self, sink: Sink) -> None:
        sink.broken = False  # type: ignore[attr-defined]


class RejectingEverythingSink(NullSink):
    """Rejects with an index outside the chunk."""

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        return [Rejection(len(records), "nope")] if records else []


class _RejectingContract(SinkLifecycleContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        return RejectingEverythingSink({})


class GreedySource(Source):
    """Forgets every envelope it delivered (acks on delivery) and ignores stop()."""

    name = "greedy"
    delivered: set[str] = set()

    def __init__(self, directory: Path):
        super().__init__({})
        self.directory = directory

    def envelopes(self) -> Iterator[Envelope]:
        for path in sorted(self.directory.iterdir()):
            if path.name in self.delivered:
                continue
            self.delivered.add(path.name)
            yield Envelope(ref=str(path), items=[Item(identity=path.name, uri=str(path))])


class _GreedyContract(SourceContract):
    def make_inputs(self, tmp_path: Path, n: int) -> Path:
        GreedySource.delivered = set()
        directory = tmp_path / "inputs"
        directory.mkdir()
        for i in range(n):
            (directory / f"{i}.json").write_text("{}")
        return directory

    def make_source(self, inputs: Path) -> Source:
        return GreedySource(inputs)


@pytest.mark.parametrize(
    ("contract", "test", "complaint"),
    [
        (_ForgetfulContract, "test_redelivered_record_does_not_duplicate", "more than once"),
        (_ForgetfulContract, "test_put_records_error_surfaces", "DID NOT RAISE"),
        (_ForgetfulContract, "test_failed_flush_keeps_records_for_retry", "DID NOT RAISE"),
        (_RejectingContract, "test_rejections_refer_to_valid_indexes", "outside the chunk"),
        (_GreedyContract, "test_nacked_is_redelivered", "was not redelivered"),
        (_GreedyContract, "test_unacked_is_redelivered", "did not come back"),
        (_GreedyContract, "test_stop_ends_iteration", "must check stop()"),
    ],
)
def test_contract_fails_for_a_broken_component(
    contract: type, test: str, complaint: str, tmp_path: Path
) -> None:
    instance = contract()
    instance._created = []
    with pytest.raises((AssertionError, pytest.fail.Exception)) as failed:
        getattr(instance, test)(tmp_path)
    assert complaint in str(failed.value)


def test_forgetful_sink_passes_what_it_does_keep(tmp_path: Path) -> None:
    # The contract is precise: the same sink passes the tests about what it does right.
    instance = _ForgetfulContract()
    instance._created = []
    instance.test_flush_makes_records_durable(tmp_path)


def test_missing_hooks_are_named() -> None:
    with pytest.raises(NotImplementedError, match="must implement read_back"):
        SinkContract().read_back(NullSink({}))
    with pytest.raises(NotImplementedError, match="must implement make_inputs"):
        SourceContract().make_inputs(Path("."), 1)


def test_outage_tests_skip_without_break_store(tmp_path: Path) -> None:
    class NoOutage(TestJsonlSinkContract):
        break_store = SinkContract.break_store  # type: ignore[assignment]

    instance = NoOutage()
    instance._created = []
    with pytest.raises(pytest.skip.Exception, match="break_store"):
        instance.test_put_records_error_surfaces(tmp_path)
    assert {r[RECORD_ID_KEY] for r in instance.make_records(3)} == {
        "contract-0",
        "contract-1",
        "contract-2",
    }
