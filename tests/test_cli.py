"""The ``igata`` command: start-up cost, logging, defaults, config files and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import clean_env, igata, write_images

HEAVY = ("boto3", "botocore", "numpy", "PIL")
#: Standard modules that cost milliseconds each at import (OpenSSL, http, email parsing):
#: plugins import them where they are used, not when they register.
SLOW_STDLIB = ("hashlib", "ssl", "http.client", "urllib.request", "statistics", "tomllib")

_IMPORTS_AFTER = f"""
import json, sys
from igata_core.cli import main
try:
    main()  # reads sys.argv[1:]: the arguments after -c's script
except SystemExit as exc:
    code = exc.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
slow = sorted(set(sys.modules) & set({SLOW_STDLIB!r}))
watched = ("igata_", "email", "importlib.meta", "tempfile", "PIL.ImageOps")
modules = sorted(m for m in sys.modules if m.startswith(watched))
import gc
frozen = gc.get_freeze_count()
report = {{"exit": code, "heavy": heavy, "slow": slow, "modules": modules, "frozen": frozen}}
print(json.dumps(report), file=sys.stderr)
"""


def imports_after(*args: str, **env: str) -> dict:
    """Run an igata command in a fresh interpreter; its exit code and what it imported."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_AFTER, *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [["--help"], ["plugins"], ["plugins", "--json"], ["run", "--help"], ["describe", "image"]],
)
def test_help_plugins_and_describe_import_no_heavy_library(args):
    # Installed plugins are loaded too: their modules must keep boto3 (and the slower
    # standard modules) out of module top.
    report = imports_after(*args)
    assert (report["exit"], report["heavy"], report["slow"]) == (0, [], []), report


#: Modules behind the installed plugins' sources, sinks and loaders, and behind their
#: subcommands (the packages are installed in the session that runs these tests).
COMPONENT_MODULES = {
    "igata_s3.source", "igata_s3.sinks", "igata_s3.loader", "igata_sqs.source",
    "igata_sqs.sink", "igata_dynamodb.sink", "igata_http.loader", "igata_http.webhook",
}  # fmt: skip
COMMAND_MODULES = {"igata_sqs.replay", "igata_dynamodb.cli", "igata_jobs.cli"}


def test_help_imports_the_plugins_commands_but_none_of_their_components(tmp_path):
    report = imports_after("--help", IGATA_CACHE_DIR=str(tmp_path / "cache"))
    assert report["exit"] == 0
    assert set(report["modules"]) >= COMMAND_MODULES
    assert not COMPONENT_MODULES & set(report["modules"])
    assert report["frozen"] > 1000  # frozen at the end: the exit's collection skips it


def test_a_run_imports_no_plugin_command_and_with_the_cache_no_metadata_reader(tmp_path):
    write_images(tmp_path / "images", 1)
    args = ["run", "--source", "files", "--sink", "jsonl", "--sink-opt",
            f"path={tmp_path / 'out.jsonl'}", "--predictor", "helpers_core:ShapePredictor",
            str(tmp_path / "images")]  # fmt: skip
    cache = str(tmp_path / "cache")
    first = imports_after(*args, IGATA_CACHE_DIR=cache)
    assert first["exit"] == 0
    assert "importlib.metadata" in first["modules"]  # no cache yet: it is written now
    # igata run puts its application directory on sys.path and --help does not: each
    # keeps its own record, so alternating between them reads the cache every time.
    assert "importlib.metadata" in imports_after("--help", IGATA_CACHE_DIR=cache)["modules"]
    second = imports_after(*args, IGATA_CACHE_DIR=cache)
    assert second["exit"] == 0
    assert {"igata_s3.loader", "igata_sqs.source", "igata_dynamodb.sink"} <= set(second["modules"])
    assert not COMMAND_MODULES & set(second["modules"])
    assert "igata_core.scaffold" not in second["modules"]  # igata new-plugin's templates
    assert not [m for m in second["modules"] if m.startswith(("importlib.metadata", "email"))]
    # Imported where they are used: the S3 sinks' spool, a rotated photo's transpose.
    assert not {"tempfile", "PIL.ImageOps"} & set(second["modules"])
    help_again = imports_after("--help", IGATA_CACHE_DIR=cache)
    assert "importlib.metadata" not in help_again["modules"]


def test_python_m_igata_core_is_the_igata_command():
    done = igata("--help")
    assert done.returncode == 0
    assert "Usage: igata" in done.stdout
    for command in ("run", "plugins", "describe"):
        assert f"  {command} " in done.stdout
    done = igata("--version")
    assert done.returncode == 0 and done.stdout.startswith("igata, version ")
    done = igata("run", "--no-such-flag")
    assert done.returncode == 2 and "No such option" in done.stderr


@pytest.fixture
def images(tmp_path):
    write_images(tmp_path / "images", 3)
    return tmp_path


def run_args(*extra: str) -> list[str]:
    return ["run", "--sink", "jsonl", "--sink-opt", "path=out.jsonl", *extra, "images"]


def test_local_paths_default_to_the_files_source_and_a_summary_is_logged(images):
    done = igata(*run_args("--predictor", "helpers_core:ShapePredictor"), cwd=images)
    assert done.returncode == 0, done.stderr
    assert len((images / "out.jsonl").read_text().splitlines()) == 3
    assert "source files -> predictor ShapePredictor -> sink jsonl" in done.stderr
    assert "summary: read 3, succeeded 3, failed 0, written 3 in " in done.stderr


