"""The plugin system: hooks, entry points, broken plugins, escape hatches, clashes."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import threading
import time
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import (
    EchoPredictor,
    RecordingSink,
    clean_env,
    core_registry,
    igata,
    make_distribution,
    write_images,
)

from igata_core import Envelope, Item, Sink, Source, hookimpl
from igata_core.options import OptionsError
from igata_core.plugins import PluginError, UnknownComponent, build_registry
from igata_core.testing import run_pipeline


def plugin(name: str, **attributes: object) -> types.ModuleType:
    """A plugin module made in memory (hook functions as attributes)."""
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def source_class(name: str, aliases: tuple[str, ...] = ()) -> type[Source]:
    class _Source(Source):
        def envelopes(self):
            yield Envelope(ref=f"{name}-1", items=[Item(identity=f"{name}-1", data=name)])

    _Source.name = name
    _Source.aliases = aliases
    return _Source


def registering(*classes: type) -> object:
    @hookimpl
    def register_sources(register):
        for cls in classes:
            register(cls)

    return register_sources


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory of throwaway distributions, on this process's sys.path."""
    directory = tmp_path / "site"
    directory.mkdir()
    make_distribution(directory, "broken-plugin", {"broken": "igata_test_broken"})
    make_distribution(directory, "alpha-plugin", {"alpha": "igata_test_alpha"})
    make_distribution(directory, "beta-plugin", {"beta": "igata_test_beta"})
    monkeypatch.syspath_prepend(str(directory))
    return directory


# -- built-ins and in-process plugins ----------------------------------------------------------


def test_builtin_components_register_through_the_hooks():
    registry = core_registry()
    core = registry.plugins["igata-core"]
    assert set(core.hooks) == {
        "register_sources",
        "register_sinks",
        "register_loaders",
        "register_decoders",
    }
    assert registry.get("source", "files").plugin == "igata-core"
    assert set(registry.names("sink")) >= {"jsonl", "csv", "stdout", "null"}
    assert registry.get("loader", "file").name == "file"
    assert set(registry.names("decoder")) >= {"image", "csv", "json", "raw"}
    assert "source:files" in core.components and "sink:jsonl" in core.components


def test_a_plugin_component_is_usable_by_name_in_a_run():
    registry = core_registry(
        [("mine", plugin("mine", register_sources=registering(source_class("mine-src"))))]
    )
    assert registry.plugins["mine"].components == ["source:mine-src"]
    sink = RecordingSink()
    result = run_pipeline("mine-src", sink, EchoPredictor, registry=registry, environ={})
    assert result.exit_code == 0
    assert [r["value"] for r in sink.durable] == ["mine-src"]


def test_a_misspelled_hook_is_that_plugins_error_and_registers_nothing():
    @hookimpl
    def register_sourcez(register):  # the typo under test
        register(source_class("typo-src"))

    registry = core_registry(
        [
            (
                "typo",
                plugin(
                    "typo",
                    register_sourcez=register_sourcez,
                    register_sources=registering(source_class("typo-other")),
                ),
            ),
            ("fine", plugin("fine", register_sources=registering(source_class("fine-src")))),
        ]
    )
    error = registry.plugins["typo"].error
    assert error is not None and "register_sourcez" in error
    assert registry.find("source", "typo-other") is None
    assert registry.find("source", "fine-src") is not None
    assert registry.plugins["fine"].error is None


def test_a_misspelled_hook_is_fatal_in_strict_mode():
    @hookimpl
    def register_sinkz(register):
        pass

    with pytest.raises(PluginError, match="register_sinkz"):
        build_registry(
            entry_points=False,
            extra_plugins=[("typo", plugin("typo", register_sinkz=register_sinkz))],
            environ={"IGATA_STRICT_PLUGINS": "1"},
        )


@pytest.mark.parametrize("order", ["first-second", "second-first"])
def test_a_name_clash_names_both_plugins_whatever_the_order(order):
    first = ("first", plugin("first", register_sources=registering(source_class("dup"))))
    second = ("second", plugin("second", register_sources=registering(source_class("dup"))))
    plugins = [first, second] if order == "first-second" else [second, first]
    registry = core_registry(plugins)
    message = registry.clashes["source"]["dup"]
    assert "'first'" in message and "'second'" in message
    with pytest.raises(UnknownComponent, match="registered by both"):
        registry.get("source", "dup")
    with pytest.raises(OptionsError) as caught:
        run_pipeline("dup", RecordingSink(), EchoPredictor, registry=registry, environ={})
    assert any("'first'" in p and "'second'" in p for p in caught.value.problems)


def test_an_alias_clashing_with_another_plugins_name_is_an_error():
    registry = core_registry(
        [
            ("one", plugin("one", register_sources=registering(source_class("shared")))),
            (
                "two",
                plugin(
                    "two",
                    register_sources=registering(source_class("two-src", aliases=("shared",))),
                ),
            ),
        ]
    )
    assert "'one'" in registry.clashes["source"]["shared"]
    assert "'two'" in registry.clashes["source"]["shared"]
    assert registry.find("source", "two-src") is not None


