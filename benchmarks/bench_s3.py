"""igata-s3's figure: an S3 prefix of small JPEGs through the engine, against plain boto3.

On the local moto server every series is bounded by the server (about 110-140 GET/s on two
cores), so the figure that matters is igata against a hand-written ThreadPoolExecutor
loop doing the same listing, GETs and decoding: it shows what the engine, the s3 source
and the s3 loader cost on top of boto3.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Fails the module import (the harness reports the benchmark as skipped) when the plugin
# is not installed.
import igata_s3  # noqa: F401
from benchmarks.harness import BenchContext, Measurement, benchmark
from benchmarks.images import decode_rgb, jpeg_images
from benchmarks.predictors import NoopPredictor

BUCKET = "bench-s3-in"
PREFIX = "jpegs/"
OBJECTS = 500
CONCURRENCY = 8


def _client(pool: int) -> Any:
    """A plain boto3 client as a hand-written script would make it (path-style locally)."""
    import boto3
    from botocore.config import Config

    config = Config(max_pool_connections=pool, s3={"addressing_style": "path"})
    return boto3.session.Session().client("s3", config=config)


def _keys(client: Any) -> list[str]:
    paginator = client.get_paginator("list_objects_v2")
    return [
        obj["Key"]
        for page in paginator.paginate(Bucket=BUCKET, Prefix=PREFIX)
        for obj in page.get("Contents", [])
    ]


def _fetch_decode(client: Any, key: str) -> Any:
    return decode_rgb(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def _timed(fn: Callable[[], int]) -> float:
    started = time.perf_counter()
    count = fn()
    elapsed = time.perf_counter() - started
    if count != OBJECTS:
        raise RuntimeError(f"benchmark run handled {count} objects, expected {OBJECTS}")
    return count / elapsed


@benchmark("s3", "S3 prefix of 500 JPEGs -> no-op predictor -> null sink")
def s3_prefix(ctx: BenchContext) -> list[Measurement]:
    from igata_core.plugins import build_registry
    from igata_core.testing import run_pipeline

    aws = ctx.local_aws()
    setup = _client(CONCURRENCY)
    setup.create_bucket(Bucket=BUCKET)
    images = jpeg_images(64)
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(
            pool.map(
                lambda i: setup.put_object(
                    Bucket=BUCKET, Key=f"{PREFIX}{i:05d}.jpg", Body=images[i % len(images)]
                ),
                range(OBJECTS),
            )
        )
    registry = build_registry()

    def igata() -> int:
        result = run_pipeline(
            "s3", "null", NoopPredictor, inputs=[f"s3://{BUCKET}/{PREFIX}"],
            registry=registry, concurrency=CONCURRENCY,
        )  # fmt: skip
        if result.exit_code != 0:
            raise RuntimeError(f"igata run failed: {result.summary}")
        return int(result.summary["succeeded"])

    naive_client = _client(10)

    def naive() -> int:
        count = 0
        for key in _keys(naive_client):
            _fetch_decode(naive_client, key)
            count += 1
        return count

    pool_client = _client(CONCURRENCY + 2)

    def threadpool() -> int:
        keys = _keys(pool_client)
        with ThreadPoolExecutor(CONCURRENCY) as executor:
            return sum(1 for _ in executor.map(lambda k: _fetch_decode(pool_client, k), keys))

    # Imports, clients and connection pools warm up outside the measurement.
    _timed(igata)
    samples = ctx.repeat_interleaved(
        {
            "igata": lambda: _timed(igata),
            "naive": lambda: _timed(naive),
            "pool": lambda: _timed(threadpool),
        }
    )
    return [
        Measurement(
            title=f"S3 prefix of {OBJECTS} 32x32 JPEGs, no-op predictor, null sink "
            f"(concurrency {CONCURRENCY})",
            unit="records/s",
            igata=samples["igata"],
            baselines={
                "sequential boto3 loop: list, get + Pillow decode": samples["naive"],
                f"ThreadPoolExecutor({CONCURRENCY}) boto3: same work": samples["pool"],
            },
            higher_is_better=True,
            target=f"within 15% of the ThreadPoolExecutor({CONCURRENCY}) baseline "
            "(ratio >= 0.85); both are bounded by the local server",
            extra={
                "objects": OBJECTS,
                "mean_object_bytes": round(sum(map(len, images)) / len(images)),
                "endpoint": aws.url,
            },
        )
    ]
