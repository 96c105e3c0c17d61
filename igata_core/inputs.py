"""Turning an :class:`Item` into the predictor's input: loader by URI scheme, then decoder."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from igata_core.components import Decoder, Item, Loaded, Loader, RecordError


class StageError(Exception):
    """A record failed in one stage (``load`` or ``decode``); wraps the cause."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(str(cause))
        self.stage = stage
        self.cause = cause


def scheme_of(uri: str) -> str:
    if ":" not in uri:
        return "file"  # no scheme without a colon: a plain path (the common case, cheaply)
    scheme = urlsplit(uri).scheme.lower()
    # "C:\\x" parses as scheme "c"; a one-letter scheme is a drive, not a URI.
    return "file" if len(scheme) <= 1 else scheme


def gunzip(data: bytes, limit: int, uri: str) -> bytes:
    """Decompress gzip data (all members), refusing more than ``limit`` bytes (a gzip bomb)."""
    parts: list[bytes] = []
    size = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        part = inflater.decompress(rest, limit + 1 - size)
        size += len(part)
        if size > limit or inflater.unconsumed_tail:
            raise RecordError(f"{uri}: decompresses to more than {limit} bytes; refused")
        if not inflater.eof:
            raise EOFError("compressed data ended before the end-of-stream marker")
        parts.append(part)
        rest = inflater.unused_data
    return b"".join(parts)


def _path_of(uri: str) -> str:
    """The lower-cased path part of a URI (no query string), or the path itself."""
    return (urlsplit(uri).path if "://" in uri else uri).lower()


