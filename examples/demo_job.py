"""A batch job across a fleet on a local AWS: ``nox -s demo-job`` runs
``python -m examples.demo_job``.

    python -m examples.demo_job [--count N] [--workers N] [--bad N] [--keep DIR]

No cloud account is needed: AWS is moto in server mode on a free loopback port (SQS and
DynamoDB go to the strict emulators when ``IGATA_TEST_SQS_ENDPOINT`` /
``IGATA_TEST_DYNAMODB_ENDPOINT`` are set). The demo

1. uploads N small PNG images under ``s3://igata-job-images/photos/`` (the last ``--bad``
   of them corrupt), creates a request queue with a dead-letter queue and the REQUESTS and
   RESULTS tables (``igata dynamodb create-tables``);
2. ``igata submit s3://igata-job-images/photos/ --requests-table …``: one ``queued``
   REQUESTS item and one request per image, in messages of 10; then the same submit again,
   which must add no message;
3. starts W ``igata run --source sqs --sink dynamodb`` workers as separate processes and
   follows ``igata status COLLECTION --watch`` until the job is done;
4. ``igata export COLLECTION --to results.jsonl --errors-to errors.jsonl``;
5. prints the figures and checks that they match: N submitted, completed + error = N,
   N - errors results exported, the bad images (and only they) failed.

Exit status: 0 when the counts match, 1 when not, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from igata_core import PredictorBase

BUCKET = "igata-job-images"
QUEUE = "igata-job-requests"
DEAD_LETTER_QUEUE = "igata-job-requests-dlq"
REQUESTS_TABLE = "igata-job-requests"
RESULTS_TABLE = "igata-job-results"
MAX_RECEIVE_COUNT = 2
VISIBILITY_TIMEOUT = 10
IDLE_TIMEOUT = 3
JOB_TIMEOUT = 600

_REPO_ROOT = Path(__file__).resolve().parents[1]
IGATA = [sys.executable, "-m", "igata_core"]
_INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TEMP",
    "TMP",
    "SYSTEMROOT",
    "VIRTUAL_ENV",
)


class Brightness(PredictorBase):
    """The demo's model: an image's mean brightness, and 'light' or 'dark'."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        brightness = round(float(input_record.mean()) / 255, 4)
        return {
            "result": [
                {"label": "light" if brightness >= 0.5 else "dark", "brightness": brightness}
            ]
        }


def _png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade % 256, (shade * 7) % 256, 120)).save(buffer, "PNG")
    return buffer.getvalue()


