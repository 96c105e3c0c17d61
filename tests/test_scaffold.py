"""``igata new-plugin``: the generated package installs, is listed, runs, and its tests pass."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from igata_core import HOOK_API_VERSION
from igata_core.scaffold import (
    KINDS,
    ScaffoldError,
    core_requirement,
    generate_plugin,
    new_plugin,
    plugin_files,
    plugin_names,
)

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))


def clean_environment(**extra: str) -> dict[str, str]:
    """This environment without igata settings (they would leak into the runs under test)."""
    prefixes = ("IGATA_", "INPUT_", "OUTPUT_", "PREDICTOR_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


class PluginVenv:
    """A fresh virtual environment into which plugins are pip-installed (editable).

    The packages of the environment running the tests (igata-core, pytest, …) are visible
    in it through a ``.pth`` file, so that only the plugin under test is installed.
    """

    def __init__(self, path: Path):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
        self.python = path / "bin" / "python"
        site = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        ours = sysconfig.get_paths()["purelib"]
        # addsitedir (not a bare path line) so the editable installs' .pth files work too.
        Path(site, "_igata_tests_parent.pth").write_text(
            f"import site; site.addsitedir({ours!r})\n"
        )

    def install(self, project: Path) -> float:
        """``pip install --no-deps -e project``; returns the seconds it took."""
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(self.python), "install",
             "--no-deps", "--quiet", "--disable-pip-version-check", "-e", str(project)],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert result.returncode == 0, f"pip install -e {project} failed:\n{result.stderr}"
        return time.monotonic() - started

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *args], cwd=cwd, env=clean_environment(**env),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


# -- names and files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, dist, module, cls",
    [
        ("pgqueue", "igata-pgqueue", "igata_pgqueue", "Pgqueue"),
        ("kafka-events", "igata-kafka-events", "igata_kafka_events", "KafkaEvents"),
        ("igata-webhook2", "igata-webhook2", "igata_webhook2", "Webhook2"),
        ("Kafka", "igata-kafka", "igata_kafka", "Kafka"),
    ],
)
def test_names_derived_from_the_plugin_name(given: str, dist: str, module: str, cls: str) -> None:
    names = plugin_names(given)
    assert (names["__DIST__"], names["__MODULE__"], names["__CLASS__"]) == (dist, module, cls)


@pytest.mark.parametrize("bad", ["", "2fast", "a_b", "a--b", "a-", "x" * 31, "my.db"])
def test_unusable_names_are_refused(bad: str) -> None:
    with pytest.raises(ScaffoldError, match="not usable"):
        plugin_names(bad)


def test_core_requirement_pins_the_hook_api_series() -> None:
    assert core_requirement("0.1.0") == "igata-core>=0.1,<0.2"
    assert core_requirement("0.3.2") == "igata-core>=0.3,<0.4"
    assert core_requirement("1.4.0") == "igata-core>=1.4,<2"
    assert core_requirement() == "igata-core>=0.1,<0.2"


def _subsets() -> list[tuple[str, ...]]:
    return [c for n in range(1, 5) for c in itertools.combinations(KINDS, n)]


def test_every_combination_is_complete_and_lint_clean(tmp_path: Path) -> None:
    for kinds in _subsets():
        files = plugin_files("demo", kinds)
        expected = {f"igata_demo/{k}.py" for k in kinds}
        expected |= {f"tests/test_demo_{k}.py" for k in kinds}
        assert expected <= set(files), kinds
        assert not [k for k in KINDS if k not in kinds and f"igata_demo/{k}.py" in files]
        plugin = files["igata_demo/plugin.py"]
        for kind in KINDS:
            assert (f"def register_{kind}s(" in plugin) == (kind in kinds), (kinds, kind)
        assert f"IGATA_HOOK_API = {HOOK_API_VERSION}" in plugin
        assert '"igata-core>=0.1,<0.2"' in files["pyproject.toml"]
        assert 'demo = "igata_demo.plugin"' in files["pyproject.toml"]
        for path, text in files.items():
            assert "TODO" not in text and "__NAME__" not in text, path
            if path.endswith(".py"):
                compile(text, path, "exec")
        generate_plugin("demo", tmp_path / "-".join(kinds), kinds)
    # The generated code is what an author starts from: it passes the linter as generated.
    lint = subprocess.run([RUFF, "check", "--no-cache", str(tmp_path)], capture_output=True,
                          text=True)  # fmt: skip
    assert lint.returncode == 0, lint.stdout
    style = subprocess.run([RUFF, "format", "--check", "--no-cache", str(tmp_path)],
                           capture_output=True, text=True)  # fmt: skip
    assert style.returncode == 0, style.stdout


def test_new_plugin_command_writes_the_package(tmp_path: Path) -> None:
    result = CliRunner().invoke(new_plugin, ["pgqueue", "--sink", "--decoder", "-d", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "igata-pgqueue"
    assert f"Created {root}" in result.output and "pip install -e" in result.output
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == sorted(plugin_files("pgqueue", ["sink", "decoder"]))

    again = CliRunner().invoke(new_plugin, ["pgqueue", "-d", str(tmp_path)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_without_kind_flags_all_four_are_generated(tmp_path: Path) -> None:
    result = CliRunner().invoke(new_plugin, ["pgqueue", "-d", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {p.stem for p in (tmp_path / "igata-pgqueue" / "igata_pgqueue").glob("*.py")} == {
        "__init__", "plugin", "source", "sink", "loader", "decoder",
    }  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (["csv", "--decoder"], "decoder name 'csv' (plugin igata-core)"),
        (["file", "--loader"], "loader scheme 'file' (plugin igata-core)"),
        (["Bad_Name"], "not usable"),
    ],
)
def test_new_plugin_refuses_names_that_cannot_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(new_plugin, [*args, "-d", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_new_plugin_is_an_igata_command() -> None:
    from igata_core.cli import cli

    result = CliRunner().invoke(cli, ["new-plugin", "--help"])
    assert result.exit_code == 0, (
        "igata new-plugin is not wired: igata_core/cli.py needs "
        "'from igata_core.scaffold import new_plugin' and 'cli.add_command(new_plugin)'"
    )
    assert "--source" in result.output and "--decoder" in result.output


# -- the whole round trip: generate, install, list, test, run ---------------------------------

PREDICTOR = """
from igata_core import PredictorBase


