"""Third-party plugins: each hook exercised by a plugin of the test's own, the hook-API check,
and the example plugin examples/plugins/igata-http installed into a fresh environment."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import click
import pytest

from igata_core import (
    Decoder,
    Envelope,
    Item,
    Loaded,
    Loader,
    Option,
    PredictorBase,
    Sink,
    Source,
    hookimpl,
)
from igata_core.options import OptionsError
from igata_core.plugins import Registry, UnknownComponent, build_registry
from igata_core.testing import run_pipeline
from tests.test_scaffold import PluginVenv, clean_environment

ROOT = Path(__file__).resolve().parents[1]
IGATA_HTTP = ROOT / "examples" / "plugins" / "igata-http"


# -- components of throwaway plugins ---------------------------------------------------------


class ListSource(Source):
    """Each input value is one record, handed over as data (no loader involved)."""

    name = "list"
    aliases = ("ListCtxManager",)
    description = "Values given as inputs"
    options: ClassVar[tuple[Option, ...]] = (Option("inputs", "list", default=[], help="Values"),)

    def envelopes(self) -> Iterator[Envelope]:
        for value in self.opts["inputs"]:
            yield Envelope(ref=f"list:{value}", items=[Item(identity=f"list:{value}", data=value)])


class UriSource(ListSource):
    """Each input is a URI for the loaders."""

    name = "uris"
    aliases = ()

    def envelopes(self) -> Iterator[Envelope]:
        for uri in self.opts["inputs"]:
            yield Envelope(ref=uri, items=[Item(identity=uri, uri=uri)])


class MemorySink(Sink):
    name = "memory"
    description = "Keeps flushed records in a list"

    def __init__(self, options: Any = None, context: Any = None):
        super().__init__(options, context)
        self.pending: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []

    def put_records(self, records: Sequence[dict[str, Any]]) -> None:
        self.pending.extend(records)

    def flush(self) -> None:
        self.records.extend(self.pending)
        self.pending.clear()


class MemoryLoader(Loader):
    name = "mem"
    schemes = ("mem",)
    description = "Objects from a dict"
    objects: ClassVar[dict[str, bytes]] = {
        "mem://box/a.json": b'{"value": "a"}',
        "mem://box/b.json": b'{"value": "b"}',
    }

    def load(self, uri: str) -> Loaded:
        return Loaded(self.objects[uri], {"store": "memory"})


class ReverseDecoder(Decoder):
    name = "reverse"
    extensions = (".rev",)
    description = "Text, reversed"

    def decode(self, data: bytes, ref: str) -> str:
        return data.decode()[::-1]


class ShoutPredictor(PredictorBase):
    name = "shout"

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        if isinstance(input_record, dict):
            input_record = input_record["value"]
        return {"shout": str(input_record).upper()}


def plugin(name: str, **hooks: Callable[..., None]) -> ModuleType:
    """A plugin module made on the fly: ``hooks`` are hook name -> implementation."""
    module = ModuleType(name)
    for hook, function in hooks.items():
        setattr(module, hook, hookimpl(function))
    return module


def registry_with(*plugins: ModuleType) -> Registry:
    # No entry points: installed plugins must not change what these tests see.
    return build_registry(entry_points=False, extra_plugins=[(p.__name__, p) for p in plugins])


def _register(*objects: Any) -> Callable[[Callable[[Any], None]], None]:
    def hook(register: Callable[[Any], None]) -> None:
        for obj in objects:
            register(obj)

    return hook


# -- one test per hook -------------------------------------------------------------------------


def test_register_sources_hook() -> None:
    registry = registry_with(plugin("lists", register_sources=_register(ListSource)))
    assert registry.get("source", "ListCtxManager").obj is ListSource
    assert registry.plugins["lists"].hooks == ["register_sources"]
    assert registry.plugins["lists"].components == ["source:list"]
    result = run_pipeline(
        "ListCtxManager", "null", ShoutPredictor, inputs=["a", "b", "c"], registry=registry
    )
    assert result.exit_code == 0 and result.summary["succeeded"] == 3, result.summary


def test_register_sinks_hook() -> None:
    registry = registry_with(plugin("memory", register_sinks=_register(MemorySink)))
    result = run_pipeline(
        ListSource, "memory", ShoutPredictor, inputs=["a", "b"], registry=registry,
        flush_interval=0.05,
    )  # fmt: skip
    assert result.exit_code == 0
    assert isinstance(result.sink, MemorySink)
    assert sorted((r["igata_id"], r["shout"]) for r in result.sink.records) == [
        ("list:a", "A"),
        ("list:b", "B"),
    ]


def test_register_loaders_hook() -> None:
    registry = registry_with(plugin("mem", register_loaders=_register(MemoryLoader)))
    assert registry.get("loader", "mem").obj is MemoryLoader
    inputs = ["mem://box/a.json", "mem://box/b.json"]
    result = run_pipeline(
        UriSource, MemorySink({}), ShoutPredictor, inputs=inputs, registry=registry
    )
    assert result.exit_code == 0, result.outcomes
    assert isinstance(result.sink, MemorySink)
    # The loader's bytes went through the core's json decoder; its meta reached the record.
    assert sorted((r["shout"], r["store"]) for r in result.sink.records) == [
        ("A", "memory"),
        ("B", "memory"),
    ]


def test_register_loaders_hook_scheme_clash_names_both_plugins() -> None:
    class OtherMemoryLoader(MemoryLoader):
        name = "other-mem"

    registry = registry_with(
        plugin("first", register_loaders=_register(MemoryLoader)),
        plugin("second", register_loaders=_register(OtherMemoryLoader)),
    )
    with pytest.raises(UnknownComponent, match="'mem' is registered by both plugin 'first' and"):
        registry.get("loader", "mem")


def test_register_decoders_hook(tmp_path: Path) -> None:
    registry = registry_with(plugin("rev", register_decoders=_register(ReverseDecoder)))
    for word in ("abc", "xyz"):
        (tmp_path / f"{word}.rev").write_text(word)
    sink = MemorySink({})
    result = run_pipeline(
        "files", sink, ShoutPredictor, inputs=[str(tmp_path)],
        source_options={"extensions": [".rev"]}, registry=registry,
    )  # fmt: skip
    assert result.exit_code == 0, result.outcomes
    assert sorted(r["shout"] for r in sink.records) == ["CBA", "ZYX"]


def test_register_predictors_hook() -> None:
    registry = registry_with(plugin("models", register_predictors=_register(ShoutPredictor)))
    assert registry.get("predictor", "shout").obj is ShoutPredictor
    sink = MemorySink({})
    result = run_pipeline(ListSource, sink, "shout", inputs=["hi"], registry=registry)
    assert result.exit_code == 0 and [r["shout"] for r in sink.records] == ["HI"]
    with pytest.raises(OptionsError, match="whisper"):
        run_pipeline(ListSource, sink, "whisper", inputs=["hi"], registry=registry)


def test_register_commands_hook_in_the_registry() -> None:
    @click.command("hello")
    def hello() -> None:
        """Say hello."""

    registry = registry_with(plugin("greeter", register_commands=_register(hello)))
    assert registry.get("command", "hello").obj is hello


# -- plugins installed from distributions (dist-info on PYTHONPATH) ---------------------------

HELLO_PLUGIN = '''
import click

from igata_core import hookimpl

IGATA_HOOK_API = 1


@click.command("hello")
@click.option("--name", default="world")
def hello(name):
    """Greet someone (a command registered by a plugin)."""
    click.echo(f"hello {name}")


@hookimpl
def register_commands(register):
    register(hello)
'''

OLD_PLUGIN = """
from igata_core import Sink, hookimpl

