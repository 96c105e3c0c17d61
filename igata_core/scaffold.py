"""Tools for plugin authors: ``igata new-plugin`` and the generated hook reference.

``igata new-plugin NAME`` writes a complete, installable plugin package whose components
work as generated (a sink writing JSON files, a source reading a JSON Lines queue, a
loader for ``NAME://`` URIs, a decoder for ``.NAME`` files) and whose tests pass as
generated; the author then replaces the storage calls. :func:`hooks_markdown` renders
``docs/hooks.md`` from the docstrings of :mod:`igata_core.hookspecs`.

``python -m igata_core.scaffold new-plugin NAME`` and
``python -m igata_core.scaffold hooks-doc -o docs/hooks.md`` run the same code without the
``igata`` command. This module imports nothing heavy: the ``igata`` CLI imports it.
"""

from __future__ import annotations

import inspect
import keyword
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import click

from igata_core import hookspecs
from igata_core.plugins import HOOK_API_VERSION

KINDS: tuple[str, ...] = ("source", "sink", "loader", "decoder")

#: What a plugin name may look like: it becomes a distribution, module, scheme and suffix.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
#: Longer names would not fit the generated code's lines (and nobody types them).
MAX_NAME_LENGTH = 30


class ScaffoldError(Exception):
    """The plugin cannot be generated (bad name, existing directory, name taken)."""


# -- names -------------------------------------------------------------------------------


def core_requirement(version: str | None = None) -> str:
    """The igata-core range a plugin should pin: the current minor series (``>=0.1,<0.2``).

    igata-core changes its hook API only with a new minor version while below 1.0 (and a
    new major version after), so a plugin pins that series.
    """
    if version is None:
        from igata_core import __version__

        version = __version__
    major, minor = (int(part) for part in version.split(".")[:2])
    if major == 0:
        return f"igata-core>={major}.{minor},<{major}.{minor + 1}"
    return f"igata-core>={major}.{minor},<{major + 1}"


def plugin_names(name: str) -> dict[str, str]:
    """The names derived from a plugin name (``pg-queue`` -> ``igata-pg-queue``…)."""
    name = name.strip().lower().removeprefix("igata-")
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"plugin name {name!r} is not usable: use lower-case letters, digits and single "
            f"hyphens, starting with a letter, at most {MAX_NAME_LENGTH} characters "
            "(e.g. 'pgqueue' or 'kafka-events')"
        )
    module = "igata_" + name.replace("-", "_")
    if keyword.iskeyword(module):  # pragma: no cover - "igata_" prefix rules it out
        raise ScaffoldError(f"plugin name {name!r} gives a Python keyword as module name")
    return {
        "__NAME__": name,
        "__DIST__": f"igata-{name}",
        "__MODULE__": module,
        "__CLASS__": "".join(part.capitalize() for part in name.split("-")),
        "__ENV__": name.upper().replace("-", "_"),
        "__EXT__": f".{name}",
        "__TESTNAME__": name.replace("-", "_"),
        "__CORE_SPEC__": core_requirement(),
        "__API__": str(HOOK_API_VERSION),
    }


_PLACEHOLDER = re.compile(r"__[A-Z]+(?:_[A-Z]+)*__")


def _render(template: str, names: dict[str, str], **extra: str) -> str:
    """Fill ``__NAME__``-style placeholders; ``extra`` fills ``__KEY__`` for ``key=...``."""
    text = textwrap.dedent(template).lstrip("\n")
    for key, value in extra.items():
        text = text.replace(f"__{key.upper()}__", value)
    for key, value in names.items():
        text = text.replace(key, value)
    leftover = _PLACEHOLDER.findall(text)
    if leftover:  # pragma: no cover - a template bug, caught by the scaffold tests
        raise AssertionError(f"unreplaced placeholders in template: {sorted(set(leftover))}")
    return text


