"""A newcomer's first run: a model file in the working directory, igata.toml found by itself,
a usage line that works as printed, and errors that say what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import clean_env, write_images

IGATA = str(Path(sys.executable).parent / "igata")

MODEL = """\
from igata_core import PredictorBase


class Predictor(PredictorBase):
    def predict(self, input_record, meta):
        return {"height": int(input_record.shape[0])}
"""


def igata_script(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``igata`` script (not ``python -m``, which puts the working directory on
    the import path by itself), without PYTHONPATH."""
    environ = clean_env(IGATA_LOAD_PLUGINS="", **env)
    environ.pop("PYTHONPATH", None)
    return subprocess.run(
        [IGATA, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory as the README's first steps leave it: mymodel.py and images/."""
    (tmp_path / "mymodel.py").write_text(MODEL)
    write_images(tmp_path / "images", 3)
    return tmp_path


def test_a_model_in_the_working_directory_runs_without_pythonpath(project: Path) -> None:
    done = igata_script(
        "run", "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=out.jsonl", "images", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len((project / "out.jsonl").read_text().splitlines()) == 3


def test_predictor_module_from_the_environment_too(project: Path) -> None:
    done = igata_script(
        "run", "--sink", "jsonl", "--sink-opt", "path=out.jsonl", "images",
        cwd=project, PREDICTOR_MODULE="mymodel",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_an_empty_app_dir_imports_only_installed_modules(project: Path) -> None:
    done = igata_script(
        "run", "--app-dir", "", "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=out.jsonl", "images", cwd=project,
    )  # fmt: skip
    assert done.returncode == 2
    assert "predictor module 'mymodel' not found" in done.stderr


def test_another_app_dir(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = igata_script(
        "run", "--app-dir", str(project), "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=out.jsonl", str(project / "images"), cwd=elsewhere,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "out.jsonl").exists()


def test_app_dir_from_the_environment(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = igata_script(
        "run", "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=out.jsonl", str(project / "images"),
        cwd=elsewhere, IGATA_APP_DIR=str(project),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len((elsewhere / "out.jsonl").read_text().splitlines()) == 3


def test_an_empty_app_dir_from_the_environment_imports_only_installed_modules(
    project: Path,
) -> None:
    done = igata_script(
        "run", "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=out.jsonl", "images", cwd=project, IGATA_APP_DIR="",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "predictor module 'mymodel' not found" in done.stderr
    assert not (project / "out.jsonl").exists()


def test_the_app_dir_option_wins_over_the_environment(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = igata_script(
        "run", "--app-dir", str(project), "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=out.jsonl", str(project / "images"),
        cwd=elsewhere, IGATA_APP_DIR=str(elsewhere),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_igata_toml_in_the_working_directory_is_read(project: Path) -> None:
    (project / "igata.toml").write_text(
        '[run]\npredictor = "mymodel:Predictor"\n[sink]\npath = "from-config.jsonl"\n'
    )
    done = igata_script("run", "--sink", "jsonl", "images", cwd=project)
    assert done.returncode == 0, done.stderr
    assert len((project / "from-config.jsonl").read_text().splitlines()) == 3


def test_python_m_igata_cli_prints_a_usage_line_that_works(project: Path) -> None:
    environ = clean_env(IGATA_LOAD_PLUGINS="")
    helped = subprocess.run(
        [sys.executable, "-m", "igata.cli", "--help"], env=environ, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert helped.returncode == 0
    usage = helped.stdout.splitlines()[0]
    assert usage == "Usage: python -m igata.cli [OPTIONS] [INPUTS]...", usage
    done = subprocess.run(
        [sys.executable, "-m", "igata.cli", "--predictor", "mymodel:Predictor", "--sink",
         "jsonl", "--sink-opt", "path=out.jsonl", "images"],
        cwd=project, env=environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_describe_names_the_package_to_install(tmp_path: Path) -> None:
    done = igata_script("describe", "dynamodb", cwd=tmp_path)
    assert done.returncode == 1
    assert "pip install igata-dynamodb" in done.stderr


def test_an_output_file_that_cannot_be_written_is_exit_2_before_any_input(project: Path) -> None:
    (project / "a-file").write_text("not a directory")
    done = igata_script(
        "run", "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=a-file/out.jsonl", "images", cwd=project,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cannot write the output file" in done.stderr
    assert "choose a path in a writable directory" in done.stderr
    assert "what to do: fix the configuration" in done.stderr
    assert "read 0," in done.stderr, "the sink is opened before any input is read"


def test_a_short_run_reports_no_meaningless_rate(project: Path) -> None:
    done = igata_script(
        "run", "--predictor", "mymodel:Predictor", "--sink", "jsonl",
        "--sink-opt", "path=out.jsonl", "images", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "records/s" not in done.stderr
    assert "summary: read 3, succeeded 3, failed 0, written 3 in" in done.stderr


def test_the_testing_kit_says_which_extra_it_needs() -> None:
    code = "import sys; sys.modules['pytest'] = None; import igata_core.testing"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "pip install 'igata-core[testing]'" in done.stderr
