"""Loading and decoding in worker processes: ``igata run --decode-processes N``.

Load threads share one interpreter lock. Decoders that release it (Pillow's JPEG and PNG
codecs) scale over cores anyway, but the Python around each record does not: on a host
with many cores and a fast model, decoding in threads stops scaling at a few thousand
records per second. With ``--decode-processes N`` the load threads hand runs of items to N
worker processes, which run the same loaders and decoders (rebuilt there from the run's
options) and hand numpy arrays back through shared memory: one file in ``/dev/shm`` per
run of items, written once by the worker and read straight into the arrays the
predictor gets. Nothing is pickled but the items, the metadata and non-array values.

A worker that dies (a codec crashing on a hostile file) fails no other record: the items
that were in flight are read again, each alone in a process of its own, and the one that
kills that process is that record's error.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from igata_core.components import Item, RecordError
from igata_core.inputs import FETCH_RUN_BYTES, InputReader, StageError

log = logging.getLogger("igata.decode")

#: One item's outcome, as it comes back from a worker process.
#: ("value", value, meta) | ("array", spec, meta) | ("arrays", {field: spec}, meta)
#: | ("error", stage, exception)
_Outcome = tuple[Any, ...]
#: An array's place in the run's shared-memory file: (offset, shape, dtype string).
_ArraySpec = tuple[int, tuple[int, ...], str]

_reader: InputReader | None = None  # the worker process's own reader


def _shared_directory() -> str:
    """Where the shared-memory files go: /dev/shm (memory), else the temp directory."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


# -- in the worker process --------------------------------------------------------------------


def _start_worker(blob: bytes, environ: dict[str, str]) -> None:
    global _reader
    # The fork server's environment is the engine's at the time the server started: take
    # the engine's as it is now (credentials, endpoints), as a load thread would see it.
    os.environ.clear()
    os.environ.update(environ)
    _reader = pickle.loads(blob)


def _ready() -> int:
    return os.getpid()


def _is_plain_array(value: Any) -> bool:
    """A numpy array whose bytes are its value (no Python objects inside)."""
    return (
        type(value).__module__ == "numpy"
        and hasattr(value, "dtype")
        and not value.dtype.hasobject
        and value.dtype.names is None
    )


class _SharedFile:
    """The run's arrays, appended to one file in shared memory."""

    def __init__(self, directory: str, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.path: str | None = None
        self._fd: int | None = None
        self._size = 0

    def put(self, array: Any) -> _ArraySpec:
        import numpy as np

        array = np.ascontiguousarray(array)
        if self._fd is None:
            self.path = os.path.join(self.directory, self.prefix + uuid.uuid4().hex)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        offset = self._size
        data = array.data.cast("B") if array.size else b""
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], offset + written)
        self._size += len(data)
        return offset, tuple(array.shape), array.dtype.str

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def _fetched_runs(
    reader: InputReader, items: Sequence[Item]
) -> Iterator[list[Callable[[], tuple[Any, dict[str, Any]]]]]:
    """``items`` loaded in runs that end once FETCH_RUN_BYTES wait to be decoded (see
    InputReader.fetch): for each, what decodes it or raises its load failure."""
    run: list[Callable[[], tuple[Any, dict[str, Any]]]] = []
    held = 0
    for item in items:
        try:
            fetched = reader.fetch(item)
        except Exception as exc:
            run.append(_raiser(exc))
        else:
            run.append(fetched)
            held += fetched.size
        if held >= FETCH_RUN_BYTES:
            yield run
            run, held = [], 0
    if run:
        yield run


def _read_run(
    items: Sequence[Item], directory: str, prefix: str
) -> tuple[str | None, list[_Outcome]]:
    """Read ``items`` with this process's reader: (shared file, outcome per item)."""
    assert _reader is not None, "the decode process was not started with a reader"
    shared = _SharedFile(directory, prefix)
    outcomes: list[_Outcome] = []
    try:
        for run in _fetched_runs(_reader, items):
            for fetched in run:
                try:
                    value, meta = fetched()
                except StageError as exc:
                    outcomes.append(("error", exc.stage, _portable(exc.cause)))
                    continue
                except Exception as exc:  # a loader bug: that record's error, as in a thread
                    outcomes.append(("error", "load", _portable(exc)))
                    continue
                outcomes.append(_pack(value, meta, shared))
    except BaseException:
        shared.discard()
        raise
    shared.close()
    return shared.path, outcomes