IGATA_HOOK_API = 2


class OldSink(Sink):
    name = "oldsink"

    def put_records(self, records):
        pass

    def flush(self):
        pass


@hookimpl
def register_sinks(register):
    register(OldSink)
"""

PREDICTOR = """
from igata_core import PredictorBase


class Predictor(PredictorBase):
    def predict(self, input_record, meta):
        return {"n": len(input_record)}
"""


def _distribution(site: Path, name: str, module: str, code: str) -> None:
    """An installed distribution as pip leaves it: the module and its dist-info."""
    (site / f"{module}.py").write_text(code)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[igata]\n{name} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    _distribution(site, "hello", "hello_igata_plugin", HELLO_PLUGIN)
    _distribution(site, "old", "old_igata_plugin", OLD_PLUGIN)
    (site / "mymodel.py").write_text(PREDICTOR)
    return site


def igata(site: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    # Only these entry points: what else is installed must not change the outcome.
    env = clean_environment(PYTHONPATH=str(site), IGATA_LOAD_PLUGINS="hello,old")
    return subprocess.run(
        [sys.executable, "-m", "igata_core", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_register_commands_hook_adds_an_igata_subcommand(site: Path) -> None:
    listed = igata(site, "--help")
    assert listed.returncode == 0 and "hello" in listed.stdout, listed.stdout
    greeted = igata(site, "hello", "--name", "plugin author")
    assert greeted.returncode == 0 and greeted.stdout == "hello plugin author\n", greeted.stderr


def test_plugin_for_another_hook_api_is_refused_by_igata_plugins(site: Path) -> None:
    text = igata(site, "plugins")
    assert text.returncode == 0, text.stderr
    assert (
        "BROKEN: PluginError: plugin 'old' was built for igata hook API 2, but this igata-core "
        "provides hook API 1; install a matching version of the plugin"
    ) in text.stdout
    data = json.loads(igata(site, "plugins", "--json").stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert "hook API 2" in by_name["old"]["error"] and by_name["old"]["components"] == []
    assert by_name["hello"]["error"] is None
    assert "oldsink" not in [c["name"] for c in data["components"]["sink"]]


def test_plugin_for_another_hook_api_is_refused_by_igata_run(site: Path, tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text("[1, 2]")
    run = igata(
        site, "run", "--source", "files", "--sink", "oldsink", "--predictor",
        "mymodel:Predictor", str(tmp_path / "in.json"), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "plugin 'old' was built for igata hook API 2" in run.stderr
    assert "unknown sink 'oldsink'" in run.stderr


def test_plugin_for_this_hook_api_is_accepted() -> None:
    current = plugin("current", register_sinks=_register(MemorySink))
    current.IGATA_HOOK_API = 1  # type: ignore[attr-defined]
    future = plugin("future", register_sources=_register(ListSource))
    future.IGATA_HOOK_API = 2  # type: ignore[attr-defined]
    registry = registry_with(current, future)
    assert registry.plugins["current"].error is None
    assert registry.get("sink", "memory").obj is MemorySink
    assert "hook API 2" in (registry.plugins["future"].error or "")
    assert registry.find("source", "list") is None


# -- examples/plugins/igata-http, installed with pip ------------------------------------------


@pytest.fixture(scope="module")
def http_venv(tmp_path_factory: pytest.TempPathFactory) -> PluginVenv:
    venv = PluginVenv(tmp_path_factory.mktemp("igata-http") / "venv")
    venv.install(IGATA_HTTP)
    return venv


def test_igata_http_is_listed_and_described(http_venv: PluginVenv) -> None:
    listed = http_venv.run("-m", "igata_core", "plugins", "--json", IGATA_LOAD_PLUGINS="http")
    assert listed.returncode == 0, listed.stderr
    [info] = [p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "http"]
    assert info["error"] is None and info["distribution"] == "igata-http"
    assert sorted(info["components"]) == ["loader:http", "sink:webhook"]
    described = http_venv.run("-m", "igata_core", "describe", "webhook")
    assert "env: WEBHOOK_URL, OUTPUT_CTXMGR_URL" in described.stdout, described.stdout
    described = http_venv.run("-m", "igata_core", "describe", "http", "--kind", "loader")
    assert "schemes: http, https" in described.stdout
    assert "env: IGATA_HTTP_ALLOWED_HOSTS" in described.stdout


def test_igata_http_passes_its_own_tests(http_venv: PluginVenv) -> None:
    tests = http_venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=IGATA_HTTP)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout


class _Receiver(BaseHTTPRequestHandler):
    batches: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.batches.append({"key": self.headers["Idempotency-Key"], **json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_igata_http_webhook_sink_in_igata_run(http_venv: PluginVenv, tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"req-{index}.json").write_text(json.dumps(list(range(index + 1))))
    (tmp_path / "mymodel.py").write_text(PREDICTOR)
    _Receiver.batches = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        run = http_venv.run(
            "-m", "igata_core", "run", "--source", "files", "--sink", "webhook",
            "--predictor", "mymodel:Predictor", "--sink-opt", "batch_size=2", str(tmp_path),
            cwd=tmp_path, PYTHONPATH=str(tmp_path), IGATA_LOAD_PLUGINS="http",
            WEBHOOK_URL=f"http://127.0.0.1:{server.server_address[1]}/results",
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert run.returncode == 0, run.stderr
    records = [r for batch in _Receiver.batches for r in batch["records"]]
    assert sorted(r["n"] for r in records) == [1, 2, 3]
    assert all(r["igata_id"].startswith("file://") for r in records)
    assert all(len(batch["records"]) <= 2 for batch in _Receiver.batches)
    assert all(batch["key"] == batch["batch"] for batch in _Receiver.batches)


#: The modules the guide documents as igata's public API for plugins.
PUBLIC_MODULES = {"igata_core", "igata_core.serialize"}
PUBLIC_FOR_TESTS = PUBLIC_MODULES | {
    "igata_core.testing",
    "igata_core.testing.contracts",
    "igata_core.plugins",
}


def _igata_imports(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("igata_core"):
            found += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("igata_core")]
    return found


def test_igata_http_uses_only_the_documented_public_api() -> None:
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text(encoding="utf-8")
    for path in sorted(IGATA_HTTP.rglob("*.py")):
        allowed = PUBLIC_FOR_TESTS if "tests" in path.parts else PUBLIC_MODULES
        for module, name in _igata_imports(path):
            assert module in allowed, f"{path.relative_to(ROOT)} imports {module}"
            assert f"`{module}`" in guide, f"the guide does not document {module}"
            assert name in guide, f"{path.relative_to(ROOT)} uses {module}.{name}, not in the guide"
