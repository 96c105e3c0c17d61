"""Scale-out: 1, 2 and 4 ``igata run --source sqs --sink dynamodb`` workers on one queue.

The model waits instead of computing (a sleep standing in for GPU latency: a fixed cost
per ``predict_batch`` call plus a little per record), so it uses no CPU, releases the GIL,
and a worker's best possible rate is known: ``batch_size / batch_seconds``. The figure is
then igata's overlap of I/O (receive, S3 GET, decode, DynamoDB writes, deletes) with the
model, and how it adds up over worker processes, not the two cores of the machine or the
local server's ceiling: 4 workers at the model-bound rate (32 requests/s) keep the moto
server at about half of one core (it saturates at one), with per request 1 S3 GET, 1-2
DynamoDB calls and under 1 SQS call.

Workers are started once per pool size and stay up across samples, as in a deployment,
each pool on its own queue. A sample keeps the queue fed (requests in the original image
message format over a few small JPEGs on S3) so that no worker ever finds it empty, as
with a deep production queue, and takes the rate at which messages are deleted (the SQS
source deletes a message only after the sink flushed its results) over a window once every
worker is busy. Then feeding stops, the workers finish what they hold (that time is
reported too), and every request sent is checked to be ``completed`` in the REQUESTS
table; at the end every worker must exit 0 on SIGTERM with no failed record.

One request per message: the SQS source receives up to 10 messages whenever it has handed
all earlier ones to the engine, so a worker holds up to 10 messages besides the engine's
prefetch window; with 10 requests per message that is 100+ requests (12+ s of this model)
per worker, and the drain after the feed would dominate the benchmark's minute.

The baseline for overlap is a single process doing the same work one step after another
(receive, load, predict, write, delete).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Fails the module import (the harness reports the benchmark as skipped) when the plugins
# are not installed.
import igata_dynamodb  # noqa: F401
import igata_s3  # noqa: F401
import igata_sqs  # noqa: F401
from benchmarks.harness import BenchContext, Measurement, benchmark
from benchmarks.images import decode_rgb, jpeg_images
from benchmarks.subprocesses import igata_command
from igata_core.predictor import PredictorBase

REPO = Path(__file__).resolve().parents[1]
BUCKET = "bench-scaleout"
REQUESTS_TABLE = "bench-scaleout-requests"
RESULTS_TABLE = "bench-scaleout-results"
OBJECTS = 8  # distinct JPEGs; requests point at them in turn
PER_MESSAGE = 1  # requests per SQS message (the original format: a JSON array)
WORKER_COUNTS = (1, 2, 4)
#: Messages are deleted per flush; flushing every 0.2 s (default 1 s) gives the rate window
#: enough points. The writer thread flushes while the model runs: throughput is unchanged.
FLUSH_INTERVAL = 0.2
#: Requests kept visible in a fed queue (one receive's worth), so no worker finds it empty.
FEED_DEPTH = 10

#: The model: a fixed cost per call and a small cost per record, as a GPU's.
BATCH_SIZE = 4
CALL_SECONDS = 0.45
RECORD_SECONDS = 0.0125


def batch_seconds(size: int = BATCH_SIZE) -> float:
    return CALL_SECONDS + RECORD_SECONDS * size


def model_bound_rate(workers: int) -> float:
    """Requests/s of ``workers`` processes whose model never waits for input."""
    return workers * BATCH_SIZE / batch_seconds()


class GpuLikePredictor(PredictorBase):
    """Waits as a GPU call would (no CPU used, GIL released) and reports one detection."""

    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.predict_batch([input_record], [meta])[0]
        return result

    def predict_batch(self, input_records: list[Any], metas: list[dict[str, Any]]) -> list[Any]:
        time.sleep(CALL_SECONDS + RECORD_SECONDS * len(input_records))
        return [
            {"result": [{"label": "object", "score": 0.5, "height": int(record.shape[0])}]}
            for record in input_records
        ]


def _requests(tag: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"{tag}-{i:05d}",
            "collection_id": f"events:{tag}",
            "image_id": f"images:{tag}-{i:05d}",
            "s3_uri": f"s3://{BUCKET}/img/{i % OBJECTS}.jpg",
        }
        for i in range(count)
    ]


def _send(sqs: Any, queue_url: str, requests: list[dict[str, Any]]) -> None:
    bodies = [
        json.dumps(requests[start : start + PER_MESSAGE])
        for start in range(0, len(requests), PER_MESSAGE)
    ]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": body}
                for i, body in enumerate(bodies[start : start + 10])
            ],
        )


def _counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])


class Progress:
    """Requests done (their messages deleted) over time: ``(seconds, done)`` events."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.events: list[tuple[float, int]] = []

    def record(self, done: int) -> None:
        if not self.events or done != self.events[-1][1]:
            self.events.append((time.perf_counter() - self.started, done))

    def rate(self, after_done: int, seconds: float) -> float:
        """Requests/s over ``seconds`` from the first event with ``after_done`` requests
        done: the least-squares slope of done over time (deletes come in chunks, one worker's
        at a time; a fit is steadier than the two ends alone)."""
        t_a = next(t for t, d in self.events if d >= after_done)
        t_b = next((t for t, _ in self.events if t >= t_a + seconds), t_a)
        points = [(t, d) for t, d in self.events if t_a <= t <= t_b]
        if len(points) < 3:
            raise RuntimeError(f"no steady state seen: {self.events}")
        mean_t = statistics.fmean(t for t, _ in points)
        mean_d = statistics.fmean(d for _, d in points)
        covariance = sum((t - mean_t) * (d - mean_d) for t, d in points)
        variance = sum((t - mean_t) ** 2 for t, _ in points)
        return covariance / variance

    def span_rate(self) -> float:
        """Requests/s from the first delete seen to the last."""
        (t_a, d_a), (t_b, d_b) = self.events[0], self.events[-1]
        if t_b <= t_a:
            raise RuntimeError(f"no steady state seen: {self.events}")
        return (d_b - d_a) / (t_b - t_a)