def _pack(value: Any, meta: dict[str, Any], shared: _SharedFile) -> _Outcome:
    try:
        if _is_plain_array(value):
            return ("array", shared.put(value), meta)
        if isinstance(value, dict) and value and all(map(_is_plain_array, value.values())):
            return ("arrays", {key: shared.put(array) for key, array in value.items()}, meta)
        pickle.dumps((value, meta), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        message = f"the decoded value cannot be passed back from a decode process: {exc}"
        return ("error", "decode", RecordError(message))
    return ("value", value, meta)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RecordError that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RecordError(f"{type(exc).__name__}: {exc}")


# -- in the engine's process --------------------------------------------------------------------


class ProcessReader:
    """Reads items in ``processes`` worker processes; thread-safe (the load threads use it)."""

    def __init__(self, reader: InputReader, processes: int) -> None:
        try:
            self._blob = pickle.dumps(reader, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ValueError(
                f"the loaders and decoders cannot be moved to worker processes "
                f"({type(exc).__name__}: {exc}); run without --decode-processes"
            ) from exc
        self.reader = reader
        self.processes = processes
        self.directory = _shared_directory()
        # Named after this process, so that what a killed worker left is found at close.
        self.prefix = f"igata-decode-{os.getpid()}-"
        self._lock = threading.Lock()
        self._generation = 0
        self._closed = False
        self._context = _process_context(reader)
        self._executor = self._start()
        # Where an item suspected of killing a worker is read again, alone.
        self._quarantine: ProcessPoolExecutor | None = None
        self._quarantine_lock = threading.Lock()

    def _new_executor(self, processes: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            processes, mp_context=self._context, initializer=_start_worker,
            initargs=(self._blob, dict(os.environ)),
        )  # fmt: skip

    def _start(self) -> ProcessPoolExecutor:
        executor = self._new_executor(self.processes)
        # Start the workers now, while the source lists its first inputs.
        for _ in range(self.processes):
            executor.submit(_ready)
        return executor

    def close(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            executor = self._executor
        executor.shutdown(wait=wait, cancel_futures=True)
        quarantine = self._quarantine
        if quarantine is not None:
            quarantine.shutdown(wait=wait, cancel_futures=True)
        if wait:
            for name in os.listdir(self.directory):
                if name.startswith(self.prefix):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.directory, name))

    # -- reading

    def read(self, item: Item) -> tuple[Any, dict[str, Any]]:
        """One item, as :meth:`InputReader.read` (the engine's retries use it)."""
        return self.read_many([item])[0]()

    def read_many(self, items: Sequence[Item]) -> list[Callable[[], tuple[Any, dict[str, Any]]]]:
        """For each item, a function that returns its (input, meta) or raises StageError
        as :meth:`InputReader.read` would."""
        results: list[Callable[[], tuple[Any, dict[str, Any]]] | None] = [None] * len(items)
        remote: list[int] = []
        for index, item in enumerate(items):
            if item.data is not None or item.uri is None:
                results[index] = _deferred(self.reader.read, item)  # nothing to load
            else:
                remote.append(index)
        if remote:
            outcomes = self._run([items[i] for i in remote])
            for index, outcome in zip(remote, outcomes, strict=True):
                results[index] = outcome
        return [r for r in results if r is not None]

    def _run(self, items: list[Item]) -> list[Callable[[], tuple[Any, dict[str, Any]]]]:
        generation, future = self._submit(items)
        try:
            path, outcomes = future.result()
        except BrokenProcessPool:
            # Some item in this pool killed its worker: maybe one of these, maybe one of
            # another thread's run. Each of these is read again alone, to tell.
            self._restart(generation)
            return [self._alone(item) for item in items]
        except Exception as exc:
            # The items could not be sent (an unpicklable value in a request's metadata):
            # their error, as any other failure to read them.
            error = StageError("load", RecordError(f"cannot pass to a decode process: {exc}"))
            return [_raiser(error) for _ in items]
        return _unpack(path, outcomes)

    def _alone(self, item: Item) -> Callable[[], tuple[Any, dict[str, Any]]]:
        """Read one item in a process of its own, nothing else in flight there: if that
        process dies, this item killed it."""
        with self._quarantine_lock:
            if self._quarantine is None:
                self._quarantine = self._new_executor(1)
            future = self._quarantine.submit(_read_run, [item], self.directory, self.prefix)
            try:
                path, outcomes = future.result()
            except BrokenProcessPool as exc:
                self._quarantine.shutdown(wait=False)
                self._quarantine = None
                message = (
                    f"{_ref(item)}: the decode process reading it died ({exc}); a loader or "
                    "decoder crashes on this input"
                )
                return _raiser(StageError("decode", RecordError(message)))
        return _unpack(path, outcomes)[0]

    def _submit(self, items: list[Item]) -> tuple[int, Future[Any]]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode processes were shut down")
            generation = self._generation
            try:
                future = self._executor.submit(_read_run, items, self.directory, self.prefix)
                return generation, future
            except BrokenProcessPool:
                pass
        self._restart(generation)
        return self._submit(items)

    def _restart(self, generation: int) -> None:
        """A new pool after a worker died; once per breakage, whichever thread sees it."""
        with self._lock:
            if self._closed or generation != self._generation:
                return
            self._generation += 1
            broken = self._executor
            self._executor = self._start()
        broken.shutdown(wait=False, cancel_futures=True)
        log.warning("a decode process died; started a new pool of %d", self.processes)


def _process_context(reader: InputReader) -> Any:
    """forkserver where there is one: fork is unsafe in a process with threads running."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # Modules every worker needs, imported once in the fork server instead of in each
    # worker: the loaders' and decoders' own, and the array libraries this process
    # already uses.
    modules = {
        cls.__module__ for pool in (reader.loaders, reader.decoders) for cls in pool.classes()
    }
    modules.update(m for m in ("numpy", "PIL.Image") if m in sys.modules)
    context.set_forkserver_preload(sorted(modules))
    return context


def _unpack(
    path: str | None, outcomes: list[_Outcome]
) -> list[Callable[[], tuple[Any, dict[str, Any]]]]:
    """The outcomes with their arrays read out of the run's shared file (then removed)."""
    if path is None:
        return [_from_outcome(outcome, None) for outcome in outcomes]
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        return [_from_outcome(outcome, fd) for outcome in outcomes]
    finally:
        os.close(fd)


def _from_outcome(outcome: _Outcome, fd: int | None) -> Callable[[], tuple[Any, dict[str, Any]]]:
    kind = outcome[0]
    if kind == "error":
        return _raiser(StageError(outcome[1], outcome[2]))
    if kind == "array":
        assert fd is not None
        return _deferred_value(_read_array(fd, outcome[1]), outcome[2])
    if kind == "arrays":
        assert fd is not None
        arrays = {key: _read_array(fd, spec) for key, spec in outcome[1].items()}
        return _deferred_value(arrays, outcome[2])
    return _deferred_value(outcome[1], outcome[2])


def _read_array(fd: int, spec: _ArraySpec) -> Any:
    import numpy as np

    offset, shape, dtype = spec
    array = np.empty(shape, dtype=np.dtype(dtype))
    if array.size:
        view = array.data.cast("B")
        done = 0
        while done < len(view):
            count = os.preadv(fd, [view[done:]], offset + done)
            if count <= 0:
                raise OSError(f"decode process result truncated at byte {offset + done}")
            done += count
    return array


def _deferred(read: Callable[[Item], tuple[Any, dict[str, Any]]], item: Item) -> Any:
    return lambda: read(item)


def _deferred_value(value: Any, meta: dict[str, Any]) -> Any:
    return lambda: (value, meta)


def _raiser(error: BaseException) -> Any:
    def outcome() -> tuple[Any, dict[str, Any]]:
        raise error

    return outcome


def _ref(item: Item) -> str:
    return item.uri if isinstance(item.uri, str) else item.identity