def _kinds(kinds: Iterable[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(kinds or KINDS))
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise ScaffoldError(f"unknown component kinds {unknown}; choose from {', '.join(KINDS)}")
    return [k for k in KINDS if k in chosen]


# -- templates ---------------------------------------------------------------------------

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "igata plugin __NAME__: __SUMMARY__"
readme = "README.md"
requires-python = ">=3.11"
dependencies = [
    # The igata-core series whose hook API (igata_core.HOOK_API_VERSION = __API__) this
    # plugin is written for. Add your storage client library here.
    "__CORE_SPEC__",
]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-timeout>=2.2"]

# igata finds the plugin through this entry point; reinstall (pip install -e .) after
# changing it, editable installs do not refresh entry points.
[project.entry-points.igata]
__NAME__ = "__MODULE__.plugin"

[tool.setuptools.packages.find]
include = ["__MODULE__*"]

[tool.pytest.ini_options]
timeout = 120
addopts = "--import-mode=importlib"
testpaths = ["tests"]

[tool.ruff]
line-length = 100
target-version = "py311"
"""

INIT = '''
"""igata plugin __NAME__: __SUMMARY__."""

__version__ = "0.1.0"
'''

PLUGIN_HEAD = '''
"""Entry point of the igata plugin __NAME__: registers its components with igata.

igata imports this module whenever the ``igata`` command starts (entry point group
``igata`` in pyproject.toml), so it stays cheap: each hook imports its component's module
when igata calls it, which is only when a command needs that kind of component
(``igata --help`` needs none). In the components' modules, import heavy libraries
(database drivers, numpy, boto3) inside the methods that use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from igata_core import hookimpl

#: The igata hook API this plugin is written for. igata refuses to load the plugin, with a
#: message saying so, when its own igata_core.HOOK_API_VERSION is different.
IGATA_HOOK_API = __API__
'''

HOOKIMPL = """

@hookimpl
def register___KINDS__(register: Callable[[Any], None]) -> None:
    from __MODULE__.__FILE__ import __CLASS____KIND__

    register(__CLASS____KIND__)
"""

SINK = '''
"""The __NAME__ sink: each result record becomes one JSON file named after its igata_id.

It works as generated, against a local directory. To write to your own store (a database
table, an object store, an HTTP API), keep the structure (buffer in ``put_records``,
write in ``flush``, key every write by ``igata_id``) and replace the methods of the
"storage" section at the end of the class: ``_write_result``, ``_write_error`` and
``_has_result``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from igata_core import RECORD_ID_KEY, ErrorOutcome, Option, Rejection, RunContext, Sink
from igata_core.serialize import NotSerializable, dumps


class __CLASS__Sink(Sink):
    """Writes ``<directory>/<key>.json`` per result and ``<directory>/errors/<key>.json``
    per failed record, ``key`` derived from the record's ``igata_id``: a redelivered record
    overwrites its file instead of adding one."""

    name = "__NAME__"
    description = "Result records as JSON files in a directory, one file per igata_id"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "directory",
            required=True,
            help="Directory the result files are written to (created if missing).",
            env=("__ENV___DIRECTORY",),
        ),
    )

    def __init__(self, options: Any = None, context: RunContext | None = None):
        # No I/O here: igata checks the options of every component before opening any.
        super().__init__(options, context)
        self.directory = Path(self.opts["directory"])
        # igata_id -> serialised record or error; the last one put for an identity wins.
        self._results: dict[str, str] = {}
        self._errors: dict[str, str] = {}

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def put_records(self, records: Sequence[dict[str, Any]]) -> list[Rejection]:
        rejections = []
        for index, record in enumerate(records):
            identity = str(record[RECORD_ID_KEY])
            try:
                text = dumps(record, ensure_ascii=False, sort_keys=True)
            except NotSerializable as exc:
                # Only this record fails (stage "sink"); the rest of the chunk is written.
                message = f"{self.name} sink: cannot store record {identity}: {exc}"
                rejections.append(Rejection(index, message, "NotSerializable"))
                continue
            self._results[identity] = text
        return rejections

    def put_errors(self, outcomes: Sequence[ErrorOutcome]) -> None:
        for outcome in outcomes:
            self._errors[outcome.identity] = dumps(outcome.to_dict(), ensure_ascii=False)

    def flush(self) -> None:
        # A record leaves the buffer only once written: when a write raises, igata calls
        # flush again later (with backoff) and nothing put so far is lost.
        for identity in list(self._results):
            self._write_result(identity, self._results[identity])
            del self._results[identity]
        for identity in list(self._errors):
            # A completed record stays completed: a later failed attempt leaves it alone.
            if not self._has_result(identity):
                self._write_error(identity, self._errors[identity])
            del self._errors[identity]

    # -- storage: replace these three methods with calls to your store -----------------

    def _write_result(self, identity: str, text: str) -> None:
        """Upsert one result keyed by its identity; it must be durable on return."""
        _replace_file(self.directory / f"{_key(identity)}.json", text)
        # The result supersedes the error of an earlier attempt of the same record.
        (self.directory / "errors" / f"{_key(identity)}.json").unlink(missing_ok=True)

    def _write_error(self, identity: str, text: str) -> None:
        """Record that the latest attempt of a record failed (upsert by identity)."""
        _replace_file(self.directory / "errors" / f"{_key(identity)}.json", text)

    def _has_result(self, identity: str) -> bool:
        return (self.directory / f"{_key(identity)}.json").exists()


def _key(identity: str) -> str:
    # igata_ids are often URIs (slashes, colons) and may be longer than a file name.
    import hashlib  # here: every igata command imports the plugin module

    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:40]


def _replace_file(path: Path, text: str) -> None:
    """Write ``path`` atomically and durably: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
'''

SOURCE = '''
"""The __NAME__ source: requests read from a local JSON Lines "queue" file.

Each line of the queue is one request, a JSON object such as::

    {"id": "req-1", "uri": "s3://bucket/cats/1.png", "customer": "acme"}

``id`` identifies the request (sinks key their writes by it; without one, a digest of the
request is used), ``uri`` names what the loaders fetch (or a mapping of field -> URI when
a request has several inputs), and every field but ``uri`` reaches the predictor as
``meta`` and ends up in the result record.

Acks and nacks are appended to a ledger file beside the queue (``<queue>.ledger``). An
acked request is never delivered again; a nacked or never settled one is delivered again
by the next run, until ``max_attempts`` deliveries of it were nacked.

It works as generated. To read your own queue (Kafka, a Postgres table of jobs, an HTTP
API), keep the structure and replace the methods of the "queue" section at the end of
the class: ``_lines`` (fetch requests), ``_load_ledger`` and ``_append_ledger`` (where
acks and nacks go: a commit, a DELETE, an UPDATE ... SET state = 'done').
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

from igata_core import Envelope, Item, Option, RunContext, Source, digest_identity

log = logging.getLogger(__name__)


class __CLASS__Source(Source):
    """Delivers the requests of a JSON Lines file that are not acked yet, in file order."""

    name = "__NAME__"
    description = "Requests from a JSON Lines queue file; acks and nacks kept in a ledger file"
    finite = True
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "queue",
            required=True,
            help="The JSON Lines file of requests, one JSON object per line.",
            env=("__ENV___QUEUE",),
        ),
        Option(
            "ledger",
            help="File recording acks and nacks (default: the queue's path + '.ledger').",
        ),
        Option(
            "max_attempts",
            "int",
            default=3,
            minimum=1,
            help="Deliveries of a request before it is given up; the last one is final.",
        ),
    )

    def __init__(self, options: Any = None, context: RunContext | None = None):
        # No I/O here: igata checks the options of every component before opening any.
        super().__init__(options, context)
        self.queue = Path(self.opts["queue"])
        self.ledger = Path(self.opts["ledger"] or f"{self.queue}.ledger")
        self._stopped = threading.Event()
        # ack/nack come from igata's writer thread while envelopes() runs on another.
        self._lock = threading.Lock()
        self._acked: set[str] = set()
        self._nacks: Counter[str] = Counter()
        self._ledger_file: TextIO | None = None

    def open(self) -> None:
        if not self.queue.is_file():
            raise FileNotFoundError(f"{self.name} source: queue file {self.queue} does not exist")
        self._load_ledger()

    def envelopes(self) -> Iterator[Envelope]:
        for number, line in self._lines():
            if self._stopped.is_set():
                return
            envelope = self._envelope(number, line)
            if envelope is not None:
                yield envelope

    def ack(self, envelopes: Sequence[Envelope]) -> None:
        self._settle(envelopes, "ack")

    def nack(self, envelopes: Sequence[Envelope]) -> None:
        self._settle(envelopes, "nack")

    def stop(self) -> None:
        self._stopped.set()

    def total(self) -> int | None:
        return sum(1 for _, line in self._lines() if self._deliverable(_parse(line)[0]))

    def close(self) -> None:
        with self._lock:
            if self._ledger_file is not None:
                self._ledger_file.close()
                self._ledger_file = None

    def _envelope(self, number: int, line: str) -> Envelope | None:
        ref = f"{self.queue}:{number}"
        key, request, problem = _parse(line)
        with self._lock:
            acked, nacks = key in self._acked, self._nacks[key]
        if acked:
            return None
        max_attempts = self.opts["max_attempts"]
        if nacks >= max_attempts:
            log.warning("%s: request %s failed %d attempts; given up", ref, key, nacks)
            return None
        attempt = nacks + 1
        envelope = Envelope(
            ref=ref, items=[], handle=key, attempt=attempt, final=attempt >= max_attempts
        )
        if problem:
            envelope.error = f"{ref}: {problem}"
            return envelope
        uri = request.get("uri")
        meta = {field: value for field, value in request.items() if field != "uri"}
        if not isinstance(uri, str | dict) or not uri:
            error = f"{ref}: request {key} has no 'uri' field (a URI or a mapping of URIs)"
            envelope.items = [Item(identity=key, meta=meta, error=error)]
        else:
            envelope.items = [Item(identity=key, uri=uri, meta=meta)]
        return envelope

    def _deliverable(self, key: str) -> bool:
        with self._lock:
            return key not in self._acked and self._nacks[key] < self.opts["max_attempts"]

    def _settle(self, envelopes: Sequence[Envelope], event: str) -> None:
        if not envelopes:
            return
        with self._lock:
            for envelope in envelopes:
                if event == "ack":
                    self._acked.add(envelope.handle)
                else:
                    self._nacks[envelope.handle] += 1
            self._append_ledger([{"id": e.handle, "event": event} for e in envelopes])

    # -- queue: replace these methods to read your own queue -------------------------------

    def _lines(self) -> Iterator[tuple[int, str]]:
        """The queue's requests as (line number, JSON text), in order."""
        # A line that is not UTF-8 becomes one bad request, not the end of the run.
        with self.queue.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line

    def _load_ledger(self) -> None:
        """Learn what earlier runs acked and nacked."""
        if self.ledger.exists():
            for line in self.ledger.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    key, event = str(entry["id"]), entry["event"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash while it was appended
                if event == "ack":
                    self._acked.add(key)
                elif event == "nack":
                    self._nacks[key] += 1
        self._ledger_file = self.ledger.open("a", encoding="utf-8")

    def _append_ledger(self, entries: list[dict[str, Any]]) -> None:
        """Make acks and nacks durable before returning (called with the lock held)."""
        if self._ledger_file is None:
            raise RuntimeError(f"{self.name} source: ack or nack before open() or after close()")
        self._ledger_file.write("".join(json.dumps(entry) + "\\n" for entry in entries))
        self._ledger_file.flush()
        os.fsync(self._ledger_file.fileno())


def _parse(line: str) -> tuple[str, dict[str, Any], str | None]:
    """(identity, request, problem) of one queue line; identities survive redelivery."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        return digest_identity(line.strip()), {}, f"not valid JSON ({exc})"
    if not isinstance(request, dict):
        return digest_identity(request), {}, "not a JSON object"
    identity = request.get("id")
    if identity in (None, ""):
        return digest_identity(request), request, None
    return str(identity), request, None
'''

LOADER = '''
"""The __NAME__ loader: ``__NAME__://PATH`` URIs, read from a local directory.

``__NAME__://cats/1.png`` is the file ``<root>/cats/1.png``. A URI cannot leave ``root``
(``..`` and symbolic links are resolved before the check), because URIs come from
requests that other people write.

It works as generated. To load from your own storage, keep ``load`` and replace
``_fetch`` (at the end of the class) with your client's "get object" call; import the
client library inside the method, or in ``__init__``, never at module top.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from igata_core import Loaded, Loader, Option, RecordError, RunContext


class __CLASS__Loader(Loader):
    """Resolves ``__NAME__://`` URIs to bytes; thread-safe (it keeps no state)."""

    name = "__NAME__"
    schemes = ("__NAME__",)
    description = "__NAME__://PATH URIs, read from a local directory"
    options: ClassVar[tuple[Option, ...]] = (
        # Not required: igata configures every installed loader for every run, also runs
        # that never see a __NAME__:// URI; a missing root fails only those URIs.
        Option("root", help="Directory that __NAME__://PATH URIs are resolved in."),
        Option(
            "max_bytes",
            "int",
            default=256 * 1024 * 1024,
            minimum=1,
            help="Refuse objects larger than this many bytes.",
        ),
    )

    def __init__(self, options: Any = None, context: RunContext | None = None):
        super().__init__(options, context)
        self.root = Path(self.opts["root"]) if self.opts["root"] else None

    def load(self, uri: str) -> Loaded:
        parts = urlsplit(uri)
        if parts.scheme.lower() not in self.schemes:
            raise RecordError(f"{uri}: not a {self.name}:// URI")
        path = unquote(parts.netloc + parts.path).lstrip("/")
        if not path:
            raise RecordError(f"{uri}: names no object (expected {self.name}://PATH)")
        return self._fetch(path, uri)

    # -- storage: replace this method with your client's "get object" call ---------------

    def _fetch(self, path: str, uri: str) -> Loaded:
        """The object's bytes and metadata; RecordError when this one object cannot be had."""
        if self.root is None:
            raise RecordError(
                f"{uri}: the {self.name} loader has no root directory; set it with "
                f"--loader-opt {self.name}.root=DIR or IGATA___ENV___ROOT"
            )
        root = self.root.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise RecordError(f"{uri}: resolves outside the {self.name} root {root}; refused")
        limit = self.opts["max_bytes"]
        try:
            stat = target.stat()
            if stat.st_size > limit:
                raise RecordError(f"{uri}: {stat.st_size} bytes is over max_bytes ({limit})")
            data = target.read_bytes()
        except FileNotFoundError:
            raise RecordError(f"{uri}: no such object ({target})") from None
        except IsADirectoryError:
            raise RecordError(f"{uri}: is a directory, not an object ({target})") from None
        except PermissionError:
            raise RecordError(f"{uri}: permission denied ({target})") from None
        modified = datetime.fromtimestamp(stat.st_mtime, UTC)
        return Loaded(data, {"size": len(data), "modified": modified})
'''

DECODER = '''
"""The __NAME__ decoder: ``__EXT__`` files, text of ``key = value`` lines, to a dict.

Blank lines and lines starting with ``#`` are skipped; the predictor receives
``{"key": "value", ...}``. It works as generated. For your own format, replace ``_parse``
(keep raising RecordError with the line at fault: one bad file must not stop a run).
"""

from __future__ import annotations

import codecs
from typing import Any, ClassVar

from igata_core import Decoder, Option, RecordError, RunContext


class __CLASS__Decoder(Decoder):
    """Decodes ``__EXT__`` files; thread-safe (it keeps no state)."""

    name = "__NAME__"
    extensions = ("__EXT__",)
    description = "__EXT__ files (key = value lines) to a dict"
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            "encoding",
            default="utf-8",
            help="Text encoding of the files.",
        ),
    )

    def __init__(self, options: Any = None, context: RunContext | None = None):
        super().__init__(options, context)
        # A misspelt encoding is a configuration error: report it before any input is read.
        codecs.lookup(self.opts["encoding"])

    def decode(self, data: bytes, ref: str) -> dict[str, str]:
        encoding = self.opts["encoding"]
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise RecordError(f"{ref}: not {encoding} text ({exc})") from None
        return _parse(text, ref)