class Predictor(PredictorBase):
    def predict(self, input_record, meta):
        return {"shade": input_record["color"].upper()}
"""


def test_generated_plugin_installs_lists_tests_and_runs(tmp_path: Path) -> None:
    root = generate_plugin("pgqueue", tmp_path / "src")
    venv = PluginVenv(tmp_path / "venv")
    seconds = venv.install(root)
    assert seconds < 60, f"pip install -e of a generated plugin took {seconds:.0f} s"

    listed = venv.run("-m", "igata_core", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    info = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}["pgqueue"]
    assert info["error"] is None and info["distribution"] == "igata-pgqueue"
    assert sorted(info["components"]) == [
        "decoder:pgqueue", "loader:pgqueue", "sink:pgqueue", "source:pgqueue",
    ]  # fmt: skip

    tests = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=root)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout

    # The README's "Use it" lines, as a newcomer would type them.
    work = tmp_path / "work"
    (work / "data" / "items").mkdir(parents=True)
    (work / "mymodel.py").write_text(PREDICTOR)
    (work / "data" / "items" / "item-1.pgqueue").write_text("color = red\n")
    (work / "data" / "items" / "item-2.pgqueue").write_text("color = blue\n")
    requests = [
        {"id": "req-1", "uri": "pgqueue://items/item-1.pgqueue"},
        {"id": "req-2", "uri": "pgqueue://items/item-2.pgqueue", "customer": "acme"},
    ]
    (work / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    command = [
        "-m", "igata_core", "run", "--predictor", "mymodel:Predictor",
        "--source", "pgqueue", "--source-opt", "queue=requests.jsonl",
        "--sink", "pgqueue", "--sink-opt", "directory=results/",
        "--loader-opt", "pgqueue.root=data/",
    ]  # fmt: skip
    run = venv.run(*command, cwd=work, PYTHONPATH=str(work))
    assert run.returncode == 0, run.stderr
    results = [json.loads(p.read_text()) for p in (work / "results").glob("*.json")]
    assert sorted((r["igata_id"], r["shade"]) for r in results) == [
        ("req-1", "RED"), ("req-2", "BLUE"),
    ]  # fmt: skip
    assert [r.get("customer") for r in sorted(results, key=lambda r: r["igata_id"])] == [
        None, "acme",
    ]  # fmt: skip
    acked = [json.loads(line) for line in (work / "requests.jsonl.ledger").read_text().splitlines()]
    assert sorted(e["id"] for e in acked if e["event"] == "ack") == ["req-1", "req-2"]


def test_a_generated_sink_only_plugin_passes_its_tests(tmp_path: Path) -> None:
    root = generate_plugin("results-dir", tmp_path / "src", ["sink"])
    venv = PluginVenv(tmp_path / "venv")
    venv.install(root)
    tests = venv.run("-m", "pytest", "-v", "-p", "no:cacheprovider", cwd=root)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "TestResultsDirSinkContract::test_failed_flush_keeps_records_for_retry PASSED" in (
        tests.stdout
    )
    assert "test_results_dir_pipeline.py::test_pipeline PASSED" in tests.stdout
    assert "SourceContract" not in tests.stdout and "SKIPPED" not in tests.stdout
