"""igata-dynamodb: results -> the dynamodb sink, against hand-written boto3 doing the same writes.

The work per request: one REQUESTS ``UpdateItem`` (state, JSON results, errors, time,
count) and its RESULTS items (flattened, floats as Decimal) in ``BatchWriteItem`` calls.
igata runs it through the engine (``run_pipeline``: a source of ready requests, a predictor
returning precomputed detections, the ``dynamodb`` sink flushed every chunk of 15 as in
production); the baselines are the script one would write by hand with boto3.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import igata_dynamodb  # noqa: F401  (the benchmark is skipped when the plugin is missing)
from benchmarks.harness import BenchContext, Measurement, benchmark
from igata_core import Envelope, Item, PredictorBase, Source

REQUESTS_TABLE = "bench-requests"
RESULTS_TABLE = "bench-results"
DETECTIONS = 8  # RESULTS items per request


def _detections(i: int) -> list[dict[str, Any]]:
    return [
        {
            "label": f"class-{(i + j) % 7}",
            "score": ((i * 31 + j * 17) % 1000) / 997,
            "position": {"x1": i % 640, "y1": j * 10, "x2": i % 640 + 32.5, "y2": j * 10 + 48.25},
        }
        for j in range(DETECTIONS)
    ]


def _requests(n: int) -> list[dict[str, Any]]:
    return [
        {
            "request_id": f"req-{i:06d}",
            "collection_id": f"events:{i % 10}",
            "s3_uri": f"s3://bench/images/{i:06d}.jpg",
            "index": i,
        }
        for i in range(n)
    ]


class _ReadyRequests(Source):
    """Requests whose input is already in memory (no loading): isolates the sink."""

    name = "bench-ready-requests"

    def __init__(self, requests: list[dict[str, Any]]):
        super().__init__({})
        self.requests = requests
        self.acked = 0

    def envelopes(self) -> Iterator[Envelope]:
        for request in self.requests:
            item = Item(identity=request["request_id"], data=request["index"], meta=dict(request))
            yield Envelope(ref=f"bench:{request['request_id']}", items=[item])

    def ack(self, envelopes: Any) -> None:
        self.acked += len(envelopes)


class _Detector(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"result": _detections(input_record)}


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """What a hand-written script does: nested keys joined by __, floats as Decimal."""
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        if isinstance(inner, dict):
            flat.update(_flatten(inner, f"{prefix}{key}__"))
        elif isinstance(inner, float):
            flat[f"{prefix}{key}"] = round(Decimal(repr(inner)), 6)
        elif inner != "":
            flat[f"{prefix}{key}"] = inner
    return flat


def _baseline(requests: list[dict[str, Any]], workers: int) -> float:
    """Hand-written boto3: RESULTS through the resource's batch_writer, then the updates
    (``workers`` threads; 1 = a plain loop). Returns RESULTS items per second."""
    import hashlib
    import json

    import boto3

    resource = boto3.resource("dynamodb")
    table = resource.Table(RESULTS_TABLE)
    client = resource.meta.client
    started = time.perf_counter()
    with table.batch_writer() as writer:
        for request in requests:
            for position, detection in enumerate(_detections(request["index"])):
                item = _flatten(
                    {**detection, "request_id": request["request_id"], "s3_uri": request["s3_uri"]}
                )
                key = f"{request['request_id']}\x1f{position}"
                item["hashkey"] = hashlib.sha256(key.encode()).hexdigest()[:32]
                writer.put_item(Item=item)

    def update(request: dict[str, Any]) -> None:
        client.update_item(
            TableName=REQUESTS_TABLE,
            Key={"request_id": request["request_id"]},
            UpdateExpression="SET #s = :s, #r = :r, #e = :e, #u = :u, #c = :c",
            ExpressionAttributeNames={
                "#s": "state", "#r": "result", "#e": "errors",
                "#u": "updated_at_timestamp", "#c": "results_count",
            },
            ExpressionAttributeValues={
                ":s": "completed", ":r": json.dumps(_detections(request["index"])), ":e": "[]",
                ":u": int(time.time()), ":c": DETECTIONS,
            },
        )  # fmt: skip

    if workers == 1:
        for request in requests:
            update(request)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(update, requests))
    return len(requests) * DETECTIONS / (time.perf_counter() - started)


def _igata(requests: list[dict[str, Any]], registry: Any) -> float:
    from igata_core.testing import run_pipeline

    source = _ReadyRequests(requests)
    started = time.perf_counter()
    result = run_pipeline(
        source,
        "dynamodb",
        _Detector,
        sink_options={"requests_tablename": REQUESTS_TABLE, "results_tablename": RESULTS_TABLE},
        registry=registry,
        concurrency=8,
    )
    elapsed = time.perf_counter() - started
    if result.exit_code != 0 or source.acked != len(requests):
        raise RuntimeError(f"benchmark run went wrong: {result.summary}")
    return len(requests) * DETECTIONS / elapsed


@benchmark("dynamodb", "results -> dynamodb sink vs hand-written boto3")
def dynamodb_sink(ctx: BenchContext) -> list[Measurement]:
    import boto3

    from igata_core.plugins import build_registry
    from igata_dynamodb.layout import Layout
    from igata_dynamodb.tables import Capacity, create_tables

    ctx.local_aws()
    create_tables(boto3.client("dynamodb"), Layout(REQUESTS_TABLE, RESULTS_TABLE), Capacity())
    registry = build_registry()
    # 2,000 RESULTS items (1,000 in quick mode): the local server takes only about 100-250
    # UpdateItem calls per second, so requests are few and each has many items.
    n = 125 if ctx.quick else 250
    requests = _requests(n)
    samples = ctx.repeat_interleaved(
        {
            "igata": lambda: _igata(requests, registry),
            "loop": lambda: _baseline(requests, 1),
            "pool": lambda: _baseline(requests, 8),
        }
    )
    return [
        Measurement(
            title=f"{n * DETECTIONS} results ({n} requests x {DETECTIONS}) -> DynamoDB",
            unit="results/s",
            igata=samples["igata"],
            baselines={
                "boto3 batch_writer + update_item loop": samples["loop"],
                "boto3 batch_writer + ThreadPoolExecutor(8) update_item": samples["pool"],
            },
            higher_is_better=True,
            target="at least the plain loop; within 25% of the thread pool",
            extra={"results_items_per_request": DETECTIONS, "engine_chunk_size": 15},
        )
    ]