def test_quiet_leaves_only_warnings_and_errors(images):
    done = igata("-q", *run_args("--predictor", "helpers_core:ShapePredictor"), cwd=images)
    assert done.returncode == 0
    assert done.stderr == ""
    (images / "images" / "broken.png").write_bytes(b"")
    done = igata("-q", *run_args("--predictor", "helpers_core:ShapePredictor"), cwd=images)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines and all(" INFO " not in line for line in lines)
    assert any("broken.png: failed at decode" in line for line in lines)
    assert any("summary: read 4, succeeded 3, failed 1" in line for line in lines)


def test_json_log_lines(images):
    done = igata(
        "--log-format", "json", *run_args("--predictor", "helpers_core:ShapePredictor"), cwd=images
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert {e["level"] for e in entries} == {"INFO"}
    assert all(set(e) == {"time", "level", "logger", "message"} for e in entries)
    assert any(e["message"].startswith("summary: read 3, succeeded 3") for e in entries)
    env = clean_env(IGATA_LOAD_PLUGINS="", IGATA_LOG_FORMAT="json")
    done = igata(*run_args("--predictor", "helpers_core:ShapePredictor"), cwd=images, env=env)
    assert all(json.loads(line)["logger"] for line in done.stderr.splitlines())


@pytest.mark.parametrize(
    ("level", "debug_lines", "summary"),
    [
        ("DEBUG", 3, True),
        ("INFO", 0, True),
        ("WARNING", 0, False),
        ("nonsense", 0, True),
    ],
)
def test_log_level_from_the_environment(images, level, debug_lines, summary):
    env = clean_env(IGATA_LOAD_PLUGINS="", LOG_LEVEL=level)
    done = igata(
        *run_args("--predictor", "helpers_core:DebugLoggingPredictor"), cwd=images, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("helpers_core: predicting images/") == debug_lines
    assert ("summary: read 3" in done.stderr) is summary


def test_a_config_file_selects_components_and_options(images):
    (images / "igata.toml").write_text(
        '[run]\nsource = "files"\nsink = "csv"\npredictor = "helpers_core:ShapePredictor"\n'
        "chunk_size = 2\n"
        '[source]\nextensions = [".png"]\n'
        '[sink]\npath = "results.csv"\nfieldnames = ["igata_input", "shape"]\n'
    )
    (images / "images" / "notes.txt").write_text("not an input")
    done = igata("run", "--config", "igata.toml", "images", cwd=images)
    assert done.returncode == 0, done.stderr
    lines = (images / "results.csv").read_text().splitlines()
    assert lines[0] == "igata_input,shape"
    assert sorted(lines[1:]) == [f'images/000{i}.png,"[3, 4, 3]"' for i in range(3)]
    env = clean_env(IGATA_LOAD_PLUGINS="", IGATA_CONFIG="igata.toml")
    (images / "results.csv").unlink()
    done = igata("run", "images", cwd=images, env=env)
    assert done.returncode == 0, done.stderr
    assert (images / "results.csv").exists()


# -- signals -----------------------------------------------------------------------------------


def start_slow_run(tmp_path: Path, count: int, delay: float) -> subprocess.Popen[str]:
    write_images(tmp_path / "images", count)
    env = clean_env(IGATA_LOAD_PLUGINS="", IGATA_TEST_PREDICT_DELAY=str(delay))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "igata_core",
            "run",
            "--source",
            "files",
            "--sink",
            "jsonl",
            "--sink-opt",
            "path=out.jsonl",
            "--predictor",
            "helpers_core:SlowPredictor",
            "--batch-size",
            "1",
            "--concurrency",
            "2",
            "--chunk-size",
            "1",
            "images",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_partial(tmp_path: Path, proc: subprocess.Popen[str], *, min_size: int) -> None:
    """Until the sink's temporary file exists with ``min_size`` bytes flushed to it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        partials = list(tmp_path.glob(".out.jsonl.*.partial"))
        if partials and partials[0].stat().st_size >= min_size:
            return
        if proc.poll() is not None:
            pytest.fail(f"igata ended early: {proc.communicate()[1]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("igata did not start processing")


def test_sigterm_finishes_in_flight_work_and_leaves_a_complete_file(tmp_path):
    proc = start_slow_run(tmp_path, 200, 0.02)
    try:
        wait_for_partial(tmp_path, proc, min_size=1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Finite input not exhausted: the conventional exit code of an interrupted program.
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM received" in stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is whole
    assert 1 <= len(records) < 200
    assert f"written {len(records)} in" in stderr and "; interrupted" in stderr
    assert list(tmp_path.glob("*.partial")) == [] and list(tmp_path.glob(".*.partial")) == []


def test_a_second_sigterm_exits_at_once_without_presenting_a_partial_file(tmp_path):
    # A graceful stop would predict the records in flight first, a second each.
    proc = start_slow_run(tmp_path, 20, 1.0)
    try:
        wait_for_partial(tmp_path, proc, min_size=1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert took < 0.9
    assert not (tmp_path / "out.jsonl").exists()


def test_sigint_is_handled_like_sigterm(tmp_path):
    proc = start_slow_run(tmp_path, 100, 0.02)
    try:
        wait_for_partial(tmp_path, proc, min_size=1)
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "SIGINT received" in stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert f"written {len(records)} in" in stderr


def test_an_unwritable_errors_file_is_a_usage_error_before_any_input_is_read(images):
    done = igata(
        *run_args("--predictor", "helpers_core:ShapePredictor", "--errors", "missing/errors.jsonl"),
        cwd=images,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot write the errors file missing/errors.jsonl: No such file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (images / "out.jsonl").exists()
