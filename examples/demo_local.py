"""The local-files demo: a real model, real files, the real ``igata run`` command.

    python -m examples.demo_local [--workdir DIR] [--count N] [--batch-size N]

(The main job, an SQS -> DynamoDB worker run on a local AWS, is ``python -m examples.demo``.)

It trains the digits classifier on scikit-learn's bundled data set (under a second), writes
the test split as PNG files named after their labels plus two undecodable .png files, runs
``igata run --source files --sink jsonl`` on them in a subprocess, and checks the outcome:
a prediction for every digit, accuracy of at least 0.85, the two bad files (and only they)
in the errors file, exit code 1 (a finite run with failed records). The demo exits 0 when
all of that holds, 1 when not, 2 on a usage error. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples.digits.images import BAD_INPUT_NAMES, label_from_name
from igata_core import RECORD_INPUT_KEY

MIN_ACCURACY = 0.85
EXPECTED_EXIT_CODE = 1  # the two bad inputs make it a finite run with failed records
RUN_TIMEOUT_SECONDS = 120
_REPO_ROOT = Path(__file__).resolve().parents[1]


class DemoError(Exception):
    """The demo cannot run as asked (exit code 2)."""


@dataclass
class Check:
    """What the demo found in igata's outputs; ``problems`` empty means all is as expected."""

    predictions: int = 0
    correct: int = 0
    misclassified: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.predictions if self.predictions else 0.0


def igata_command(images: Path, predictions: Path, errors: Path, *, batch_size: int) -> list[str]:
    """The ``igata run`` command line of the demo (through this interpreter)."""
    return [
        sys.executable, "-m", "igata_core", "run",
        "--source", "files",
        "--sink", "jsonl",
        "--sink-opt", f"path={predictions}",
        "--predictor", "examples.digits:DigitsPredictor",
        "--errors", str(errors),
        "--batch-size", str(batch_size),
        str(images),
    ]  # fmt: skip


def prepare_images_dir(images: Path) -> None:
    """Empty ``images`` of an earlier demo's files; refuse to touch anything else."""
    if not images.exists():
        return
    if not images.is_dir():
        raise DemoError(f"demo: {images} exists and is not a directory; choose another --workdir")
    foreign = [
        p for p in images.iterdir() if label_from_name(p) is None and p.name not in BAD_INPUT_NAMES
    ]
    if foreign:
        raise DemoError(
            f"demo: {images} holds files the demo did not write (e.g. {foreign[0].name}); "
            "choose another --workdir"
        )
    for path in images.iterdir():
        path.unlink()


def check_outputs(
    expected: dict[Path, int], bad_inputs: list[Path], predictions: Path, errors: Path
) -> Check:
    """Compare igata's predictions and errors files with what the inputs should give."""
    check = Check()
    wanted = {_key(path): label for path, label in expected.items()}
    seen: set[str] = set()
    for record in _read_jsonl(predictions, check):
        ref = _key(record.get(RECORD_INPUT_KEY, ""))
        if ref not in wanted:
            check.problems.append(f"prediction for an unexpected input: {ref or record!r}")
            continue
        if ref in seen:
            check.problems.append(f"two predictions for {ref}")
            continue
        seen.add(ref)
        check.predictions += 1
        if record.get("label") == wanted[ref]:
            check.correct += 1
        else:
            check.misclassified.append(
                f"{Path(ref).name} -> {record.get('label')} "
                f"(confidence {record.get('confidence', 0.0):.2f})"
            )
    missing = sorted(set(wanted) - seen)
    if missing:
        check.problems.append(
            f"no prediction for {len(missing)} of {len(wanted)} digit images "
            f"(first: {Path(missing[0]).name})"
        )
    if check.predictions and check.accuracy < MIN_ACCURACY:
        check.problems.append(f"accuracy {check.accuracy:.3f} is below {MIN_ACCURACY}")

    check.errors = _read_jsonl(errors, check)
    failed = sorted(_key(e.get("input", "")) for e in check.errors)
    if failed != sorted(_key(p) for p in bad_inputs):
        check.problems.append(
            f"errors file names {[Path(f).name for f in failed]}, expected exactly "
            f"{[p.name for p in bad_inputs]}"
        )
    return check


