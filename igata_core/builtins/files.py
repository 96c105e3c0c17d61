"""Local files: the ``files`` source and the loader for plain paths and ``file://`` URIs."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from igata_core import hookimpl
from igata_core.components import Envelope, Item, Loaded, Loader, RecordError, Source
from igata_core.options import Option

DEFAULT_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp",
    ".csv", ".csv.gz", ".json", ".json.gz",
)  # fmt: skip


def path_of(uri: str) -> Path:
    """The local path of a plain path or a ``file://`` URI."""
    if uri.startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise RecordError(f"file URI {uri!r} names a host ({parts.netloc}); only local files")
        return Path(unquote(parts.path))
    return Path(uri)


class FilesSource(Source):
    """Local paths, directories (recursive) and globs, in a stable sorted order."""

    name = "files"
    description = "Local files: paths, directories (recursive) and glob patterns"
    finite = True
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "inputs", "list", default=[], help="Paths, directories or globs (the command's INPUTS)."
        ),
        Option(
            "extensions",
            "list",
            default=list(DEFAULT_EXTENSIONS),
            help="Only files ending with one of these (case-insensitive); '*' for all.",
        ),
    )

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self._stopped = False
        exts = [e.lower() for e in self.opts["extensions"]]
        self._all = "*" in exts
        self._extensions = tuple(e if e.startswith(".") else f".{e}" for e in exts if e != "*")

    def _wanted(self, path: str) -> bool:
        return self._all or path.lower().endswith(self._extensions)

    def _paths(self) -> Iterator[Path]:
        for given in self.opts["inputs"]:
            path = path_of(given)
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    dirs.sort()
                    for name in sorted(files):
                        if self._wanted(name):
                            yield Path(root, name)
            elif path.exists():
                yield path  # named explicitly: no extension filter
            elif glob.has_magic(str(path)):
                for match in sorted(glob.iglob(str(path), recursive=True)):
                    if os.path.isfile(match) and self._wanted(match):
                        yield Path(match)
            else:
                # A missing path is that input's error, not a crash of the run.
                yield path

    def envelopes(self) -> Iterator[Envelope]:
        for path in self._paths():
            if self._stopped:
                return
            uri = path.resolve().as_uri()
            yield Envelope(
                ref=str(path),
                items=[Item(identity=uri, uri=str(path), meta={"path": str(path)})],
            )

    def total(self) -> int | None:
        return sum(1 for _ in self._paths())

    def stop(self) -> None:
        self._stopped = True


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
        ),
    )

    def load(self, uri: str) -> Loaded:
        path = path_of(uri)
        try:
            size = path.stat().st_size
            if size > self.opts["max_object_bytes"]:
                raise RecordError(
                    f"{path}: {size} bytes is over max_object_bytes "
                    f"({self.opts['max_object_bytes']})"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            raise RecordError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise RecordError(f"{path}: is a directory") from None
        except PermissionError:
            raise RecordError(f"{path}: permission denied") from None
        return Loaded(data, {"size": size})


@hookimpl
def register_sources(register):  # type: ignore[no-untyped-def]
    register(FilesSource)


@hookimpl
def register_loaders(register):  # type: ignore[no-untyped-def]
    register(FileLoader)