def igata_sample(
    sqs: Any, queue_url: str, requests: list[dict[str, Any]], warm: int, window: float
) -> tuple[float, float]:
    """Keep the queue fed so no worker ever finds it empty, measure the rate over
    ``window`` seconds once ``warm`` requests are done, stop feeding, wait for the drain.

    Returns the steady rate and the seconds the workers took to finish what they held
    when feeding stopped; ``requests`` is cut to the requests that were sent."""
    progress = Progress()
    sent = 0
    ends_at: float | None = None
    deadline = time.monotonic() + 120
    while True:
        visible, in_flight = _counts(sqs, queue_url)
        done = max(0, sent - (visible + in_flight) * PER_MESSAGE)
        progress.record(done)
        if ends_at is None and done >= warm:
            ends_at = time.perf_counter() + window
        feeding = ends_at is None or time.perf_counter() < ends_at
        if feeding and visible * PER_MESSAGE < FEED_DEPTH and sent < len(requests):
            batch = requests[sent : sent + FEED_DEPTH]
            _send(sqs, queue_url, batch)
            sent += len(batch)
        elif not feeding and done >= sent:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue {queue_url}: {sent - done} requests left after 120 s")
        time.sleep(0.05)
    if ends_at is None or sent >= len(requests):
        raise RuntimeError(f"the feed ran out of requests ({sent} sent): raise the supply")
    del requests[sent:]
    rate = progress.rate(warm, window)
    tail = progress.events[-1][0] - (ends_at - progress.started)
    return rate, tail


def _check_completed(dynamodb: Any, requests: list[dict[str, Any]]) -> None:
    """Every request's REQUESTS item says completed (a fast failure must not look fast)."""
    states: dict[str, str] = {}
    keys = [{"request_id": {"S": r["request_id"]}} for r in requests]
    for start in range(0, len(keys), 100):
        pending: dict[str, Any] = {REQUESTS_TABLE: {"Keys": keys[start : start + 100]}}
        while pending:
            response = dynamodb.batch_get_item(RequestItems=pending)
            for item in response["Responses"].get(REQUESTS_TABLE, []):
                states[item["request_id"]["S"]] = item.get("state", {}).get("S", "")
            pending = response.get("UnprocessedKeys") or {}
    wrong = [r["request_id"] for r in requests if states.get(r["request_id"]) != "completed"]
    if wrong:
        raise RuntimeError(
            f"{len(wrong)} of {len(requests)} requests not completed, e.g. {wrong[:3]} "
            f"({[states.get(w, 'missing') for w in wrong[:3]]})"
        )


_SUMMARY = re.compile(r"summary: read (\d+), succeeded (\d+), failed (\d+)")


