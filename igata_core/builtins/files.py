"""Local files: the ``files`` source and the loader for plain paths and ``file://`` URIs."""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from igata_core import hookimpl
from igata_core.components import Envelope, Item, Loaded, Loader, RecordError, Source
from igata_core.inputs import scheme_of
from igata_core.options import Option

DEFAULT_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp",
    ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".json", ".json.gz",
)  # fmt: skip


def path_of(uri: str) -> Path:
    """The local path of a plain path or a ``file://`` URI (percent-escapes decoded)."""
    return Path(local_path(uri))


def local_path(uri: str) -> str:
    """:func:`path_of` as a string, without building a ``Path`` (the loader's hot path)."""
    if uri[:5].lower() == "file:":
        parts = urlsplit(uri)
        if parts.netloc.lower() not in ("", "localhost"):
            raise RecordError(
                f"file URI {uri!r} names the host {parts.netloc!r}; only local files "
                "(file:///path or file://localhost/path) can be read"
            )
        # Bytes first: a percent-encoded file name need not be UTF-8 (Path.as_uri of such
        # a name encodes its raw bytes).
        return os.fsdecode(unquote_to_bytes(parts.path))
    return uri


def file_uri(absolute: str) -> str:
    """``Path(absolute).as_uri()`` for a normalised absolute path (``os.path.abspath``).

    The record's identity: it must stay exactly what ``as_uri`` gives. On POSIX that is the
    path's bytes percent-quoted, built here directly because pathlib costs more per file
    than the rest of the source does.
    """
    if os.name == "posix" and not absolute.startswith("//"):
        return "file://" + quote_from_bytes(os.fsencode(absolute))
    return Path(absolute).as_uri()


def _hidden(name: str) -> bool:
    return name.startswith(".")


class FilesSource(Source):
    """Local paths, directories (recursive) and globs, in a stable order, read lazily.

    Directories are walked one directory at a time (entries sorted, files before
    subdirectories; hidden entries skipped); a glob is matched the same way, so the first
    file is delivered before a large tree has been listed. A path that does not exist, a
    glob that matches nothing and a directory that cannot be listed are each that input's
    error, not a failure of the run.
    """

    name = "files"
    description = "Local files: paths, directories (recursive) and glob patterns"
    finite = True
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "inputs",
            "list",
            default=[],
            help="Paths, directories (read recursively, hidden entries skipped) or glob "
            "patterns ('**' for any depth); the command's INPUTS.",
        ),
        Option(
            "extensions",
            "list",
            default=list(DEFAULT_EXTENSIONS),
            help="In directories and globs, only files ending with one of these "
            "(case-insensitive); '*' for all. Files named explicitly are always read.",
        ),
    )

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self._stopped = threading.Event()
        exts = [e.lower() for e in self.opts["extensions"]]
        self._all = "*" in exts
        self._extensions = tuple(e if e.startswith(".") else f".{e}" for e in exts if e != "*")

    def _wanted(self, name: str) -> bool:
        return self._all or name.lower().endswith(self._extensions)

    def _entries(self) -> Iterator[tuple[str, str | None]]:
        """(path, None) for each file to read, (input, message) for each input's error."""
        for given in self.opts["inputs"]:
            try:
                path = path_of(given)
            except RecordError as exc:
                yield given, str(exc)
                continue
            if path.is_dir():
                yield from self._walk(path)
            elif path.exists():
                yield str(path), None  # named explicitly: no extension filter
            elif glob.has_magic(str(path)):
                matched = False
                for entry in self._glob(str(path)):
                    matched = True
                    yield entry
                if not matched:
                    yield str(path), f"{given}: no files match this pattern"
            else:
                # The loader reports it ("no such file"), as that input's error.
                yield str(path), None

    def _walk(self, top: Path) -> Iterator[tuple[str, str | None]]:
        errors: list[OSError] = []
        for root, dirs, files in os.walk(top, onerror=errors.append):
            while errors:
                yield from self._listing_error(errors.pop(0))
            dirs[:] = sorted(d for d in dirs if not _hidden(d))
            for name in sorted(files):
                if not _hidden(name) and self._wanted(name):
                    yield os.path.join(root, name), None
        for error in errors:
            yield from self._listing_error(error)

    @staticmethod
    def _listing_error(error: OSError) -> Iterator[tuple[str, str | None]]:
        where = os.fspath(error.filename or "?")
        yield where, f"{where}: cannot list this directory: {error.strerror or error}"

    def _glob(self, pattern: str) -> Iterator[tuple[str, str | None]]:
        parts = Path(pattern).parts
        first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        base = os.path.join(*parts[:first]) if first else ""
        for match in _match(base, list(parts[first:])):
            if os.path.isfile(match) and self._wanted(os.path.basename(match)):
                yield match, None

    def envelopes(self) -> Iterator[Envelope]:
        for text, error in self._entries():
            if self._stopped.is_set():
                return
            absolute = os.path.abspath(text)
            # A relative name such as "img:1.png" would be read as a URI of scheme "img".
            uri = text if scheme_of(text) == "file" else absolute
            item = Item(identity=file_uri(absolute), uri=uri, meta={"path": text}, error=error)
            yield Envelope(ref=text, items=[item])

    def total(self) -> int | None:
        return sum(1 for _ in self._entries())

    def stop(self) -> None:
        self._stopped.set()