def _parse(text: str, ref: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecordError(f"{ref}: line {number} is not 'key = value': {line[:80]!r}")
        if key in fields:
            raise RecordError(f"{ref}: line {number} repeats the key {key!r}")
        fields[key] = value.strip()
    return fields
'''

CONFTEST = '''
"""igata's testing kit: run_pipeline, contract tests, and the ``aws`` fixture (a local
AWS endpoint, moto in server mode, for plugins whose storage is on AWS)."""

pytest_plugins = ["igata_core.testing"]
'''

TEST_PLUGIN = '''
"""The plugin is installed, speaks igata's hook API and registers its components."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from igata_core import HOOK_API_VERSION
from igata_core.plugins import build_registry

from __MODULE__ import plugin
__IMPORTS__

NAME = "__NAME__"


def test_entry_point_is_installed() -> None:
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="igata")}
    assert entry_points.get(NAME) == "__MODULE__.plugin", (
        "the plugin is not installed: run 'pip install -e .' in its directory"
    )


def test_written_for_this_hook_api() -> None:
    assert plugin.IGATA_HOOK_API == HOOK_API_VERSION


def test_components_are_registered() -> None:
    registry = build_registry(entry_points=False, extra_plugins=[(NAME, plugin)])
    assert registry.plugins[NAME].error is None, registry.plugins[NAME].error
__CHECKS__

def test_plugin_module_imports_nothing_heavy() -> None:
    # igata imports every plugin module at start-up: `igata --help` must stay instant.
    code = (
        "import sys, __MODULE__.plugin; "
        "print(','.join(m for m in ('boto3', 'numpy', 'PIL', 'pandas') if m in sys.modules))"
    )
    heavy = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert not heavy, f"importing the plugin module imported {heavy}"
'''

TEST_SINK = '''
"""The __NAME__ sink keeps igata's delivery contract (durable flush, idempotent writes,
no loss when the store fails) and handles error outcomes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igata_core import ErrorOutcome, Sink
from igata_core.testing.contracts import SinkContract