def run_demo(workdir: Path, *, count: int | None, batch_size: int) -> int:
    from examples.digits.images import write_bad_inputs, write_test_pngs
    from examples.digits.model import MODEL_PATH_ENV, load_split, save_model, train_model

    workdir.mkdir(parents=True, exist_ok=True)
    images = workdir / "images"
    model_path = workdir / "digits.joblib"
    predictions = workdir / "predictions.jsonl"
    errors = workdir / "errors.jsonl"
    prepare_images_dir(images)
    for stale in (predictions, errors):
        stale.unlink(missing_ok=True)
    print(f"igata demo in {workdir}")

    started = time.monotonic()
    split = load_split()
    model = train_model(split)
    save_model(model, model_path)
    test_features = split.test_images.reshape(len(split.test_images), -1)
    print(
        f"  trained the digits model in {time.monotonic() - started:.1f} s "
        f"(accuracy {model.score(test_features, split.test_labels):.3f} on the "
        f"{len(split.test_labels)} test images) -> {model_path.name}"
    )
    try:
        expected = write_test_pngs(images, count, split=split)
    except ValueError as exc:
        raise DemoError(f"demo: --count: {exc}") from None
    bad_inputs = write_bad_inputs(images)
    print(f"  wrote {len(expected)} digit PNGs and {len(bad_inputs)} bad .png files to {images}")

    command = igata_command(images, predictions, errors, batch_size=batch_size)
    env = dict(os.environ)
    env[MODEL_PATH_ENV] = str(model_path)
    # The predictor is imported by name in the child; `examples` is not an installed package.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    print(f"  running: {shlex.join(command)}", flush=True)
    started = time.monotonic()
    try:
        exit_code = subprocess.run(
            command, env=env, cwd=_REPO_ROOT, timeout=RUN_TIMEOUT_SECONDS, check=False
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"demo FAILED: igata did not finish within {RUN_TIMEOUT_SECONDS} s")
        return 1
    print(f"  igata exited with {exit_code} after {time.monotonic() - started:.1f} s")

    check = check_outputs(expected, bad_inputs, predictions, errors)
    if exit_code != EXPECTED_EXIT_CODE:
        check.problems.append(
            f"igata exited with {exit_code}, expected {EXPECTED_EXIT_CODE} "
            "(a finite run in which some records failed)"
        )
    print(
        f"  predictions: {check.predictions} of {len(expected)} digit images, "
        f"accuracy {check.accuracy:.3f} ({check.correct} right)"
    )
    if check.misclassified:
        shown = ", ".join(check.misclassified[:5])
        more = f" and {len(check.misclassified) - 5} more" if len(check.misclassified) > 5 else ""
        print(f"  misclassified: {shown}{more}")
    print(f"  errors ({len(check.errors)}):")
    for error in check.errors:
        print(
            f"    {Path(str(error.get('input', '?'))).name}: {error.get('stage')}: "
            f"{error.get('error_type')}: {error.get('message')}"
        )
    if check.problems:
        print("demo FAILED:")
        for problem in check.problems:
            print(f"  - {problem}")
        return 1
    print("demo OK")
    return 0


def _key(ref: Any) -> str:
    """One spelling per file, whichever way a path reaches the outputs."""
    return str(Path(str(ref)).resolve()) if ref else ""


def _read_jsonl(path: Path, check: Check) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        check.problems.append(f"igata wrote no {path.name}")
        return []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            check.problems.append(f"{path.name} line {number} is not JSON: {exc}")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo_local",
        description="Classify the bundled handwritten digits with `igata run` on local files.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="Directory for the model, images and outputs, kept afterwards "
        "(default: a temporary directory, removed at the end).",
    )
    parser.add_argument(
        "--count",
        type=int,
        help="Number of test images to classify (default: the whole test split, 450).",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="igata's --batch-size (default 32)."
    )
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    try:
        if args.workdir is not None:
            return run_demo(args.workdir.resolve(), count=args.count, batch_size=args.batch_size)
        with tempfile.TemporaryDirectory(prefix="igata-demo-local-") as tmp:
            return run_demo(Path(tmp), count=args.count, batch_size=args.batch_size)
    except DemoError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