def test_a_name_clash_is_fatal_in_strict_mode():
    with pytest.raises(PluginError, match="registered by both"):
        build_registry(
            entry_points=False,
            extra_plugins=[
                ("a", plugin("a", register_sources=registering(source_class("dup")))),
                ("b", plugin("b", register_sources=registering(source_class("dup")))),
            ],
            environ={"IGATA_STRICT_PLUGINS": "1"},
        )


def test_a_plugin_for_another_hook_api_is_refused():
    future = plugin(
        "future", IGATA_HOOK_API=2, register_sources=registering(source_class("future-src"))
    )
    current = plugin(
        "current", IGATA_HOOK_API=1, register_sources=registering(source_class("current-src"))
    )
    registry = core_registry([("future", future), ("current", current)])
    error = registry.plugins["future"].error
    assert error is not None
    assert "hook API 2" in error and "hook API 1" in error and "install a matching" in error
    assert registry.find("source", "future-src") is None
    assert registry.plugins["current"].error is None
    assert registry.find("source", "current-src") is not None


def test_a_hook_that_raises_is_that_plugins_error():
    @hookimpl
    def register_sinks(register):
        raise KeyError("config missing")

    registry = core_registry([("faulty", plugin("faulty", register_sinks=register_sinks))])
    assert "register_sinks failed: KeyError" in registry.plugins["faulty"].error
    assert registry.find("sink", "jsonl") is not None


def counting_hooks(calls: list[str]) -> types.ModuleType:
    """A plugin whose hooks of every kind record that they were called."""

    @hookimpl
    def register_sources(register):
        calls.append("sources")
        register(source_class("counted-src"))

    @hookimpl
    def register_sinks(register):
        calls.append("sinks")

    @hookimpl
    def register_commands(register):
        calls.append("commands")
        raise RuntimeError("commands unavailable")

    return plugin(
        "counted",
        register_sources=register_sources,
        register_sinks=register_sinks,
        register_commands=register_commands,
    )


def test_a_kinds_hooks_are_called_once_when_that_kind_is_first_needed():
    calls: list[str] = []
    registry = core_registry([("counted", counting_hooks(calls))])
    assert calls == []
    assert registry.get("source", "counted-src").plugin == "counted"
    assert registry.names("source") == ["counted-src", "files"]
    assert calls == ["sources"]
    # A failing subcommand hook costs a run nothing: no kind that a run needs calls it.
    assert registry.find("sink", "jsonl") is not None
    assert calls == ["sources", "sinks"]
    # What describes every kind (igata plugins) calls the rest, and shows the failure.
    info = registry.plugins["counted"]
    assert calls == ["sources", "sinks", "commands"]
    assert "register_commands failed: RuntimeError: commands unavailable" in info.error
    assert info.hooks == ["register_sources", "register_sinks", "register_commands"]
    registry.complete()
    assert calls == ["sources", "sinks", "commands"]


def test_strict_mode_calls_every_hook_when_the_registry_is_built():
    calls: list[str] = []
    with pytest.raises(PluginError, match="register_commands failed"):
        build_registry(
            entry_points=False,
            extra_plugins=[("counted", counting_hooks(calls))],
            environ={"IGATA_STRICT_PLUGINS": "1"},
        )
    assert calls == ["sources", "sinks", "commands"]


def test_threads_asking_for_a_kind_at_once_all_see_it_filled():
    started = threading.Event()

    @hookimpl
    def register_sources(register):
        started.set()
        time.sleep(0.2)  # the other threads ask while this hook is still registering
        register(source_class("slow-src"))

    registry = core_registry([("slow", plugin("slow", register_sources=register_sources))])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: registry.find("source", "slow-src"), range(4)))
    assert started.is_set()
    assert all(reg is not None and reg.plugin == "slow" for reg in found)


def test_a_component_without_a_name_is_that_plugins_error():
    class Nameless(Sink):
        pass

    @hookimpl
    def register_sinks(register):
        register(Nameless)

    registry = core_registry([("nameless", plugin("nameless", register_sinks=register_sinks))])
    assert "without a name" in registry.plugins["nameless"].error


# -- entry points ------------------------------------------------------------------------------


def test_entry_point_plugins_load_and_a_broken_one_is_listed_with_its_error(site):
    registry = build_registry(environ={})
    assert registry.plugins["broken"].error == "RuntimeError: boom at import"
    assert registry.plugins["broken"].distribution == "broken-plugin"
    assert [info.name for info in registry.broken] == ["broken"]
    assert registry.find("source", "alpha-src").plugin == "alpha"
    assert registry.plugins["alpha"].version == "0.1"
    assert registry.find("sink", "beta-sink").plugin == "beta"
    assert registry.find("source", "files") is not None


