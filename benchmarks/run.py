"""Run benchmarks: ``python -m benchmarks.run [AREA...] [--quick] [--json PATH] [--compare OLD]``.

Areas are the benchmark modules ``benchmarks/bench_<area>.py``; all of them by default. A
module that fails to import (its plugin is not installed) is reported as skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.report import format_comparison, format_results

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR.parent / ".bench"


def available_areas() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=BENCH_DIR.parent,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def _import_areas(areas: list[str]) -> list[dict[str, Any]]:
    """Import each area's module; a failure becomes a 'skipped' entry."""
    skipped = []
    for area in areas:
        module = f"benchmarks.bench_{area}"
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import failure means: cannot run here
            skipped.append(
                {
                    "area": area,
                    "title": module,
                    "name": module,
                    "status": "skipped",
                    "reason": f"{module} failed to import: {type(exc).__name__}: {exc}",
                    "seconds": 0.0,
                    "measurements": [],
                }
            )
    return skipped


def run_benchmarks(areas: list[str], *, quick: bool, log: Any = sys.stderr) -> dict[str, Any]:
    """Import the modules of ``areas``, run their benchmarks, return the results document."""
    skipped = _import_areas(areas)
    return run_specs(list(harness.iter_area_specs(areas)), quick=quick, log=log, entries=skipped)


def run_specs(
    specs: list[harness.BenchmarkSpec],
    *,
    quick: bool,
    log: Any = sys.stderr,
    entries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run ``specs`` one after another; ``entries`` are earlier results (skipped modules)."""
    repeats = harness.QUICK_REPEATS if quick else harness.FULL_REPEATS
    entries = list(entries or [])
    aws = harness.AwsHolder()
    try:
        with tempfile.TemporaryDirectory(prefix="igata-bench-") as tmp:
            for index, spec in enumerate(specs):
                tmp_path = Path(tmp, f"{index:02d}-{spec.function.__name__}")
                tmp_path.mkdir()
                aws.reset()
                context = harness.BenchContext(
                    repeats=repeats, quick=quick, tmp_path=tmp_path, aws=aws
                )
                print(f"[{spec.area}] {spec.title} ...", file=log, flush=True)
                entries.append(_run_one(spec, context))
                print(
                    f"  {entries[-1]['status']} in {entries[-1]['seconds']:.1f} s",
                    file=log,
                    flush=True,
                )
    finally:
        aws.close()
    return {
        "format": 1,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
        "quick": quick,
        "repeats": repeats,
        "benchmarks": entries,
    }


def _run_one(spec: harness.BenchmarkSpec, context: harness.BenchContext) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "area": spec.area,
        "title": spec.title,
        "name": spec.name,
        "reason": "",
        "measurements": [],
    }
    started = time.perf_counter()
    try:
        measurements = spec.function(context)
        entry["measurements"] = [m.to_dict() for m in measurements]
        entry["status"] = "ok"
    except harness.BenchmarkSkipped as exc:
        entry.update(status="skipped", reason=str(exc))
    except Exception as exc:
        entry.update(status="failed", reason=f"{type(exc).__name__}: {one_line(str(exc))}")
        entry["traceback"] = traceback.format_exc()
    entry["seconds"] = round(time.perf_counter() - started, 2)
    return entry


def one_line(message: str) -> str:
    """The first and last lines of a long message (a subprocess's traceback ends with why)."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} ... {lines[-1].strip()}"


def write_json(results: dict[str, Any], path: Path | None) -> list[Path]:
    text = json.dumps(results, indent=2, allow_nan=True) + "\n"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return [path]
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = results["created"].replace(":", "").replace("-", "").replace("+0000", "Z")
    written = [RESULTS_DIR / f"results-{stamp}.json", RESULTS_DIR / "latest.json"]
    for target in written:
        target.write_text(text)
    return written


def main(argv: list[str] | None = None) -> int:
    areas = available_areas()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Run igata's benchmarks: every figure is a ratio against a baseline "
        "measured in the same run (see docs/benchmarks.md).",
    )
    parser.add_argument(
        "areas", nargs="*", metavar="AREA", help=f"Areas to run (default: all): {', '.join(areas)}."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{harness.QUICK_REPEATS} repeats instead of "
        f"{harness.FULL_REPEATS}, smaller data where a benchmark allows.",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="Write results here (default: .bench/results-<time>.json and .bench/latest.json).",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="OLD.json",
        help="Print the change of every figure against an earlier result file.",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="NEW.json",
        help="With --compare: compare with this file instead of running.",
    )
    args = parser.parse_args(argv)

    old = None
    if args.compare is not None:
        try:
            old = json.loads(args.compare.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"--compare {args.compare}: cannot read results: {exc}")
    if args.against is not None:
        if old is None:
            parser.error("--against needs --compare OLD.json")
        try:
            new = json.loads(args.against.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"--against {args.against}: cannot read results: {exc}")
        print(format_comparison(old, new))
        return 0

    unknown = [a for a in args.areas if a not in areas]
    if unknown:
        parser.error(f"unknown area(s) {', '.join(unknown)}; available: {', '.join(areas)}")
    results = run_benchmarks(args.areas or areas, quick=args.quick)
    print(format_results(results))
    for path in write_json(results, args.json):
        print(f"results written to {path}", file=sys.stderr)
    if old is not None:
        print()
        print(format_comparison(old, results))
    failed = [b for b in results["benchmarks"] if b["status"] == "failed"]
    for bench in failed:
        print(
            f"\n[{bench['area']}] {bench['title']} failed:\n{bench.get('traceback', '')}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