from __MODULE__.sink import __CLASS__Sink


def _sink(directory: Path) -> __CLASS__Sink:
    sink = __CLASS__Sink({"directory": str(directory)})
    sink.open()
    return sink


class Test__CLASS__SinkContract(SinkContract):
    def make_sink(self, tmp_path: Path) -> Sink:
        return _sink(tmp_path / "results")

    def read_back(self, sink: Sink) -> list[dict[str, Any]]:
        assert isinstance(sink, __CLASS__Sink)
        files = sorted(sink.directory.glob("*.json"))
        return [json.loads(path.read_text(encoding="utf-8")) for path in files]

    def break_store(self, sink: Sink) -> None:
        # The directory becomes a plain file: every write fails, like a store that is gone.
        assert isinstance(sink, __CLASS__Sink)
        self.saved = sink.directory.with_name("saved")
        sink.directory.rename(self.saved)
        sink.directory.write_text("")

    def repair_store(self, sink: Sink) -> None:
        assert isinstance(sink, __CLASS__Sink)
        sink.directory.unlink()
        self.saved.rename(sink.directory)


def _outcome(identity: str) -> ErrorOutcome:
    return ErrorOutcome(identity, f"input/{identity}", "predict", "ValueError", "bad input")


def test_error_outcome_is_recorded_then_replaced_by_a_result(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    sink.put_errors([_outcome("req-1")])
    sink.flush()
    [error_file] = (tmp_path / "errors").glob("*.json")
    assert json.loads(error_file.read_text())["stage"] == "predict"
    sink.put_records([{"igata_id": "req-1", "igata_input": "input/req-1", "label": "cat"}])
    sink.flush()
    assert not error_file.exists(), "a result must supersede the earlier error"
    [result_file] = tmp_path.glob("*.json")
    assert json.loads(result_file.read_text())["label"] == "cat"


def test_failed_attempt_after_a_result_changes_nothing(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    sink.put_records([{"igata_id": "req-1", "igata_input": "input/req-1", "label": "cat"}])
    sink.flush()
    sink.put_errors([_outcome("req-1")])
    sink.flush()
    assert not list((tmp_path / "errors").glob("*.json"))
'''

TEST_SOURCE = '''
"""The __NAME__ source keeps igata's delivery contract (every request once, acks remembered,
nacked and unsettled requests come back) and reports bad requests as errors."""

from __future__ import annotations

import json
from pathlib import Path

from igata_core import Source
from igata_core.testing.contracts import SourceContract

from __MODULE__.source import __CLASS__Source


def _queue(path: Path, *requests: object) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in requests]
    path.write_text("".join(line + "\\n" for line in lines), encoding="utf-8")
    return path


def _source(queue: Path, **options: object) -> __CLASS__Source:
    source = __CLASS__Source({"queue": str(queue), **options})
    source.open()
    return source


class Test__CLASS__SourceContract(SourceContract):
    def make_inputs(self, tmp_path: Path, n: int) -> Path:
        requests = [{"id": f"req-{i}", "uri": f"inputs/{i}.json"} for i in range(n)]
        return _queue(tmp_path / "queue.jsonl", *requests)

    def make_source(self, inputs: Path) -> Source:
        return _source(inputs)


def test_request_fields_become_meta(tmp_path: Path) -> None:
    queue = _queue(tmp_path / "q.jsonl", {"id": "a", "uri": "x/1.json", "customer": "acme"})
    source = _source(queue)
    [envelope] = list(source.envelopes())
    [item] = envelope.items
    assert (item.identity, item.uri) == ("a", "x/1.json")
    assert item.meta == {"id": "a", "customer": "acme"}
    source.close()


def test_bad_requests_are_errors_and_the_rest_is_delivered(tmp_path: Path) -> None:
    queue = _queue(tmp_path / "q.jsonl", "{not json", {"id": "no-uri"}, {"id": "ok", "uri": "u"})
    source = _source(queue)
    bad_json, no_uri, good = list(source.envelopes())
    assert bad_json.error and "line 1" in bad_json.error and not bad_json.items
    assert no_uri.items[0].error and "no 'uri'" in no_uri.items[0].error
    assert good.items[0].uri == "u" and good.items[0].error is None
    source.close()


def test_given_up_after_max_attempts(tmp_path: Path) -> None:
    queue = _queue(tmp_path / "q.jsonl", {"id": "flaky", "uri": "u"})
    attempts = []
    for _ in range(3):
        source = _source(queue, max_attempts=2)
        envelopes = list(source.envelopes())
        attempts += [(e.attempt, e.final) for e in envelopes]
        source.nack(envelopes)
        source.close()
    assert attempts == [(1, False), (2, True)], attempts
'''

TEST_LOADER = '''
"""The __NAME__ loader reads __NAME__:// URIs under its root, and nothing outside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from igata_core import RecordError

from __MODULE__.loader import __CLASS__Loader


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "cats").mkdir(parents=True)
    (tmp_path / "root" / "cats" / "1.txt").write_bytes(b"meow")
    (tmp_path / "secret.txt").write_text("keep out")
    return tmp_path / "root"


def test_loads_an_object_with_its_metadata(root: Path) -> None:
    loader = __CLASS__Loader({"root": str(root)})
    loaded = loader.load("__NAME__://cats/1.txt")
    assert loaded.data == b"meow"
    assert loaded.meta["size"] == 4 and loaded.meta["modified"].tzinfo is not None


@pytest.mark.parametrize(
    "uri, message",
    [
        ("__NAME__://cats/2.txt", "no such object"),
        ("__NAME__://cats", "is a directory"),
        ("__NAME__://", "names no object"),
        ("__NAME__://../secret.txt", "outside"),
        ("__NAME__:///cats/../../secret.txt", "outside"),
    ],
)
def test_refuses_what_it_cannot_or_must_not_load(root: Path, uri: str, message: str) -> None:
    loader = __CLASS__Loader({"root": str(root)})
    with pytest.raises(RecordError, match=message):
        loader.load(uri)


def test_without_a_root_only_its_uris_fail() -> None:
    with pytest.raises(RecordError, match="no root directory"):
        __CLASS__Loader({}).load("__NAME__://cats/1.txt")


def test_a_symbolic_link_cannot_lead_out_of_root(root: Path) -> None:
    (root / "link.txt").symlink_to(root.parent / "secret.txt")
    loader = __CLASS__Loader({"root": str(root)})
    with pytest.raises(RecordError, match="outside"):
        loader.load("__NAME__://link.txt")


def test_refuses_objects_over_max_bytes(root: Path) -> None:
    loader = __CLASS__Loader({"root": str(root), "max_bytes": 3})
    with pytest.raises(RecordError, match="over max_bytes"):
        loader.load("__NAME__://cats/1.txt")
'''

TEST_DECODER = '''
"""The __NAME__ decoder turns __EXT__ files into dicts and names the line at fault."""

from __future__ import annotations

import pytest
from igata_core import RecordError

from __MODULE__.decoder import __CLASS__Decoder


def test_decodes_key_value_lines() -> None:
    data = b"# a comment\\ncolor = red\\n\\nsize=3\\nnote = a = b\\n"
    decoder = __CLASS__Decoder()
    assert decoder.decode(data, "x__EXT__") == {
        "color": "red",
        "size": "3",
        "note": "a = b",
    }


@pytest.mark.parametrize(
    "data, message",
    [
        (b"color = red\\nno equals sign\\n", "line 2 is not 'key = value'"),
        (b"a = 1\\na = 2\\n", "line 2 repeats the key 'a'"),
        (b"\\xff\\xfe = 1", "not utf-8 text"),
    ],
)
def test_bad_files_are_record_errors(data: bytes, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        __CLASS__Decoder().decode(data, "x__EXT__")


def test_unknown_encoding_is_refused_before_any_input() -> None:
    with pytest.raises(LookupError):
        __CLASS__Decoder({"encoding": "no-such-encoding"})
'''

TEST_PIPELINE_HEAD = '''
"""The plugin's components in a whole igata pipeline, chosen by name as ``igata run`` does
(this needs the plugin installed: pip install -e .)."""

from __future__ import annotations

import json
__TYPING__
from pathlib import Path
from typing import Any__CLASSVAR__

from igata_core import __CORE_IMPORTS__
from igata_core.testing import run_pipeline

COLORS = ["red", "green", "blue"]


class FieldsPredictor(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"fields": sorted(input_record), "color": input_record["color"]}
'''

URI_SOURCE = '''

class UriSource(Source):
    """The URIs given as inputs, one envelope each (stands in for a real source)."""

    name = "uri-list"
    options: ClassVar[tuple[Option, ...]] = (Option("inputs", "list", default=[], help="URIs"),)

    def envelopes(self) -> Iterator[Envelope]:
        for uri in self.opts["inputs"]:
            yield Envelope(ref=uri, items=[Item(identity=uri, uri=uri)])
'''

TEST_PIPELINE_START = """


def test_pipeline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "items").mkdir(parents=True)
    uris = []
    for index, color in enumerate(COLORS):
