"""Shared parts of the core's tests: recording sources and sinks, test predictors, helpers.

Importable in-process (the test modules put this directory on ``sys.path``) and from a
subprocess (``PYTHONPATH=<tests>``, ``--predictor helpers_core:SlowPredictor``). Keep it
free of heavy imports at module top: it is imported by ``igata`` subprocesses.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from igata_core import (
    Envelope,
    ErrorOutcome,
    Item,
    PredictorBase,
    Rejection,
    ServiceUnavailable,
    Sink,
    Source,
)
from igata_core.assembly import RunRequest, assemble
from igata_core.pipeline import Pipeline
from igata_core.plugins import Registry, build_registry

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent

#: Environment variables that would change what a run does; removed for subprocesses.
_IGATA_ENV_PREFIXES = (
    "IGATA_",
    "INPUT_C",
    "OUTPUT_C",
    "PREDICTOR_",
    "RESULT_RECORD",
    "LOG_LEVEL",
    "DOWNLOAD_WORKERS",
)


# -- a journal of what happened, in order ---------------------------------------------------


class Journal:
    """Events from several threads, in the order they happened: ``(kind, value)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str]] = []

    def add(self, kind: str, value: str) -> None:
        with self._lock:
            self.events.append((kind, value))

    def index(self, kind: str, value: str) -> int:
        with self._lock:
            return self.events.index((kind, value))

    def values(self, kind: str) -> list[str]:
        with self._lock:
            return [v for k, v in self.events if k == kind]


# -- sources ----------------------------------------------------------------------------------


def data_envelopes(values: Iterable[Any], prefix: str = "env") -> list[Envelope]:
    """One envelope per value, each with one item carrying the value as its data."""
    return [
        Envelope(ref=f"{prefix}-{i}", items=[Item(identity=f"id-{i}", data=v, meta={"n": i})])
        for i, v in enumerate(values)
    ]


class ListSource(Source):
    """Yields the given envelopes; records yields, acks and nacks in a journal.

    ``unbounded``: after the list, block until ``stop()`` (a queue with nothing more to
    deliver). ``fail_after``: raise ``ServiceUnavailable`` after that many envelopes.
    ``delay``: seconds before each envelope.
    """

    name = "list-source"
    description = "Test source yielding a fixed list of envelopes"

    def __init__(
        self,
        envelopes: Sequence[Envelope],
        *,
        journal: Journal | None = None,
        unbounded: bool = False,
        fail_after: int | None = None,
        delay: float = 0.0,
    ):
        super().__init__()
        self._envelopes = list(envelopes)
        self.journal = journal or Journal()
        self.finite = not unbounded  # type: ignore[misc]
        self._fail_after = fail_after
        self._delay = delay
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self.opened = 0
        self.closed = 0
        self.yielded: list[str] = []
        self.yield_times: list[float] = []
        self.acked: list[str] = []
        self.ack_times: dict[str, float] = {}
        self.nacked: list[str] = []

    def open(self) -> None:
        self.opened += 1

    def envelopes(self) -> Iterator[Envelope]:
        for count, envelope in enumerate(self._envelopes):
            if self._fail_after is not None and count >= self._fail_after:
                raise ServiceUnavailable(f"test queue gone after {count} envelopes")
            if self._stopped.is_set():
                return
            if self._delay:
                time.sleep(self._delay)
            with self._lock:
                self.yielded.append(envelope.ref)
                self.yield_times.append(time.monotonic())
            self.journal.add("yield", envelope.ref)
            yield envelope
        if not self.finite:
            self._stopped.wait()

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        now = time.monotonic()
        for envelope in envelopes:
            self.journal.add("ack", envelope.ref)
            with self._lock:
                self.acked.append(envelope.ref)
                self.ack_times[envelope.ref] = now

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.journal.add("nack", envelope.ref)
            with self._lock:
                self.nacked.append(envelope.ref)

    def stop(self) -> None:
        self._stopped.set()

    def close(self) -> None:
        self.closed += 1


# -- sinks ------------------------------------------------------------------------------------


class RecordingSink(Sink):
    """Keeps records in memory; ``flush`` makes what was put durable (journal: ``flushed``).

    ``fail_flushes``: the first N flushes raise ``ConnectionError`` (``None``: every one).
    ``fail_for``: flushes raise during this many seconds after the first flush call.
    ``reject``: identities that ``put_records`` refuses with a :class:`Rejection`.
    """

    name = "recording"
    description = "Test sink keeping records in memory"

    def __init__(
        self,
        *,
        journal: Journal | None = None,
        fail_flushes: int | None = 0,
        fail_for: float = 0.0,
        reject: Iterable[str] = (),
    ):
        super().__init__()
        self.journal = journal or Journal()
        self._fail_flushes = fail_flushes
        self._fail_for = fail_for
        self._first_flush: float | None = None
        self._reject = set(reject)
        self.pending: list[dict[str, Any]] = []
        self.pending_errors: list[ErrorOutcome] = []
        self.durable: list[dict[str, Any]] = []
        self.durable_errors: list[ErrorOutcome] = []
        self.flush_calls = 0
        self.failed_flushes = 0
        self.put_sizes: list[int] = []
        self.closed = 0
        #: Called at every flush attempt (tests sample other state at that moment).
        self.on_flush: Any = None

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        self.put_sizes.append(len(records))
        rejections = []
        for index, record in enumerate(records):
            if record["igata_id"] in self._reject:
                rejections.append(Rejection(index, f"test sink refuses {record['igata_id']}"))
            else:
                self.pending.append(dict(record))
        return rejections

    def put_errors(self, outcomes: Sequence[ErrorOutcome]) -> None:
        self.pending_errors.extend(outcomes)

    def _failing(self) -> bool:
        now = time.monotonic()
        if self._first_flush is None:
            self._first_flush = now
        if self._fail_for and now - self._first_flush < self._fail_for:
            return True
        if self._fail_flushes is None:
            return True
        return self.flush_calls <= self._fail_flushes

    def flush(self) -> None:
        self.flush_calls += 1
        if self.on_flush is not None:
            self.on_flush()
        if self._failing():
            self.failed_flushes += 1
            raise ConnectionError(f"test sink: flush {self.flush_calls} fails")
        for record in self.pending:
            self.journal.add("flushed", record["igata_id"])
        for outcome in self.pending_errors:
            self.journal.add("error-flushed", outcome.identity)
        self.durable += self.pending
        self.durable_errors += self.pending_errors
        self.pending, self.pending_errors = [], []

    def close(self) -> None:
        self.closed += 1

    def ids(self) -> list[str]:
        return [record["igata_id"] for record in self.durable]