class WorkerPool:
    """``count`` igata worker processes reading one queue, started once, stopped at the end."""

    def __init__(self, count: int, queue_url: str, env: dict[str, str], logs: Path):
        self.count = count
        self.queue_url = queue_url
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = [logs / f"workers-{count}-{i}.log" for i in range(count)]
        argv = [
            *igata_command(), "run", "--source", "sqs", "--sink", "dynamodb",
            "--predictor", f"{__name__}:GpuLikePredictor", "--batch-size", str(BATCH_SIZE),
            "--flush-interval", str(FLUSH_INTERVAL),
            "--source-opt", f"queue_url={queue_url}",
            "--sink-opt", f"requests_tablename={REQUESTS_TABLE}",
            "--sink-opt", f"results_tablename={RESULTS_TABLE}",
        ]  # fmt: skip
        for log in self.logs:
            with log.open("wb") as stderr:
                self.processes.append(
                    subprocess.Popen(
                        argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr
                    )
                )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every worker has opened the queue (its source logged so)."""
        deadline = time.monotonic() + timeout
        for process, log in zip(self.processes, self.logs, strict=True):
            while "sqs: reading queue" not in log.read_text(errors="replace"):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"worker exited with {process.returncode}: {self._tail(log)}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"worker not ready within {timeout:.0f} s: {self._tail(log)}"
                    )
                time.sleep(0.1)

    def stop(self) -> list[int]:
        """SIGTERM every worker; each must exit 0 with no failed record. Requests per worker."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        handled = []
        problems = []
        for process, log in zip(self.processes, self.logs, strict=True):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            match = _SUMMARY.search(log.read_text(errors="replace"))
            if process.returncode != 0 or match is None or int(match.group(3)):
                problems.append(f"exit {process.returncode}: {self._tail(log)}")
            handled.append(int(match.group(2)) if match else 0)
        if problems:
            raise RuntimeError("worker(s) failed: " + " | ".join(problems))
        return handled

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    @staticmethod
    def _tail(log: Path) -> str:
        return log.read_text(errors="replace")[-1500:]