def _igata(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([*IGATA, *args], env=env, cwd=_REPO_ROOT, text=True, **kwargs)


def _depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return sum(
        int(attributes[name])
        for name in (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
    )


def run_demo(workdir: Path, *, count: int, workers: int, bad: int) -> int:
    from igata_core.testing.aws import start_local_aws, strict_endpoints_from_env

    started = time.monotonic()
    aws = start_local_aws(strict_endpoints_from_env())
    problems: list[str] = []
    figures: dict[str, Any] = {}
    try:
        strict = "".join(
            f"; {s} on a strict emulator at {aws.url_for(s)}" for s in sorted(aws.strict)
        )
        print(f"igata demo-job: a batch job on a local AWS (moto server at {aws.url}{strict})")
        env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
        env.update(aws.env())
        env.update(
            {
                "PYTHONPATH": str(_REPO_ROOT),
                "IGATA_STATE_DIR": str(workdir / "state"),
                "OUTPUT_CTXMGR_REQUESTS_TABLENAME": REQUESTS_TABLE,
                "OUTPUT_CTXMGR_RESULTS_TABLENAME": RESULTS_TABLE,
                "SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION": "1",
            }
        )
        s3, sqs = aws.client("s3"), aws.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        dlq = sqs.create_queue(QueueName=DEAD_LETTER_QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        queue = sqs.create_queue(
            QueueName=QUEUE,
            Attributes={
                "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
                ),
            },
        )["QueueUrl"]
        env["INPUT_CTXMGR_SQS_QUEUE_URL"] = queue
        made = _igata(["dynamodb", "create-tables"], env, capture_output=True)
        if made.returncode:
            raise SystemExit(f"create-tables failed:\n{made.stdout}{made.stderr}")

        bad_keys = {f"photos/img-{n:05d}.png" for n in range(count - bad, count)}

        def put(n: int) -> None:
            key = f"photos/img-{n:05d}.png"
            body = b"\x89PNG\r\n\x1a\n not an image" if key in bad_keys else _png(n)
            s3.put_object(Bucket=BUCKET, Key=key, Body=body)

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(count)))
        print(f"  uploaded {count} PNG images ({bad} corrupt) in {time.monotonic() - t0:.1f} s")

        # 2. submit, and submit again.
        source = f"s3://{BUCKET}/photos/"
        t0 = time.monotonic()
        submitted = _igata(["submit", source, "--no-progress"], env, capture_output=True)
        figures["submit_seconds"] = time.monotonic() - t0
        print("  $ igata submit " + source + "\n" + _indent(submitted.stdout + submitted.stderr))
        if submitted.returncode:
            raise SystemExit("submit failed")
        collection = re.search(r"^collection: (\S+)", submitted.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]
        sent = int(re.search(r"sent (\d+) requests", submitted.stdout).group(1))  # type: ignore[union-attr]
        figures["submitted"] = sent
        depth = _depth(sqs, queue)
        again = _igata(["submit", source, "--no-progress"], env, capture_output=True)
        print("  $ igata submit " + source + "   (again)\n" + _indent(again.stdout))
        figures["messages_after_second_submit"] = _depth(sqs, queue) - depth

        # 3. the workers, and status --watch until done.
        logs = []
        procs = []
        t0 = time.monotonic()
        for number in range(1, workers + 1):
            log = workdir / f"worker-{number}.log"
            logs.append(log)
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            *IGATA,
                            "run",
                            "--source",
                            "sqs",
                            "--sink",
                            "dynamodb",
                            "--predictor",
                            "examples.demo_job:Brightness",
                            "--source-opt",
                            f"idle_timeout={IDLE_TIMEOUT}",
                            "--batch-size",
                            "16",
                        ],
                        env=env,
                        cwd=_REPO_ROOT,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        print(
            f"  started {workers} workers: igata run --source sqs --sink dynamodb "
            "--predictor examples.demo_job:Brightness"
        )
        print(f"  $ igata status {collection} --watch --interval 3 --queue {QUEUE}", flush=True)
        watch = _igata(
            ["status", collection, "--watch", "--interval", "3", "--queue", queue],
            env,
            timeout=JOB_TIMEOUT,
        )
        figures["job_seconds"] = time.monotonic() - t0
        codes = [p.wait(timeout=60) for p in procs]
        print(f"  status exited {watch.returncode}; workers exited {codes}")
        if any(codes):
            problems.append(f"a worker failed: exit codes {codes}")

        # 4. export.
        out, errors = workdir / "results.jsonl", workdir / "errors.jsonl"
        t0 = time.monotonic()
        exported = _igata(
            ["export", collection, "--to", str(out), "--errors-to", str(errors)],
            env,
            capture_output=True,
        )
        figures["export_seconds"] = time.monotonic() - t0
        print(
            f"  $ igata export {collection} --to results.jsonl --errors-to errors.jsonl\n"
            + _indent(exported.stdout + exported.stderr)
        )
        final = json.loads(
            _igata(["status", collection, "--json"], env, capture_output=True).stdout
        )
    finally:
        aws.stop()

    results = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    failed = (
        [json.loads(line) for line in errors.read_text().splitlines()] if errors.exists() else []
    )
    completed, error = final["states"]["completed"], final["states"]["error"]
    print(
        "figures:\n"
        f"  submitted {figures['submitted']} requests in {figures['submit_seconds']:.1f} s; "
        f"a second submit added {figures['messages_after_second_submit']} messages\n"
        f"  {workers} workers: completed {completed} + error {error} = {completed + error} "
        f"in {figures['job_seconds']:.1f} s ({count / figures['job_seconds']:.0f} images/s)\n"
        f"  exported {len(results)} results and {len(failed)} errors in "
        f"{figures['export_seconds']:.1f} s\n"
        f"  total {time.monotonic() - started:.1f} s"
    )
    if figures["submitted"] != count:
        problems.append(f"submitted {figures['submitted']}, expected {count}")
    if figures["messages_after_second_submit"] != 0:
        problems.append("the second submit added messages")
    if completed + error != count:
        problems.append(f"completed + error = {completed + error}, expected {count}")
    if len(results) != count - error:
        problems.append(f"exported {len(results)} results, expected {count - error}")
    failed_keys = {r["s3_uri"].removeprefix(f"s3://{BUCKET}/") for r in failed}
    if failed_keys != bad_keys:
        problems.append(f"failed: {sorted(failed_keys)[:5]}…, expected the {bad} corrupt images")
    if problems:
        print("demo-job FAILED:\n" + "\n".join(f"  - {p}" for p in problems))
        return 1
    print("demo-job OK")
    return 0


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo_job",
        description="A batch job on a local AWS: igata submit, W igata run workers, igata "
        "status --watch, igata export, and the figures.",
    )
    parser.add_argument("--count", type=int, default=2000, help="Images (default 2000).")
    parser.add_argument("--workers", type=int, default=4, help="Worker processes (default 4).")
    parser.add_argument(
        "--bad", type=int, default=10, help="How many of the images are corrupt (default 10)."
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="Keep the working directory (logs, cursor, exports) in DIR.",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.workers < 1 or not 0 <= args.bad < args.count:
        parser.error("need --count >= 1, --workers >= 1 and 0 <= --bad < --count")
    settings = {"count": args.count, "workers": args.workers, "bad": args.bad}
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return run_demo(args.keep.resolve(), **settings)
    with tempfile.TemporaryDirectory(prefix="igata-demo-job-") as tmp:
        return run_demo(Path(tmp), **settings)


if __name__ == "__main__":
    sys.exit(main())