# -- predictors -------------------------------------------------------------------------------


class EchoPredictor(PredictorBase):
    """Returns its input under ``value``; raises for the input ``"bad"``."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if input_record == "bad":
            raise ValueError("the model refuses 'bad'")
        return {"value": input_record}


class ShapePredictor(PredictorBase):
    """The shape of an image array."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"shape": [int(n) for n in input_record.shape]}


#: ``PREDICTOR_MODULE=helpers_core`` finds this (default class name ``Predictor``).
Predictor = ShapePredictor


class SlowPredictor(ShapePredictor):
    """Sleeps ``IGATA_TEST_PREDICT_DELAY`` seconds (default 0.05) per record."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(os.environ.get("IGATA_TEST_PREDICT_DELAY", "0.05")))
        return super().predict(input_record, meta)


class DebugLoggingPredictor(ShapePredictor):
    """Logs one DEBUG line per record (to see LOG_LEVEL at work)."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        logging.getLogger("helpers_core").debug("predicting %s", meta.get("path"))
        return super().predict(input_record, meta)


class FailingSetupPredictor(ShapePredictor):
    def setup(self) -> None:
        raise OSError("model file weights.bin is missing")


class NotAPredictor:
    def predict(self, input_record: Any, meta: dict[str, Any]) -> Any:
        return {}


# -- running ----------------------------------------------------------------------------------


def core_registry(extra_plugins: Iterable[tuple[str, object]] = ()) -> Registry:
    """The built-ins (and ``extra_plugins``) only: installed plugins do not leak in."""
    return build_registry(entry_points=False, extra_plugins=extra_plugins, environ={})


def make_pipeline(
    source: Any,
    sink: Any,
    predictor: Any,
    *,
    environ: Mapping[str, str] | None = None,
    **settings: Any,
) -> Pipeline:
    """Assemble a pipeline as ``igata run`` would, returned unstarted (for ``stop()``)."""
    request = RunRequest(
        source=source,
        sink=sink,
        predictor=predictor,
        run_options=settings,
        environ=dict(environ or {}),
    )
    assembly = assemble(core_registry(), request)
    assembly.predictor.setup()
    return Pipeline(
        assembly.source, assembly.sink, assembly.predictor, assembly.reader, assembly.settings
    )


def write_images(directory: Path, count: int, *, size: tuple[int, int] = (4, 3)) -> list[Path]:
    """``count`` tiny distinct PNG files named 0000.png, 0001.png…"""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"{i:04d}.png"
        Image.new("RGB", size, (i % 256, (i // 256) % 256, 7)).save(path)
        paths.append(path)
    return paths


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without igata settings, with the tests on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_IGATA_ENV_PREFIXES)}
    paths = [str(TESTS_DIR)]
    if extra.get("PYTHONPATH"):
        paths.append(extra.pop("PYTHONPATH"))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def igata(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m igata_core ARGS`` and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "igata_core", *args],
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(IGATA_LOAD_PLUGINS=""),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- throwaway plugin distributions -----------------------------------------------------------

PLUGIN_MODULES: dict[str, str] = {
    "igata_test_broken": 'raise RuntimeError("boom at import")\n',
    "igata_test_alpha": """\
from igata_core import Envelope, Item, Source, hookimpl


class AlphaSource(Source):
    name = "alpha-src"
    description = "Test source of plugin alpha"

    def envelopes(self):
        yield Envelope(ref="alpha-1", items=[Item(identity="alpha-1", data=1)])


@hookimpl
def register_sources(register):
    register(AlphaSource)
""",
    "igata_test_beta": """\
from igata_core import Sink, hookimpl


class BetaSink(Sink):
    name = "beta-sink"
    description = "Test sink of plugin beta"

    def put_records(self, records):
        return None

    def flush(self):
        pass


@hookimpl
def register_sinks(register):
    register(BetaSink)
""",
    "igata_test_cmd": '''\
import click

from igata_core import hookimpl


@click.command(name="hello")
@click.option("--name", default="world", help="Whom to greet.")
def hello(name):
    """Say hello (a command added by a plugin)."""
    click.echo(f"hello {name} from a plugin command")


@hookimpl
def register_commands(register):
    register(hello)
''',
}


def make_distribution(site: Path, dist: str, entry_points: Mapping[str, str]) -> None:
    """An installed-looking distribution in ``site``: dist-info with ``igata`` entry points,
    and the plugin modules they name (from :data:`PLUGIN_MODULES`)."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {module}\n" for name, module in entry_points.items())
    (info / "entry_points.txt").write_text("[igata]\n" + lines)
    for module in entry_points.values():
        (site / f"{module}.py").write_text(PLUGIN_MODULES[module])