def test_a_broken_entry_point_is_fatal_in_strict_mode(site):
    with pytest.raises(PluginError, match="'broken' failed to load: RuntimeError: boom"):
        build_registry(environ={"IGATA_STRICT_PLUGINS": "1"})


def test_load_plugins_empty_loads_no_entry_points(site):
    registry = build_registry(environ={"IGATA_LOAD_PLUGINS": ""})
    assert list(registry.plugins) == ["igata-core"]
    assert registry.find("source", "files") is not None


def test_load_plugins_lists_the_only_entry_points_to_load(site):
    registry = build_registry(environ={"IGATA_LOAD_PLUGINS": "alpha", "IGATA_STRICT_PLUGINS": "1"})
    assert sorted(registry.plugins) == ["alpha", "igata-core"]
    assert registry.find("source", "alpha-src") is not None
    assert registry.find("sink", "beta-sink") is None


def test_disabled_plugins_are_skipped_before_import(site):
    registry = build_registry(
        environ={"IGATA_DISABLED_PLUGINS": "broken, beta", "IGATA_STRICT_PLUGINS": "1"}
    )
    assert "broken" not in registry.plugins and "beta" not in registry.plugins
    assert registry.find("source", "alpha-src") is not None
    assert registry.find("sink", "beta-sink") is None


# -- the same through the igata command --------------------------------------------------------


def site_env(site: Path, **extra: str) -> dict[str, str]:
    return clean_env(PYTHONPATH=str(site), **extra)


def test_igata_plugins_lists_a_broken_plugin_and_exits_0(site):
    done = igata("plugins", env=site_env(site))
    assert done.returncode == 0, done.stderr
    assert "broken 0.1 (broken-plugin)" in done.stdout
    assert "BROKEN: RuntimeError: boom at import" in done.stdout
    assert "source:alpha-src" in done.stdout

    done = igata("plugins", "--json", env=site_env(site))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["broken"]["error"] == "RuntimeError: boom at import"
    assert by_name["alpha"]["error"] is None
    assert {"name": "alpha-src", "aliases": [], "plugin": "alpha"} in data["components"]["source"]


def test_a_broken_plugin_does_not_break_help_or_run(site, tmp_path):
    env = site_env(site)
    for args in (["--help"], ["run", "--help"]):
        done = igata(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout
    write_images(tmp_path / "images", 3)
    out = tmp_path / "out.jsonl"
    done = igata(
        "run",
        "--source",
        "files",
        "--sink",
        "jsonl",
        "--sink-opt",
        f"path={out}",
        "--predictor",
        "helpers_core:ShapePredictor",
        str(tmp_path / "images"),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 3
    assert "'broken' could not be loaded" in done.stderr


def test_strict_plugins_makes_a_broken_plugin_fatal_for_every_command(site, tmp_path):
    env = site_env(site, IGATA_STRICT_PLUGINS="1")
    out = tmp_path / "out.jsonl"
    for args in (
        ["plugins"],
        ["--help"],
        [
            "run",
            "--source",
            "files",
            "--sink",
            "jsonl",
            "--sink-opt",
            f"path={out}",
            "--predictor",
            "helpers_core:ShapePredictor",
            str(tmp_path),
        ],
    ):
        done = igata(*args, env=env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "plugin 'broken' failed to load: RuntimeError: boom at import" in done.stderr
        assert "Traceback" not in done.stderr
    assert not out.exists()


def test_escape_hatches_through_the_environment(site):
    done = igata(
        "plugins", "--json", env=site_env(site, IGATA_LOAD_PLUGINS="", IGATA_STRICT_PLUGINS="1")
    )
    assert done.returncode == 0, done.stderr
    assert [p["name"] for p in json.loads(done.stdout)["plugins"]] == ["igata-core"]

    done = igata(
        "plugins",
        "--json",
        env=site_env(site, IGATA_LOAD_PLUGINS="alpha,beta", IGATA_STRICT_PLUGINS="1"),
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p["name"] for p in json.loads(done.stdout)["plugins"]) == [
        "alpha",
        "beta",
        "igata-core",
    ]

    done = igata(
        "plugins",
        "--json",
        env=site_env(site, IGATA_DISABLED_PLUGINS="broken", IGATA_STRICT_PLUGINS="1"),
    )
    assert done.returncode == 0, done.stderr
    names = [p["name"] for p in json.loads(done.stdout)["plugins"]]
    assert "broken" not in names and "alpha" in names and "beta" in names


def test_a_plugin_command_shows_in_help_and_runs(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "cmd-plugin", {"cmd": "igata_test_cmd"})
    env = site_env(site)
    done = igata("--help", env=env)
    assert done.returncode == 0, done.stderr
    assert "hello" in done.stdout and "Say hello" in done.stdout
    done = igata("hello", "--name", "tester", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello tester from a plugin command"
    done = igata("plugins", env=env)
    assert "command:hello" in done.stdout