"""


def _pipeline_test(kinds: Sequence[str]) -> str:
    """The pipeline test, for the components that were generated."""
    own_source = "source" in kinds
    head = TEST_PIPELINE_HEAD
    if own_source:
        head = head.replace("__TYPING__\n", "").replace("__CLASSVAR__", "")
        head = head.replace("__CORE_IMPORTS__", "PredictorBase")
    else:
        head = head.replace("__TYPING__", "from collections.abc import Iterator")
        head = head.replace("__CLASSVAR__", ", ClassVar")
        head = head.replace("__CORE_IMPORTS__", "Envelope, Item, Option, PredictorBase, Source")
        head += URI_SOURCE
    lines: list[str] = [head.rstrip("\n") + TEST_PIPELINE_START.rstrip("\n")]
    add = lines.append
    if "decoder" in kinds:
        add('        filename = f"item-{index}__EXT__"')
        add('        text = f"color = {color}\\nindex = {index}\\n"')
    else:
        add('        filename = f"item-{index}.json"')
        add('        text = json.dumps({"color": color, "index": index})')
    add('        (data / "items" / filename).write_text(text, encoding="utf-8")')
    if "loader" in kinds:
        # __NAME__://items/x is <root>/items/x (see the loader's docstring).
        add('        uris.append(f"__NAME__://items/{filename}")')
    else:
        add('        uris.append(str(data / "items" / filename))')
    if "source" in kinds:
        add('    queue = tmp_path / "queue.jsonl"')
        add(
            '    requests = [json.dumps({"id": f"req-{i}", "uri": uri}) '
            "for i, uri in enumerate(uris)]"
        )
        add('    queue.write_text("\\n".join(requests) + "\\n", encoding="utf-8")')
        source, source_args = '"__NAME__"', ['source_options={"queue": str(queue)}']
    else:
        source, source_args = "UriSource", ["inputs=uris"]
    if "sink" in kinds:
        sink, sink_args = '"__NAME__"', ['sink_options={"directory": str(tmp_path / "out")}']
    else:
        sink, sink_args = '"jsonl"', ['sink_options={"path": str(tmp_path / "out.jsonl")}']
    extra = []
    if "loader" in kinds:
        extra.append('loader_options={"__NAME__": {"root": str(data)}}')
    add("    result = run_pipeline(")
    add(f"        {source},")
    add(f"        {sink},")
    add("        FieldsPredictor,")
    for arg in [*source_args, *sink_args, *extra]:
        add(f"        {arg},")
    add("        flush_interval=0.1,")
    add("    )")
    add("    assert result.exit_code == 0, result.outcomes")
    if "sink" in kinds:
        add('    files = sorted((tmp_path / "out").glob("*.json"))')
        add('    records = [json.loads(path.read_text(encoding="utf-8")) for path in files]')
    else:
        add('    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()')
        add("    records = [json.loads(line) for line in lines]")
    add('    assert sorted(r["color"] for r in records) == sorted(COLORS)')
    add('    assert all(r["fields"] == ["color", "index"] for r in records), records')
    if "source" in kinds:
        add('    assert sorted(r["igata_id"] for r in records) == ["req-0", "req-1", "req-2"]')
        add("")
        add("    # Every request was acked: running again delivers nothing.")
        add("    again = run_pipeline(")
        add(f"        {source},")
        add('        "null",')
        add("        FieldsPredictor,")
        for arg in [*source_args, *extra]:
            add(f"        {arg},")
        add("    )")
        add('    assert again.exit_code == 0 and again.summary["read"] == 0, again.summary')
    return "\n".join(lines) + "\n"


README = """
# __DIST__

