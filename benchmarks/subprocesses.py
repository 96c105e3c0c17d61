"""Measuring subprocesses: wall time, peak memory, and the modules a command imported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: Modules ``igata --help`` must not import (they cost start-up time; see STYLE.md).
HEAVY_MODULES = ("boto3", "botocore", "numpy", "PIL", "moto")


def igata_command() -> list[str]:
    """The installed ``igata`` script, run by this interpreter."""
    script = Path(sys.executable).with_name("igata")
    if not script.exists():
        raise FileNotFoundError(f"no igata script beside {sys.executable}: pip install -e .")
    return [sys.executable, str(script)]


def compile_sources(root: Path) -> None:
    """Byte-compile the project's sources under ``root``, as pip does when it installs a
    wheel. An editable install run with ``PYTHONDONTWRITEBYTECODE=1`` (set on some
    machines) would otherwise compile every changed module at every start: that is not
    the start-up users get."""
    import compileall

    for directory in [root / "igata_core", root / "benchmarks", *root.glob("plugins/*"),
                      *root.glob("examples/plugins/*")]:  # fmt: skip
        compileall.compile_dir(directory, quiet=2, workers=1)


def wall_time(argv: Sequence[str], *, env: dict[str, str] | None = None) -> float:
    """Seconds from spawn to exit; a non-zero exit is an error (the figure would lie)."""
    started = time.perf_counter()
    done = subprocess.run(list(argv), capture_output=True, env=env, timeout=120)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.decode()[-2000:]}"
        )
    return elapsed


_IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s*(\S+)")


def imported_modules(argv: Sequence[str]) -> set[str]:
    """Top-level names of the modules a Python command imported (``-X importtime``)."""
    python, *rest = argv
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run([python, *rest], capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
        raise RuntimeError(
            f"{' '.join(argv)} exited with {done.returncode}: {chr(10).join(errors)[-2000:]}"
        )
    names = set()
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            names.add(match.group(1).split(".")[0])
    return names


# Runs the command as its only child and prints that child's peak RSS (kilobytes on Linux).
_RSS_PROBE = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def peak_rss_mb(argv: Sequence[str], *, env: dict[str, str] | None = None) -> float:
    """Peak resident memory (MiB) of one fresh process running ``argv`` to its end.

    Linux keeps, as a child's peak, the memory of the process it was forked from until
    ``exec``; a child of this (large) benchmark process would report at least our own
    size. So a small probe interpreter starts the command and reports its peak.
    """
    done = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, *argv], capture_output=True, env=env, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {done.returncode}: {done.stderr.decode()[-2000:]}"
        )
    kilobytes = int(done.stdout.split()[-1])
    # Linux reports kilobytes, macOS bytes.
    return kilobytes / (1 << 20 if sys.platform == "darwin" else 1 << 10)
