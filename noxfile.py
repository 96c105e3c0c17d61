"""Sessions: tests, lint, typecheck, demo, bench, one isolated test run per plugin, and the
conformance runs on strict stand-ins (s3-conformance: Ceph RGW; aws-conformance: LocalStack's
SQS and dynalite).

The README's two commands for a fresh machine are ``nox -s demo`` and ``nox -s tests``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PYTHON = "3.11"
#: Plugin directories in dependency order (igata-sqs needs igata-s3), and the example
#: third-party plugin, which is tested like ours.
PLUGINS = [
    "plugins/igata-s3", "plugins/igata-sqs", "plugins/igata-dynamodb", "plugins/igata-jobs",
]  # fmt: skip
EXAMPLE_PLUGINS = ["examples/plugins/igata-http"]
PLUGIN_DEPENDENCIES = {
    "plugins/igata-sqs": ["plugins/igata-s3"],
    "plugins/igata-jobs": ["plugins/igata-s3", "plugins/igata-sqs", "plugins/igata-dynamodb"],
}


def _install_everything(session: nox.Session, *extra: str) -> None:
    editables = ["-e", ".[testing,metrics]"]
    for path in PLUGINS + EXAMPLE_PLUGINS:
        editables += ["-e", path]
    session.install(*editables, *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite: core, plugins, end to end (moto server on loopback)."""
    # The scaffold tests lint the plugins they generate with ruff; tests/packaging builds
    # the wheels with build.
    _install_everything(
        session, "hypothesis", "scikit-learn", "psutil", "pytest-xdist", "pytest-rerunfailures",
        "ruff", "build",
    )  # fmt: skip
    paths = ["tests"] + [f"{path}/tests" for path in PLUGINS + EXAMPLE_PLUGINS]
    # In CI, a test that fails once is run once more and reported as "rerun" in the summary:
    # many tests here wait on real processes and a real server on a 2-core machine.
    reruns = ["--reruns", "1"] if os.environ.get("CI") else []
    session.run("pytest", "-n", "2", "--dist", "loadfile", *reruns, *paths, *session.posargs)


@nox.session(python=PYTHON)
@nox.parametrize("plugin", PLUGINS + EXAMPLE_PLUGINS)
def isolated(session: nox.Session, plugin: str) -> None:
    """One plugin installed from its built wheel with igata-core's wheel only, as users get
    them from the index: an undeclared dependency or a file left out of a wheel fails here."""
    session.install("build")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for source in [".", *PLUGIN_DEPENDENCIES.get(plugin, []), plugin]:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), source, silent=True)
    core = next(dist.glob("igata_core-*.whl"))
    wheels = [str(wheel) for wheel in sorted(dist.glob("*.whl"))]
    session.install(f"{core}[testing]", *wheels)
    # A reused venv may hold an editable install of the same version: replace it.
    session.install("--force-reinstall", "--no-deps", *wheels)
    # The plugin's own pytest configuration and rootdir: the repository's root conftest and
    # its pythonpath would import igata_core from the source tree instead of the wheel.
    session.run(
        "pytest", "-p", "no:cacheprovider", "-c", f"{plugin}/pyproject.toml",
        "--rootdir", plugin, f"{plugin}/tests", *session.posargs,
    )  # fmt: skip


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on the core."""
    session.install("mypy", "-e", ".[testing]")
    session.run("mypy", "igata_core")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job end to end: an SQS -> DynamoDB worker job on a local AWS (moto server)."""
    _install_everything(session, "scikit-learn")
    session.run("python", "-m", "examples.demo", *session.posargs)


@nox.session(python=PYTHON, name="demo-job")
def demo_job(session: nox.Session) -> None:
    """A batch job on a local AWS: 2,000 images, igata submit, 4 worker processes,
    igata status --watch until done, igata export, the counts checked."""
    _install_everything(session)
    session.run("python", "-m", "examples.demo_job", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against baselines run side by side (see docs/benchmarks.md)."""
    _install_everything(session, "scikit-learn", "psutil")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session(python=PYTHON, name="s3-conformance")
def s3_conformance(session: nox.Session) -> None:
    """igata-s3's tests and the digits over S3 against Ceph's RADOS Gateway (checks signatures)."""
    _install_everything(session, "scikit-learn")
    session.run("bash", "scripts/s3-conformance.sh", *session.posargs, external=True)


@nox.session(python=PYTHON, name="aws-conformance")
def aws_conformance(session: nox.Session) -> None:
    """igata-sqs's and igata-dynamodb's tests, the acceptance tests, the bad-input corpus and
    the demo with SQS on LocalStack and DynamoDB on dynalite (S3 and SNS on moto); see
    docs/aws-conformance.md."""
    _install_everything(session, "hypothesis", "scikit-learn", "psutil")
    emulators = ["python", "-m", "igata_core.testing.emulators"]
    session.run(*emulators, "install")
    paths = session.posargs or [
        "plugins/igata-sqs/tests", "plugins/igata-dynamodb/tests", "plugins/igata-jobs/tests",
        "tests/conformance", "tests/corpus", "tests/test_testing_emulators.py",
    ]  # fmt: skip
    # One test process: the tests share each emulator and empty it between tests.
    session.run(*emulators, "--", "pytest", "-p", "no:cacheprovider", *paths)
    if not session.posargs:
        session.run(*emulators, "--", "python", "-m", "examples.demo")