class ComponentPool:
    """Lazily created, shared instances of loaders or decoders, by key."""

    def __init__(
        self,
        classes: Mapping[str, type],
        factory: Callable[[type], Any],
        clashes: Mapping[str, str] | None = None,
    ):
        self._classes = dict(classes)
        # Keys two plugins registered: using one is that record's error, never a silent pick.
        self._clashes = dict(clashes or {})
        self._factory = factory
        self._instances: dict[type, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        if key in self._clashes:
            raise RecordError(self._clashes[key])
        cls = self._classes.get(key)
        if cls is None:
            return None
        instance = self._instances.get(cls)  # created once; the lock only guards creation
        if instance is not None:
            return instance
        with self._lock:
            instance = self._instances.get(cls)
            if instance is None:
                instance = self._instances[cls] = self._factory(cls)
            return instance

    def keys(self) -> list[str]:
        return sorted(self._classes)

    def classes(self) -> list[type]:
        return list(dict.fromkeys(self._classes.values()))

    def __getstate__(self) -> dict[str, Any]:
        # For decode processes: the classes and the factory travel, the instances (clients,
        # connections) and the lock are made anew in the other process.
        return {"classes": self._classes, "clashes": self._clashes, "factory": self._factory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["classes"], state["factory"], clashes=state["clashes"])  # type: ignore[misc]

    def created(self) -> list[Any]:
        with self._lock:
            return list(self._instances.values())


#: Loaded bytes after which a run of loads stops and is decoded (see InputReader.fetch).
FETCH_RUN_BYTES = 4 << 20


class Fetched:
    """An item loaded and not yet decoded; calling it decodes it (once)."""

    __slots__ = ("_item", "_loaded", "_reader", "size")

    def __init__(self, reader: InputReader, item: Item, loaded: Loaded | dict[str, Loaded] | None):
        self._reader, self._item, self._loaded = reader, item, loaded
        parts = loaded.values() if isinstance(loaded, dict) else [loaded] if loaded else []
        #: Bytes loaded, held until the item is decoded.
        self.size: int = sum(
            memoryview(part.data).nbytes
            for part in parts
            if isinstance(part.data, bytes | bytearray | memoryview)
        )

    def __call__(self) -> tuple[Any, dict[str, Any]]:
        loaded, self._loaded = self._loaded, None  # the bytes go once they are decoded
        return self._reader._decode(self._item, loaded)


class InputReader:
    """Loads and decodes items; thread-safe (used from the engine's pool)."""

    def __init__(
        self,
        loaders: ComponentPool,
        decoders: ComponentPool,
        extensions: Mapping[str, str],
        default_decoder: str | None = None,
        max_decompressed_bytes: int = 1 << 30,
    ):
        self.loaders = loaders
        self.decoders = decoders
        # Longest suffix first so ".csv.gz"-style entries win over ".gz".
        self._extensions = sorted(extensions.items(), key=lambda kv: -len(kv[0]))
        self.default_decoder = default_decoder
        self.max_decompressed_bytes = max_decompressed_bytes

    def close(self) -> None:
        """Close the loaders this reader created (decoders hold no resources)."""
        for loader in self.loaders.created():
            loader.close()

    def read(self, item: Item) -> tuple[Any, dict[str, Any]]:
        """The predictor input for ``item`` and its meta (loader meta under item meta)."""
        return self.fetch(item)()

    def fetch(self, item: Item) -> Fetched:
        """Load ``item`` now (a load failure raises :class:`StageError` now); calling what
        this returns decodes it: what :meth:`read` gives, or its decode failure.

        The engine loads a run of items, then decodes them. With other threads wanting the
        interpreter lock, a run of loads (system calls, which let go of the lock) then a
        run of decodes (which mostly hold it) hands the lock over less often than loading
        and decoding each item in turn: on 2,000 small local PNGs the engine went from
        0.76x to 0.84x a plain loop's speed. A run stops loading once ``FETCH_RUN_BYTES``
        wait to be decoded, so that large files are not all held at once.
        """
        return Fetched(self, item, self._load(item))

    def _load(self, item: Item) -> Loaded | dict[str, Loaded] | None:
        """The load stage: what the loader gave for each of the item's URIs."""
        if item.data is not None:
            return None
        if item.uri is None:
            raise StageError("load", RecordError("the request names no input (no URI, no data)"))
        if isinstance(item.uri, str):
            return self._load_one(item.uri)
        return {field: self._load_one(uri) for field, uri in item.uri.items()}

    def _decode(
        self, item: Item, loaded: Loaded | dict[str, Loaded] | None
    ) -> tuple[Any, dict[str, Any]]:
        """The decode stage, on what :meth:`_load` gave."""
        if item.data is not None:
            return item.data, dict(item.meta)
        if isinstance(item.uri, str):
            one: Loaded = loaded  # type: ignore[assignment]
            return self._decode_one(item.uri, item.decoder, one), {**one.meta, **item.meta}
        assert isinstance(item.uri, dict) and isinstance(loaded, dict)
        inputs = {
            field: self._decode_one(uri, item.decoder, loaded[field])
            for field, uri in item.uri.items()
        }
        return inputs, dict(item.meta)

    def _load_one(self, uri: str) -> Loaded:
        scheme = scheme_of(uri)
        loader: Loader | None = self.loaders.get(scheme)
        if loader is None:
            known = ", ".join(self.loaders.keys())
            hint = " (pip install igata-s3)" if scheme == "s3" else ""
            raise StageError(
                "load",
                RecordError(f"{uri}: no loader for scheme {scheme!r}{hint}; loaders: {known}"),
            )
        try:
            return loader.load(uri)
        except Exception as exc:
            raise StageError("load", exc) from exc

    def _decode_one(self, uri: str, decoder_name: str | None, loaded: Loaded) -> Any:
        data, path = loaded.data, _path_of(uri)
        if path.endswith(".gz"):
            try:
                data = gunzip(data, self.max_decompressed_bytes, uri)
            except RecordError as exc:
                raise StageError("decode", exc) from exc
            except (OSError, EOFError, zlib.error) as exc:
                message = f"{uri}: not valid gzip data ({exc})"
                raise StageError("decode", RecordError(message)) from exc
            path = path[:-3]
        try:
            decoder = self._decoder_for(path, decoder_name, uri)
            return decoder.decode(data, uri)
        except Exception as exc:
            raise StageError("decode", exc) from exc

    def _decoder_for(self, path: str, name: str | None, uri: str) -> Decoder:
        """The decoder by name, or by the suffix of ``path`` (lower-case, no query)."""
        name = name or self.default_decoder
        if not name:
            for suffix, decoder_name in self._extensions:
                if path.endswith(suffix):
                    name = decoder_name
                    break
            else:
                raise RecordError(
                    f"{uri}: no decoder for this file type; choose one with --decoder "
                    f"({', '.join(self.decoders.keys())})"
                )
        decoder: Decoder | None = self.decoders.get(name)
        if decoder is None:
            raise RecordError(f"unknown decoder {name!r} ({', '.join(self.decoders.keys())})")
        return decoder