def _match(base: str, parts: list[str]) -> Iterator[str]:
    """Paths under ``base`` matching the glob ``parts``, one sorted directory at a time.

    The semantics of ``glob.iglob(recursive=True)``: ``*`` and ``**`` do not match hidden
    names, ``**`` as a whole component matches any number of directories (none included).
    """
    if not parts:
        yield base
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        while rest[:1] == ["**"]:
            rest = rest[1:]
        yield from _match(base, rest) if rest else _subtree(base)
        for name in _subdirectories(base):
            yield from _match(os.path.join(base, name), parts)
        return
    if not glob.has_magic(part):
        candidate = os.path.join(base, part)
        if os.path.lexists(candidate):
            yield from _match(candidate, rest)
        return
    try:
        names = sorted(os.listdir(base or os.curdir))
    except OSError:
        return
    for name in names:
        if _hidden(name) and not _hidden(part):
            continue
        if fnmatch.fnmatchcase(name, part):
            candidate = os.path.join(base, name)
            if not rest or os.path.isdir(candidate):
                yield from _match(candidate, rest)


def _subtree(base: str) -> Iterator[str]:
    # A trailing "**" matches the files directly in base; deeper levels come through the
    # caller's recursion into each subdirectory.
    try:
        names = sorted(os.listdir(base or os.curdir))
    except OSError:
        return
    for name in names:
        if not _hidden(name):
            yield os.path.join(base, name)


def _subdirectories(base: str) -> list[str]:
    try:
        names = sorted(os.listdir(base or os.curdir))
    except OSError:
        return []
    return [n for n in names if not _hidden(n) and os.path.isdir(os.path.join(base, n))]


class FileLoader(Loader):
    """Reads plain paths and ``file://`` URIs."""

    name = "file"
    schemes = ("file",)
    description = "Local files (plain paths and file:// URIs)"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "max_object_bytes",
            "int",
            default=1 << 30,
            help="Refuse files larger than this many bytes.",
            env=("IGATA_FILE_MAX_OBJECT_BYTES",),
            minimum=0,
        ),
    )

    def load(self, uri: str) -> Loaded:
        path = local_path(uri)
        limit = self.opts["max_object_bytes"]
        try:
            data = _read_at_most(path, limit + 1)
        except FileNotFoundError:
            raise RecordError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise RecordError(f"{path}: is a directory, not a file") from None
        except NotADirectoryError:
            raise RecordError(f"{path}: no such file (a parent is not a directory)") from None
        except PermissionError:
            raise RecordError(
                f"{path}: permission denied (the worker's user cannot read it)"
            ) from None
        except OSError as exc:
            raise RecordError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise RecordError(
                f"{path}: larger than max_object_bytes ({limit} bytes); raise it with "
                "--loader-opt file.max_object_bytes=N"
            )
        return Loaded(data, {"size": len(data)})


def _read_at_most(path: str, count: int) -> bytes:
    """Up to ``count`` bytes of the file: one over the limit is enough to refuse it.

    Plain ``os`` calls: a small file is read with four system calls (open, fstat, read,
    close) where ``open()`` makes ten, and each one hands the interpreter lock to another
    thread that wants it.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        status = os.fstat(fd)
        if stat.S_ISREG(status.st_mode) and status.st_size < count:
            # Sized by the file: reading ``count`` would allocate count bytes up front.
            data = os.read(fd, status.st_size + 1)
            if len(data) >= status.st_size:
                return data  # all of it (a file that grew by then shows one byte more)
            chunks, total = [data], len(data)
        else:
            chunks, total = [], 0
        while total < count:
            chunk = os.read(fd, min(1 << 20, count - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@hookimpl
def register_sources(register: Callable[[type[Source]], None]) -> None:
    register(FilesSource)


@hookimpl
def register_loaders(register: Callable[[type[Loader]], None]) -> None:
    register(FileLoader)
