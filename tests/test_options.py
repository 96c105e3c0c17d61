"""Options: CLI > environment > config file > default, derived environment names, and every
problem reported at once before any I/O."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import (
    EchoPredictor,
    RecordingSink,
    clean_env,
    core_registry,
    igata,
    write_images,
)

from igata_core import Envelope, Item, Loaded, Loader, Option, Source, hookimpl
from igata_core.assembly import RunRequest, assemble, load_config
from igata_core.options import OptionsError, resolve
from igata_core.testing import run_pipeline


def assembled(**request: Any):
    request.setdefault("source", "files")
    request.setdefault("sink", "csv")
    request.setdefault("sink_options", {"path": "unused.csv"})
    request.setdefault("predictor", EchoPredictor)
    request.setdefault("environ", {})
    return assemble(core_registry(), RunRequest(**request))


# Each layer's value for one option; a case leaves out the layers above the expected winner.
LAYERS = ("cli", "env", "config", "default")


def layered_cases() -> list[Any]:
    return [
        pytest.param(LAYERS[LAYERS.index(winner) :], winner, id=f"{winner}-wins")
        for winner in LAYERS
    ]


@pytest.mark.parametrize(("given", "winner"), layered_cases())
def test_source_option_precedence(given, winner):
    values = {"cli": [".cli"], "env": ".env", "config": [".config"]}
    assembly = assembled(
        source_options={"extensions": values["cli"]} if "cli" in given else {},
        environ={"INPUT_CTXMGR_EXTENSIONS": values["env"]} if "env" in given else {},
        config={"source": {"extensions": values["config"]}} if "config" in given else {},
    )
    expected = {"cli": [".cli"], "env": [".env"], "config": [".config"]}.get(winner)
    if winner == "default":
        assert ".png" in assembly.source.opts["extensions"]
    else:
        assert assembly.source.opts["extensions"] == expected


@pytest.mark.parametrize(("given", "winner"), layered_cases())
def test_sink_option_precedence(given, winner):
    values = {"cli": ";", "env": "|", "config": "\t", "default": ","}
    sink_options = {"path": "unused.csv"}
    if "cli" in given:
        sink_options["delimiter"] = values["cli"]
    assembly = assembled(
        sink_options=sink_options,
        environ={"OUTPUT_CTXMGR_DELIMITER": values["env"]} if "env" in given else {},
        config={"sink": {"delimiter": values["config"]}} if "config" in given else {},
    )
    assert assembly.sink.opts["delimiter"] == values[winner]


@pytest.mark.parametrize(("given", "winner"), layered_cases())
def test_loader_option_precedence(given, winner):
    values = {"cli": 100, "env": 200, "config": 300, "default": 1 << 30}
    assembly = assembled(
        loader_options={"file": {"max_object_bytes": "100"}} if "cli" in given else {},
        environ={"IGATA_FILE_MAX_OBJECT_BYTES": "200"} if "env" in given else {},
        config={"loaders": {"file": {"max_object_bytes": 300}}} if "config" in given else {},
    )
    assert assembly.reader.loaders.get("file").opts["max_object_bytes"] == values[winner]


@pytest.mark.parametrize(("given", "winner"), layered_cases())
def test_engine_option_precedence(given, winner):
    values = {"cli": 3, "env": 4, "config": 5, "default": 15}
    assembly = assembled(
        run_options={"chunk_size": "3"} if "cli" in given else {},
        environ={"RESULT_RECORD_CHUNK_SIZE": "4"} if "env" in given else {},
        config={"run": {"chunk_size": 5}} if "config" in given else {},
    )
    assert assembly.settings.chunk_size == values[winner]
    assert assembly.context.chunk_size == values[winner]


def test_derived_environment_names_of_sources_sinks_and_decoders():
    assembly = assembled(
        environ={
            "INPUT_CTXMANAGER_EXTENSIONS": ".old",
            "OUTPUT_CTXMGR_DELIMITER": "|",
            "IGATA_IMAGE_MAX_IMAGE_PIXELS": "1234",
            "IGATA_CSV_ENCODING": "latin-1",
        }
    )
    assert assembly.source.opts["extensions"] == [".old"]
    assert assembly.sink.opts["delimiter"] == "|"
    assert assembly.reader.decoders.get("image").opts["max_image_pixels"] == 1234
    assert assembly.reader.decoders.get("csv").opts["encoding"] == "latin-1"


def test_the_new_prefix_wins_over_the_originals_spelling_and_declared_names_come_first():
    assembly = assembled(
        environ={
            "INPUT_CTXMGR_EXTENSIONS": ".new",
            "INPUT_CTXMANAGER_EXTENSIONS": ".old",
            "IGATA_MAX_IMAGE_PIXELS": "10",
            "IGATA_IMAGE_MAX_IMAGE_PIXELS": "20",
        }
    )
    assert assembly.source.opts["extensions"] == [".new"]
    assert assembly.reader.decoders.get("image").opts["max_image_pixels"] == 10


def test_an_empty_environment_variable_counts_as_unset():
    assembly = assembled(
        environ={"RESULT_RECORD_CHUNK_SIZE": "", "OUTPUT_CTXMGR_DELIMITER": ""},
        config={"run": {"chunk_size": 7}},
    )
    assert assembly.settings.chunk_size == 7
    assert assembly.sink.opts["delimiter"] == ","


def test_resolve_reports_where_a_bad_value_came_from():
    declared = [Option("count", "int", 1, help="How many.", env=("COUNT",))]
    _, problems = resolve(declared, owner="source 'x'", environ={"COUNT": "lots"})
    assert problems == [
        "source 'x': option 'count' from environment COUNT: expected an integer, got 'lots'"
    ]
    _, problems = resolve(declared, owner="source 'x'", config={"count": 1.5})
    assert problems == ["source 'x': option 'count' from config file: expected an integer, got 1.5"]


# -- every problem at once, before any I/O -----------------------------------------------------


class GuardedSource(Source):
    """A source with a required option that records whether it was ever opened."""

    name = "guarded"
    description = "Test source"
    options: ClassVar[tuple[Option, ...]] = (
        Option("count", "int", required=True, help="How many envelopes."),
        Option("label", help="A label."),
    )
    opened: ClassVar[list[str]] = []

    def open(self) -> None:
        GuardedSource.opened.append("open")

    def envelopes(self):
        for i in range(self.opts["count"]):
            yield Envelope(ref=f"g-{i}", items=[Item(identity=f"g-{i}", data=i)])


@pytest.mark.parametrize(
    ("source_options", "expected"),
    [
        ({"label": "x"}, "missing required option 'count'"),
        ({"count": "three"}, "option 'count' from command line: expected an integer"),
    ],
)
def test_all_problems_are_reported_together_and_nothing_is_opened(
    tmp_path, source_options, expected
):
    GuardedSource.opened.clear()
    out = tmp_path / "out" / "results.jsonl"
    with pytest.raises(OptionsError) as caught:
        run_pipeline(
            GuardedSource,
            "jsonl",
            EchoPredictor,
            source_options={**source_options, "colour": "red"},
            sink_options={"path": str(out), "compression": "gzip"},
            loader_options={"file": {"max_object_bytes": "big"}},
            registry=core_registry(),
            environ={"RESULT_RECORD_CHUNK_SIZE": "0"},
            batch_size="many",
            errors=str(tmp_path / "errors.jsonl"),
        )
    problems = caught.value.problems
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    assert expected in text
    assert "source 'guarded': unknown option 'colour'" in text
    assert "sink 'jsonl': unknown option 'compression'" in text
    assert "loader 'file': option 'max_object_bytes'" in text
    assert (
        "option 'chunk_size' from environment RESULT_RECORD_CHUNK_SIZE: must be at least 1" in text
    )
    assert "option 'batch_size' from command line: expected an integer" in text
    assert GuardedSource.opened == []
    assert list(tmp_path.iterdir()) == []


def test_the_cli_reports_all_problems_at_once_with_exit_2_and_writes_nothing(tmp_path):
    write_images(tmp_path / "images", 2)
    done = igata(
        "run",
        "--source",
        "files",
        "--sink",
        "jsonl",
        "--source-opt",
        "colour=red",
        "--source-opt",
        "novalue",
        "--loader-opt",
        "file.max_object_bytes=big",
        "--loader-opt",
        "nodot=1",
        "--decoder-opt",
        "image.max_image_pixels=-1",
        "--batch-size",
        "abc",
        "--errors",
        "errors.jsonl",
        "--predictor",
        "helpers_core:ShapePredictor",
        "images",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "error: --source-opt 'novalue': expected KEY=VALUE" in errors
    assert "error: --loader-opt 'nodot=1': expected NAME.KEY=VALUE" in errors
    # Malformed flags are reported before the options are resolved; then all at once.
    done = igata(
        "run",
        "--source",
        "files",
        "--sink",
        "jsonl",
        "--source-opt",
        "colour=red",
        "--loader-opt",
        "file.max_object_bytes=big",
        "--decoder-opt",
        "image.max_image_pixels=-1",
        "--batch-size",
        "abc",
        "--errors",
        "errors.jsonl",
        "--predictor",
        "helpers_core:ShapePredictor",
        "images",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 5, done.stderr
    text = "\n".join(errors)
    assert "source 'files': unknown option 'colour'" in text
    assert (
        "sink 'jsonl': missing required option 'path' (set it with --sink-opt path=VALUE "
        "or environment OUTPUT_CTXMGR_PATH)" in text
    )
    assert "loader 'file': option 'max_object_bytes' from command line: expected an integer" in text
    assert (
        "decoder 'image': option 'max_image_pixels' from command line: must be at least 0" in text
    )
    assert "igata run: option 'batch_size' from command line: expected an integer" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_cli_flags_win_over_the_environment_and_the_config_file(tmp_path):
    write_images(tmp_path / "images", 3)
    (tmp_path / "igata.toml").write_text(
        "[run]\nchunk_size = 0\n[loaders.file]\nmax_object_bytes = 1\n"
        '[source]\nextensions = ".jpg"\n'
    )
    env = clean_env(
        IGATA_LOAD_PLUGINS="",
        RESULT_RECORD_CHUNK_SIZE="-1",
        IGATA_FILE_MAX_OBJECT_BYTES="1",
        INPUT_CTXMGR_EXTENSIONS=".gif",
        OUTPUT_CTXMGR_PATH="env.jsonl",
    )
    done = igata(
        "run",
        "--config",
        "igata.toml",
        "--source",
        "files",
        "--sink",
        "jsonl",
        "--chunk-size",
        "2",
        "--loader-opt",
        "file.max_object_bytes=100000",
        "--source-opt",
        "extensions=.png",
        "--sink-opt",
        "path=cli.jsonl",
        "--predictor",
        "helpers_core:ShapePredictor",
        "images",
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "cli.jsonl").read_text().splitlines()) == 3
    assert not (tmp_path / "env.jsonl").exists()


def test_the_environment_wins_over_the_config_file_in_the_cli(tmp_path):
    write_images(tmp_path / "images", 2)
    (tmp_path / "igata.toml").write_text(
        '[run]\nsource = "files"\nsink = "jsonl"\npredictor = "helpers_core:ShapePredictor"\n'
        '[loaders.file]\nmax_object_bytes = 1\n[sink]\npath = "config.jsonl"\n'
    )
    env = clean_env(
        IGATA_LOAD_PLUGINS="", IGATA_FILE_MAX_OBJECT_BYTES="100000", OUTPUT_CTXMGR_PATH="env.jsonl"
    )
    done = igata("run", "--config", "igata.toml", "images", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "env.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "config.jsonl").exists()


def test_config_file_problems_are_usage_errors(tmp_path):
    with pytest.raises(OptionsError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nchunk_size = 1\n")
    with pytest.raises(OptionsError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(OptionsError) as caught:
        assembled(config={"source": {"colour": "red"}, "loaders": {"nosuch": {"a": 1}}})
    text = "\n".join(caught.value.problems)
    assert "source 'files': unknown option 'colour' (config file)" in text
    assert "unknown loader 'nosuch'" in text
    done = igata("run", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert done.returncode == 2
    assert "missing.toml: not found" in done.stderr


# -- describe and component names --------------------------------------------------------------


def test_describe_lists_options_with_their_environment_names():
    done = igata("describe", "jsonl")
    assert done.returncode == 0, done.stderr
    assert "sink jsonl (plugin igata-core)" in done.stdout
    assert "path (str, required)" in done.stdout
    assert "env: OUTPUT_CTXMGR_PATH" in done.stdout
    done = igata("describe", "files")
    assert "env: INPUT_CTXMGR_EXTENSIONS, INPUT_CTXMANAGER_EXTENSIONS" in done.stdout
    done = igata("describe", "--kind", "loader", "file")
    assert "schemes: file" in done.stdout
    assert "env: IGATA_FILE_MAX_OBJECT_BYTES" in done.stdout


def test_unknown_component_names_are_errors():
    done = igata("describe", "nosuch")
    assert done.returncode != 0
    assert "no component named 'nosuch'" in done.stderr
    done = igata(
        "run",
        "--source",
        "nosuch",
        "--sink",
        "nowhere",
        "--predictor",
        "helpers_core:ShapePredictor",
    )
    assert done.returncode == 2
    assert "error: unknown source 'nosuch' (installed sources: files)" in done.stderr
    assert (
        "error: unknown sink 'nowhere' (installed sinks: csv, jsonl, null, stdout)" in done.stderr
    )


def test_a_component_of_an_uninstalled_plugin_says_what_to_install():
    done = igata(
        "run",
        "--source",
        "s3",
        "--sink",
        "jsonl",
        "--sink-opt",
        "path=x.jsonl",
        "--predictor",
        "helpers_core:ShapePredictor",
    )
    assert done.returncode == 2
    assert "pip install igata-s3" in done.stderr
    # The original's defaults (S3 input, SQS output) and its context-manager names.
    env = clean_env(
        IGATA_LOAD_PLUGINS="",
        PREDICTOR_MODULE="helpers_core",
        INPUT_CONTEXT_MANAGER="SQSMessageS3InputImageCtxManager",
    )
    done = igata("run", env=env)
    assert done.returncode == 2
    assert "pip install igata-sqs" in done.stderr
    assert "'SQSMessageS3InputImageCtxManager'" in done.stderr


def test_an_explicit_source_instance_keeps_its_own_options():
    # run_pipeline with ready-made components resolves nothing for them.
    sink = RecordingSink()
    GuardedSource.opened.clear()
    result = run_pipeline(
        GuardedSource({"count": 2}), sink, EchoPredictor, registry=core_registry(), environ={}
    )
    assert result.exit_code == 0
    assert sorted(sink.ids()) == ["g-0", "g-1"]
    assert GuardedSource.opened == ["open"]


def named_source(name: str) -> type[Source]:
    return type(name, (Source,), {"name": name, "description": "Test source", "options": ()})


@hookimpl
def register_sources(register):
    for name in ("src-cli", "src-env", "src-config"):
        register(named_source(name))


@pytest.mark.parametrize(("given", "winner"), layered_cases())
def test_source_selection_precedence(given, winner):
    registry = core_registry([("named", types.SimpleNamespace(register_sources=register_sources))])
    request = RunRequest(
        source="src-cli" if "cli" in given else None,
        sink="null",
        predictor=EchoPredictor,
        environ={"INPUT_CONTEXT_MANAGER": "src-env"} if "env" in given else {},
        config={"run": {"source": "src-config"}} if "config" in given else {},
    )
    if winner == "default":
        # The original's default input is S3, from the igata-s3 plugin.
        with pytest.raises(OptionsError, match="pip install igata-s3"):
            assemble(registry, request)
    else:
        assert assemble(registry, request).source.name == f"src-{winner}"


def test_a_bad_decoder_option_stops_the_run_before_any_input_is_read(tmp_path):
    with pytest.raises(OptionsError) as raised:
        run_pipeline(
            "files", "null", EchoPredictor, inputs=[str(tmp_path)],
            decoder_options={"csv": {"encoding": "klingon"}},
        )  # fmt: skip
    assert any("decoder 'csv'" in problem for problem in raised.value.problems)


class _NeedsTokenLoader(Loader):
    name = "tokened"
    schemes = ("tok",)
    options: ClassVar[tuple[Option, ...]] = (Option("token", required=True, help="A secret."),)

    def load(self, uri: str) -> Loaded:
        return Loaded(b"{}")


class _TokenPlugin:
    @hookimpl
    def register_loaders(self, register: Any) -> None:
        register(_NeedsTokenLoader)


def test_an_unused_loader_missing_a_required_option_does_not_fail_the_run(tmp_path):
    (tmp_path / "a.json").write_text("{}")
    result = run_pipeline(
        "files", "null", EchoPredictor, inputs=[str(tmp_path)],
        extra_plugins=[("tokens", _TokenPlugin())],
    )  # fmt: skip
    assert result.exit_code == 0 and result.summary["succeeded"] == 1


def test_a_used_loader_missing_a_required_option_fails_its_records_clearly():
    source = ListOfUris(["tok://a/x.json"])
    result = run_pipeline(source, "null", EchoPredictor, extra_plugins=[("tokens", _TokenPlugin())])
    assert result.exit_code == 1
    (outcome,) = result.outcomes
    assert "loader 'tokened': missing required option 'token'" in outcome.message
    assert "IGATA_TOKENED_TOKEN" in outcome.message


class ListOfUris(Source):
    name = "uris"

    def __init__(self, uris: list[str]):
        super().__init__()
        self.uris = uris

    def envelopes(self) -> Any:
        for uri in self.uris:
            yield Envelope(uri, [Item(uri, uri=uri)])