def sequential_sample(
    sqs: Any, s3: Any, dynamodb: Any, queue_url: str, requests: list[dict[str, Any]]
) -> float:
    """One process, one step after another: receive, load each, predict in batches, write
    each request (RESULTS item, REQUESTS update), delete; no step overlaps another.

    Receives as many messages as make whole batches, so no call of the model is short."""
    from igata_dynamodb.records import results_hashkey

    _send(sqs, queue_url, requests)
    model = GpuLikePredictor()
    progress = Progress()
    per_receive = (10 * PER_MESSAGE // BATCH_SIZE) * BATCH_SIZE // PER_MESSAGE
    done = 0
    while done < len(requests):
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=per_receive, WaitTimeSeconds=1
        ).get("Messages", [])
        batch = [r for m in messages for r in json.loads(m["Body"])]
        images = []
        for request in batch:
            bucket, _, key = request["s3_uri"].removeprefix("s3://").partition("/")
            images.append(decode_rgb(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        predictions = []
        for start in range(0, len(images), BATCH_SIZE):
            predictions += model.predict_batch(
                images[start : start + BATCH_SIZE], batch[start : start + BATCH_SIZE]
            )
        for request, prediction in zip(batch, predictions, strict=True):
            (detection,) = prediction["result"]
            dynamodb.put_item(
                TableName=RESULTS_TABLE,
                Item={
                    "hashkey": {"S": results_hashkey(request["request_id"], 0)},
                    "s3_uri": {"S": request["s3_uri"]},
                    "request_id": {"S": request["request_id"]},
                    "label": {"S": detection["label"]},
                    "score": {"N": str(detection["score"])},
                    "height": {"N": str(detection["height"])},
                },
            )
            dynamodb.update_item(
                TableName=REQUESTS_TABLE,
                Key={"request_id": {"S": request["request_id"]}},
                UpdateExpression="SET #s = :s, #r = :r, #e = :e, #u = :u, #c = :c",
                ExpressionAttributeNames={
                    "#s": "state", "#r": "result", "#e": "errors",
                    "#u": "updated_at_timestamp", "#c": "results_count",
                },
                ExpressionAttributeValues={
                    ":s": {"S": "completed"}, ":r": {"S": json.dumps(prediction["result"])},
                    ":e": {"S": "[]"}, ":u": {"N": str(int(time.time()))}, ":c": {"N": "1"},
                },
            )  # fmt: skip
        if messages:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        done += len(batch)
        progress.record(done)
    return progress.span_rate()


@benchmark("scaleout", "1, 2, 4 SQS -> dynamodb workers with a waiting (GPU-like) model")
def scaleout(ctx: BenchContext) -> list[Measurement]:
    from igata_dynamodb.layout import Layout
    from igata_dynamodb.tables import Capacity, create_tables

    aws = ctx.local_aws()
    # Seconds of steady state measured per sample; every pool size's sample takes about
    # as long (warm-up ~1.5 s, the window, then ~3.5 s to drain what the workers hold).
    window = 1.5 if ctx.quick else 3.0
    # Workers stay up across samples; rounds of every series, interleaved.
    rounds = 1 if ctx.quick else 2
    sequential_requests = 16 if ctx.quick else 24
    sqs, s3, dynamodb = aws.client("sqs"), aws.client("s3"), aws.client("dynamodb")
    s3.create_bucket(Bucket=BUCKET)
    for i, image in enumerate(jpeg_images(OBJECTS, size=128)):
        s3.put_object(Bucket=BUCKET, Key=f"img/{i}.jpg", Body=image)
    create_tables(dynamodb, Layout(REQUESTS_TABLE, RESULTS_TABLE), Capacity())
    sequential_url = sqs.create_queue(QueueName="bench-scaleout-sequential")["QueueUrl"]

    env = {**os.environ, **aws.env(), "PYTHONPATH": str(REPO), "LOG_LEVEL": "INFO"}
    tags = (f"s{n}" for n in itertools.count())
    pools: dict[int, WorkerPool] = {}
    handled: dict[int, list[int]] = {}
    tails: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}

    def pool_sample(n: int) -> float:
        # More than the window could take at twice the model-bound rate.
        requests = _requests(next(tags), int(model_bound_rate(n) * (window + 10) * 2))
        rate, tail = igata_sample(
            sqs, pools[n].queue_url, requests, warm=2 * BATCH_SIZE * n, window=window
        )
        _check_completed(dynamodb, requests)
        tails[n].append(tail)
        return rate

    def sequential() -> float:
        requests = _requests(next(tags), sequential_requests)
        rate = sequential_sample(sqs, s3, dynamodb, sequential_url, requests)
        _check_completed(dynamodb, requests)
        return rate

    try:
        for n in WORKER_COUNTS:
            url = sqs.create_queue(QueueName=f"bench-scaleout-{n}")["QueueUrl"]
            pools[n] = WorkerPool(n, url, env, ctx.tmp_path)
        for pool in pools.values():
            pool.wait_ready()
        series: dict[str, Callable[[], float]] = {
            str(n): (lambda n=n: pool_sample(n)) for n in WORKER_COUNTS
        }
        series["sequential"] = sequential
        samples = _interleaved(series, rounds)
        for n in WORKER_COUNTS:
            handled[n] = pools.pop(n).stop()
    finally:
        for pool in pools.values():
            pool.kill()
    return _measurements(samples, handled, tails, window, rounds, sequential_requests)


def _interleaved(series: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each series once per round, in a rotating order (as ``ctx.repeat_interleaved``,
    with fewer rounds than the harness's repeats: a round takes about half a minute)."""
    samples: dict[str, list[float]] = {name: [] for name in series}
    names = list(series)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(series[name]())
    return samples


def _measurements(
    samples: dict[str, list[float]],
    handled: dict[int, list[int]],
    tails: dict[int, list[float]],
    window: float,
    rounds: int,
    sequential_requests: int,
) -> list[Measurement]:
    def efficiency(name: str, workers: int) -> float:
        return round(statistics.median(samples[name]) / model_bound_rate(workers), 3)

    model = (
        f"sleep {CALL_SECONDS * 1000:.0f} ms + {RECORD_SECONDS * 1000:.1f} ms/record per "
        f"predict_batch of {BATCH_SIZE}"
    )
    extra = {
        "model": f"{model}: model-bound {model_bound_rate(1):.1f} requests/s per worker",
        "model_bound_requests_per_s": {n: round(model_bound_rate(n), 2) for n in WORKER_COUNTS},
        "efficiency_vs_model_bound": {n: efficiency(str(n), n) for n in WORKER_COUNTS},
        "seconds_to_finish_held_work_after_feed_stops": {
            n: round(statistics.median(tails[n]), 2) for n in WORKER_COUNTS
        },
        "requests_handled_by_each_worker": handled,
        "window_seconds": window,
        "requests_per_message": PER_MESSAGE,
        "rounds": rounds,
    }
    one = {"1 worker": samples["1"]}
    return [
        Measurement(
            title=f"scale-out: 4 SQS -> dynamodb worker processes vs 1 and 2; model {model}",
            unit="requests/s",
            igata=samples["4"],
            baselines={**one, "2 workers": samples["2"]},
            target="ratio >= 3.4 against 1 worker (85% of linear) and >= 1.7 against 2 workers",
            extra=extra,
        ),
        Measurement(
            title="scale-out: 2 worker processes vs 1",
            unit="requests/s",
            igata=samples["2"],
            baselines=one,
            target="ratio >= 1.8 against 1 worker (90% of linear)",
        ),
        Measurement(
            title="overlap of I/O and model in one worker: igata vs the same steps one after "
            "another",
            unit="requests/s",
            igata=samples["1"],
            baselines={
                "sequential boto3 loop: receive, load, predict, write, delete": samples[
                    "sequential"
                ]
            },
            target=f"above 1, and igata within 10% of the model-bound {model_bound_rate(1):.1f} "
            "requests/s (efficiency_vs_model_bound)",
            extra={
                "efficiency_vs_model_bound": efficiency("1", 1),
                "sequential_efficiency_vs_model_bound": efficiency("sequential", 1),
                "sequential_requests_per_sample": sequential_requests,
            },
        ),
    ]
