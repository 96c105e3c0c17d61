"""Strict stand-ins for SQS and DynamoDB: LocalStack's SQS provider and dynalite, on loopback.

moto accepts much that AWS refuses (any message-attribute characters, 26-item batches,
unnormalised numbers). These two are stricter, run here without Docker, and are what
``nox -s aws-conformance`` runs the igata-sqs and igata-dynamodb suites and the demo against:

* **SQS on LocalStack** (``localstack-core`` from PyPI) in its own virtual environment, on
  Python 3.13 (LocalStack needs it), started on the host: ``SERVICES=sqs``, path-style queue
  URLs on ``127.0.0.1:PORT``, its DNS server off;
* **DynamoDB on dynalite** (npm), with table create/delete delays of 0.

``install`` puts both under ``IGATA_EMULATORS_HOME`` (default ``~/.cache/igata/emulators``);
the command line starts them, runs a command with ``IGATA_TEST_SQS_ENDPOINT`` and
``IGATA_TEST_DYNAMODB_ENDPOINT`` pointing at them, and stops them::

    python -m igata_core.testing.emulators install
    python -m igata_core.testing.emulators -- pytest plugins/igata-sqs/tests
    python -m igata_core.testing.emulators --only sqs      # print the environment, wait

The test fixtures of :mod:`igata_core.testing` read those variables (see :mod:`.aws`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: What LocalStack needs besides ``localstack-core[base-runtime]``, as found on this kind of
#: machine: newer releases of these break its start-up.
LOCALSTACK_PINS = ("cbor2<6", "pyopenssl<24.3", "cryptography<44", "service_identity")
LOCALSTACK_PYTHON = "3.13"
#: The variables the test fixtures read, by service.
ENDPOINT_ENV = {"sqs": "IGATA_TEST_SQS_ENDPOINT", "dynamodb": "IGATA_TEST_DYNAMODB_ENDPOINT"}
START_TIMEOUT = 60.0


class EmulatorError(RuntimeError):
    """An emulator could not be installed or started; the message says which and why."""


def home() -> Path:
    configured = os.environ.get("IGATA_EMULATORS_HOME")
    return Path(configured) if configured else Path.home() / ".cache" / "igata" / "emulators"


def localstack_python() -> Path:
    return home() / "localstack" / "bin" / "python"


def dynalite_script() -> Path:
    return home() / "dynalite" / "node_modules" / "dynalite" / "cli.js"


# --------------------------------------------------------------------------- installing


def find_python(version: str = LOCALSTACK_PYTHON) -> str:
    """A Python ``version`` interpreter: on PATH, or under pyenv's versions."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = sorted(glob.glob(f"{pyenv_root}/versions/{version}*/bin/python"), reverse=True)
    candidates.append(shutil.which(f"python{version}") or "")
    for candidate in candidates:
        # A pyenv shim is on PATH even where that version is not selected: try it.
        if candidate and _runs(Path(candidate), "-c", "import venv"):
            return candidate
    raise EmulatorError(
        f"LocalStack needs Python {version}, and none was found (python{version} on PATH or "
        f"{pyenv_root}/versions/{version}.*); install it, e.g. `pyenv install {version}`"
    )


def install(*, quiet: bool = True) -> None:
    """Install LocalStack (its own venv) and dynalite (npm) under :func:`home`, if missing."""
    target = home()
    target.mkdir(parents=True, exist_ok=True)
    pip_quiet = ["--quiet"] if quiet else []
    if not _runs(localstack_python(), "-c", "import localstack.runtime.main"):
        venv = target / "localstack"
        _run([find_python(), "-m", "venv", "--clear", str(venv)], "creating LocalStack's venv")
        _run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", *pip_quiet,
             "localstack-core[base-runtime]", *LOCALSTACK_PINS],
            "installing localstack-core",
        )  # fmt: skip
    if not dynalite_script().exists():
        npm = shutil.which("npm")
        if npm is None:
            raise EmulatorError("dynalite needs Node.js and npm (Debian: apt-get install npm)")
        directory = target / "dynalite"
        directory.mkdir(exist_ok=True)
        _run([npm, "install", "--no-audit", "--no-fund", *(["--silent"] if quiet else []),
              "--prefix", str(directory), "dynalite"], "installing dynalite")  # fmt: skip


def _runs(python: Path, *args: str) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), *args], capture_output=True).returncode == 0


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise EmulatorError(f"{what} failed (exit {result.returncode}):\n{tail}")


# --------------------------------------------------------------------------- running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Emulator:
    """A started emulator process; ``url`` is its endpoint."""

    service: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    directory: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop it at once (LocalStack ignores SIGTERM for a while): the whole group."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_localstack_sqs(port: int | None = None, timeout: float = START_TIMEOUT) -> Emulator:
    """LocalStack's SQS provider on ``127.0.0.1:port``, queue URLs path-style on that port."""
    python = localstack_python()
    if not python.exists():
        raise EmulatorError(
            f"LocalStack is not installed ({python} is missing): "
            "python -m igata_core.testing.emulators install"
        )
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="igata-localstack-"))
    address = f"127.0.0.1:{port}"
    env = {
        **_child_env(),
        "SERVICES": "sqs",
        "EAGER_SERVICE_LOADING": "1",
        "DNS_ADDRESS": "0",
        "GATEWAY_LISTEN": address,
        "LOCALSTACK_HOST": address,
        "SQS_ENDPOINT_STRATEGY": "path",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DISABLE_EVENTS": "1",
        "FILESYSTEM_ROOT": str(directory),
        "LOCALSTACK_VOLUME_DIR": str(directory / "volume"),
        "TMPDIR": str(directory),
    }
    emulator = _spawn("sqs", [str(python), "-m", "localstack.runtime.main"], env, port, directory)
    _wait_ready(emulator, f"{emulator.url}/_localstack/health", timeout, _localstack_ready)
    return emulator


