"""Built-in sinks: ``jsonl`` and ``csv`` files, ``stdout``, and ``null`` (discard).

The file sinks write to a hidden temporary file beside the target; ``flush`` makes the
lines durable there (fsync) and ``close`` renames it into place, so a crash never leaves a
half-written file under the target name.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, ClassVar

from igata_core import hookimpl
from igata_core.builtins.decoders import delimiter_option
from igata_core.components import RECORD_ID_KEY, ConfigurationError, Rejection, Sink
from igata_core.options import Option
from igata_core.serialize import NotSerializable, dumps, text_value

log = logging.getLogger("igata.sinks")


def open_output(sink: str, path: str) -> AtomicFile:
    """The sink's output file; a path that cannot be written is a configuration error."""
    try:
        return AtomicFile(path)
    except OSError as exc:
        raise ConfigurationError(
            f"{sink} sink: cannot write the output file {os.path.abspath(path)}: "
            f"{exc.strerror or exc}; choose a path in a writable directory (--sink-opt path=...)"
        ) from exc


class AtomicFile:
    """A file that appears under ``path`` only when committed.

    ``write`` only buffers; ``sync`` writes the buffer to a hidden temporary file beside
    ``path`` and fsyncs it. A failed ``sync`` keeps exactly the bytes not yet written, so
    retrying it neither loses nor repeats any. ``commit`` syncs and renames the file into
    place (idempotent).
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"output path {self.path} is a directory; name a file")
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        self.temp_path, fd = _create_beside(self.path)
        # Unbuffered: every byte handed to the OS is accounted for in ``sync``.
        self.handle: IO[bytes] | None = os.fdopen(fd, "wb", buffering=0)
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        if self.handle is None:
            raise ValueError(f"{self.path}: write after the file was committed")
        self._pending += data

    def sync(self) -> None:
        if self.handle is None:
            return
        data = bytes(self._pending)
        written = 0
        try:
            while written < len(data):
                written += self.handle.write(data[written:]) or 0
        finally:
            del self._pending[:written]
        os.fsync(self.handle.fileno())

    def commit(self) -> None:
        if self.handle is None:
            return
        self.sync()
        self.handle.close()
        self.handle = None
        os.replace(self.temp_path, self.path)
        _sync_directory(os.path.dirname(self.path))


def _create_beside(path: str) -> tuple[str, int]:
    directory, base = os.path.split(path)
    while True:
        temp = os.path.join(directory, f".{base}.{os.urandom(4).hex()}.partial")
        try:
            # Mode 0o666 lets the umask decide the final file's permissions, as for any
            # file the user creates (mkstemp would make it private to the owner).
            return temp, os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable; not every platform can open a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encode_rows(
    records: Sequence[dict[str, Any]],
    encode: Callable[[dict[str, Any]], str],
    seen: set[str] | None = None,
) -> tuple[list[bytes], list[Rejection]]:
    """UTF-8 lines of the records; ``seen`` identities are skipped (a redelivery)."""
    lines: list[bytes] = []
    rejections: list[Rejection] = []
    for index, record in enumerate(records):
        identity = record.get(RECORD_ID_KEY)
        if seen is not None and identity is not None and identity in seen:
            continue
        try:
            lines.append(encode(record).encode("utf-8"))
        except UnicodeEncodeError as exc:
            message = (
                f"cannot serialise record {identity}: text that is not valid Unicode "
                f"({exc.reason} at {exc.object[exc.start : exc.end]!r}), e.g. from an "
                "undecodable file name"
            )
            rejections.append(Rejection(index, message, "NotSerializable"))
            continue
        except (NotSerializable, TypeError, ValueError) as exc:
            message = f"cannot serialise record {identity}: {exc}"
            rejections.append(Rejection(index, message, "NotSerializable"))
            continue
        if seen is not None and identity is not None:
            seen.add(identity)
    return lines, rejections


_PATH_OPTION = Option(
    "path",
    required=True,
    help="Output file; written to a hidden temporary file beside it and renamed into "
    "place when the run ends. Its directory is created.",
)


def _jsonl(record: dict[str, Any]) -> str:
    return dumps(record, ensure_ascii=False) + "\n"


class JsonlSink(Sink):
    """One JSON object per line; a redelivered record (same ``igata_id``) is written once."""

    name = "jsonl"
    description = "JSON Lines file, written atomically"
    options: ClassVar[tuple[Option, ...]] = (_PATH_OPTION,)

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self._file: AtomicFile | None = None
        self._seen: set[str] = set()

    def open(self) -> None:
        self._file = open_output(self.name, self.opts["path"])

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        if self._file is None:
            raise RuntimeError("jsonl sink: put_records before open")
        lines, rejections = _encode_rows(records, _jsonl, self._seen)
        self._file.write(b"".join(lines))
        return rejections

    def flush(self) -> None:
        if self._file is not None:
            self._file.sync()

    def close(self) -> None:
        if self._file is not None:
            self._file.commit()


class CsvSink(Sink):
    """CSV with a header row (``fieldnames``, or the first record's keys).

    Nested values (lists, dicts, arrays) are written as JSON text, datetimes as ISO 8601,
    None as an empty field; keys not in the header are left out (logged once per key). A
    redelivered record (same ``igata_id``) is written once.
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
        Option("delimiter", default=",", help="Field delimiter: one character, or 'tab'."),
    )

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        # Checked here so that a bad delimiter is a usage error before the run starts.
        self._delimiter = delimiter_option(self.opts["delimiter"], "csv sink") or ","
        self._file: AtomicFile | None = None
        self._fieldnames: list[str] = list(self.opts["fieldnames"])
        self._header_written = False
        self._seen: set[str] = set()
        self._header_keys: set[str] = set()
        self._left_out: set[str] = set()

    def open(self) -> None:
        self._file = open_output(self.name, self.opts["path"])

    def _row(self, cells: Sequence[Any]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self._delimiter).writerow(cells)
        return buffer.getvalue()

    def _encode(self, record: dict[str, Any]) -> str:
        if not record.keys() <= self._header_keys:
            for key in record.keys() - self._header_keys - self._left_out:
                self._left_out.add(key)
                log.warning("csv sink: field %r is not in the header; left out", key)
        cells = []
        for name in self._fieldnames:
            try:
                cells.append(text_value(record.get(name)))
            except NotSerializable as exc:
                raise NotSerializable(f"field {name!r}: {exc}") from exc
        return self._row(cells)

    def _write_header(self) -> None:
        assert self._file is not None
        if not self._header_written and self._fieldnames:
            self._file.write(self._row(self._fieldnames).encode("utf-8"))
            self._header_written = True

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        if self._file is None:
            raise RuntimeError("csv sink: put_records before open")
        if not records:
            return []
        if not self._fieldnames:
            self._fieldnames = list(records[0])
        self._header_keys = set(self._fieldnames)
        self._write_header()
        lines, rejections = _encode_rows(records, self._encode, self._seen)
        self._file.write(b"".join(lines))
        return rejections

    def flush(self) -> None:
        if self._file is not None:
            self._file.sync()

    def close(self) -> None:
        if self._file is not None:
            if self._file.handle is not None:
                self._write_header()  # a run without results still gets its header
            self._file.commit()


class StdoutSink(Sink):
    """JSON Lines on standard output (logs and progress go to standard error).

    A stream cannot take a line back, so a redelivered record is printed again: consumers
    de-duplicate by ``igata_id``.
    """

    name = "stdout"
    description = "JSON Lines on standard output"

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
        # Escape non-ASCII text unless the stream can carry it (a C-locale terminal).
        ascii_only = not encoding.startswith("utf")

        def encode(record: dict[str, Any]) -> str:
            return dumps(record, ensure_ascii=ascii_only) + "\n"

        lines, rejections = _encode_rows(records, encode)
        sys.stdout.write(b"".join(lines).decode("utf-8"))
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
def register_sinks(register: Callable[[type[Sink]], None]) -> None:
    for sink in (JsonlSink, CsvSink, StdoutSink, NullSink):
        register(sink)
