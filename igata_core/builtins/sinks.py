"""Built-in sinks: ``jsonl`` and ``csv`` files, ``stdout``, and ``null`` (discard).

The file sinks write to a temporary file beside the target; ``flush`` makes the lines
durable there (fsync) and ``close`` renames it into place, so a crash never leaves a
half-written file under the target name.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import IO, Any, ClassVar

from igata_core import hookimpl
from igata_core.components import RECORD_ID_KEY, Rejection, Sink
from igata_core.options import Option
from igata_core.serialize import NotSerializable, dumps


class AtomicFile:
    """A text file that appears under ``path`` only when closed successfully."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        fd, self.temp_path = tempfile.mkstemp(
            prefix=f".{os.path.basename(self.path)}.", suffix=".partial", dir=directory
        )
        self.handle: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def write(self, text: str) -> None:
        assert self.handle is not None, "write after close"
        self.handle.write(text)

    def sync(self) -> None:
        if self.handle is not None:
            self.handle.flush()
            os.fsync(self.handle.fileno())

    def commit(self) -> None:
        if self.handle is None:
            return
        self.sync()
        self.handle.close()
        self.handle = None
        os.replace(self.temp_path, self.path)

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
            os.unlink(self.temp_path)


def _encode_rows(
    records: Sequence[dict[str, Any]], encode: Any, seen: set[str] | None = None
) -> tuple[list[str], list[Rejection]]:
    """Encode each record; ``seen`` identities are skipped so a redelivery adds no line."""
    lines: list[str] = []
    rejections: list[Rejection] = []
    for index, record in enumerate(records):
        identity = record.get(RECORD_ID_KEY)
        if seen is not None and identity is not None and identity in seen:
            continue
        try:
            lines.append(encode(record))
        except (NotSerializable, TypeError, ValueError) as exc:
            message = f"cannot serialise record: {exc}"
            rejections.append(Rejection(index, message, "NotSerializable"))
            continue
        if seen is not None and identity is not None:
            seen.add(identity)
    return lines, rejections


_PATH_OPTION = Option("path", required=True, help="Output file (written atomically at close).")


class JsonlSink(Sink):
    """One JSON object per line."""

    name = "jsonl"
    description = "JSON Lines file, written atomically"
    options: ClassVar[tuple[Option, ...]] = (_PATH_OPTION,)

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self._file: AtomicFile | None = None
        self._seen: set[str] = set()

    def open(self) -> None:
        self._file = AtomicFile(self.opts["path"])

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        assert self._file is not None, "put_records before open"
        lines, rejections = _encode_rows(
            records, lambda r: dumps(r, ensure_ascii=False), self._seen
        )
        self._file.write("".join(line + "\n" for line in lines))
        return rejections

    def flush(self) -> None:
        if self._file is not None:
            self._file.sync()

    def close(self) -> None:
        if self._file is not None:
            self._file.commit()


def _csv_cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return dumps(value, ensure_ascii=False)


class CsvSink(Sink):
    """CSV with a header row (``fieldnames``, or the first record's keys).

    Nested values (lists, dicts, arrays) are written as JSON text; keys not in the header
    are left out.
    """

    name = "csv"
    description = "CSV file with a header row, written atomically"
    options: ClassVar[tuple[Option, ...]] = (
        _PATH_OPTION,
        Option(
            "fieldnames",
            "list",
            default=[],
            help="Comma-separated header (default: the first record's keys).",
            env=("OUTPUT_CTXMGR_FIELDNAMES",),
        ),
        Option("delimiter", default=",", help="Field delimiter."),
    )

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self._file: AtomicFile | None = None
        self._fieldnames: list[str] = list(self.opts["fieldnames"])
        self._header_written = False
        self._seen: set[str] = set()

    def open(self) -> None:
        self._file = AtomicFile(self.opts["path"])

    def _encode(self, record: dict[str, Any]) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, self._fieldnames, extrasaction="ignore", delimiter=self.opts["delimiter"]
        )
        writer.writerow({k: _csv_cell(v) for k, v in record.items() if k in self._fieldnames})
        return buffer.getvalue()

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        assert self._file is not None, "put_records before open"
        if not records:
            return []
        if not self._fieldnames:
            self._fieldnames = list(records[0])
        if not self._header_written:
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=self.opts["delimiter"]).writerow(self._fieldnames)
            self._file.write(buffer.getvalue())
            self._header_written = True
        lines, rejections = _encode_rows(records, self._encode, self._seen)
        self._file.write("".join(lines))
        return rejections

    def flush(self) -> None:
        if self._file is not None:
            self._file.sync()

    def close(self) -> None:
        if self._file is not None:
            self._file.commit()


class StdoutSink(Sink):
    """JSON Lines on standard output (logs and progress go to standard error)."""

    name = "stdout"
    description = "JSON Lines on standard output"

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        lines, rejections = _encode_rows(records, lambda r: dumps(r, ensure_ascii=False))
        sys.stdout.write("".join(line + "\n" for line in lines))
        return rejections

    def flush(self) -> None:
        sys.stdout.flush()


class NullSink(Sink):
    """Discards results (benchmarks, dry runs); still counts them."""

    name = "null"
    description = "Discard results (for benchmarks and dry runs)"

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self.count = 0

    def put_records(self, records: Sequence[dict[str, Any]]) -> None:
        self.count += len(records)

    def flush(self) -> None:
        pass


@hookimpl
def register_sinks(register):  # type: ignore[no-untyped-def]
    for sink in (JsonlSink, CsvSink, StdoutSink, NullSink):
        register(sink)