def start_dynalite(port: int | None = None, timeout: float = START_TIMEOUT) -> Emulator:
    """dynalite on ``127.0.0.1:port`` (in memory), with table changes taking no time."""
    script = dynalite_script()
    node = shutil.which("node")
    if not script.exists() or node is None:
        raise EmulatorError(
            f"dynalite is not installed ({script} is missing, or node is not on PATH): "
            "python -m igata_core.testing.emulators install"
        )
    port = port or free_port()
    command = [node, str(script), "--host", "127.0.0.1", "--port", str(port),
               "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]  # fmt: skip
    emulator = _spawn("dynamodb", command, _child_env(), port, None)
    _wait_ready(emulator, emulator.url, timeout, lambda body: True)
    return emulator


def _child_env() -> dict[str, str]:
    # The emulators must not inherit the tests' routing (AWS_ENDPOINT_URL would loop back).
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IGATA_TEST_"))}


def _spawn(
    service: str, command: list[str], env: dict[str, str], port: int, directory: Path | None
) -> Emulator:
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open by the child
        prefix=f"igata-{service}-", suffix=".log", delete=False
    )
    process = subprocess.Popen(
        command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    log_file.close()
    return Emulator(service, f"http://127.0.0.1:{port}", process, Path(log_file.name), directory)


def _localstack_ready(body: bytes) -> bool:
    return json.loads(body).get("services", {}).get("sqs") in ("running", "available")


def _wait_ready(emulator: Emulator, url: str, timeout: float, ready: object) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not emulator.running():
            emulator.stop()
            raise EmulatorError(
                f"{emulator.service} emulator exited with {emulator.process.returncode} while "
                f"starting; its log ({emulator.log_path}):\n{emulator.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if ready(response.read()):  # type: ignore[operator]
                    return
        except OSError as exc:
            # dynalite answers a bare GET with HTTP 400: it is listening.
            if getattr(exc, "code", None) == 400:
                return
        time.sleep(0.2)
    emulator.stop()
    raise EmulatorError(
        f"{emulator.service} emulator not ready after {timeout:.0f} s; its log:\n"
        f"{emulator.log_tail()}"
    )


@contextlib.contextmanager
def running(services: Sequence[str] = ("sqs", "dynamodb")) -> Iterator[dict[str, Emulator]]:
    """Start the emulators of ``services``; stop them afterwards."""
    starters = {"sqs": start_localstack_sqs, "dynamodb": start_dynalite}
    started: dict[str, Emulator] = {}
    try:
        for service in services:
            started[service] = starters[service]()
        yield started
    finally:
        for emulator in started.values():
            emulator.stop()


def test_env(emulators: dict[str, Emulator]) -> dict[str, str]:
    """The variables that point igata's ``aws`` test fixture at these emulators."""
    return {ENDPOINT_ENV[service]: emulator.url for service, emulator in emulators.items()}


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m igata_core.testing.emulators",
        description="Start LocalStack's SQS and dynalite on loopback, run COMMAND with "
        "IGATA_TEST_SQS_ENDPOINT and IGATA_TEST_DYNAMODB_ENDPOINT set, stop them. 'install' "
        "installs both under IGATA_EMULATORS_HOME (default ~/.cache/igata/emulators). Without "
        "COMMAND, print the environment and run until interrupted.",
    )
    parser.add_argument(
        "--only", choices=sorted(ENDPOINT_ENV), action="append",
        help="Start only this emulator (repeatable; default: both).",
    )  # fmt: skip
    parser.add_argument("command", nargs=argparse.REMAINDER, help="'install', or -- COMMAND...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command == ["install"]:
        try:
            install()
        except EmulatorError as exc:
            print(f"emulators: {exc}", file=sys.stderr)
            return 2
        print(f"emulators: installed under {home()}", file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    started = time.monotonic()
    try:
        with running(args.only or sorted(ENDPOINT_ENV)) as emulators:
            env = test_env(emulators)
            print(
                "emulators: " + ", ".join(f"{s} at {e.url}" for s, e in emulators.items())
                + f" ready in {time.monotonic() - started:.1f} s",
                file=sys.stderr, flush=True,
            )  # fmt: skip
            if not command:
                for key, value in env.items():
                    print(f"export {key}={value}", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while all(e.running() for e in emulators.values()):
                        time.sleep(1)
                return 0
            child = subprocess.Popen(command, env={**os.environ, **env})
            try:
                return child.wait()
            except KeyboardInterrupt:
                child.terminate()
                try:
                    return child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    return child.wait()
    except EmulatorError as exc:
        print(f"emulators: {exc}", file=sys.stderr)
        return 2


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
