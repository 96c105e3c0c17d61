"""igata-jobs' figures: ``igata submit`` and ``igata export`` against hand-written boto3,
and a job's wall time with 1, 2 and 4 workers.

* **submit**: the objects under a prefix become request messages (10 requests a message,
  ``SendMessageBatch`` of 10). The baseline is what a careful engineer writes: a
  ``list_objects_v2`` paginator and a loop of batched sends. igata adds the request ids,
  the size checks and a cursor written after every batch. Goal: >= 0.9x.
* **export**: a collection's RESULTS to a JSON Lines file. Baselines: a Query of the
  ``collection_id-state-index`` with ``BatchGetItem`` of the RESULTS keys (the same reads
  as igata's; goal >= 0.9x), and a Scan of RESULTS in 4 parallel segments, each writing
  lines by hand. The Scan exports the whole table without finding the collection's
  completed requests first (right only when the table holds one job, as here): it skips
  the index Query that any collection export needs, about a third of the server's work
  for this table, so it is a reference figure, not a like-for-like baseline. The moto
  server runs in this process, so every figure here is bound by its CPU (one core, the
  GIL): client and server work add up.
* **job**: images submitted, then W ``igata run --source sqs --sink dynamodb`` processes
  until ``igata status`` says done. On the local moto server the bound is the server
  itself: one Python process serving S3, SQS and DynamoDB, at 90-95% of one core already
  with one worker, while the workers use 20-40% of a core between them. The row records
  both (``extra``), so 4 workers are not faster here; on AWS the services scale and the
  workers are the bound.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import igata_jobs  # noqa: F401  (skips the module when the plugin is not installed)

from benchmarks.harness import BenchContext, Measurement, benchmark
from benchmarks.images import jpeg_images

BUCKET = "bench-jobs"
REQUESTS_TABLE = "bench-jobs-requests"
RESULTS_TABLE = "bench-jobs-results"
_names = itertools.count()
_ROOT = Path(__file__).resolve().parents[1]


def _client(service: str, pool: int = 10) -> Any:
    import boto3
    from botocore.config import Config

    extra = {"s3": {"addressing_style": "path"}} if service == "s3" else {}
    return boto3.session.Session().client(
        service, config=Config(max_pool_connections=pool, **extra)
    )


def _fill_bucket(count: int, prefix: str, body: bytes | list[bytes] = b"x") -> None:
    s3 = _client("s3", 16)
    with contextlib.suppress(Exception):  # exists
        s3.create_bucket(Bucket=BUCKET)
    bodies = body if isinstance(body, list) else [body]

    def put(n: int) -> None:
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}img-{n:06d}.jpg", Body=bodies[n % len(bodies)])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


# -- submit ------------------------------------------------------------------------------


def _submit_igata(prefix: str, count: int, state: Path) -> float:
    from igata_jobs.submit import SubmitSettings, submit

    url = _client("sqs").create_queue(QueueName=f"bench-submit-{next(_names)}")["QueueUrl"]
    os.environ["IGATA_STATE_DIR"] = str(state)
    started = time.perf_counter()
    report = submit(SubmitSettings([f"s3://{BUCKET}/{prefix}"], url), say=lambda _: None)
    seconds = time.perf_counter() - started
    assert report.requests == count, report
    return count / seconds


def _submit_baseline(prefix: str, count: int) -> float:
    import hashlib
    import uuid

    sqs, s3 = _client("sqs"), _client("s3")
    url = sqs.create_queue(QueueName=f"bench-submit-{next(_names)}")["QueueUrl"]
    collection = str(uuid.uuid4())
    started = time.perf_counter()
    requests: list[dict[str, str]] = []
    bodies: list[str] = []
    sent = 0

    def send() -> None:
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed")

    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            uri = f"s3://{BUCKET}/{obj['Key']}"
            rid = hashlib.sha256(f"{collection}\x1f{uri}".encode()).hexdigest()[:32]
            requests.append(
                {"collection_id": collection, "image_id": uri, "s3_uri": uri, "request_id": rid}
            )
            if len(requests) == 10:
                bodies.append(json.dumps(requests))
                sent += len(requests)
                requests = []
                if len(bodies) == 10:
                    send()
                    bodies = []
    if requests:
        bodies.append(json.dumps(requests))
        sent += len(requests)
    if bodies:
        send()
    seconds = time.perf_counter() - started
    assert sent == count
    return count / seconds


@benchmark("jobs", "igata submit vs a hand-written batched boto3 enqueue loop")
def submit_bench(ctx: BenchContext) -> list[Measurement]:
    ctx.local_aws()
    count = 1000 if ctx.quick else 3000
    prefix = "submit/"
    _fill_bucket(count, prefix)
    state = ctx.tmp_path / "state"
    samples = ctx.repeat_interleaved(
        {
            "igata": lambda: _submit_igata(prefix, count, state),
            "loop": lambda: _submit_baseline(prefix, count),
        },
        warmup=1,
    )
    return [
        Measurement(
            title=f"submit {count} objects of a prefix (10 per message)",
            unit="requests/s",
            igata=samples["igata"],
            baselines={"list_objects_v2 + send_message_batch loop": samples["loop"]},
            target=">= 0.9x the hand-written loop",
        )
    ]


# -- export ------------------------------------------------------------------------------


def _fill_collection(count: int, collection: str) -> None:
    from igata_dynamodb.layout import Layout
    from igata_dynamodb.records import results_hashkey
    from igata_dynamodb.tables import Capacity, create_tables

    ddb = _client("dynamodb", 16)
    create_tables(ddb, Layout(REQUESTS_TABLE, RESULTS_TABLE), Capacity())
    now = int(time.time())

    def write(start: int) -> None:
        requests, results = [], []
        for n in range(start, min(start + 25, count)):
            rid, uri = f"r-{n:06d}", f"s3://{BUCKET}/img-{n:06d}.jpg"
            requests.append(
                {
                    "PutRequest": {
                        "Item": {
                            "request_id": {"S": rid},
                            "collection_id": {"S": collection},
                            "state": {"S": "completed"},
                            "s3_uri": {"S": uri},
                            "results_count": {"N": "1"},
                            "updated_at_timestamp": {"N": str(now)},
                        }
                    }
                }
            )
            results.append(
                {
                    "PutRequest": {
                        "Item": {
                            "hashkey": {"S": results_hashkey(rid, 0)},
                            "s3_uri": {"S": uri},
                            "request_id": {"S": rid},
                            "label": {"S": "cat"},
                            "score": {"N": "0.91"},
                            "position__x1": {"N": "10"},
                            "position__y1": {"N": "20"},
                        }
                    }
                }
            )
        ddb.batch_write_item(RequestItems={REQUESTS_TABLE: requests, RESULTS_TABLE: results})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(0, count, 25)))


def _export_igata(collection: str, count: int, out: Path) -> float:
    from igata_jobs.export import ExportSettings, export

    started = time.perf_counter()
    report = export(ExportSettings(collection, str(out), REQUESTS_TABLE, RESULTS_TABLE))
    seconds = time.perf_counter() - started
    assert report.results == count, report
    return count / seconds


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in item.items()}


def _export_query_loop(collection: str, count: int, out: Path) -> float:
    from igata_dynamodb.records import results_hashkey

    ddb = _client("dynamodb")
    started = time.perf_counter()
    written = 0
    with out.open("w") as sink:
        paginator = ddb.get_paginator("query")
        for page in paginator.paginate(
            TableName=REQUESTS_TABLE,
            IndexName="collection_id-state-index",
            KeyConditionExpression="collection_id = :c AND #s = :s",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":c": {"S": collection}, ":s": {"S": "completed"}},
        ):
            keys = [
                {"hashkey": {"S": results_hashkey(i["request_id"]["S"], 0)}, "s3_uri": i["s3_uri"]}
                for i in page["Items"]
            ]
            for start in range(0, len(keys), 100):
                request = {RESULTS_TABLE: {"Keys": keys[start : start + 100]}}
                while request:
                    response = ddb.batch_get_item(RequestItems=request)
                    for item in response["Responses"][RESULTS_TABLE]:
                        sink.write(json.dumps(_plain(item), default=str) + "\n")
                        written += 1
                    request = response.get("UnprocessedKeys") or {}
    seconds = time.perf_counter() - started
    assert written == count
    return count / seconds


def _export_scan(count: int, out: Path, segments: int = 4) -> float:
    ddb = _client("dynamodb", segments + 2)
    started = time.perf_counter()

    def scan(segment: int) -> list[str]:
        lines = []
        for page in ddb.get_paginator("scan").paginate(
            TableName=RESULTS_TABLE, Segment=segment, TotalSegments=segments
        ):
            lines += [json.dumps(_plain(item), default=str) + "\n" for item in page["Items"]]
        return lines

    with ThreadPoolExecutor(segments) as pool, out.open("w") as sink:
        written = 0
        for lines in pool.map(scan, range(segments)):
            sink.writelines(lines)
            written += len(lines)
    seconds = time.perf_counter() - started
    assert written == count
    return count / seconds


@benchmark("jobs", "igata export vs a hand-written Query/Scan loop")
def export_bench(ctx: BenchContext) -> list[Measurement]:
    ctx.local_aws()
    count = 1000 if ctx.quick else 3000
    _fill_collection(count, "bench")
    out = ctx.tmp_path / "out.jsonl"
    samples = ctx.repeat_interleaved(
        {
            "igata": lambda: _export_igata("bench", count, out),
            "query": lambda: _export_query_loop("bench", count, out),
            "scan": lambda: _export_scan(count, out),
        },
        warmup=1,
    )
    return [
        Measurement(
            title=f"export {count} RESULTS items of a collection to JSON Lines",
            unit="results/s",
            igata=samples["igata"],
            baselines={
                "Query index + BatchGetItem loop": samples["query"],
                "Scan in 4 parallel segments": samples["scan"],
            },
            target=">= 0.9x the Query + BatchGetItem loop (the Scan: see the module notes)",
        )
    ]


# -- job wall time -----------------------------------------------------------------------


def _job(workers: int, count: int, aws: Any, tmp: Path) -> tuple[float, float, float]:
    """(wall seconds, this process's CPU and the workers' CPU, each in cores, while the
    job ran). This process is the moto server (plus ``read_status`` every 0.25 s)."""
    from igata_jobs.aws import dynamodb_client
    from igata_jobs.aws import layout as make_layout
    from igata_jobs.status import read_status

    n = next(_names)
    sqs = _client("sqs")
    queue = sqs.create_queue(QueueName=f"bench-job-{n}", Attributes={"VisibilityTimeout": "30"})[
        "QueueUrl"
    ]
    env = {
        **os.environ,
        **aws.env(),
        "PYTHONPATH": str(_ROOT),
        "IGATA_STATE_DIR": str(tmp / f"state-{n}"),
        "OUTPUT_CTXMGR_REQUESTS_TABLENAME": REQUESTS_TABLE,
        "OUTPUT_CTXMGR_RESULTS_TABLENAME": RESULTS_TABLE,
        "INPUT_CTXMGR_SQS_QUEUE_URL": queue,
    }
    collection = f"job-{n}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "igata_core",
            "submit",
            f"s3://{BUCKET}/job/",
            "--collection-id",
            collection,
            "--no-progress",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    layout = make_layout(REQUESTS_TABLE)
    ddb = dynamodb_client()
    started = time.perf_counter()
    server_cpu = time.process_time()
    children = os.times()
    logs = [(tmp / f"job-{n}-worker-{w}.log").open("wb") for w in range(workers)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "igata_core",
                "run",
                "--source",
                "sqs",
                "--sink",
                "dynamodb",
                "--predictor",
                "benchmarks.predictors:NoopPredictor",
                "--source-opt",
                "idle_timeout=2",
                "--batch-size",
                "16",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    try:
        while not read_status(ddb, layout, collection).done:
            if all(proc.poll() is not None for proc in procs):
                raise RuntimeError(f"the workers ended before the job was done (logs in {tmp})")
            time.sleep(0.25)
        seconds = time.perf_counter() - started
        server = (time.process_time() - server_cpu) / seconds
    finally:
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
    # The workers' CPU once they have ended (they idle out 2 s after the job: little).
    ended = os.times()
    worker_cpu = ended.children_user + ended.children_system
    worker_cpu -= children.children_user + children.children_system
    return seconds, server, worker_cpu / seconds


@benchmark("jobs", "job wall time with 1, 2 and 4 workers")
def job_bench(ctx: BenchContext) -> list[Measurement]:
    from igata_dynamodb.layout import Layout
    from igata_dynamodb.tables import Capacity, create_tables

    aws = ctx.local_aws()
    count = 200 if ctx.quick else 600
    _fill_bucket(count, "job/", jpeg_images(16))
    create_tables(_client("dynamodb"), Layout(REQUESTS_TABLE, RESULTS_TABLE), Capacity())
    runs: dict[int, list[float]] = {1: [], 2: [], 4: []}
    cpu: dict[str, list[str]] = {}
    rounds = 1 if ctx.quick else 2
    for _ in range(rounds):
        for workers in runs:
            seconds, server, worker_cpu = _job(workers, count, aws, ctx.tmp_path)
            runs[workers].append(seconds)
            cpu.setdefault(f"{workers} worker(s)", []).append(
                f"moto {server:.0%} of a core, workers {worker_cpu:.0%}"
            )
    return [
        Measurement(
            title=f"job of {count} images: 4 workers (ratios: speed-up over 1 and 2)",
            unit="s",
            igata=runs[4],
            baselines={"1 worker": runs[1], "2 workers": runs[2]},
            higher_is_better=False,
            target="near-linear until the local server is the bound (see the module notes)",
            extra={"CPU while the job ran": cpu},
        )
    ]