An igata plugin: __SUMMARY__.

Generated by `igata new-plugin`. Every component works as generated, against local files,
so you can run it in a pipeline and its tests pass before you change a line. Then replace
the storage calls, which each module marks in its docstring and in a section at the end
of its class, with calls to your own store.

| kind | name | what it does as generated | where your storage calls go |
|---|---|---|---|
__TABLE__

## Install and test

```bash
pip install -e '.[test]'    # reinstall after changing [project.entry-points.igata]
pytest                      # contract tests from igata_core.testing, and a whole pipeline
igata plugins               # lists __NAME__ 0.1.0 and its components
igata describe __NAME__     # the options and the environment variables that set them
```

## Use it

```bash
__USAGE__
```

Options are set on the command line (`--source-opt K=V`, `--sink-opt K=V`,
`--loader-opt __NAME__.K=V`, `--decoder-opt __NAME__.K=V`), in the environment (each
option's own variable, `INPUT_CTXMGR_<K>` for a source, `OUTPUT_CTXMGR_<K>` for a sink,
`IGATA___ENV___<K>` for a loader or decoder) or in an `igata.toml`.

## Versions

The plugin pins `__CORE_SPEC__`, the igata-core series with hook API __API__, and declares
`IGATA_HOOK_API = __API__` in `__MODULE__/plugin.py`: an igata-core with another hook API
refuses the plugin with a message instead of misusing it.

See igata's guide, docs/writing-a-plugin.md, for the contracts each component keeps.
"""

_TABLE_ROWS = {
    "source": "| source | `__NAME__` | requests from a JSON Lines queue file; acks and nacks "
    "appended to a ledger file | `__MODULE__/source.py`: `_lines`, `_load_ledger`, "
    "`_append_ledger` |",
    "sink": "| sink | `__NAME__` | one JSON file per result record, named after its igata_id "
    "(idempotent) | `__MODULE__/sink.py`: `_write_result`, `_write_error`, `_has_result` |",
    "loader": "| loader | `__NAME__` | `__NAME__://PATH` URIs read from a directory "
    "(option `root`) | `__MODULE__/loader.py`: `_fetch` |",
    "decoder": "| decoder | `__NAME__` | `__EXT__` files (`key = value` lines) to a dict "
    "| `__MODULE__/decoder.py`: `_parse` |",
}

_SUMMARIES = {
    "source": "a source",
    "sink": "a sink",
    "loader": "a loader for __NAME__:// URIs",
    "decoder": "a decoder for __EXT__ files",
}


def _usage(kinds: Sequence[str]) -> str:
    """Shell lines that run the generated components in a pipeline, for the README."""
    ext = "__EXT__" if "decoder" in kinds else ".json"
    content = r"color = red\n" if "decoder" in kinds else '{"color": "red"}'
    lines = ["mkdir -p data/items", f"printf '{content}' > data/items/item-1{ext}"]
    run = ["igata run --predictor mymodel:Predictor"]
    if "source" in kinds:
        uri = "__NAME__://items/item-1" if "loader" in kinds else "data/items/item-1"
        lines.append(f"""echo '{{"id": "req-1", "uri": "{uri}{ext}"}}' >> requests.jsonl""")
        run.append("--source __NAME__ --source-opt queue=requests.jsonl")
    else:
        run.append(f"--source files --source-opt extensions={ext}")
    if "sink" in kinds:
        run.append("--sink __NAME__ --sink-opt directory=results/")
    else:
        run.append("--sink jsonl --sink-opt path=results.jsonl")
    if "loader" in kinds:
        # Only a source that hands out __NAME__:// URIs uses the loader.
        run.append("--loader-opt __NAME__.root=data/")
    if "source" not in kinds:
        run.append("data/")
    return "\n".join(lines) + "\n" + " \\\n    ".join(run)


def plugin_files(name: str, kinds: Iterable[str] | None = None) -> dict[str, str]:
    """The files of a new plugin package: relative path -> text (nothing is written)."""
    chosen = _kinds(kinds)
    names = plugin_names(name)
    summary = ", ".join(_SUMMARIES[k] for k in chosen)
    names["__SUMMARY__"] = _render(summary, names)
    module, test = names["__MODULE__"], names["__TESTNAME__"]
    classes = {kind: f"{names['__CLASS__']}{kind.capitalize()}" for kind in chosen}

    imports = "\n".join(f"from {module}.{k} import {classes[k]}" for k in sorted(chosen))
    plugin = _render(PLUGIN_HEAD, names)
    for kind in chosen:
        plugin += "\n\n" + _render(
            HOOKIMPL, names, kinds=f"{kind}s", kind=kind.capitalize(), file=kind
        )

    checks = "".join(
        f'    assert registry.get("{kind}", NAME).obj is {classes[kind]}\n'
        for kind in chosen
        if kind != "loader"
    )
    if "loader" in chosen:
        checks += (
            f"    # A loader is found by its URI scheme.\n"
            f'    assert registry.get("loader", NAME).obj is {classes["loader"]}\n'
        )
    test_plugin = _render(TEST_PLUGIN, names, imports=imports, checks=checks)
    table = "\n".join(_render(_TABLE_ROWS[k], names) for k in chosen)
    readme = _render(README, names, table=table, usage=_usage(chosen))

    files = {
        "pyproject.toml": _render(PYPROJECT, names),
        "README.md": readme,
        f"{module}/__init__.py": _render(INIT, names),
        f"{module}/plugin.py": plugin,
        "tests/conftest.py": _render(CONFTEST, names),
        f"tests/test_{test}_plugin.py": test_plugin,
        f"tests/test_{test}_pipeline.py": _render(_pipeline_test(chosen), names),
    }
    templates = {
        "source": (SOURCE, TEST_SOURCE),
        "sink": (SINK, TEST_SINK),
        "loader": (LOADER, TEST_LOADER),
        "decoder": (DECODER, TEST_DECODER),
    }
    for kind in chosen:
        code, tests = templates[kind]
        files[f"{module}/{kind}.py"] = _render(code, names)
        files[f"tests/test_{test}_{kind}.py"] = _render(tests, names)
    return files


def taken_names(name: str, kinds: Iterable[str] | None = None) -> list[str]:
    """Components of the installed igata (core and plugins) the new plugin would clash with."""
    from igata_core.plugins import build_registry

    registry = build_registry()
    plugin = plugin_names(name)["__NAME__"]
    clashes = []
    for kind in _kinds(kinds):
        found = registry.find(kind, plugin)
        if found is not None:
            what = "scheme" if kind == "loader" else "name"
            clashes.append(f"{kind} {what} {plugin!r} (plugin {found.plugin})")
    return clashes


def generate_plugin(
    name: str, directory: str | Path = ".", kinds: Iterable[str] | None = None
) -> Path:
    """Write a new plugin package ``igata-NAME`` under ``directory``; returns its path."""
    files = plugin_files(name, kinds)
    root = Path(directory) / plugin_names(name)["__DIST__"]
    if root.exists():
        raise ScaffoldError(f"{root} already exists; remove it or choose another --directory")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# -- the hook reference ------------------------------------------------------------------

HOOKS_DOC_COMMAND = "python -m igata_core.scaffold hooks-doc -o docs/hooks.md"


def _inline(line: str) -> str:
    line = re.sub(r":(?:class|func|meth|mod|attr|data|exc):`~?([^`]+)`", r"`\1`", line)
    line = re.sub(r"\.\. versionadded:: (\S+)", r"*Added in hook API version \1.*", line)
    return re.sub(r"``([^`]+)``", r"`\1`", line)


def _markdown(docstring: str) -> str:
    """The reStructuredText of a hookspec docstring as Markdown."""
    lines = inspect.cleandoc(docstring).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.rstrip().endswith("::"):
            out.append(_inline(line))
            continue
        # An RST literal block: the indented lines after "::" become a fenced block.
        out.append(_inline(line.rstrip()[:-1]))
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            block.append(lines[i])
            i += 1
        body = textwrap.dedent("\n".join(block)).strip("\n")
        language = "toml" if body.startswith("[") else "python"
        out += ["", f"```{language}", body, "```", ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def _signature(function: Callable[..., object]) -> str:
    # Annotations are strings here (from __future__ import annotations): show them bare.
    signature = inspect.signature(function)
    params = ", ".join(
        f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
        for p in signature.parameters.values()
    )
    returns = signature.return_annotation
    return f"({params})" + (f" -> {returns}" if returns is not signature.empty else "")


def _hook_example(hook: str) -> str:
    kind = hook.removeprefix("register_").removesuffix("s")
    obj = "my_command" if kind == "command" else f"My{kind.capitalize()}"
    return (
        "from igata_core import hookimpl\n\n\n"
        f"@hookimpl\ndef {hook}(register):\n    register({obj})"
    )


def hooks_markdown() -> str:
    """``docs/hooks.md``: every hook of :mod:`igata_core.hookspecs`, from its docstring."""
    parts = [
        "# Hook reference",
        "",
        f"<!-- Generated from igata_core/hookspecs.py by `{HOOKS_DOC_COMMAND}`. "
        "Do not edit: change the docstrings and regenerate. -->",
        "",
        _markdown(hookspecs.__doc__ or ""),
        "How to write, test and publish a plugin: [writing-a-plugin.md](writing-a-plugin.md).",
        "",
        "| hook | what it registers |",
        "|---|---|",
    ]
    for hook in hookspecs.HOOK_NAMES:
        summary = _markdown(getattr(hookspecs, hook).__doc__ or "").splitlines()[0]
        parts.append(f"| [`{hook}`](#{hook}) | {summary} |")
    for hook in hookspecs.HOOK_NAMES:
        function = getattr(hookspecs, hook)
        parts += [
            "",
            f"## {hook}",
            "",
            "```python",
            f"def {hook}{_signature(function)}: ...",
            "```",
            "",
            _markdown(function.__doc__ or "").rstrip(),
            "",
            "```python",
            _hook_example(hook),
            "```",
        ]
    return "\n".join(parts).rstrip() + "\n"


# -- commands ----------------------------------------------------------------------------


@click.command("new-plugin")
@click.argument("name")
@click.option("--source", is_flag=True, help="A source: requests from a JSON Lines queue file.")
@click.option("--sink", is_flag=True, help="A sink: one JSON file per record, by igata_id.")
@click.option("--loader", is_flag=True, help="A loader for NAME:// URIs (a directory).")
@click.option("--decoder", is_flag=True, help="A decoder for .NAME files (key = value lines).")
@click.option(
    "-d",
    "--directory",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Where to create the igata-NAME package directory.",
)
def new_plugin(
    name: str, source: bool, sink: bool, loader: bool, decoder: bool, directory: str
) -> None:
    """Create a plugin package igata-NAME: components, tests, pyproject, README.

    Without --source/--sink/--loader/--decoder, all four are generated. Each works as
    generated (against local files) and its tests pass; replace the storage calls that
    each module points out.
    """
    flags = {"source": source, "sink": sink, "loader": loader, "decoder": decoder}
    kinds = [kind for kind, wanted in flags.items() if wanted] or list(KINDS)
    try:
        clashes = taken_names(name, kinds)
        if clashes:
            raise ScaffoldError(
                f"already installed: {'; '.join(clashes)}; choose another plugin name"
            )
        root = generate_plugin(name, directory, kinds)
    except ScaffoldError as exc:
        raise click.UsageError(str(exc)) from exc
    names = plugin_names(name)
    click.echo(f"Created {root} ({', '.join(kinds)} {names['__NAME__']!r}).")
    click.echo("Next:")
    click.echo(f"  cd {root}")
    click.echo("  pip install -e '.[test]'")
    click.echo("  pytest")
    click.echo(f"  igata plugins          # lists {names['__NAME__']}")
    click.echo("Then replace the storage calls that each module's docstring points out.")


@click.command("hooks-doc")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (default: stdout)."
)
@click.option(
    "--check",
    "check_path",
    type=click.Path(dir_okay=False),
    help="Exit 1 if this file differs from the generated reference.",
)
def hooks_doc(output: str | None, check_path: str | None) -> None:
    """Generate the hook reference (docs/hooks.md) from igata_core/hookspecs.py."""
    text = hooks_markdown()
    if check_path:
        path = Path(check_path)
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            raise click.ClickException(f"{check_path} is out of date; run: {HOOKS_DOC_COMMAND}")
        return
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@click.group()
def main() -> None:
    """Plugin-author tools of igata (also reachable as igata new-plugin)."""


main.add_command(new_plugin)
main.add_command(hooks_doc)


if __name__ == "__main__":  # pragma: no cover
    main()
